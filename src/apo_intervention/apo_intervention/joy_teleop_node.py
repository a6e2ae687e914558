"""Joystick teleop: /joy (sensor_msgs/Joy) -> TELEOP_ACTION while the deadman is held.

Each Joy message with the deadman held publishes one action (the joy driver's auto-repeat keeps the
stream alive while the stick is held still); letting the deadman go publishes one release (an empty
action) so the arbiter hands the robot back to the policy at its next tick. The episode buttons call
EPISODE_CONTROL asynchronously, once per press, never blocking this callback; the e-stop button
publishes true on ESTOP. Mapping and edge logic: :mod:`apo_intervention.joy_mapping`.
"""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool

from apo_core import topics
from apo_interfaces.msg import ActionCommand
from apo_interfaces.srv import EpisodeControl
from apo_intervention.config import JoyMappingConfig
from apo_intervention.joy_mapping import JoyMapping, JoyTeleopLogic
from apo_intervention.ros_common import destroy_on_error, load_node_config, publish_teleop_action
from apo_ros.node import run_node
from apo_ros.params import CallbackGuard
from apo_ros.qos import qos_for

EPISODE_REQUEST = {"start": EpisodeControl.Request.START, "success": EpisodeControl.Request.SUCCESS,
                   "failure": EpisodeControl.Request.FAILURE, "abort": EpisodeControl.Request.ABORT}


class EpisodeCaller:
    """Fire-and-forget EPISODE_CONTROL requests (shared by the joystick and keyboard teleops)."""

    def __init__(self, node: Node, instruction: str = ""):
        self.node = node
        self.instruction = instruction
        self.client = node.create_client(EpisodeControl, topics.EPISODE_CONTROL)
        self.sent: list[str] = []
        self.responses: list[tuple[str, bool, str]] = []

    def request(self, command: str) -> bool:
        if not self.client.service_is_ready():
            self.node.get_logger().warning(f"{command}: {topics.EPISODE_CONTROL} is not available; press again")
            return False
        req = EpisodeControl.Request()
        req.command = EPISODE_REQUEST[command]
        req.instruction = self.instruction if command == "start" else ""
        future = self.client.call_async(req)
        future.add_done_callback(lambda f, c=command: self._done(c, f))
        self.sent.append(command)
        return True

    def _done(self, command: str, future) -> None:
        try:
            res = future.result()
        except Exception as exc:  # service went away mid-call
            self.node.get_logger().warning(f"episode {command} failed: {exc}")
            return
        self.responses.append((command, bool(res.success), res.message))
        if res.success:
            self.node.get_logger().info(f"episode {command}: {res.message}")
        else:
            self.node.get_logger().warning(f"episode {command} refused: {res.message}")


class JoyTeleopNode(Node):
    def __init__(self, **kwargs):
        super().__init__("apo_joy_teleop", automatically_declare_parameters_from_overrides=True, **kwargs)
        self.cfg = destroy_on_error(self, lambda: load_node_config(self, JoyMappingConfig))
        self.logic = JoyTeleopLogic(JoyMapping(self.cfg))
        self.action_pub = self.create_publisher(ActionCommand, topics.TELEOP_ACTION, qos_for(topics.TELEOP_ACTION))
        self.estop_pub = self.create_publisher(Bool, topics.ESTOP, qos_for(topics.ESTOP))
        self.episodes = EpisodeCaller(self, self.cfg.instruction)
        # A Joy message that makes the mapping raise is dropped and logged; the teleop keeps running.
        self.guard = CallbackGuard(self)
        self.create_subscription(Joy, topics.JOY, self.guard.subscription(topics.JOY, self._on_joy), qos_for(topics.JOY))
        self.get_logger().info(f"joystick teleop up: deadman button {self.cfg.deadman_button}, axes {self.cfg.axis}")

    def _on_joy(self, msg: Joy) -> None:
        out = self.logic.update(list(msg.axes), list(msg.buttons))
        if out.estop:
            self.estop_pub.publish(Bool(data=True))
            self.get_logger().error("E-STOP button pressed")
        if out.action is not None:
            self._publish([float(v) for v in out.action])
        elif out.release:
            self._publish([])
        if out.problem:
            self.get_logger().warning(out.problem, throttle_duration_sec=2.0)
        for command in out.episode_commands:
            self.episodes.request(command)

    def _publish(self, action: list[float], last: bool = False) -> None:
        publish_teleop_action(self, self.action_pub, action, last)

    def on_shutdown(self) -> None:
        if self.logic.deadman_held:
            self._publish([], last=True)


def main(args=None) -> None:
    raise SystemExit(run_node(JoyTeleopNode, "apo_joy_teleop", args))


if __name__ == "__main__":
    main()
