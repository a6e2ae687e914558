"""A tiny chunked VLA for tests and smoke runs: real code, a few thousand weights, its FAST tokenizer fitted
on smooth synthetic 7-D motion (six sine arm dimensions and a switching gripper), no data files needed."""

from __future__ import annotations

import numpy as np

from apo_core.fast_tokenizer import FastActionTokenizer
from apo_core.normalization import ActionStats
from apo_core.policy.chunked_vla import ChunkedVLAPolicy

TINY_TRUNK = dict(image_size=32, text_vocab_size=300,
                  vision={"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
                  text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 128})


def synthetic_actions(n: int = 200, action_dim: int = 7) -> np.ndarray:
    t = np.linspace(0, 4, n)
    arm = np.stack([0.3 * np.sin(1.1 * t + p) for p in range(action_dim - 1)], axis=1)
    return np.concatenate([arm, np.sign(np.sin(2 * t))[:, None]], axis=1)


def tiny_chunked_policy(cls=ChunkedVLAPolicy, *, horizon: int = 4, seed: int = 2, **kwargs) -> ChunkedVLAPolicy:
    """``cls.create`` with the tiny trunk; ``kwargs`` are its other arguments (state_dim, replan_every, ...)."""
    acts = synthetic_actions()
    stats = ActionStats.from_actions(acts)
    chunks = np.stack([acts[s:s + horizon] for s in range(len(acts) - horizon)])
    fast = FastActionTokenizer.fit(stats.normalise(chunks), None, vocab_size=96)
    return cls.create(fast, stats, seed=seed, **TINY_TRUNK, **kwargs)


class RecordingChunkedPolicy(ChunkedVLAPolicy):
    """The real chunked policy, counting the chunks it plans and noting every action it returns."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plans = 0
        self.actions: list[np.ndarray] = []

    def predict_chunks_exact(self, images, *args, **kwargs):
        self.plans += len(images)
        return super().predict_chunks_exact(images, *args, **kwargs)

    def predict(self, obs, slot=0):
        action = super().predict(obs, slot)
        self.actions.append(action)
        return action
