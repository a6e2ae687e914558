"""Tiny synthetic datasets and policies for tests, benchmarks and smoke runs (no simulator needed).

The synthetic task is learnable from the image alone: each step shows a bright square on a dark
background and the expert action is a fixed function of the square's position, so behaviour cloning
has something real to fit and the action L1 can drop well below that of a random policy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apo_core.dataset import Episode, append_episode
from apo_core.normalization import ActionStats

TINY_VISION = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 2, "max_position_embeddings": 128}
INSTRUCTION = "push the square to the goal"


def square_image(x: float, y: float, size: int) -> np.ndarray:
    """A dark image with a bright 25 %-wide square centred at (x, y) in [-1, 1]^2."""
    img = np.full((size, size, 3), 20, dtype=np.uint8)
    half = max(1, size // 8)
    cx = int(round((x + 1) / 2 * (size - 1)))
    cy = int(round((y + 1) / 2 * (size - 1)))
    img[max(0, cy - half): cy + half + 1, max(0, cx - half): cx + half + 1] = (230, 200, 40)
    return img


def expert_action(x: float, y: float, action_dim: int) -> np.ndarray:
    """The synthetic expert: a fixed smooth function of the square position (last dim = gripper)."""
    base = [0.6 * x, 0.6 * y, 0.3 * (x - y), -0.4 * x, 0.2 * y + 0.1, 0.5 * x * y]
    a = np.array([base[i % len(base)] for i in range(action_dim - 1)] + [1.0 if x > 0 else -1.0])
    return a


def synthetic_episode(
    episode_id: str,
    length: int,
    rng: np.random.Generator,
    *,
    image_size: int = 32,
    action_dim: int = 7,
    state_dim: int = 0,
    live_labels=None,
    source: str = "expert",
    modes=None,
    instruction: str = INSTRUCTION,
    bad_action_noise: float = 0.5,
) -> Episode:
    """One episode of the square task; steps labelled 1 get a noisy ("bad") action when the human
    later takes over (they are the steps the K-window will mark undesirable), others the expert's."""
    pos = rng.uniform(-0.9, 0.9, size=2)
    images, actions, states, proposals = [], [], [], []
    labels = np.ones(length, dtype=np.uint8) if live_labels is None else np.asarray(live_labels, np.uint8)
    for _ in range(length):
        x, y = pos
        images.append(square_image(x, y, image_size))
        good = expert_action(x, y, action_dim)
        actions.append(good)
        proposals.append(good + rng.normal(0, bad_action_noise, size=action_dim))
        states.append(np.concatenate([pos, np.zeros(max(0, state_dim - 2))])[:state_dim])
        pos = np.clip(pos + rng.normal(0, 0.15, size=2), -0.9, 0.9)
    actions = np.array(actions)
    proposals = np.array(proposals)
    # Autonomous steps followed by a takeover executed the policy's (bad) proposal.
    human = labels == 2
    if human.any() and source != "expert":
        for t in np.flatnonzero(human & ~np.concatenate([[False], human[:-1]])):
            lo = max(0, t - 10)
            window = np.arange(lo, t)
            window = window[labels[window] == 1]
            actions[window] = proposals[window]
    policy_actions = np.where(human[:, None], proposals, actions) if source != "expert" else None
    return Episode(
        episode_id=episode_id, instruction=instruction, images=np.array(images), actions=actions,
        live_labels=labels, states=np.array(states, dtype=np.float32).reshape(length, state_dim),
        policy_actions=policy_actions, modes=modes, source=source,
        outcome="success",
    )


def write_expert_dataset(path, n_episodes: int = 4, length: int = 16, seed: int = 0, **kwargs) -> Path:
    """An expert-demonstration HDF5 file plus its action_stats.json."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    all_actions = []
    for e in range(n_episodes):
        ep = synthetic_episode(f"expert-{seed}-{e}", length, rng, source="expert", **kwargs)
        append_episode(path, ep)
        all_actions.append(ep.actions)
    ActionStats.from_actions(np.concatenate(all_actions)).save(path.parent / "action_stats.json")
    return path


def interactive_labels(length: int, takeovers: list[tuple[int, int]]) -> np.ndarray:
    """Live labels: 1 everywhere, 2 on each (start, stop) human segment."""
    labels = np.ones(length, dtype=np.uint8)
    for start, stop in takeovers:
        labels[start:stop] = 2
    return labels


def write_interactive_dataset(path, n_episodes: int = 4, length: int = 30, seed: int = 1,
                              takeovers=((12, 20),), **kwargs) -> Path:
    """Interactive episodes with human takeovers (so labels 0, 1 and 2 all occur with K = 10)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    for e in range(n_episodes):
        labels = interactive_labels(length, list(takeovers))
        append_episode(path, synthetic_episode(f"inter-{seed}-{e}", length, rng, source="interactive",
                                               live_labels=labels, **kwargs))
    return path


