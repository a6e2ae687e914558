"""FAST action tokenizer: DCT + BPE round trip within the quantisation bound, compression, safe decoding.

Quantisation bound asserted: every rounded coefficient is off by at most 0.5 / scale, the inverse
orthonormal DCT maps that to at most 0.5 / scale * max_t sum_k |M[k, t]| per element (the tokenizer's
``quantisation_bound``), which is <= 0.5 / scale * sqrt(H) by Cauchy-Schwarz on a unit column.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.fft import dct, idct

from apo_core.dataset import DatasetError
from apo_core.errors import ApoError, ConfigError, InvalidActionError, MissingPathError
from apo_core.fast_tokenizer import (
    CONFIG_FILENAME,
    TOKENIZER_FILENAME,
    FastActionTokenizer,
    FastDecodeError,
    FastTokenizerError,
    chunks_from_actions,
    chunks_from_dataset,
    dct_matrix,
)
from apo_core.normalization import STATS_FILENAME, ActionStats

H, D = 10, 7
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def smooth_actions(rng, steps: int, dim: int) -> np.ndarray:
    """Normalised actions like a scripted expert's: slow sinusoids per arm dimension, a gripper that switches."""
    t = np.arange(steps)[:, None] / steps
    freq = rng.uniform(0.3, 3.0, (1, dim - 1))
    arm = rng.uniform(0.2, 0.9, (1, dim - 1)) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (1, dim - 1)))
    gripper = np.where(t[:, 0] < rng.uniform(0.2, 0.8), -1.0, 1.0)[:, None]
    return np.concatenate([arm, gripper], axis=1)


@pytest.fixture(scope="module")
def synthetic_tokenizer():
    rng = np.random.default_rng(0)
    corpus = np.concatenate([chunks_from_actions(smooth_actions(rng, 120, D), H, 1) for _ in range(20)])
    return FastActionTokenizer.fit(corpus, vocab_size=512)


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    """Two real scripted-expert Lift episodes at 32 px (about 10 s)."""
    from apo_sim.demos import collect_demos

    out = tmp_path_factory.mktemp("fast_demos") / "lift.h5"
    res = collect_demos(out, task="Lift", episodes=2, image_size=32, progress=False)
    assert res.written == 2
    return out, ActionStats.load(out.parent / STATS_FILENAME)


def test_dct_matrix_is_orthonormal_dct_ii():
    for h in (1, 2, 10, 16):
        m = dct_matrix(h)
        assert np.allclose(m, dct(np.eye(h), axis=0, norm="ortho"))
        assert np.allclose(m.T, idct(np.eye(h), axis=0, norm="ortho"))
        assert np.allclose(m @ m.T, np.eye(h))


def test_quantisation_bound_is_below_the_sqrt_h_bound(synthetic_tokenizer):
    tok = synthetic_tokenizer
    assert tok.quantisation_bound <= 0.5 / tok.scale * math.sqrt(H) + 1e-12
    # The exact worst case is reached by coefficient errors of +-0.5/scale with the signs of column t.
    m = dct_matrix(H)
    worst = np.max(np.abs(m.T @ (0.5 / tok.scale * np.sign(m))).diagonal())
    assert worst == pytest.approx(tok.quantisation_bound)


def test_coefficients_are_interleaved_low_frequencies_first(synthetic_tokenizer):
    x = np.zeros((H, D))
    x[:, 2] = 0.5  # a constant dimension has only a DC coefficient
    q = synthetic_tokenizer.coefficients(x)
    assert q[0, 2] == round(10 * 0.5 * math.sqrt(H)) and np.count_nonzero(q) == 1
    # Flattened row-major, that DC coefficient is the third character: coefficient 0 of dims 0, 1, 2, ...
    tok = synthetic_tokenizer
    chars = "".join(tok.bpe.id_to_token(int(i)) for i in tok.encode_normalised(x))
    assert [ord(c) for c in chars].index(max(ord(c) for c in chars)) == 2


