"""ROS-free decisions of the command adapters: is an action usable, is it stale, what to send.

An action with the wrong length or a non-finite value is refused (the adapter then behaves as if no
command had come: after ``stale_timeout`` the safe stop), never passed on and never a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class CheckedCommand:
    values: list[float] | None  # None: refused
    problem: str = ""


def check_action(values, dim: int) -> CheckedCommand:
    """``values`` as floats if it has ``dim`` finite numbers, else None and why."""
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        return CheckedCommand(None, f"not numbers: {exc}")
    if len(floats) != dim:
        return CheckedCommand(None, f"expected {dim} values, got {len(floats)}")
    bad = [i for i, v in enumerate(floats) if not math.isfinite(v)]
    if bad:
        return CheckedCommand(None, f"non-finite value(s) at index {bad}")
    return CheckedCommand(floats)


class CommandLatch:
    """The newest valid command and when it came (monotonic seconds); stale after ``timeout``."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._values: list[float] | None = None
        self._at = -math.inf

    def update(self, values: list[float], now: float) -> None:
        self._values, self._at = list(values), now

    def clear(self) -> None:
        """Forget the command: the safe stop from now on (the arbiter said hold)."""
        self._values = None

    def fresh(self, now: float) -> list[float] | None:
        """The command while it is younger than the timeout, else None (the safe stop)."""
        if self._values is None or now - self._at > self.timeout:
            return None
        return self._values


def twist_from_action(action: list[float], linear_scale: float, angular_scale: float
                      ) -> tuple[list[float], list[float]]:
    """(linear m/s, angular rad/s) from an end-effector delta action's first six values."""
    return [v * linear_scale for v in action[:3]], [v * angular_scale for v in action[3:6]]


def gripper_target(value: float, open_position: float, closed_position: float) -> float:
    """Gripper action (-1 open .. +1 close, clipped) -> the controller's position, linearly."""
    closing = (min(max(value, -1.0), 1.0) + 1.0) / 2.0
    return open_position + closing * (closed_position - open_position)


class GripperDeadband:
    """Pass a gripper target on only when it moved more than ``deadband`` since the last one sent."""

    def __init__(self, deadband: float):
        self.deadband = deadband
        self.last: float | None = None

    def due(self, target: float) -> bool:
        if self.last is not None and abs(target - self.last) <= self.deadband:
            return False
        self.last = target
        return True
