"""Config schemas of the robot adapters (ROS-free), one section each in config/adapters.yaml.

A node's configuration is its section of the file named by its ``config_file`` parameter (default: the
workspace's ``config/adapters.yaml``), then any ROS parameters on top (dotted names for nested
sections: ``-p gripper.topic:=/gripper/cmd``). Loading is strict: an unknown key or a wrong type fails
the start with the key named. Field defaults below are the documented defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from apo_core import topics
from apo_core.errors import ConfigError


def _positive(value: float, name: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}: must be a finite number > 0, got {value}")


def _topic(value: str, name: str) -> None:
    if not value or not isinstance(value, str) or any(c.isspace() for c in value):
        raise ConfigError(f"{name}: must be a topic name, got {value!r}")


@dataclass
class CameraAdapterConfig:
    """A camera driver's image -> rgb8 on the policy's camera topic (no resizing: the policy node does that)."""

    input_topic: str = "/camera/camera/color/image_raw"
    # true: input_topic carries sensor_msgs/CompressedImage (jpeg/png), e.g. ".../image_raw/compressed"
    compressed: bool = False
    output_topic: str = topics.IMAGE
    # depth images (16UC1 mm, 32FC1 m): metres mapped linearly to grey 0..255 (apo_core.image_codec)
    depth_near_m: float = 0.0
    depth_far_m: float = 2.0
    # use cv_bridge when it is importable (a ROS 2 install), else apo_core.image_codec (same arrays)
    use_cv_bridge: bool = True

    def validate(self):
        _topic(self.input_topic, "input_topic")
        _topic(self.output_topic, "output_topic")
        if not (math.isfinite(self.depth_near_m) and math.isfinite(self.depth_far_m)
                and 0 <= self.depth_near_m < self.depth_far_m):
            raise ConfigError(f"depth_near_m/depth_far_m: need 0 <= near < far, got {self.depth_near_m}, "
                              f"{self.depth_far_m}")


@dataclass
class StateAdapterConfig:
    """sensor_msgs/JointState + end-effector pose (a PoseStamped topic or tf) -> apo_interfaces/RobotState."""

    joint_states_topic: str = "/joint_states"
    # arm joints in this order (empty: every joint of the message that is not a gripper joint, in its order)
    arm_joints: list[str] = field(default_factory=list)
    # gripper joints -> RobotState.gripper and the end of proprio (e.g. the two finger joints of a Franka hand)
    gripper_joints: list[str] = field(default_factory=list)
    # topic: geometry_msgs/PoseStamped on pose_topic; tf: base_frame -> eef_frame from tf2 (needs a ROS 2
    # install: tf2_ros is not on PyPI); none: eef_pose stays zero (a joint-space policy)
    pose_source: Literal["topic", "tf", "none"] = "topic"
    pose_topic: str = "/apo/eef_pose"
    base_frame: str = "base_link"
    eef_frame: str = "tool0"
    output_topic: str = topics.ROBOT_STATE

    def validate(self):
        _topic(self.joint_states_topic, "joint_states_topic")
        _topic(self.output_topic, "output_topic")
        if self.pose_source == "topic":
            _topic(self.pose_topic, "pose_topic")
        if self.pose_source == "tf" and not (self.base_frame and self.eef_frame):
            raise ConfigError("base_frame and eef_frame must be set with pose_source tf")
        both = set(self.arm_joints) & set(self.gripper_joints)
        if both:
            raise ConfigError(f"joints {sorted(both)} are in both arm_joints and gripper_joints")


@dataclass
class GripperOutputConfig:
    """The action's gripper value (-1 open .. +1 close) -> the gripper controller."""

    # position: std_msgs/Float64 on topic; forward: std_msgs/Float64MultiArray [position] on topic (a
    # ros2_control forward_command_controller for the gripper joint); action: control_msgs/GripperCommand
    # goals on action_name (needs control_msgs, from a ROS 2 install); none: the gripper value is ignored
    output: Literal["position", "forward", "action", "none"] = "position"
    topic: str = "/gripper_controller/position"
    action_name: str = "/gripper_controller/gripper_cmd"
    open_position: float = 0.04
    closed_position: float = 0.0
    max_effort: float = 20.0
    # a new goal / position only when the target moved more than this (the gripper is not streamed)
    deadband: float = 1e-3

    def validate(self):
        if self.output in ("position", "forward"):
            _topic(self.topic, "gripper.topic")
        if self.output == "action":
            _topic(self.action_name, "gripper.action_name")
        for name in ("open_position", "closed_position", "max_effort", "deadband"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"gripper.{name}: must be finite, got {getattr(self, name)}")