@pytest.mark.sim
def test_round_trip_and_compression_on_real_lift_demos(lift_demos):
    path, stats = lift_demos
    for horizon in (10, 16):
        corpus = chunks_from_dataset(path, horizon, stride=1)
        tok = FastActionTokenizer.fit(corpus, stats, scale=10.0, vocab_size=1024)
        assert tok.quantisation_bound <= 0.5 / 10.0 * math.sqrt(horizon)
        half_range = np.where(stats.mask, (stats.q99 - stats.q01) / 2.0, 1.0)
        lengths = []
        for chunk in corpus:
            ids = tok.encode(chunk)
            lengths.append(len(ids))
            norm = stats.normalise(chunk)
            assert np.max(np.abs(tok.decode_normalised(ids) - norm)) <= tok.quantisation_bound + 1e-12
            raw = tok.decode(ids)
            assert np.all(np.abs(raw - stats.unnormalise(norm)) <= tok.quantisation_bound * half_range + 1e-12)
        ratio = np.mean(lengths) / (horizon * stats.dim)
        print(f"H={horizon}: {np.mean(lengths):.1f} tokens per chunk for {horizon * stats.dim} values, "
              f"compression ratio {ratio:.3f}, vocab {tok.vocab_size}")
        assert ratio < 1.0


@pytest.mark.sim
def test_compression_on_an_unseen_lift_episode(lift_demos):
    path, stats = lift_demos
    import h5py

    with h5py.File(path, "r") as f:
        first, second = f["data/demo_0/actions"][()], f["data/demo_1/actions"][()]
    tok = FastActionTokenizer.fit(chunks_from_actions(first, H, 1), stats)
    held_out = chunks_from_actions(second, H, H)
    lengths = [len(tok.encode(c)) for c in held_out]
    print(f"held-out episode: {np.mean(lengths):.1f} tokens per chunk of {H * D} values")
    assert np.mean(lengths) < H * D
    for chunk in held_out:
        err = tok.decode_normalised(tok.encode(chunk)) - stats.normalise(chunk)
        assert np.max(np.abs(err)) <= tok.quantisation_bound + 1e-12


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1))
def test_round_trip_of_random_smooth_chunks_is_within_the_bound(synthetic_tokenizer, seed):
    chunk = smooth_actions(np.random.default_rng(seed), H, D)
    ids = synthetic_tokenizer.encode(chunk)
    assert 1 <= len(ids) <= H * D
    assert np.max(np.abs(synthetic_tokenizer.decode(ids) - chunk)) <= synthetic_tokenizer.quantisation_bound + 1e-12


@PROPERTY
@given(values=st.lists(st.floats(-1.0, 1.0), min_size=H * D, max_size=H * D))
def test_any_chunk_in_range_encodes_even_unlike_the_corpus(synthetic_tokenizer, values):
    chunk = np.asarray(values).reshape(H, D)
    out = synthetic_tokenizer.decode(synthetic_tokenizer.encode(chunk))
    assert np.max(np.abs(out - chunk)) <= synthetic_tokenizer.quantisation_bound + 1e-12


def test_extreme_chunks_use_the_whole_alphabet_without_clipping(synthetic_tokenizer):
    tok = synthetic_tokenizer
    for value in (1.0, -1.0):
        chunk = np.full((H, D), value)
        assert np.abs(tok.coefficients(chunk)).max() <= tok.max_coefficient
        assert np.allclose(tok.decode(tok.encode(chunk)), chunk, atol=tok.quantisation_bound)


