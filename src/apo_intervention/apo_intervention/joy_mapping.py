"""Joystick <-> action mapping (ROS-free), used by the joystick teleop and, inverted, by the operator.

Forward (what a human's stick does): ``action[i] = offset[i] + scale[i] * deadzoned(axes[axis[i]])``.
The deadzone is *scaled*: ``|x| < dz`` reads 0 and ``[dz, 1]`` maps onto ``[0, 1]``, so the output is
continuous and the mapping can be inverted exactly. Inverse (what the scripted operator does with the
expert's action): ``axes[axis[i]] = undeadzoned((action[i] - offset[i]) / scale[i])``, clipped to the
physical stick range [-1, 1] (such dimensions are reported as saturated) -- so the operator's
corrections go through exactly the path and the limits a human's would.

:class:`JoyTeleopLogic` adds the deadman and the edge-triggered buttons: an action is produced only
while the deadman is held; letting it go produces one *release* (the arbiter hands the robot back at
its next tick); episode and e-stop buttons fire once per press.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from apo_intervention.config import JoyMappingConfig

EPISODE_BUTTONS = {"start_button": "start", "success_button": "success", "failure_button": "failure",
                   "abort_button": "abort"}


def apply_deadzone(x: float, dz: float) -> float:
    x = min(1.0, max(-1.0, float(x)))
    if abs(x) < dz or x == 0.0:
        return 0.0
    return float(np.sign(x)) * (abs(x) - dz) / (1.0 - dz)


def invert_deadzone(y: float, dz: float) -> float:
    """Stick value that :func:`apply_deadzone` maps to ``y`` (``y`` clipped to [-1, 1])."""
    y = min(1.0, max(-1.0, float(y)))
    if y == 0.0:
        return 0.0
    return float(np.sign(y)) * (dz + abs(y) * (1.0 - dz))


class JoyMapping:
    def __init__(self, cfg: JoyMappingConfig):
        self.cfg = cfg
        self.axis = list(cfg.axis)
        self.scale = np.asarray(cfg.scale, dtype=np.float64)
        self.offset = np.asarray(cfg.offset, dtype=np.float64)
        self.num_axes = max([a + 1 for a in self.axis if a >= 0], default=0)
        self.num_buttons = max(getattr(cfg, k) for k in cfg.button_keys()) + 1

    def axes_to_action(self, axes) -> np.ndarray:
        """Action from a Joy message's axes; raises ValueError naming a missing axis."""
        if len(axes) < self.num_axes:
            raise ValueError(f"Joy message has {len(axes)} axes, the mapping reads axis {self.num_axes - 1}")
        out = self.offset.copy()
        for i, a in enumerate(self.axis):
            if a >= 0:
                out[i] += self.scale[i] * apply_deadzone(axes[a], self.cfg.deadzone)
        return out

    def action_to_axes(self, action) -> tuple[list[float], list[int]]:
        """Axes (length ``num_axes``) a human would hold to command ``action``; and the saturated dims.

        Unmapped dimensions cannot be commanded; they count as saturated when ``action`` differs from
        their offset.
        """
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.size != len(self.axis):
            raise ValueError(f"expected a {len(self.axis)}-D action, got {action.size} values")
        axes = [0.0] * self.num_axes
        saturated = []
        for i, a in enumerate(self.axis):
            want = action[i] - self.offset[i]
            if a < 0:
                if abs(want) > 1e-9:
                    saturated.append(i)
                continue
            y = want / self.scale[i]
            if not np.isfinite(y):
                y = 0.0
                saturated.append(i)
            elif abs(y) > 1.0:
                saturated.append(i)
            axes[a] = invert_deadzone(y, self.cfg.deadzone)
        return axes, saturated

    def buttons(self, held: dict[str, bool] | None = None) -> list[int]:
        """A buttons array with the named buttons (config keys, e.g. ``deadman_button``) pressed."""
        out = [0] * self.num_buttons
        for key, pressed in (held or {}).items():
            index = getattr(self.cfg, key)
            if pressed and index >= 0:
                out[index] = 1
        return out


def _pressed(buttons, index: int) -> bool:
    return 0 <= index < len(buttons) and bool(buttons[index])


@dataclass
class JoyOutput:
    # Action to publish on TELEOP_ACTION (deadman held and axes valid), else None.
    action: np.ndarray | None = None
    # The deadman was just let go: publish one release (empty action).
    release: bool = False
    # Episode commands to send, once per press: "start" / "success" / "failure" / "abort".
    episode_commands: list[str] = field(default_factory=list)
    estop: bool = False
    problem: str = ""


class JoyTeleopLogic:
    def __init__(self, mapping: JoyMapping):
        self.mapping = mapping
        self._prev: dict[str, bool] = {k: False for k in mapping.cfg.button_keys()}

    @property
    def deadman_held(self) -> bool:
        return self._prev["deadman_button"]

    def update(self, axes, buttons) -> JoyOutput:
        cfg = self.mapping.cfg
        now = {k: _pressed(buttons, getattr(cfg, k)) for k in cfg.button_keys()}
        out = JoyOutput()
        for key, command in EPISODE_BUTTONS.items():
            if now[key] and not self._prev[key]:
                out.episode_commands.append(command)
        out.estop = now["estop_button"] and not self._prev["estop_button"]
        if now["deadman_button"]:
            try:
                out.action = self.mapping.axes_to_action(axes)
            except ValueError as exc:
                out.problem = str(exc)
        elif self._prev["deadman_button"]:
            out.release = True
        self._prev = now
        return out
