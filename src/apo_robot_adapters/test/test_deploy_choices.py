"""config/deploy.yaml's robot:= choices start the right adapters, with parameters their schemas accept
and a retrain gate on the real robot (no ROS needed)."""

import pytest

from apo_bringup.graph import default_graph_path, load_graph_file, resolve_graph
from apo_core.config import merge_overrides, read_yaml
from apo_retrain.node_config import RetrainNodeConfig

ADAPTERS = {"apo_camera_adapter", "apo_state_adapter", "apo_twist_adapter", "apo_joint_adapter"}


@pytest.mark.parametrize("robot, expected", [
    ("sim", set()), ("real", set()),
    ("servo", {"apo_camera_adapter", "apo_state_adapter", "apo_twist_adapter"}),
    ("ros2_control", {"apo_camera_adapter", "apo_state_adapter", "apo_joint_adapter"}),
])
def test_robot_choice_selects_the_adapters(robot, expected):
    from apo_core.config import load_config

    specs = {s.name: s for s in resolve_graph(load_graph_file(default_graph_path()), {"robot": robot})}
    assert set(specs) & ADAPTERS == expected
    assert ("apo_sim" in specs) == (robot == "sim")
    for name in expected:
        path = specs[name].parameters["config_file"]
        section = {"apo_camera_adapter": "camera", "apo_state_adapter": "state", "apo_twist_adapter": "twist",
                   "apo_joint_adapter": "joint"}[name]
        from apo_bringup.graph import load_schema

        cls = load_schema(specs[name].config, name)
        load_config(cls, merge_overrides({}, read_yaml(path)[section]))  # the shipped file is valid
    retrain = load_config(RetrainNodeConfig, {k: v for k, v in specs["apo_retrain"].parameters.items()})
    assert retrain.settings_overrides()["robot"] == ("sim" if robot == "sim" else "real")
