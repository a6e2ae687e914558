"""Rejected actions for the DPO baseline (synthetic negatives), one fixed negative per step.

For a desirable step with target action a (normalised n = normalise(a)):

1. a human correction whose overridden policy proposal p is known and differs from a by at least
   ``min_gap`` (max over dimensions, normalised units): the rejected action is p -- the policy's
   own mistake, a real negative;
2. otherwise (expert and autonomous steps, or a proposal equal to the correction): n + s * delta
   per dimension, with signs s drawn from ``(seed, step index)`` and flipped where they would leave
   [-1, 1], so every dimension moves by exactly ``delta`` (``loss.dpo_perturbation``) and the pair
   is fixed for the whole round (its reference log-prob can therefore be cached).

Undesirable steps have no desirable action for the same observation, so DPO does not use them.
"""

from __future__ import annotations

import numpy as np

from apo_core.normalization import ActionStats


def rejected_targets(
    targets: np.ndarray,
    policy_actions: np.ndarray | None,
    indices,
    stats: ActionStats,
    *,
    perturbation: float = 0.25,
    use_policy_proposals: bool = True,
    seed: int = 0,
    min_gap: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(rejected raw targets, mask of rows built from the policy proposal) for raw actions (B, D) or, for a
    chunked policy, raw action chunks (B, H, D); ``policy_actions`` holds one proposal (D,) per row.

    Single actions follow the module docstring. A chunk's negative is the whole target chunk moved, so it
    stays as smooth as the target (a jagged negative would be told apart by its high frequencies alone):
    by the overridden policy proposal's offset from the chunk's first action (a correction whose proposal
    differs by at least ``min_gap``), otherwise by ``delta`` per dimension with signs drawn from
    ``(seed, step index)`` as for single actions, a dimension's sign flipped when the moved column would
    leave [-1, 1] (then clipped). Normalised units throughout.
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim not in (2, 3):
        raise ValueError(f"targets must be actions (B, D) or chunks (B, H, D), got shape {targets.shape}")
    chunked = targets.ndim == 3
    n = stats.normalise(targets)
    out, from_proposal = _rejected_normalised(
        n if chunked else n[:, None, :], policy_actions, indices, stats, perturbation=perturbation,
        use_policy_proposals=use_policy_proposals, seed=seed, min_gap=min_gap, move_chunk=chunked)
    return stats.unnormalise(out if chunked else out[:, 0, :]), from_proposal


def rejected_actions(actions: np.ndarray, *args, **options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rejected_targets` for raw actions (B, D) only."""
    _check_ndim(actions, 2, "actions (B, D)")
    return rejected_targets(actions, *args, **options)


def rejected_chunks(chunks: np.ndarray, *args, **options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rejected_targets` for raw action chunks (B, H, D) only."""
    _check_ndim(chunks, 3, "chunks (B, H, D)")
    return rejected_targets(chunks, *args, **options)


def _check_ndim(targets, ndim: int, what: str) -> None:
    if np.ndim(targets) != ndim:
        raise ValueError(f"expected {what}, got shape {np.shape(targets)}")


def _rejected_normalised(n, policy_actions, indices, stats, *, perturbation, use_policy_proposals, seed, min_gap,
                         move_chunk: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rejected_targets` on normalised targets ``n`` (B, H, D); H = 1 for single actions.

    Actions and chunks differ only where the policy proposal p is the negative: a single action's negative is p
    itself, as the policy proposed it (``move_chunk`` False); a chunk's is the target chunk moved by p's
    offset from its first action, clipped to [-1, 1] (``move_chunk`` True). The perturbation rule is the
    same for both: per dimension, the sign flips where any step of the moved column would leave [-1, 1]
    (for one action, the per-dimension rule of the module docstring).
    """
    b, _, d = n.shape
    gap = perturbation / 2 if min_gap is None else min_gap
    out = np.empty_like(n)
    from_proposal = np.zeros(b, dtype=bool)
    for row, idx in enumerate(np.asarray(indices).tolist()):
        p = None if policy_actions is None else np.asarray(policy_actions[row], dtype=np.float64)
        if use_policy_proposals and p is not None and np.all(np.isfinite(p)):
            pn = stats.normalise(p)
            offset = pn - n[row, 0]
            if np.max(np.abs(offset)) >= gap:
                out[row] = np.clip(n[row] + offset, -1.0, 1.0) if move_chunk else pn
                from_proposal[row] = True
                continue
        rng = np.random.default_rng([int(seed), int(idx)])
        offset = rng.choice([-1.0, 1.0], size=d) * perturbation
        leaves = np.any(np.abs(n[row] + offset) > 1.0, axis=0)
        offset[leaves] = -offset[leaves]
        out[row] = np.clip(n[row] + offset, -1.0, 1.0)
    return out, from_proposal