def tiny_policy(action_stats: ActionStats | None = None, *, action_dim: int = 7, state_dim: int = 0,
                image_size: int = 32, seed: int = 0):
    """A SmallVLAPolicy small enough for a test step in tens of milliseconds."""
    from apo_core.policy.small_vla import SmallVLAPolicy

    return SmallVLAPolicy.create(action_stats, action_dim=action_dim, state_dim=state_dim, image_size=image_size,
                                 text_vocab_size=300, n_bins=256, vision=TINY_VISION, text=TINY_TEXT, seed=seed)


TINY_POLICY_SECTION = {"image_size": 32, "text_vocab_size": 300, "vision": TINY_VISION, "text": TINY_TEXT}
# policy.* keys that make a new policy of a training config a tiny chunked VLA (chunks of 4 actions).
TINY_CHUNKED_SECTION = {**TINY_POLICY_SECTION, "architecture": "chunked_vla", "chunk_horizon": 4,
                        "fast_vocab_size": 128}


def tiny_chunked_policy(action_stats: ActionStats, paths, *, horizon: int = 4, seed: int = 0, **kwargs):
    """A tiny ChunkedVLAPolicy whose FAST tokenizer is fitted on the chunks of the dataset files ``paths``
    (every step kind), as ``apo-train-bc`` with :data:`TINY_CHUNKED_SECTION` fits it on its data;
    ``kwargs`` go to ``ChunkedVLAPolicy.create`` (``state_dim``, ``replan_every``, ...)."""
    from apo_core.fast_tokenizer import FastActionTokenizer
    from apo_core.policy.chunked_vla import ChunkedVLAPolicy
    from apo_trainer.data import StepDataset

    ds = StepDataset(paths, horizon=horizon)
    try:
        fast = FastActionTokenizer.fit(action_stats.normalise(ds.all_chunks()), None,
                                       vocab_size=TINY_CHUNKED_SECTION["fast_vocab_size"])
    finally:
        ds.close()
    return ChunkedVLAPolicy.create(fast, action_stats, image_size=32, text_vocab_size=300, vision=TINY_VISION,
                                   text=TINY_TEXT, seed=seed, **kwargs)


def tiny_train_config(output_dir, paths, *, policy_path=None, loss="apo", max_steps=4, batch_size=8, **sections):
    """A training config mapping for tests: tiny model, one thread, no progress bar; ``loss`` is a
    loss name or a loss section; ``sections`` are merged into the named config sections
    (e.g. ``train={"seed": 1}``)."""
    from apo_core.config import merge_overrides

    cfg = {
        "output_dir": str(output_dir),
        "data": {"paths": [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]},
        "policy": {"path": None if policy_path is None else str(policy_path), **TINY_POLICY_SECTION},
        "loss": {"name": loss} if isinstance(loss, str) else dict(loss),
        "train": {"max_steps": max_steps, "batch_size": batch_size, "log_every": 1, "progress_bar": False,
                  "torch_threads": 1, "checkpoint_every": 1000},
    }
    return merge_overrides(cfg, sections)


def tiny_training_data(root, n_expert: int = 4, n_interactive: int = 3):
    """Expert + interactive datasets (32 px) under ``root`` and a tiny starting policy saved beside them.

    Returns a namespace with ``root``, ``expert``, ``inter`` (dataset paths), ``stats`` (the expert's
    action statistics) and ``start`` (the saved policy directory): the set-up of the training tests.
    """
    from types import SimpleNamespace

    root = Path(root)
    expert = write_expert_dataset(root / "expert" / "demos.hdf5", n_episodes=n_expert, length=12, image_size=32)
    inter = write_interactive_dataset(root / "inter" / "inter.hdf5", n_episodes=n_interactive, length=30,
                                      image_size=32)
    stats = ActionStats.load(root / "expert" / "action_stats.json")
    start = tiny_policy(stats).save(root / "start")
    return SimpleNamespace(root=root, expert=expert, inter=inter, start=start, stats=stats)
