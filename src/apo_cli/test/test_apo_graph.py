"""``apo graph``: prints the resolved deploy graph, and a parameter outside a node's schema is an error naming it."""

from apo_bringup.graph import default_graph_path
from apo_cli.cli import main as apo_main


def test_shipped_graph_with_a_misspelt_parameter_fails_and_apo_graph_says_so(tmp_path, capsys):
    text = default_graph_path().read_text()
    bad = text.replace("      image_size: \"${image_size}\"\n", "      image_sise: \"${image_size}\"\n", 1)
    assert bad != text
    path = tmp_path / "deploy.yaml"
    path.write_text(bad)
    assert apo_main(["graph", "--graph", str(path)]) == 2
    err = capsys.readouterr().err
    assert "node 'apo_sim'" in err and "unknown parameter 'image_sise'" in err and "did you mean 'image_size'" in err

    assert apo_main(["graph", "robot:=sim"]) == 0
    out = capsys.readouterr().out
    assert "name: apo_sim" in out and "config: apo_sim.node_config:SimNodeConfig" in out
