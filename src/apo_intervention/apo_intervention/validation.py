"""Checking one incoming action before it may ever be executed (ROS-free).

Every action that reaches the arbiter passes through :class:`ActionValidator`:

- an **empty** action is not an error: it is an input's explicit *release* ("I yield now"), which the
  joystick mapping sends when the deadman button is let go so the policy gets the robot back at the
  next control tick instead of after the input's timeout;
- a **wrong dimension** or any **NaN/inf** value rejects the whole action (a partly broken action is
  not trusted partly);
- values outside the configured per-dimension ``[low, high]`` are **clamped**; the action is still
  executed.

The outcome is returned, never raised, so the caller can count it per input and report it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from apo_core.errors import ConfigError


class Verdict(enum.Enum):
    OK = "ok"
    CLAMPED = "clamped"
    RELEASE = "release"
    REJECTED_NONFINITE = "rejected_nonfinite"
    REJECTED_DIMENSION = "rejected_dimension"

    @property
    def accepted(self) -> bool:
        return self in (Verdict.OK, Verdict.CLAMPED)

    @property
    def rejected(self) -> bool:
        return self in (Verdict.REJECTED_NONFINITE, Verdict.REJECTED_DIMENSION)


@dataclass
class Checked:
    verdict: Verdict
    # The action to use (float64, within limits) when accepted, else None.
    action: np.ndarray | None = None
    # Dimensions that were clamped (for diagnostics).
    clamped_dims: list[int] = field(default_factory=list)
    detail: str = ""


class ActionValidator:
    """Validate and clamp actions of a fixed dimension against per-dimension limits."""

    def __init__(self, low, high):
        self.low = np.asarray(low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(high, dtype=np.float64).reshape(-1)
        check_limits(self.low, self.high)
        self.dim = int(self.low.shape[0])

    def check(self, values) -> Checked:
        try:
            arr = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            return Checked(Verdict.REJECTED_NONFINITE, detail=f"not numeric: {exc}")
        if arr.size == 0:
            return Checked(Verdict.RELEASE, detail="empty action (explicit release)")
        if arr.size != self.dim:
            return Checked(Verdict.REJECTED_DIMENSION, detail=f"expected {self.dim} values, got {arr.size}")
        finite = np.isfinite(arr)
        if not finite.all():
            bad = np.flatnonzero(~finite).tolist()
            return Checked(Verdict.REJECTED_NONFINITE, detail=f"NaN/inf in dimension(s) {bad}")
        clipped = np.clip(arr, self.low, self.high)
        dims = np.flatnonzero(clipped != arr).tolist()
        if dims:
            return Checked(Verdict.CLAMPED, clipped, dims, detail=f"clamped dimension(s) {dims}")
        return Checked(Verdict.OK, clipped)

    def is_safe(self, action) -> bool:
        """Final guard before publishing: right size, finite, within limits."""
        arr = np.asarray(action, dtype=np.float64).reshape(-1)
        return (arr.size == self.dim and bool(np.all(np.isfinite(arr)))
                and bool(np.all(arr >= self.low)) and bool(np.all(arr <= self.high)))


def check_limits(low, high, where: str = "action_low/action_high") -> None:
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    if low.size == 0 or low.shape != high.shape:
        raise ConfigError(f"{where}: need two non-empty lists of equal length, got {low.size} and {high.size}")
    for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ConfigError(f"{where}[{i}]: limits must be finite")
        if lo > hi:
            raise ConfigError(f"{where}[{i}]: low {lo} is above high {hi}")