@dataclass
class CommandTiming:
    """What both command adapters share: output rate and the safe stop on stale commands."""

    # the output is published at this rate (the newest command, or the safe stop)
    rate_hz: float = 30.0
    # without a valid /apo/command for this long: zero twist / zero velocity / hold the position
    stale_timeout: float = 0.3
    command_topic: str = topics.COMMAND

    def check(self):
        _positive(self.rate_hz, "rate_hz")
        _positive(self.stale_timeout, "stale_timeout")
        _topic(self.command_topic, "command_topic")


@dataclass
class TwistAdapterConfig(CommandTiming):
    """End-effector delta actions -> geometry_msgs/TwistStamped (MoveIt Servo, cartesian controllers).

    twist.linear = action[0:3] * linear_scale (m/s per unit), twist.angular = action[3:6] * angular_scale
    (rad/s per unit), stamped with frame_id.
    """

    output_topic: str = "/servo_node/delta_twist_cmds"
    frame_id: str = "base_link"
    linear_scale: float = 0.1
    angular_scale: float = 0.5
    action_dim: int = 7
    gripper_index: int = 6  # -1: the action has no gripper value
    gripper: GripperOutputConfig = field(default_factory=GripperOutputConfig)

    def validate(self):
        self.check()
        _topic(self.output_topic, "output_topic")
        _positive(self.linear_scale, "linear_scale")
        _positive(self.angular_scale, "angular_scale")
        if self.action_dim < 6:
            raise ConfigError(f"action_dim: an end-effector delta action has at least 6 values, got {self.action_dim}")
        if self.gripper_index != -1 and not 6 <= self.gripper_index < self.action_dim:
            raise ConfigError(f"gripper_index: -1 or in [6, {self.action_dim}), got {self.gripper_index}")


@dataclass
class JointAdapterConfig(CommandTiming):
    """Joint-space actions -> a ros2_control controller: the first len(joint_names) values are joint
    positions (rad/m) or velocities, times scale; then the gripper value at gripper_index."""

    # forward: std_msgs/Float64MultiArray (forward_command_controller); joint_trajectory:
    # trajectory_msgs/JointTrajectory with one point (joint_trajectory_controller)
    output: Literal["forward", "joint_trajectory"] = "forward"
    output_topic: str = "/forward_position_controller/commands"
    command: Literal["position", "velocity"] = "position"
    joint_names: list[str] = field(default_factory=list)
    scale: float = 1.0
    # joint_trajectory: the point's time_from_start
    time_from_start: float = 0.1
    gripper_index: int = -1
    gripper: GripperOutputConfig = field(default_factory=lambda: GripperOutputConfig(output="none"))

    @property
    def action_dim(self) -> int:
        return len(self.joint_names) + (1 if self.gripper_index >= 0 else 0)

    def validate(self):
        self.check()
        _topic(self.output_topic, "output_topic")
        if not self.joint_names:
            raise ConfigError("joint_names: list the controller's joints in its order")
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ConfigError(f"joint_names: a joint is listed twice: {self.joint_names}")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ConfigError(f"scale: must be finite and non-zero, got {self.scale}")
        _positive(self.time_from_start, "time_from_start")
        if self.gripper_index not in (-1, len(self.joint_names)):
            raise ConfigError(f"gripper_index: -1 or {len(self.joint_names)} (after the joints), got "
                              f"{self.gripper_index}")
