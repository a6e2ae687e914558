"""The graph file: parsing, strict keys, argument resolution and substitution (no ROS needed)."""

import pytest

from apo_bringup.graph import default_graph_path, load_graph_file, parse_launch_arguments, resolve_graph
from apo_core.errors import ConfigError

GRAPH = """
arguments:
  robot: {default: sim, choices: [sim, real]}
  task: {default: Lift, choices: [Lift, Stack]}
  record: {default: true}
  rate: 10
nodes:
  - name: sim
    package: apo_sim
    executable: apo_sim_node
    module: apo_sim.sim_node
    when: {robot: sim}
    required: true
    parameters: {task: "${task}", control_rate_hz: "${rate}", label: "task ${task} at ${rate} Hz"}
  - name: recorder
    package: apo_recorder
    executable: apo_recorder_node
    module: apo_recorder.recorder_node
    when: {record: true}
    parameters: {enabled: "${record}"}
    remappings: {/in: /apo/step}
  - name: driver
    package: my_robot
    executable: driver
    module: my_robot.driver
    unless: {robot: sim}
"""


def _write(tmp_path, text):
    p = tmp_path / "deploy.yaml"
    p.write_text(text)
    return p


def test_resolution_with_defaults_and_overrides(tmp_path):
    graph = load_graph_file(_write(tmp_path, GRAPH))
    specs = {s.name: s for s in resolve_graph(graph)}
    assert set(specs) == {"sim", "recorder"}
    assert specs["sim"].parameters == {"task": "Lift", "control_rate_hz": 10, "label": "task Lift at 10 Hz"}
    assert specs["sim"].required and specs["recorder"].parameters == {"enabled": True}
    assert specs["recorder"].remappings == {"/in": "/apo/step"}
    specs = {s.name: s for s in resolve_graph(graph, parse_launch_arguments(
        ["robot:=real", "record:=false", "task:=Stack"]))}
    assert set(specs) == {"driver"}


@pytest.mark.parametrize("overrides, match", [
    ({"tsk": "Lift"}, "unknown launch argument 'tsk'"),
    ({"task": "Juggle"}, "task='Juggle' is not one of"),
])
def test_bad_arguments(tmp_path, overrides, match):
    graph = load_graph_file(_write(tmp_path, GRAPH))
    with pytest.raises(ConfigError, match=match):
        resolve_graph(graph, overrides)
    with pytest.raises(ConfigError, match="name:=value"):
        parse_launch_arguments(["task=Stack"])


@pytest.mark.parametrize("mutation, match", [
    (("    required: true\n", "    requird: true\n"), r"unknown key\(s\) \['requird'\]"),
    (("${task}", "${tsak}"), r"unknown argument \$\{tsak\}"),
    (("when: {record: true}", "when: {recrd: true}"), "unknown argument 'recrd'"),
    (("  - name: recorder", "  - name: sim"), "used twice"),
    (("arguments:", "argumentz:"), "unknown top-level key"),
])
def test_malformed_graph_names_the_key(tmp_path, mutation, match):
    with pytest.raises(ConfigError, match=match):
        load_graph_file(_write(tmp_path, GRAPH.replace(*mutation, 1)))


def test_shipped_graph_file_resolves():
    graph = load_graph_file(default_graph_path())
    specs = resolve_graph(graph)
    retrain = next(s for s in specs if s.name == "apo_retrain")
    assert retrain.parameters["config_file"] == str(default_graph_path().resolve().parent / "retrain.yaml")
    names = {s.name for s in specs}
    assert {"apo_sim", "apo_policy", "apo_arbiter", "apo_recorder", "apo_scripted_operator", "apo_retrain",
            "apo_joy_teleop"} <= names
    # the scripted operator acts through the joystick mapping, so both run; no operator -> neither
    names = {s.name for s in resolve_graph(graph, {"operator": "none"})}
    assert "apo_joy_teleop" not in names and "apo_scripted_operator" not in names
    for s in specs:
        assert s.module.startswith(s.package)
