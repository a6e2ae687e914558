"""Operations on a training dataset file (the ``apo_core.dataset`` schema), apart from the bag converter.

- :func:`merge_expert`: copy another dataset file's episodes in as ``source="expert"`` (idempotent:
  episode ids already present are skipped);
- :func:`relabel`: re-apply the K-window to every episode (labels from ``live_labels``);
- :func:`compute_action_stats`: the action statistics over every action in the file.

``apo-convert`` (:mod:`apo_trainer.convert`) runs all three around its bag conversion, the demo
collector (``apo_sim.demos``) its statistics; they sit beside the schema and need neither bags nor ROS.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apo_core.dataset import append_episode, episode_ids, read_episode, sorted_episode_names
from apo_core.errors import ApoError, MissingPathError
from apo_core.labels import DEFAULT_K, apply_k_window
from apo_core.normalization import ActionStats


class DatasetOpError(ApoError, ValueError):
    """A dataset operation cannot run; the message names the file at fault."""


@dataclass
class ExpertResult:
    path: str
    added: int = 0
    skipped: int = 0
    steps: int = 0
    source_changed: int = 0  # episodes whose source attribute was not "expert" in the input
    errors: list = field(default_factory=list)


def merge_expert(expert_path, output, k: int = DEFAULT_K, known: set | None = None,
                 image_compression: str | None = None) -> ExpertResult:
    """Copy the episodes of another dataset file into ``output`` as ``source="expert"``.

    Episodes whose id is already in ``output`` are skipped, so re-running is harmless. One
    episode is in memory at a time (expert demonstrations are short).
    """
    import h5py

    expert_path, output = Path(expert_path), Path(output)
    if not expert_path.is_file():
        raise MissingPathError(f"expert demonstrations not found: {expert_path}")
    if output.exists() and expert_path.resolve() == output.resolve():
        raise DatasetOpError(f"--expert-demos {expert_path} is the output file itself")
    result = ExpertResult(path=str(expert_path))
    known = set(episode_ids(output)) if known is None else known
    with h5py.File(expert_path, "r") as f:
        names = sorted_episode_names(f)
    for name in names:
        try:
            ep = read_episode(expert_path, name)
            if ep.episode_id in known:
                result.skipped += 1
                continue
            if ep.source != "expert":
                result.source_changed += 1
            ep.source = "expert"
            ep.origin = ep.origin or f"{expert_path}:{name}"
            append_episode(output, ep, k=k, image_compression=image_compression)
        except (ApoError, OSError, KeyError, ValueError) as exc:
            result.errors.append(f"{expert_path}:{name}: {exc}")
            continue
        known.add(ep.episode_id)
        result.added += 1
        result.steps += len(ep)
    return result


def relabel(output, k: int) -> int:
    """Re-apply the K-window to every episode of ``output`` (labels from live_labels); returns the count."""
    import h5py

    output = Path(output)
    if not output.is_file():
        return 0
    with h5py.File(output, "a") as f:
        names = sorted_episode_names(f)
        for name in names:
            g = f["data"][name]
            g["labels"][...] = apply_k_window(g["live_labels"][()], k, modes=g.get("modes")).astype(np.uint8)
            g.attrs["k_window"] = k
    return len(names)


def compute_action_stats(output, unmask_zero_range: bool = False) -> tuple[ActionStats, list[int]]:
    """Statistics over all actions in ``output`` (gripper = last dimension unmasked).

    Returns the statistics and the dimensions whose range is zero (unmasked if asked).
    """
    import h5py

    acts, sources = [], Counter()
    with h5py.File(output, "r") as f:
        for name in sorted_episode_names(f):
            g = f["data"][name]
            acts.append(g["actions"][()])
            sources[str(g.attrs.get("source", ""))] += len(acts[-1])
    if not acts:
        raise DatasetOpError(f"{output} holds no episodes: no action statistics to compute")
    stats = ActionStats.from_actions(np.concatenate(acts))
    zero = stats.zero_range_dims()
    if zero and unmask_zero_range:
        mask = stats.mask.copy()
        mask[zero] = False
        stats = ActionStats(q01=stats.q01, q99=stats.q99, mask=mask, mean=stats.mean, std=stats.std,
                            extra=stats.extra)
    stats.extra.update({"samples_by_source": dict(sources), "dataset": Path(output).name,
                        "zero_range_dims": zero, "zero_range_unmasked": bool(zero and unmask_zero_range)})
    return stats, zero
