"""Where a frame's time goes inside the policy node, over the last frames: a rolling window per stage.

The inference thread only appends numbers (a bounded deque append: no sorting, no locks, no logging on
the hot path); the diagnostics timer summarises them (median, p95, max) on the executor thread. Python
garbage collections are timed too (``gc.callbacks``), since a full collection of a process holding a
model stops every thread at once.
"""

from __future__ import annotations

import gc
import time
from collections import deque

import numpy as np

# arrival: camera stamp -> image callback; wait: callback -> inference thread takes it; decode: -> image
# array; predict: -> action; publish: -> handed to DDS
STAGES = ("arrival", "wait", "decode", "predict", "publish")


class StageTimes:
    def __init__(self, window: int = 1000):
        self._stages = {name: deque(maxlen=window) for name in STAGES}
        self._gc = deque(maxlen=window)  # duration (ms) of each recent collection
        self.gc_collections = 0
        self._gc_started: float | None = None

    def record(self, **ms: float) -> None:
        """One frame's stage durations in milliseconds (only the stages it reached)."""
        for name, value in ms.items():
            self._stages[name].append(value)

    def summary(self) -> dict[str, str]:
        """``<stage>_ms`` -> "median/p95/max" over the window, plus the garbage collector's pauses."""
        out = {}
        for name, values in (*self._stages.items(), ("gc", self._gc)):
            data = np.fromiter(tuple(values), dtype=float)  # a snapshot: the deque may grow meanwhile
            out[f"{name}_ms"] = (f"{np.median(data):.1f}/{np.percentile(data, 95):.1f}/{data.max():.1f}"
                                 if data.size else "-")
        out["gc_collections"] = str(self.gc_collections)
        return out

    # --- garbage collector pauses -------------------------------------------------------------
    def watch_gc(self) -> None:
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self._gc.append((time.perf_counter() - self._gc_started) * 1000)
            self._gc_started = None
            self.gc_collections += 1
