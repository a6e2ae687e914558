"""Twist adapter: /apo/command end-effector deltas -> geometry_msgs/TwistStamped (MoveIt Servo's
delta_twist_cmds, cartesian velocity controllers), gripper -> its controller (apo_robot_adapters.command_node).

Safe stop: a zero twist every tick while no valid command is fresh (MoveIt Servo then decelerates and
halts; a velocity controller stops).
"""

from __future__ import annotations

import sys

from geometry_msgs.msg import TwistStamped

from apo_robot_adapters.command_logic import twist_from_action
from apo_robot_adapters.command_node import CommandAdapterNode
from apo_robot_adapters.config import TwistAdapterConfig
from apo_ros.node import run_node
from apo_ros.qos import qos_profile


class TwistAdapterNode(CommandAdapterNode):
    SECTION = "twist"
    CONFIG = TwistAdapterConfig

    def __init__(self, **kwargs):
        super().__init__("apo_twist_adapter", **kwargs)
        self.get_logger().info(
            f"twist adapter: {self.cfg.command_topic} -> {self.cfg.output_topic} in {self.cfg.frame_id!r}, "
            f"{self.cfg.linear_scale} m/s and {self.cfg.angular_scale} rad/s per unit, {self.cfg.rate_hz} Hz, "
            f"zero twist after {self.cfg.stale_timeout} s without a command")

    def make_output(self, cfg) -> None:
        self.pub = self.create_publisher(TwistStamped, cfg.output_topic, qos_profile("reliable", 10))

    def _twist(self, linear, angular) -> TwistStamped:
        msg = TwistStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.cfg.frame_id
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = linear
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = angular
        return msg

    def publish_command(self, values) -> None:
        self.pub.publish(self._twist(*twist_from_action(values, self.cfg.linear_scale, self.cfg.angular_scale)))

    def publish_stop(self) -> None:
        self.pub.publish(self._twist((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))


def main(args=None):
    sys.exit(run_node(TwistAdapterNode, "apo_twist_adapter", args))


if __name__ == "__main__":
    main()
