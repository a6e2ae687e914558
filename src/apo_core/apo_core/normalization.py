"""Per-dimension action normalisation to [-1, 1] from 1st/99th percentile statistics (OpenVLA style).

``normalise(a) = clip(2 * (a - q01) / (q99 - q01) - 1, -1, 1)`` on the dimensions the mask selects;
other dimensions (typically the gripper, already in [-1, 1]) pass through unchanged.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apo_core.errors import InvalidActionError, MissingPathError

STATS_FILENAME = "action_stats.json"
# Below this range a dimension is treated as constant; normalising it would divide by ~0.
MIN_RANGE = 1e-8


def check_finite(values, what: str = "action") -> np.ndarray:
    """Return ``values`` as float64, raising InvalidActionError naming NaN/inf positions."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))
        raise InvalidActionError(
            f"{what} contains NaN or inf at index {bad[0].tolist()} (of {len(bad)} bad values)"
        )
    return arr


@dataclass
class ActionStats:
    """Percentile statistics of an action space and which dimensions to normalise."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.q01 = check_finite(self.q01, "action statistics q01").reshape(-1)
        self.q99 = check_finite(self.q99, "action statistics q99").reshape(-1)
        self.mask = np.asarray(self.mask, dtype=bool).reshape(-1)
        if not (self.q01.shape == self.q99.shape == self.mask.shape):
            raise InvalidActionError(
                f"action statistics have mismatched shapes: q01 {self.q01.shape}, q99 {self.q99.shape}, "
                f"mask {self.mask.shape}"
            )
        if np.any(self.q99 < self.q01):
            dim = int(np.flatnonzero(self.q99 < self.q01)[0])
            raise InvalidActionError(f"action statistics have q99 < q01 in dimension {dim}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, check_finite(value, f"action statistics {name}").reshape(-1))

    @property
    def dim(self) -> int:
        return int(self.q01.shape[0])

    def zero_range_dims(self) -> list[int]:
        """Masked dimensions whose percentile range is (near) zero."""
        return [int(i) for i in np.flatnonzero(self.mask & ((self.q99 - self.q01) < MIN_RANGE))]

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_actions(cls, actions, mask=None, low_pct: float = 1.0, high_pct: float = 99.0) -> ActionStats:
        """Statistics from raw actions of shape (N, D). ``mask`` defaults to all but the last dim."""
        arr = check_finite(actions, "actions")
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise InvalidActionError(f"need a non-empty (N, D) array of actions, got shape {arr.shape}")
        d = arr.shape[1]
        if mask is None:
            mask = np.ones(d, dtype=bool)
            mask[-1] = False  # gripper already in [-1, 1]
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (d,):
            raise InvalidActionError(f"mask has shape {mask.shape}, actions have {d} dimensions")
        return cls(
            q01=np.percentile(arr, low_pct, axis=0),
            q99=np.percentile(arr, high_pct, axis=0),
            mask=mask,
            mean=arr.mean(axis=0),
            std=arr.std(axis=0),
            extra={"num_samples": int(arr.shape[0])},
        )

    @classmethod
    def identity(cls, dim: int, mask=None) -> ActionStats:
        """Statistics that leave actions already in [-1, 1] unchanged."""
        return cls(q01=-np.ones(dim), q99=np.ones(dim), mask=np.ones(dim, bool) if mask is None else mask)

    # --- transforms ---------------------------------------------------------------------------
    def normalise(self, actions) -> np.ndarray:
        arr = self._check_dim(check_finite(actions, "action"))
        self._refuse_zero_range()
        rng = np.maximum(self.q99 - self.q01, MIN_RANGE)
        norm = 2.0 * (arr - self.q01) / rng - 1.0
        out = np.where(self.mask, norm, arr)
        return np.clip(out, -1.0, 1.0)

    def unnormalise(self, normalised) -> np.ndarray:
        arr = self._check_dim(check_finite(normalised, "normalised action"))
        arr = np.clip(arr, -1.0, 1.0)
        raw = 0.5 * (arr + 1.0) * (self.q99 - self.q01) + self.q01
        return np.where(self.mask, raw, arr)

    def _check_dim(self, arr: np.ndarray) -> np.ndarray:
        if arr.shape[-1:] != (self.dim,):
            raise InvalidActionError(f"action has {arr.shape[-1:] or 'no'} dimensions, statistics have {self.dim}")
        return arr

    def _refuse_zero_range(self):
        dims = self.zero_range_dims()
        if dims:
            raise InvalidActionError(
                f"action statistics have zero range (q99 == q01) in dimension(s) {dims}: the data never "
                "varies there; unmask those dimensions or collect more varied data"
            )

    # --- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}
        if self.mean is not None:
            out["mean"] = self.mean.tolist()
        if self.std is not None:
            out["std"] = self.std.tolist()
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ActionStats:
        known = {"q01", "q99", "mask", "mean", "std", "extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidActionError(f"unknown key(s) {unknown} in action statistics (expected {sorted(known)})")
        missing = sorted({"q01", "q99", "mask"} - set(data))
        if missing:
            raise InvalidActionError(f"action statistics lack key(s) {missing}")
        for key in ("q01", "q99", "mean", "std"):
            if key in data and data[key] is not None:
                vals = [float("nan") if v is None else v for v in data[key]]
                if not all(math.isfinite(float(v)) for v in vals):
                    raise InvalidActionError(f"action statistics {key} contains NaN or inf: {data[key]}")
        return cls(**{k: data.get(k) for k in known if k in data})

    def save(self, path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / STATS_FILENAME
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> ActionStats:
        path = Path(path)
        if path.is_dir():
            path = path / STATS_FILENAME
        if not path.is_file():
            raise MissingPathError(f"action statistics file not found: {path}")
        try:
            data = json.loads(path.read_text(), parse_constant=lambda c: float(c))
        except json.JSONDecodeError as exc:
            raise InvalidActionError(f"action statistics file {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)