@PROPERTY
@given(ids=st.lists(st.integers(-3, 600), max_size=3 * H * D), relaxed=st.booleans())
def test_random_id_sequences_never_decode_to_nan_or_out_of_range(lift_stats_tokenizer, ids, relaxed):
    tok, stats = lift_stats_tokenizer
    low = np.where(stats.mask, stats.q01, -1.0)
    high = np.where(stats.mask, stats.q99, 1.0)
    safe = tok.decode(ids, on_error="zeros", relaxed=relaxed)
    assert safe.shape == (H, D) and np.all(np.isfinite(safe))
    assert np.all(safe >= np.minimum(low, 0) - 1e-12) and np.all(safe <= np.maximum(high, 0) + 1e-12)
    try:
        out = tok.decode(ids, relaxed=relaxed)
    except FastDecodeError:
        return
    assert np.all(np.isfinite(out)) and np.all(out >= low - 1e-12) and np.all(out <= high + 1e-12)
    norm = tok.decode_normalised(ids, relaxed=relaxed)
    assert np.all(np.abs(norm) <= 1.0)


@pytest.fixture(scope="module")
def lift_stats_tokenizer():
    """A tokenizer with non-trivial statistics (ranges unlike [-1, 1]), fitted on synthetic raw actions."""
    rng = np.random.default_rng(1)
    raw = [smooth_actions(rng, 80, D) * np.r_[0.3, 0.2, 1.0, 0.05, 0.1, 0.5, 1.0] + np.r_[0.2, 0, 0, 0, 0, -0.2, 0]
           for _ in range(10)]
    stats = ActionStats.from_actions(np.concatenate(raw))
    return FastActionTokenizer.fit(np.concatenate([chunks_from_actions(a, H, 1) for a in raw]), stats), stats


def test_malformed_sequences_raise_a_clear_error_or_give_the_hold_chunk(synthetic_tokenizer):
    tok = synthetic_tokenizer
    ids = tok.encode(smooth_actions(np.random.default_rng(3), H, D))
    cases = {
        "empty": ([], "empty token sequence"),
        "unknown id": ([0, tok.vocab_size], f"[{tok.vocab_size}]"),
        "negative id": ([-1], "[-1]"),
        "short": (ids[:-1], "coefficients"),
        "long": (np.r_[ids, ids], "coefficients"),
        "2-D": (np.stack([ids, ids]), "1-D"),
        "fractional": ([0.5, 1.0], "integers"),
        "text": (["a", "b"], "integers"),
    }
    for name, (bad, message) in cases.items():
        with pytest.raises(FastDecodeError, match=message.replace("[", r"\[").replace("]", r"\]")):
            tok.decode(bad)
        assert isinstance(FastDecodeError("x"), ApoError)
        zeros = tok.decode(bad, on_error="zeros")
        assert np.array_equal(zeros, np.zeros((H, D))), name
    # Relaxed decoding accepts a cut or over-long sequence (missing high frequencies are zero), not empty.
    assert np.max(np.abs(tok.decode(np.r_[ids, ids], relaxed=True) - tok.decode(ids))) == 0.0
    assert np.all(np.abs(tok.decode(ids[:-1], relaxed=True)) <= 1.0)
    with pytest.raises(FastDecodeError):
        tok.decode([], relaxed=True)
    with pytest.raises(FastTokenizerError, match="on_error"):
        tok.decode(ids, on_error="ignore")
    # Integral float ids (e.g. from a tensor) decode like ints.
    assert np.array_equal(tok.decode(ids.astype(np.float64)), tok.decode(ids))


def test_bad_chunks_and_parameters_are_clear_errors(synthetic_tokenizer):
    tok = synthetic_tokenizer
    with pytest.raises(InvalidActionError, match=r"shape \(9, 7\)"):
        tok.encode(np.zeros((9, 7)))
    with pytest.raises(InvalidActionError, match="NaN"):
        tok.encode(np.full((H, D), np.nan))
    with pytest.raises(InvalidActionError, match=r"leaves \[-1, 1\]"):
        tok.encode_normalised(np.full((H, D), 1.5))
    corpus = chunks_from_actions(smooth_actions(np.random.default_rng(0), 40, D), H, 1)
    with pytest.raises(FastTokenizerError, match="vocab_size 10"):
        FastActionTokenizer.fit(corpus, vocab_size=10)
    with pytest.raises(FastTokenizerError, match="non-empty"):
        FastActionTokenizer.fit(np.zeros((0, H, D)))
    with pytest.raises(FastTokenizerError, match="scale"):
        FastActionTokenizer.fit(corpus, scale=0.0)
    with pytest.raises(FastTokenizerError, match="4 dimensions"):
        FastActionTokenizer.fit(corpus, stats=ActionStats.identity(4))


