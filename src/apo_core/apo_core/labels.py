"""Desirability labels c_t and the K-window that derives undesirable (0) steps from takeovers.

Labels 1 (autonomous) and 2 (human) are set live by the arbiter. Label 0 marks the K autonomous steps
just before each human takeover; it is derived offline by :func:`apply_k_window` so that K can be
changed after recording. Conversion, training and analysis all call this one function.

The arbiter also labels HOLD and E-STOP steps 1 (nobody drove; the robot was held still), so the
labels alone cannot tell them from the policy's own steps. Given the step modes
(``InterventionMode.MODE_*``, the HDF5 ``modes`` dataset), the K-window counts only the steps the
policy executed, as the paper defines it: six HOLD ticks just before a takeover must not use up six
of the K undesirable steps.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from apo_core.errors import ApoError

DEFAULT_K = 10
# InterventionMode values (apo_interfaces/msg/InterventionMode.msg), mirrored so that this module needs no ROS.
MODE_AUTONOMOUS, MODE_HUMAN, MODE_HOLD, MODE_ESTOP = 0, 1, 2, 3
MODES = (MODE_AUTONOMOUS, MODE_HUMAN, MODE_HOLD, MODE_ESTOP)


class LabelError(ApoError, ValueError):
    """Labels, modes or K are not usable (the message names the step or value at fault)."""


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


def apply_k_window(live_labels, k: int = DEFAULT_K, modes=None) -> np.ndarray:
    """Return labels with the K policy steps before each takeover set to UNDESIRABLE.

    - a takeover is a HUMAN step whose predecessor is not HUMAN (:func:`takeover_indices`);
    - the window counts back K *policy* steps: AUTONOMOUS steps, and, when ``modes`` is given, only
      those executed in ``MODE_AUTONOMOUS``. HOLD / E-STOP steps are skipped over (neither counted
      nor relabelled), so a pause just before a takeover does not shrink the window;
    - HUMAN steps never change and are not counted (back-to-back interventions keep their human
      steps; a window that reaches back over an earlier intervention only re-marks steps that
      intervention's own window already marked);
    - the window never crosses the start of the episode (fewer than K policy steps before a
      takeover: all of them are marked);
    - k = 0 leaves the labels as they are.

    Without ``modes`` every label-1 step counts; that is the same as marking the label-1 steps among
    the K positions before each takeover (the form used before modes were taken into account).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise LabelError(f"K-window must be a non-negative integer, got {k!r}")
    labels = _as_live_labels(live_labels).copy()
    policy = labels == Label.AUTONOMOUS
    if modes is not None:
        policy &= _as_modes(modes, labels) == MODE_AUTONOMOUS
    if k == 0 or not policy.any():
        return labels
    steps = np.flatnonzero(policy)  # the policy's own steps, ascending
    for t in takeover_indices(labels):
        end = int(np.searchsorted(steps, t))  # policy steps strictly before the takeover
        labels[steps[max(0, end - int(k)): end]] = Label.UNDESIRABLE
    return labels


def label_counts(labels) -> dict[str, int]:
    """Histogram of labels by name (UNDESIRABLE/AUTONOMOUS/HUMAN)."""
    arr = np.asarray(labels, dtype=np.int64)
    return {lab.name: int(np.sum(arr == lab)) for lab in Label}


def _as_live_labels(live_labels) -> np.ndarray:
    arr = np.asarray(live_labels)
    if arr.ndim != 1:
        raise LabelError(f"labels must be a 1-D sequence, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise LabelError("labels must be integers 0, 1 or 2")
    arr = arr.astype(np.int64)
    bad = ~np.isin(arr, [int(v) for v in Label])
    if np.any(bad):
        first = int(np.flatnonzero(bad)[0])
        raise LabelError(f"label {arr[first]} at step {first} is not one of 0, 1, 2")
    return arr


def _as_modes(modes, labels: np.ndarray) -> np.ndarray:
    """Step modes as int64, checked against the labels (the arbiter labels a step 2 iff it is HUMAN)."""
    arr = np.asarray(modes)
    if arr.shape != labels.shape:
        raise LabelError(f"modes must have one entry per step: {arr.shape} modes for {labels.shape[0]} labels")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise LabelError("modes must be integers 0 (autonomous), 1 (human), 2 (hold) or 3 (e-stop)")
    arr = arr.astype(np.int64)
    bad = ~np.isin(arr, MODES)
    if np.any(bad):
        first = int(np.flatnonzero(bad)[0])
        raise LabelError(f"mode {arr[first]} at step {first} is not one of 0 (autonomous), 1 (human), 2 (hold), "
                         "3 (e-stop)")
    clash = (arr == MODE_HUMAN) != (labels == Label.HUMAN)
    if np.any(clash):
        first = int(np.flatnonzero(clash)[0])
        raise LabelError(f"step {first} has label {labels[first]} but mode {arr[first]}: a step is labelled 2 "
                         "(human) exactly when its mode is 1 (human)")
    return arr
