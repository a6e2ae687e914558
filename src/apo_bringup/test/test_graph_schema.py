"""Node parameter schemas in the graph file: a parameter the node does not declare fails at load time.

No ROS needed: the schemas are ROS-free dataclasses and the check runs when the file is loaded.
"""

import pytest

from apo_bringup.graph import default_graph_path, load_graph_file, load_schema, resolve_graph
from apo_core.config import load_config, nest_dotted
from apo_core.errors import ConfigError

GRAPH = """
arguments:
  rate: {default: 10}
nodes:
  - name: sim
    package: apo_sim
    executable: apo_sim_node
    module: apo_sim.sim_node
    config: apo_sim.node_config:SimNodeConfig
    parameters: {task: Lift, control_rate_hz: "${rate}", mode: lockstep}
  - name: arbiter
    package: apo_intervention
    executable: apo_arbiter
    module: apo_intervention.arbiter_node
    config: apo_intervention.config:ArbiterConfig
    extra_parameters: [config_file]
    parameters: {config_file: "${config_dir}/arbiter.yaml", teleop: {timeout: 0.3}, max_episode_steps: 50}
  - name: driver
    package: my_robot
    executable: driver
    module: my_robot.driver
    parameters: {anything: 1}
"""


def _write(tmp_path, text):
    p = tmp_path / "deploy.yaml"
    p.write_text(text)
    return p


def test_parameters_within_the_schemas_load(tmp_path):
    graph = load_graph_file(_write(tmp_path, GRAPH))
    specs = {s.name: s for s in resolve_graph(graph)}
    assert specs["sim"].config == "apo_sim.node_config:SimNodeConfig"
    assert specs["arbiter"].extra_parameters == ["config_file"]
    assert specs["driver"].config == ""  # a node without a schema is not checked


@pytest.mark.parametrize("mutation, match", [
    (("control_rate_hz:", "contrl_rate_hz:"),
     r"node 'sim' \(apo_sim.node_config:SimNodeConfig\): unknown parameter 'contrl_rate_hz'; "
     r"did you mean 'control_rate_hz'\? \(known: task, image_size, camera, control_rate_hz"),
    (("teleop: {timeout: 0.3}", "teleop: {timout: 0.3}"),
     r"node 'arbiter' .*unknown parameter 'teleop.timout'; did you mean 'teleop.timeout'\?.*"
     r"also accepted: config_file"),
    (("max_episode_steps: 50", "max_steps: 50"), r"node 'arbiter' .*unknown parameter 'max_steps'"),
    (("    extra_parameters: [config_file]\n", ""), r"node 'arbiter' .*unknown parameter 'config_file'"),
    (("apo_sim.node_config:SimNodeConfig", "apo_sim.node_config"), r"node 'sim': config must look like"),
    (("apo_sim.node_config:SimNodeConfig", "apo_no_such_pkg.cfg:Cfg"),
     r"node 'sim': cannot import 'apo_no_such_pkg.cfg' for config"),
    (("apo_sim.node_config:SimNodeConfig", "apo_sim.node_config:MODES"), r"node 'sim': config .* is not a dataclass"),
    (("extra_parameters: [config_file]", "extra_parameters: config_file"), "extra_parameters must be a list"),
])
def test_a_parameter_outside_the_schema_fails_at_load_naming_node_and_parameter(tmp_path, mutation, match):
    text = GRAPH.replace(*mutation, 1)
    assert text != GRAPH
    with pytest.raises(ConfigError, match=match):
        load_graph_file(_write(tmp_path, text))


def test_shipped_graph_nodes_with_a_schema_validate():
    graph = load_graph_file(default_graph_path())  # the names are checked here
    with_schema = {n.name for n in graph.nodes if n.config}
    assert with_schema == {n.name for n in graph.nodes}  # every shipped node declares its schema
    # ...and with the default arguments the values are valid for their schema too.
    for spec in resolve_graph(graph):
        if spec.config:
            params = {k: v for k, v in spec.parameters.items() if k not in spec.extra_parameters}
            load_config(load_schema(spec.config, spec.name), nest_dotted(params), where=spec.name)
