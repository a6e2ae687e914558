"""Joint adapter: /apo/command joint-space actions -> a ros2_control controller: std_msgs/Float64MultiArray
(forward_command_controller: positions or velocities) or trajectory_msgs/JointTrajectory (one point,
joint_trajectory_controller); gripper -> its controller (apo_robot_adapters.command_node).

Safe stop when no valid command is fresh: velocity commands -> zeros every tick; position commands ->
nothing more is sent, so the controller holds the last target (sending the measured position instead
would need the joint states and could jump when they lag).
"""

from __future__ import annotations

import sys

from builtin_interfaces.msg import Duration
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from apo_robot_adapters.command_node import CommandAdapterNode
from apo_robot_adapters.config import JointAdapterConfig
from apo_ros.node import run_node
from apo_ros.qos import qos_profile


class JointAdapterNode(CommandAdapterNode):
    SECTION = "joint"
    CONFIG = JointAdapterConfig

    def __init__(self, **kwargs):
        super().__init__("apo_joint_adapter", **kwargs)
        c = self.cfg
        self.get_logger().info(
            f"joint adapter: {c.command_topic} ({c.action_dim} values: {c.command}s of {c.joint_names}"
            f"{' + gripper' if c.gripper_index >= 0 else ''}) -> {c.output} on {c.output_topic}, {c.rate_hz} Hz")

    def make_output(self, cfg) -> None:
        msg_type = JointTrajectory if cfg.output == "joint_trajectory" else Float64MultiArray
        self.pub = self.create_publisher(msg_type, cfg.output_topic, qos_profile("reliable", 10))

    def _message(self, joints: list[float]):
        if self.cfg.output == "forward":
            return Float64MultiArray(data=joints)
        seconds = self.cfg.time_from_start
        point = JointTrajectoryPoint(time_from_start=Duration(sec=int(seconds), nanosec=int(seconds % 1 * 1e9)))
        if self.cfg.command == "position":
            point.positions = joints
        else:
            point.velocities = joints
        # header stamp left zero: the controller starts the point on receipt
        return JointTrajectory(joint_names=list(self.cfg.joint_names), points=[point])

    def publish_command(self, values) -> None:
        n = len(self.cfg.joint_names)
        self.pub.publish(self._message([v * self.cfg.scale for v in values[:n]]))

    def publish_stop(self) -> None:
        if self.cfg.command == "velocity":
            self.pub.publish(self._message([0.0] * len(self.cfg.joint_names)))


def main(args=None):
    sys.exit(run_node(JointAdapterNode, "apo_joint_adapter", args))


if __name__ == "__main__":
    main()
