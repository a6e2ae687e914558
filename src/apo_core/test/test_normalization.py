import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from apo_core.errors import InvalidActionError, MissingPathError
from apo_core.normalization import ActionStats, check_finite


def _actions(n=500, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.3, size=(n, 7))
    a[:, -1] = np.sign(rng.normal(size=n))  # gripper -1/+1
    return a


def test_percentile_statistics_and_mask():
    a = _actions()
    s = ActionStats.from_actions(a)
    assert np.allclose(s.q01, np.percentile(a, 1, axis=0))
    assert np.allclose(s.q99, np.percentile(a, 99, axis=0))
    assert s.mask.tolist() == [True] * 6 + [False]


def test_normalise_range_clip_and_gripper_raw():
    a = _actions()
    s = ActionStats.from_actions(a)
    n = s.normalise(a)
    assert n.min() >= -1 and n.max() <= 1
    assert np.array_equal(n[:, -1], a[:, -1])
    # values inside the percentile range survive the round trip
    inside = np.all((a >= s.q01) & (a <= s.q99), axis=1)
    assert np.allclose(s.unnormalise(n[inside]), a[inside])
    # out-of-range values are clipped to the percentile bounds
    far = np.full((1, 7), 10.0)
    assert np.allclose(s.unnormalise(s.normalise(far))[0, :6], s.q99[:6])


def test_save_load_roundtrip(tmp_path):
    s = ActionStats.from_actions(_actions())
    path = s.save(tmp_path)
    t = ActionStats.load(path)
    assert np.allclose(s.q01, t.q01) and np.allclose(s.q99, t.q99) and (s.mask == t.mask).all()
    assert ActionStats.load(tmp_path).dim == 7


def test_missing_stats_file_names_path(tmp_path):
    with pytest.raises(MissingPathError, match=str(tmp_path / "nope.json")):
        ActionStats.load(tmp_path / "nope.json")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_rejected_in_actions_and_stats(bad, tmp_path):
    a = _actions()
    a[3, 2] = bad
    with pytest.raises(InvalidActionError, match="NaN or inf"):
        ActionStats.from_actions(a)
    s = ActionStats.from_actions(_actions())
    with pytest.raises(InvalidActionError, match="NaN or inf"):
        s.normalise(np.array([0, 0, bad, 0, 0, 0, 1.0]))
    d = s.to_dict()
    d["q99"][1] = "NaN"
    (tmp_path / "s.json").write_text(json.dumps(d).replace('"NaN"', "NaN"))
    with pytest.raises(InvalidActionError, match="NaN or inf"):
        ActionStats.load(tmp_path / "s.json")


def test_zero_range_dimension_is_a_clear_error():
    a = _actions()
    a[:, 2] = 0.25
    s = ActionStats.from_actions(a)
    assert s.zero_range_dims() == [2]
    with pytest.raises(InvalidActionError, match=r"zero range.*\[2\]"):
        s.normalise(a)


def test_wrong_dimension_and_unknown_key(tmp_path):
    s = ActionStats.from_actions(_actions())
    with pytest.raises(InvalidActionError, match="dimensions"):
        s.normalise(np.zeros(6))
    d = s.to_dict()
    d["q999"] = d["q99"]
    with pytest.raises(InvalidActionError, match="q999"):
        ActionStats.from_dict(d)


def test_check_finite_reports_index():
    with pytest.raises(InvalidActionError, match=r"index \[1\]"):
        check_finite([0.0, float("nan")])


@given(arrays(np.float64, (5, 7), elements=st.floats(-5, 5)))
def test_unnormalise_of_normalise_stays_within_percentile_box(a):
    s = ActionStats.from_actions(_actions())
    back = s.unnormalise(s.normalise(a))
    assert np.all(back[:, :6] >= s.q01[:6] - 1e-9) and np.all(back[:, :6] <= s.q99[:6] + 1e-9)
