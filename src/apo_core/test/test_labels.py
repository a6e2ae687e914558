import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apo_core.labels import Label, apply_k_window, label_counts, takeover_indices

A, H, U = Label.AUTONOMOUS, Label.HUMAN, Label.UNDESIRABLE


def test_no_intervention_keeps_labels():
    assert apply_k_window([A] * 20, 10).tolist() == [A] * 20


def test_single_takeover_marks_k_steps_before():
    live = [A] * 15 + [H] * 5 + [A] * 3
    out = apply_k_window(live, 10)
    assert out.tolist() == [A] * 5 + [U] * 10 + [H] * 5 + [A] * 3


def test_takeover_before_step_k_does_not_cross_episode_start():
    live = [A] * 3 + [H] * 4
    assert apply_k_window(live, 10).tolist() == [U] * 3 + [H] * 4


def test_takeover_at_step_zero_and_whole_episode_human():
    assert apply_k_window([H] * 6, 10).tolist() == [H] * 6
    assert takeover_indices([H] * 6).tolist() == [0]


def test_back_to_back_interventions_never_relabel_human_steps():
    live = [A] * 4 + [H] * 3 + [A] * 2 + [H] * 3
    out = apply_k_window(live, 10)
    # the second takeover's window reaches back over the first intervention: human steps stay 2
    assert out.tolist() == [U] * 4 + [H] * 3 + [U] * 2 + [H] * 3


def test_k_zero_and_k_one():
    live = [A, A, H, A]
    assert apply_k_window(live, 0).tolist() == live
    assert apply_k_window(live, 1).tolist() == [A, U, H, A]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_invalid_k_rejected(bad):
    with pytest.raises(ValueError, match="K-window"):
        apply_k_window([A, H], bad)


def test_invalid_labels_rejected_with_position():
    with pytest.raises(ValueError, match="label 7 at step 2"):
        apply_k_window([1, 1, 7], 3)
    with pytest.raises(ValueError, match="1-D"):
        apply_k_window([[1, 2]], 3)


def test_empty_episode():
    assert apply_k_window([], 10).tolist() == []


def test_label_counts():
    assert label_counts([0, 1, 1, 2]) == {"UNDESIRABLE": 1, "AUTONOMOUS": 2, "HUMAN": 1}


@given(st.lists(st.sampled_from([1, 2]), max_size=60), st.integers(0, 15))
def test_k_window_properties(live, k):
    live = np.array(live, dtype=np.int64)
    out = apply_k_window(live, k)
    assert out.shape == live.shape
    # human steps are never touched; only autonomous steps may become 0
    assert np.all(out[live == H] == H)
    assert np.all(np.isin(out[live == A], [A, U]))
    # a step is undesirable iff a takeover happens within the next k steps
    starts = set(takeover_indices(live).tolist())
    for t in np.flatnonzero(live == A):
        expect = any(s in starts for s in range(t + 1, t + k + 1))
        assert (out[t] == U) == expect
