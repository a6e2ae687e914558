"""predict_batch_exact: one batched forward whose every row is bitwise what predict gives alone."""

import numpy as np
import pytest
import torch

from apo_core.normalization import ActionStats
from apo_core.policy.base import Observation
from apo_core.policy.small_vla import SmallVLAPolicy

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2})
INSTR = ["lift the red cube", "stack the red cube on the green cube"]  # two prompt lengths


def _stats():
    rng = np.random.default_rng(0)
    return ActionStats.from_actions(rng.uniform(-0.5, 0.5, size=(200, 7)))


@pytest.fixture(scope="module")
def policy():
    return SmallVLAPolicy.create(_stats(), state_dim=9, seed=4, **TINY)


def _inputs(b, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, size=(b, 32, 32, 3), dtype=np.uint8)
    states = rng.normal(size=(b, 9))
    return images, [INSTR[i % 2] for i in range(b)], states


def _singles(policy, images, instr, states):
    return np.stack([policy.predict(Observation(images[i], instr[i], states[i])) for i in range(len(images))])


@pytest.mark.parametrize("b", [1, 2, 7])
def test_rows_equal_single_predict_bitwise(policy, b):
    images, instr, states = _inputs(b, seed=b)
    batch = policy.predict_batch_exact(images, instr, states)
    assert batch.shape == (b, 7) and batch.dtype == np.float64
    np.testing.assert_array_equal(batch, _singles(policy, images, instr, states))


def test_rows_decoded_again_alone_equal_predict(policy):
    """margin=inf sends every row through the one-sample fallback."""
    images, instr, states = _inputs(6, seed=11)
    singles = _singles(policy, images, instr, states)
    np.testing.assert_array_equal(policy.predict_batch_exact(images, instr, states, margin=np.inf), singles)


def test_independent_of_thread_count(policy):
    images, instr, states = _inputs(5, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = policy.predict_batch_exact(images, instr, states)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(one, policy.predict_batch_exact(images, instr, states))


def test_policy_without_state():
    pol = SmallVLAPolicy.create(_stats(), seed=5, **TINY)
    images, instr, _ = _inputs(4, seed=2)
    singles = np.stack([pol.predict(Observation(images[i], instr[i])) for i in range(4)])
    np.testing.assert_array_equal(pol.predict_batch_exact(images, instr), singles)
