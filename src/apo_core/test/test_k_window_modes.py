"""The K-window counts the policy's own steps: HOLD / E-STOP steps before a takeover are skipped over."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apo_core.errors import ApoError
from apo_core.labels import (
    MODE_AUTONOMOUS,
    MODE_ESTOP,
    MODE_HOLD,
    MODE_HUMAN,
    Label,
    apply_k_window,
    takeover_indices,
)

A, H, U = Label.AUTONOMOUS, Label.HUMAN, Label.UNDESIRABLE
AUTO, HUM, HOLD, ESTOP = MODE_AUTONOMOUS, MODE_HUMAN, MODE_HOLD, MODE_ESTOP


def test_six_hold_steps_before_a_takeover_leave_ten_undesirable_steps():
    # 20 policy steps, the arbiter holds for 6 ticks (every input stale), then the human takes over.
    live = [A] * 20 + [A] * 6 + [H] * 5
    modes = [AUTO] * 20 + [HOLD] * 6 + [HUM] * 5
    out = apply_k_window(live, 10, modes=modes)
    assert int(np.sum(out == U)) == 10
    assert out.tolist() == [A] * 10 + [U] * 10 + [A] * 6 + [H] * 5  # HOLD steps keep label 1
    # Without the modes the hold ticks look like policy steps and take 6 of the 10 places.
    assert int(np.sum(apply_k_window(live, 10)[:20] == U)) == 4


def test_estop_and_hold_interleaved_are_skipped():
    live = [A] * 4 + [A, A] + [A] * 3 + [A] + [H] * 2
    modes = [AUTO] * 4 + [ESTOP, ESTOP] + [AUTO] * 3 + [HOLD] + [HUM] * 2
    out = apply_k_window(live, 5, modes=modes)
    assert out.tolist() == [A, A, U, U] + [A, A] + [U] * 3 + [A] + [H, H]


def test_window_never_crosses_the_episode_start_with_modes():
    live = [A] * 3 + [A] * 4 + [H] * 2
    modes = [AUTO] * 3 + [HOLD] * 4 + [HUM] * 2
    assert apply_k_window(live, 10, modes=modes).tolist() == [U] * 3 + [A] * 4 + [H] * 2


def test_only_hold_before_takeover_marks_nothing():
    live = [A] * 5 + [H] * 2
    modes = [HOLD] * 5 + [HUM] * 2
    assert apply_k_window(live, 10, modes=modes).tolist() == live


def test_back_to_back_interventions_with_modes():
    live = [A] * 6 + [H] * 2 + [A] * 3 + [H] * 2
    modes = [AUTO] * 6 + [HUM] * 2 + [AUTO, HOLD, AUTO] + [HUM] * 2
    out = apply_k_window(live, 3, modes=modes)
    # first takeover: steps 3-5; second: the 2 policy steps 8 and 10 and one more reaching back to 5
    assert out.tolist() == [A, A, A, U, U, U, H, H, U, A, U, H, H]


def test_modes_that_only_mirror_the_labels_change_nothing():
    live = [A] * 4 + [H] * 3 + [A] * 2 + [H] * 3
    modes = [HUM if x == H else AUTO for x in live]
    assert apply_k_window(live, 10, modes=modes).tolist() == apply_k_window(live, 10).tolist()


def test_bad_modes_are_rejected_with_the_step():
    with pytest.raises(ApoError, match="mode 7 at step 1"):
        apply_k_window([A, A, H], 2, modes=[AUTO, 7, HUM])
    with pytest.raises(ApoError, match=r"\(2,\) modes for 3 labels"):
        apply_k_window([A, A, H], 2, modes=[AUTO, HUM])
    with pytest.raises(ApoError, match="step 2 has label 2 but mode 0"):
        apply_k_window([A, A, H], 2, modes=[AUTO, AUTO, AUTO])
    with pytest.raises(ValueError, match="step 0 has label 1 but mode 1"):
        apply_k_window([A, A, H], 2, modes=[HUM, AUTO, HUM])


def _episode():
    """(live labels, modes): policy, hold and e-stop stretches with human interventions in between."""
    seg = st.tuples(st.sampled_from(["auto", "human", "hold", "estop"]), st.integers(1, 8))
    return st.lists(seg, max_size=12).map(_expand)


def _expand(segments):
    live, modes = [], []
    code = {"auto": (A, AUTO), "human": (H, HUM), "hold": (A, HOLD), "estop": (A, ESTOP)}
    for kind, n in segments:
        lab, mode = code[kind]
        live += [lab] * n
        modes += [mode] * n
    return np.array(live, dtype=np.int64), np.array(modes, dtype=np.int64)


@given(_episode(), st.integers(0, 15))
def test_k_window_with_modes_properties(episode, k):
    live, modes = episode
    out = apply_k_window(live, k, modes=modes)
    assert out.shape == live.shape
    # human steps and hold / e-stop steps are never touched
    assert np.all(out[live == H] == H)
    assert np.all(out[modes >= HOLD] == live[modes >= HOLD])
    assert np.all(np.isin(out[modes == AUTO], [A, U]))
    # a policy step is undesirable iff a takeover follows with fewer than k policy steps in between
    policy = np.flatnonzero(modes == AUTO)
    starts = takeover_indices(live)
    for t in policy:
        expect = any(int(np.sum((policy > t) & (policy < s))) < k for s in starts if s > t)
        assert (out[t] == U) == expect, (t, live.tolist(), modes.tolist(), k)
    # dropping the hold / e-stop steps and applying the plain window gives the same labels
    kept = modes <= HUM
    assert out[kept].tolist() == apply_k_window(live[kept], k).tolist()
