"""A tiny chunked VLA driving the real robosuite Lift simulator through the benchmark's pooled evaluator."""

import numpy as np
import pytest

from apo_core.fast_tokenizer import FastActionTokenizer
from apo_core.normalization import ActionStats
from apo_core.policy.chunked_vla import ChunkedVLAPolicy

pytestmark = pytest.mark.sim

H, D, STEPS = 4, 7, 10
TINY = dict(image_size=32, text_vocab_size=300,
            vision={"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2, "max_position_embeddings": 128})


class RecordingChunkedPolicy(ChunkedVLAPolicy):
    """The real policy, noting every action it returns and every chunk it plans."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.actions: list[np.ndarray] = []
        self.plans = 0

    def predict_chunks_exact(self, images, *args, **kwargs):
        self.plans += len(images)
        return super().predict_chunks_exact(images, *args, **kwargs)

    def predict(self, obs, slot=0):
        action = super().predict(obs, slot)
        self.actions.append(action)
        return action


def _tiny_policy():
    t = np.linspace(0, 4, 200)
    arm = np.stack([0.3 * np.sin(1.1 * t + p) for p in range(D - 1)], axis=1)
    acts = np.concatenate([arm, np.sign(np.sin(2 * t))[:, None]], axis=1)
    stats = ActionStats.from_actions(acts)
    chunks = np.stack([acts[s:s + H] for s in range(len(acts) - H)])
    fast = FastActionTokenizer.fit(stats.normalise(chunks), None, vocab_size=96)
    return RecordingChunkedPolicy.create(fast, stats, state_dim=9, seed=2, replan_every=2, **TINY), stats


def test_chunked_policy_drives_lift_one_action_per_step():
    from apo_sim.pool_eval import PoolEvaluator

    policy, stats = _tiny_policy()
    with PoolEvaluator("Lift", image_size=32, envs=1, processes=1) as ev:
        result = ev.evaluate(policy, [5], max_steps=STEPS)
    record = result.records[0]
    assert record.steps == STEPS and not record.success
    assert len(policy.actions) == STEPS  # one action per control step ...
    assert policy.plans == STEPS // 2  # ... from a chunk planned every replan_every = 2 steps
    actions = np.stack(policy.actions)
    assert actions.shape == (STEPS, D) and np.all(np.isfinite(actions))
    lo, hi = np.where(stats.mask, stats.q01, -1.0), np.where(stats.mask, stats.q99, 1.0)
    assert np.all(actions >= lo - 1e-12) and np.all(actions <= hi + 1e-12)
