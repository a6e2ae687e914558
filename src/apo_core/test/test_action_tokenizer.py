import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from apo_core.action_tokenizer import ActionTokenizer
from apo_core.errors import InvalidActionError


def test_tokens_are_last_256_ids_like_openvla():
    tok = ActionTokenizer(32000)
    bins = np.linspace(-1, 1, 256)
    a = np.array([-1.0, -0.5, 0.0, 0.3, 0.999, 1.0])
    # OpenVLA: token = vocab_size - np.digitize(a, bins)
    assert tok.encode(a).tolist() == (32000 - np.digitize(a, bins)).tolist()
    assert tok.first_action_token == 32000 - 256
    assert tok.action_token_ids.tolist() == list(range(31744, 32000))
    assert tok.is_action_token(tok.encode(np.linspace(-1, 1, 1000))).all()


def test_decode_to_bin_centres_and_clipping():
    tok = ActionTokenizer(1000)
    centers = (tok.bins[:-1] + tok.bins[1:]) / 2
    assert np.allclose(tok.decode(tok.encode(centers)), centers)
    assert np.allclose(tok.decode(tok.encode(np.array([5.0, -5.0]))), [centers[-1], centers[0]])


def test_non_action_token_rejected():
    tok = ActionTokenizer(1000)
    with pytest.raises(ValueError, match="outside the action range"):
        tok.decode(np.array([3]))


def test_nan_rejected_and_bad_sizes():
    tok = ActionTokenizer(1000)
    with pytest.raises(InvalidActionError):
        tok.encode(np.array([0.1, np.nan]))
    with pytest.raises(ValueError):
        ActionTokenizer(200, n_bins=256)


@given(arrays(np.float64, st.integers(1, 64), elements=st.floats(-1, 1)), st.sampled_from([32000, 860, 4096]))
def test_roundtrip_error_at_most_half_a_bin(a, vocab):
    tok = ActionTokenizer(vocab)
    ids = tok.encode(a)
    assert ids.dtype == np.int64 and ids.shape == a.shape
    assert np.all(np.abs(tok.decode(ids) - a) <= tok.bin_width / 2 + 1e-12)


@given(arrays(np.float64, (8, 7), elements=st.floats(-1, 1)))
def test_encode_is_monotone_decreasing(a):
    tok = ActionTokenizer(32000)
    flat = np.sort(a.ravel())
    ids = tok.encode(flat)
    assert np.all(np.diff(ids) <= 0)
