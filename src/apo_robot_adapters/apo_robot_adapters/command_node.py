"""What the two command adapters share: /apo/command in, a fixed-rate output with a safe stop, the gripper.

Every ``1/rate_hz`` s the subclass's ``publish_command(values)`` gets the newest valid command, or
``publish_stop()`` once no valid command has come for ``stale_timeout`` s (the arbiter stopped, the
network dropped, or the input was bad). An ActionCommand with the wrong length or a NaN is refused with a
throttled warning and counted (``refused``); it never reaches the robot and never stops the node.
A HOLD command of the arbiter (source SOURCE_HOLD: zeros, meant as "do not move") is the safe stop at
once rather than a command: for joint positions, zeros would be a target, not a pause. The gripper is
then left where it is.
"""

from __future__ import annotations

import time

from rclpy.node import Node
from std_msgs.msg import Float64, Float64MultiArray

from apo_core import topics
from apo_core.errors import ConfigError
from apo_interfaces.msg import ActionCommand
from apo_robot_adapters.command_logic import CommandLatch, GripperDeadband, check_action, gripper_target
from apo_robot_adapters.node_config import load_adapter_config
from apo_ros.node import build_or_destroy
from apo_ros.qos import qos_for, qos_profile


class CommandAdapterNode(Node):
    SECTION = ""
    CONFIG = None

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        build_or_destroy(self, self._build)

    def _build(self):
        self.cfg = cfg = load_adapter_config(self, self.CONFIG, self.SECTION)
        self.latch = CommandLatch(cfg.stale_timeout)
        self.refused = 0
        self.stopped = True  # no command yet: the safe stop
        self._gripper_deadband = GripperDeadband(cfg.gripper.deadband)
        self._gripper_pub = self._gripper_client = None
        if cfg.gripper_index >= 0 and cfg.gripper.output in ("position", "forward"):
            msg_type = Float64 if cfg.gripper.output == "position" else Float64MultiArray
            self._gripper_pub = self.create_publisher(msg_type, cfg.gripper.topic, qos_profile("reliable", 10))
        elif cfg.gripper_index >= 0 and cfg.gripper.output == "action":
            self._gripper_client = make_gripper_client(self, cfg.gripper.action_name)
        self.make_output(cfg)
        self.create_subscription(ActionCommand, cfg.command_topic, self._on_command, qos_for(topics.COMMAND))
        self.create_timer(1.0 / cfg.rate_hz, self._tick)

    # subclasses
    def make_output(self, cfg) -> None:
        raise NotImplementedError

    def action_dim(self) -> int:
        return self.cfg.action_dim

    def publish_command(self, values: list[float]) -> None:
        raise NotImplementedError

    def publish_stop(self) -> None:
        raise NotImplementedError

    # shared
    def _on_command(self, msg: ActionCommand) -> None:
        if msg.source == ActionCommand.SOURCE_HOLD:
            self.latch.clear()
            return
        checked = check_action(msg.action, self.action_dim())
        if checked.values is None:
            self.refused += 1
            self.get_logger().warning(f"command refused ({checked.problem}): not sent to the robot",
                                      throttle_duration_sec=2.0)
            return
        self.latch.update(checked.values, time.monotonic())

    def _tick(self) -> None:
        values = self.latch.fresh(time.monotonic())
        if values is None:
            if not self.stopped:
                self.get_logger().warning(f"no valid {self.cfg.command_topic} for {self.cfg.stale_timeout} s: "
                                          "safe stop")
            self.stopped = True
            self.publish_stop()
            return
        self.stopped = False
        self.publish_command(values)
        if self.cfg.gripper_index >= 0:
            self._send_gripper(values[self.cfg.gripper_index])

    def _send_gripper(self, value: float) -> None:
        g = self.cfg.gripper
        target = gripper_target(value, g.open_position, g.closed_position)
        if not self._gripper_deadband.due(target):
            return
        if self._gripper_pub is not None:
            forward = self.cfg.gripper.output == "forward"
            self._gripper_pub.publish(Float64MultiArray(data=[target]) if forward else Float64(data=target))
        elif self._gripper_client is not None:
            from control_msgs.action import GripperCommand

            goal = GripperCommand.Goal()
            goal.command.position, goal.command.max_effort = target, g.max_effort
            self._gripper_client.send_goal_async(goal)


def make_gripper_client(node, action_name: str):
    """An action client for control_msgs/GripperCommand; ConfigError where control_msgs is not installed."""
    try:
        from control_msgs.action import GripperCommand
        from rclpy.action import ActionClient
    except ImportError as exc:
        raise ConfigError("gripper.output action needs control_msgs (a ROS 2 install: "
                          "ros-<distro>-control-msgs); use gripper.output position otherwise") from exc
    return ActionClient(node, GripperCommand, action_name)
