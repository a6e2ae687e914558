"""Desirability labels c_t and the K-window that derives undesirable (0) steps from takeovers.

Labels 1 (autonomous) and 2 (human) are set live by the arbiter. Label 0 marks the K autonomous steps
just before each human takeover; it is derived offline by :func:`apply_k_window` so that K can be
changed after recording. Conversion and analysis both call this one function.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

DEFAULT_K = 10


class Label(IntEnum):
    UNDESIRABLE = 0
    AUTONOMOUS = 1
    HUMAN = 2


def takeover_indices(live_labels) -> np.ndarray:
    """Step indices where a human takes over: a HUMAN step whose predecessor is not HUMAN.

    A human step at index 0 is a takeover too (the operator drove from the start).
    """
    labels = _as_live_labels(live_labels)
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    human = labels == Label.HUMAN
    starts = human & ~np.concatenate([[False], human[:-1]])
    return np.flatnonzero(starts)


def apply_k_window(live_labels, k: int = DEFAULT_K) -> np.ndarray:
    """Return labels with the K steps before each takeover set to UNDESIRABLE.

    - only AUTONOMOUS steps are relabelled; HUMAN steps never change (back-to-back interventions
      therefore keep their human steps);
    - the window never crosses the start of the episode (a takeover at step t < K marks steps 0..t-1);
    - k = 0 leaves the labels as they are.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"K-window must be a non-negative integer, got {k!r}")
    labels = _as_live_labels(live_labels).copy()
    for t in takeover_indices(labels):
        lo = max(0, int(t) - int(k))
        window = labels[lo:t]
        window[window == Label.AUTONOMOUS] = Label.UNDESIRABLE
    return labels


def label_counts(labels) -> dict[str, int]:
    """Histogram of labels by name (UNDESIRABLE/AUTONOMOUS/HUMAN)."""
    arr = np.asarray(labels, dtype=np.int64)
    return {lab.name: int(np.sum(arr == lab)) for lab in Label}


def _as_live_labels(live_labels) -> np.ndarray:
    arr = np.asarray(live_labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("labels must be integers 0, 1 or 2")
    arr = arr.astype(np.int64)
    bad = ~np.isin(arr, [int(v) for v in Label])
    if np.any(bad):
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"label {arr[first]} at step {first} is not one of 0, 1, 2")
    return arr
