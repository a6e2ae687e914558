"""Strict parameters of the simulator node: an unknown name stops it at start, naming the known ones."""

import pytest
from rclpy.parameter import Parameter

from apo_core.errors import ConfigError
from apo_ros.params import parameter_names
from apo_ros.testing import RosGraph, start_node_process
from apo_sim.node_config import SimNodeConfig
from apo_sim.sim_node import SimNode

pytestmark = [pytest.mark.ros]


def test_config_keeps_the_parameter_names_defaults_and_ranges():
    assert parameter_names(SimNodeConfig) == [
        "task", "image_size", "camera", "control_rate_hz", "sim_control_freq", "mode", "seed", "instruction",
        "publish_expert", "frame_id", "command_timeout_s"]
    from apo_core.config import load_config

    cfg = load_config(SimNodeConfig, {"control_rate_hz": 20})  # an integer rate, as `-p control_rate_hz:=20` gives
    assert cfg.control_rate_hz == 20.0 and cfg.instruction == "lift the red cube" and cfg.mode == "realtime"
    for bad, match in (({"image_size": 8}, "image_size: 8 is outside 16..1024"),
                       ({"sim_control_freq": 900}, "sim_control_freq"),
                       ({"command_timeout_s": 0}, "command_timeout_s: must be a positive number"),
                       ({"mode": "fast"}, "mode: 'fast' is not one of"),
                       ({"task": "Push"}, "task: unknown task 'Push'")):
        with pytest.raises(ConfigError, match=match):
            load_config(SimNodeConfig, bad)


def test_unknown_parameter_fails_the_node_in_process():
    with RosGraph() as g:
        with pytest.raises(ConfigError, match=r"unknown parameter 'contol_rate_hz'; did you mean "
                                              r"'control_rate_hz'\?.*known: task, image_size"):
            SimNode(context=g.context, parameter_overrides=[Parameter("contol_rate_hz", value=20)])


def test_unknown_parameter_exits_2_naming_it_and_the_known_ones(tmp_path):
    log = tmp_path / "sim.log"
    proc = start_node_process("apo_sim.sim_node", ["--ros-args", "-p", "mode:=lockstep", "-p", "imagesize:=64"],
                              log_path=str(log))
    try:
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert rc == 2, text
    assert "unknown parameter 'imagesize'" in text and "did you mean 'image_size'?" in text
    assert "known: task, image_size, camera, control_rate_hz" in text
    assert "Traceback" not in text
