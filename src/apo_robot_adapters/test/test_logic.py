"""The adapters' ROS-free logic: action checks, staleness, scaling, joints, config validation."""

import math

import pytest

from apo_core.config import load_config
from apo_core.errors import ConfigError
from apo_robot_adapters.command_logic import (
    CommandLatch,
    GripperDeadband,
    check_action,
    gripper_target,
    twist_from_action,
)
from apo_robot_adapters.config import JointAdapterConfig, StateAdapterConfig, TwistAdapterConfig
from apo_robot_adapters.state_logic import JointStateError, proprio, split_joints


def test_bad_actions_are_refused_with_a_reason():
    assert check_action([0.1] * 7, 7).values == [0.1] * 7
    assert "expected 7 values, got 6" in check_action([0.0] * 6, 7).problem
    assert "non-finite value(s) at index [2]" in check_action([0, 0, math.nan, 0, 0, 0, 0], 7).problem
    assert check_action([0, 0, 0, math.inf, 0, 0, 0], 7).values is None


def test_latch_goes_stale_and_scaling_and_gripper():
    latch = CommandLatch(0.3)
    assert latch.fresh(0.0) is None
    latch.update([1.0], 10.0)
    assert latch.fresh(10.2) == [1.0] and latch.fresh(10.31) is None
    assert twist_from_action([1, -1, 0.5, 1, 0, -1, 1], 0.1, 0.5) == ([0.1, -0.1, 0.05], [0.5, 0.0, -0.5])
    assert gripper_target(-1, 0.04, 0.0) == 0.04 and gripper_target(1, 0.04, 0.0) == 0.0
    assert gripper_target(5, 0.04, 0.0) == 0.0  # clipped
    band = GripperDeadband(0.01)
    assert band.due(0.04) and not band.due(0.045) and band.due(0.0)


def test_joints_split_and_proprio_layout():
    names, pos = ["j1", "f1", "j2", "f2"], [1.0, 0.01, 2.0, 0.02]
    assert split_joints(names, pos, [], ["f1", "f2"]) == ([1.0, 2.0], [0.01, 0.02])
    assert split_joints(names, pos, ["j2", "j1"], []) == ([2.0, 1.0], [])
    with pytest.raises(JointStateError, match=r"joint\(s\) \['j3'\] not in"):
        split_joints(names, pos, ["j3"], [])
    with pytest.raises(JointStateError, match="4 names but 3 positions"):
        split_joints(names, pos[:3], [], [])
    assert proprio((1, 2, 3), (0, 0, 0, 1), [0.01]) == [1, 2, 3, 0, 0, 0, 1, 0.01]


@pytest.mark.parametrize("cls, data, match", [
    (TwistAdapterConfig, {"linear_scale": 0.0}, "linear_scale"),
    (TwistAdapterConfig, {"gripper_index": 3}, "gripper_index"),
    (TwistAdapterConfig, {"stale_timeout": -1.0}, "stale_timeout"),
    (TwistAdapterConfig, {"gripper": {"output": "serial"}}, "output"),
    (JointAdapterConfig, {}, "joint_names"),
    (JointAdapterConfig, {"joint_names": ["a", "a"]}, "twice"),
    (JointAdapterConfig, {"joint_names": ["a"], "gripper_index": 5}, "gripper_index"),
    (StateAdapterConfig, {"arm_joints": ["a"], "gripper_joints": ["a"]}, "both"),
    (StateAdapterConfig, {"pose_sorce": "tf"}, "pose_source"),
])
def test_bad_configs_name_the_key(cls, data, match):
    with pytest.raises(ConfigError, match=match):
        load_config(cls, data)
