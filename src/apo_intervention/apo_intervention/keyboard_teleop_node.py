"""Terminal keyboard teleop, the joystick's stand-in: same outputs (TELEOP_ACTION, EPISODE_CONTROL, ESTOP).

Run it in a terminal (``apo_keyboard_teleop``); it puts the terminal in cbreak mode and restores it on
exit. ``t`` toggles takeover (the keyboard's deadman, see :mod:`apo_intervention.keyboard`), ``?``
prints the help. While taken over it publishes at ``publish_rate_hz``; handing back publishes one
release. It follows COMMAND so that a takeover starts from the gripper value being executed.
"""

from __future__ import annotations

import math
import os
import select
import sys
import threading
import time

from rclpy.node import Node
from std_msgs.msg import Bool

from apo_core import topics
from apo_interfaces.msg import ActionCommand
from apo_intervention.config import KeyboardConfig
from apo_intervention.joy_teleop_node import EpisodeCaller
from apo_intervention.keyboard import EPISODE_COMMANDS, HELP, KeyboardMapping
from apo_intervention.ros_common import destroy_on_error, load_node_config, publish_teleop_action
from apo_ros.node import run_node
from apo_ros.params import CallbackGuard
from apo_ros.qos import qos_for


class KeyboardTeleopNode(Node):
    def __init__(self, read_terminal: bool = True, **kwargs):
        super().__init__("apo_keyboard_teleop", automatically_declare_parameters_from_overrides=True, **kwargs)
        self.cfg = destroy_on_error(self, lambda: load_node_config(self, KeyboardConfig))
        self.mapping = KeyboardMapping(self.cfg)
        self._lock = threading.Lock()
        self.action_pub = self.create_publisher(ActionCommand, topics.TELEOP_ACTION, qos_for(topics.TELEOP_ACTION))
        self.estop_pub = self.create_publisher(Bool, topics.ESTOP, qos_for(topics.ESTOP))
        self.episodes = EpisodeCaller(self, self.cfg.instruction)
        self.guard = CallbackGuard(self)
        self.create_subscription(ActionCommand, topics.COMMAND, self.guard.subscription(topics.COMMAND, self._on_command),
                                 qos_for(topics.COMMAND))
        self.create_timer(1.0 / self.cfg.publish_rate_hz, self._tick)
        self.quit = threading.Event()
        self._reader = None
        if read_terminal:
            self._reader = threading.Thread(target=self._read_keys, daemon=True)
            self._reader.start()

    def _on_command(self, msg: ActionCommand) -> None:
        g = self.cfg.gripper_index
        # A non-finite gripper value would turn every action of the next takeover into a rejected one.
        if 0 <= g < len(msg.action) and math.isfinite(msg.action[g]):
            with self._lock:
                self.mapping.set_gripper(msg.action[g])

    def _tick(self) -> None:
        with self._lock:
            action = self.mapping.action(time.monotonic())
        if action is not None:
            self._publish([float(v) for v in action])

    def handle_key(self, key: str) -> list[str]:
        """Apply one key (from the terminal thread, or a test) and carry out what it asks."""
        with self._lock:
            commands = self.mapping.handle_key(key, time.monotonic())
        for command in commands:
            if command == "takeover_on":
                self._say("takeover ON: your keys drive the robot (t hands back)")
            elif command == "takeover_off":
                self._publish([])
                self._say("takeover OFF: the policy drives")
            elif command in EPISODE_COMMANDS:
                self.episodes.request(command)
            elif command == "estop":
                self.estop_pub.publish(Bool(data=True))
                self._say(f"E-STOP sent; release with {topics.ESTOP_SERVICE}")
            elif command == "help":
                self._say(HELP)
            elif command == "ignored":
                self._say("press t to take over first")
            elif command == "quit":
                self.quit.set()
        return commands

    def _publish(self, action: list[float], last: bool = False) -> None:
        publish_teleop_action(self, self.action_pub, action, last)

    @staticmethod
    def _say(text: str) -> None:
        sys.stdout.write(text.replace("\n", "\r\n") + "\r\n")
        sys.stdout.flush()

    def _read_keys(self) -> None:
        import termios
        import tty

        fd = sys.stdin.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            self._say(HELP)
            while not self.quit.is_set():
                ready, _, _ = select.select([fd], [], [], 0.1)
                if ready:
                    key = os.read(fd, 1).decode(errors="ignore")
                    if key:
                        self.handle_key(key)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)

    def on_shutdown(self) -> None:
        self.quit.set()
        if self.mapping.takeover:
            self._publish([], last=True)
        if self._reader is not None:
            self._reader.join(timeout=1.0)  # restores the terminal


def _make_node():
    if not sys.stdin.isatty():
        from apo_core.errors import ApoError

        raise ApoError("apo_keyboard_teleop needs an interactive terminal on stdin")
    return KeyboardTeleopNode()


def main(args=None) -> None:
    raise SystemExit(run_node(_make_node, "apo_keyboard_teleop", args, should_stop=lambda n: n.quit.is_set()))


if __name__ == "__main__":
    main()
