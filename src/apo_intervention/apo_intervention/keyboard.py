"""Keyboard -> action mapping for the terminal teleop (ROS-free).

A terminal reports key presses, not key releases, so the keyboard cannot have a true deadman. Its
equivalent is the takeover toggle (``t``): while takeover is on, the keyboard drives the robot (it
publishes a zero-motion action when no motion key is down, so the robot holds still under the
human's control); toggling it off sends one release and the policy gets the robot back. A motion key
commands ``speed[dim]`` on its dimension for ``key_hold_time`` seconds; the terminal's auto-repeat
refreshes it while the key is held. The gripper is sticky (``g`` close / ``h`` open) and starts from
the last executed gripper value, so taking over never opens the gripper on its own.
"""

from __future__ import annotations

import numpy as np

from apo_intervention.config import KeyboardConfig

# key -> (dimension, sign)
MOTION_KEYS = {
    "w": (0, +1), "s": (0, -1),
    "a": (1, +1), "d": (1, -1),
    "r": (2, +1), "f": (2, -1),
    "u": (3, +1), "o": (3, -1),
    "i": (4, +1), "k": (4, -1),
    "j": (5, +1), "l": (5, -1),
}
COMMAND_KEYS = {
    "t": "toggle_takeover", " ": "stop", "g": "gripper_close", "h": "gripper_open",
    "n": "start", "y": "success", "x": "failure", "b": "abort",
    "e": "estop", "?": "help", "q": "quit", "\x03": "quit",
}
EPISODE_COMMANDS = ("start", "success", "failure", "abort")

HELP = """\
APO-ROS keyboard teleop
  t        take over / hand back to the policy (your keys drive only while taken over)
  w / s    +x / -x          a / d   +y / -y          r / f   +z / -z
  u / o    +roll / -roll    i / k   +pitch / -pitch  j / l   +yaw / -yaw
  g / h    close / open gripper (sticky)             space   stop all motion
  n        start episode    y  success    x  failure    b  abort
  e        E-STOP (release with the arbiter's set_estop service)
  ?        this help        q / Ctrl-C   quit (hands back first)
"""


class KeyboardMapping:
    def __init__(self, cfg: KeyboardConfig):
        self.cfg = cfg
        self.speed = np.asarray(cfg.speed, dtype=np.float64)
        self.takeover = False
        self._until = np.full(cfg.action_dim, -np.inf)
        self._sign = np.zeros(cfg.action_dim)
        g = cfg.gripper_index
        self._gripper = -self.speed[g] if g >= 0 else 0.0

    def set_gripper(self, value: float) -> None:
        """Follow the executed gripper value while not in takeover (the takeover starts from it)."""
        if self.cfg.gripper_index >= 0 and not self.takeover:
            self._gripper = float(value)

    def handle_key(self, key: str, now: float) -> list[str]:
        """Apply one key press; returns the commands for the node to carry out.

        Possible commands: takeover_on, takeover_off (send a release), start, success, failure, abort,
        estop, help, quit, ignored (a motion key outside takeover), unknown.
        """
        if key in MOTION_KEYS:
            if not self.takeover:
                return ["ignored"]
            dim, sign = MOTION_KEYS[key]
            self._sign[dim] = sign
            self._until[dim] = now + self.cfg.key_hold_time
            return []
        command = COMMAND_KEYS.get(key.lower() if len(key) == 1 and key.isalpha() else key)
        if command is None:
            return ["unknown"]
        if command == "toggle_takeover":
            self.takeover = not self.takeover
            self._until[:] = -np.inf
            return ["takeover_on" if self.takeover else "takeover_off"]
        if command == "stop":
            self._until[:] = -np.inf
            return []
        if command in ("gripper_close", "gripper_open"):
            g = self.cfg.gripper_index
            if g >= 0 and self.takeover:
                self._gripper = self.speed[g] * (1.0 if command == "gripper_close" else -1.0)
                return []
            return ["ignored"]
        if command == "quit" and self.takeover:
            self.takeover = False
            return ["takeover_off", "quit"]
        return [command]

    def action(self, now: float) -> np.ndarray | None:
        """The action to publish now, or None outside takeover."""
        if not self.takeover:
            return None
        live = self._until > now
        out = np.where(live, self._sign * self.speed, 0.0)
        if self.cfg.gripper_index >= 0:
            out[self.cfg.gripper_index] = self._gripper
        return out