def test_save_and_load_give_identical_encodings(synthetic_tokenizer, lift_stats_tokenizer, tmp_path):
    rng = np.random.default_rng(7)
    for tok, name in ((synthetic_tokenizer, "plain"), (lift_stats_tokenizer[0], "stats")):
        loaded = FastActionTokenizer.from_pretrained(tok.save_pretrained(tmp_path / name))
        assert loaded.config() == tok.config()
        for _ in range(20):
            chunk = smooth_actions(rng, H, D)
            if tok.stats is not None:
                chunk = tok.stats.unnormalise(chunk)
            ids = tok.encode(chunk)
            assert np.array_equal(loaded.encode(chunk), ids)
            assert np.array_equal(loaded.decode(ids), tok.decode(ids))


def test_from_pretrained_rejects_bad_directories(synthetic_tokenizer, tmp_path):
    with pytest.raises(MissingPathError, match=CONFIG_FILENAME):
        FastActionTokenizer.from_pretrained(tmp_path / "nowhere")
    good = synthetic_tokenizer.save_pretrained(tmp_path / "good")
    cfg = json.loads((good / CONFIG_FILENAME).read_text())

    def variant(name, config=None, tokenizer_text=None):
        d = tmp_path / name
        synthetic_tokenizer.save_pretrained(d)
        if config is not None:
            (d / CONFIG_FILENAME).write_text(json.dumps(config))
        if tokenizer_text is not None:
            (d / TOKENIZER_FILENAME).write_text(tokenizer_text)
        return d

    cases = [
        (variant("unknown_key", {**cfg, "auto_map": "remote.Processor"}), "unknown key"),
        (variant("version", {**cfg, "format_version": 99}), "format_version"),
        (variant("scale", {**cfg, "scale": 20.0}), "coefficient value"),
        (variant("horizon", {**cfg, "horizon": "10"}), "horizon must be an integer"),
        (variant("vocab", {**cfg, "vocab_size": 3}), "vocab_size 3"),
        (variant("not_json", tokenizer_text="{not json"), "not a Hugging Face tokenizers file"),
    ]
    for directory, message in cases:
        with pytest.raises(ConfigError, match=message):
            FastActionTokenizer.from_pretrained(directory)
    (tmp_path / "bad_cfg").mkdir()
    (tmp_path / "bad_cfg" / CONFIG_FILENAME).write_text("[1, 2")
    (tmp_path / "bad_cfg" / TOKENIZER_FILENAME).write_text("{}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        FastActionTokenizer.from_pretrained(tmp_path / "bad_cfg")


@pytest.mark.sim
def test_chunks_from_dataset_slices_every_episode(lift_demos, tmp_path):
    path, _ = lift_demos
    import h5py

    with h5py.File(path, "r") as f:
        lengths = [len(f["data"][n]["actions"]) for n in f["data"]]
    assert len(chunks_from_dataset(path, H, stride=1)) == sum(n - H + 1 for n in lengths)
    assert len(chunks_from_dataset(path, H, stride=H)) == sum(n // H for n in lengths)
    stride_h = chunks_from_dataset(path, H, stride=H)
    with h5py.File(path, "r") as f:
        assert np.array_equal(stride_h[0], f["data/demo_0/actions"][:H])
    with pytest.raises(FastTokenizerError, match="no episode has 1000"):
        chunks_from_dataset(path, 1000)
    with pytest.raises(MissingPathError):
        chunks_from_dataset(tmp_path / "missing.h5", H)
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("data")
    with pytest.raises(DatasetError, match="no episodes"):
        chunks_from_dataset(tmp_path / "empty.h5", H)
