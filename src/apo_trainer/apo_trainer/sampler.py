"""Balanced batches (50 % desirable, 25 % human, 25 % undesirable by default) under data parallelism.

Every rank builds the same per-epoch stream of indices for each group from ``(seed, epoch, group)``
(a concatenation of random permutations of the group, as long as the epoch needs), then takes its own
disjoint slices: global batch b, rank r takes the group's slots ``[(b*W + r)*n_g, (b*W + r + 1)*n_g)``.
So within an epoch no index is drawn twice, on one rank or across ranks, unless a group is smaller
than what the epoch needs from it (then it is cycled: oversampled, which is what balancing means; the
oversampling factor is reported). The union of the W ranks' batches b equals the single-process
batch b of size W*B, so N processes reproduce one process on the union batch.

An epoch has ``max(1, N // (W*B))`` batches by default (N = all items), i.e. about one pass over the
data. Resuming: ``set_epoch(epoch, start_batch)`` skips the batches already consumed.

A group with a positive share but no items (no human corrections, no undesirable steps yet) has its
share redistributed over the other groups in proportion to their shares; this is reported in
``notes`` (and logged) rather than silently changing the mix.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from apo_trainer.data import TrainingDataError

log = logging.getLogger("apo_trainer.sampler")

DEFAULT_SHARES = {"desirable": 0.5, "human": 0.25, "undesirable": 0.25}

_GROUP_WHAT = {
    "desirable": "desirable steps (expert demonstrations or autonomous steps)",
    "expert": "expert demonstration steps",
    "autonomous": "autonomous steps (label 1, the policy's own steps outside the K-window)",
    "human": "human corrections (label 2)",
    "undesirable": "undesirable steps (label 0, the K steps before a takeover)",
}


def largest_remainder(shares: dict[str, float], total: int) -> dict[str, int]:
    """Integer counts summing to ``total`` closest to ``share * total`` (ties: dict order)."""
    raw = {g: s * total for g, s in shares.items()}
    counts = {g: math.floor(v) for g, v in raw.items()}
    left = total - sum(counts.values())
    order = sorted(shares, key=lambda g: -(raw[g] - counts[g]))
    for g in order[:left]:
        counts[g] += 1
    return counts


def split_problem(shares: dict[str, float], batch_size: int) -> str | None:
    """Why ``batch_size`` cannot be split exactly into ``shares`` (None when it can).

    With an inexact split the largest-remainder rounding silently changes the mix (batch 6 at
    50/25/25 draws 3/2/1), and under gradient accumulation every micro-batch repeats the same
    rounding. The message names the counts and the batch sizes that work.
    """
    from fractions import Fraction
    from math import lcm

    if not shares or any(not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0) for v in shares.values()):
        return None  # the sampler reports malformed shares itself
    total = sum(shares.values())
    if total <= 0:
        return None
    exact = {g: s / total * batch_size for g, s in shares.items() if s > 0}
    if all(abs(v - round(v)) < 1e-6 for v in exact.values()):
        return None
    step = lcm(*(Fraction(s / total).limit_denominator(1000).denominator for s in shares.values() if s > 0))
    counts = ", ".join(f"{g} {v:g}" for g, v in exact.items())
    return (f"{batch_size} samples cannot be split exactly into the shares "
            f"({', '.join(f'{g} {s / total:g}' for g, s in shares.items())}): that is {counts} samples per "
            f"batch; use a multiple of {step} (e.g. {step * max(1, -(-batch_size // step))}) or change the shares")


class BalancedBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's batches (lists of item indices) for the current epoch."""

    def __init__(
        self,
        groups: dict[str, np.ndarray],
        shares: dict[str, float] | None = None,
        *,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_batches: int | None = None,
    ):
        shares = dict(DEFAULT_SHARES if shares is None else shares)
        if batch_size < 1:
            raise TrainingDataError(f"batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise TrainingDataError(f"rank {rank} is not in [0, {num_replicas})")
        unknown = sorted(set(shares) - set(groups))
        if unknown:
            raise TrainingDataError(f"sampler shares name unknown group(s) {unknown}; groups: {sorted(groups)}")
        for g, s in shares.items():
            if not (isinstance(s, (int, float)) and math.isfinite(s) and s >= 0):
                raise TrainingDataError(f"sampler share of {g!r} must be a finite number >= 0, got {s!r}")
        if sum(shares.values()) <= 0:
            raise TrainingDataError("sampler shares sum to zero")
        self.groups = {g: np.asarray(groups[g], dtype=np.int64) for g in shares}
        self.requested_shares = {g: s / sum(shares.values()) for g, s in shares.items()}
        self.notes: list[str] = []
        present = {g: s for g, s in self.requested_shares.items() if s > 0 and len(self.groups[g]) > 0}
        missing = [g for g, s in self.requested_shares.items() if s > 0 and len(self.groups[g]) == 0]
        if not present:
            raise TrainingDataError(
                "nothing to sample: every group with a positive share is empty ("
                + ", ".join(f"{g}: {_GROUP_WHAT.get(g, g)}" for g in missing) + ")")
        total_present = sum(present.values())
        self.shares = {g: (present.get(g, 0.0) / total_present) for g in shares}
        for g in missing:
            moved = ", ".join(f"{h} {100 * self.shares[h]:.0f}%" for h in present)
            self.notes.append(
                f"no {_GROUP_WHAT.get(g, g)} in the data: their {100 * self.requested_shares[g]:.0f}% share is "
                f"redistributed ({moved})")
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.counts = largest_remainder({g: s for g, s in self.shares.items() if s > 0}, self.batch_size)
        for g, c in self.counts.items():
            if c == 0:
                self.notes.append(
                    f"batch size {self.batch_size} is too small for the shares: group {g!r} "
                    f"({100 * self.shares[g]:.0f}%) gets no slot in a batch")
        n_items = sum(len(self.groups[g]) for g in self.counts)
        global_batch = self.batch_size * self.num_replicas
        self.num_batches = int(num_batches) if num_batches is not None else max(1, n_items // global_batch)
        if self.num_batches < 1:
            raise TrainingDataError(f"an epoch needs at least one batch, got num_batches={num_batches}")
        self.epoch = 0
        self.start_batch = 0
        for note in self.notes:
            log.warning("%s", note)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch {start_batch} not in [0, {self.num_batches}]")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def oversampling(self) -> dict[str, float]:
        """Per group: draws per epoch / group size (> 1 means items repeat within an epoch)."""
        return {g: c * self.num_replicas * self.num_batches / len(self.groups[g])
                for g, c in self.counts.items() if c > 0}

    def describe(self) -> dict:
        return {
            "requested_shares": self.requested_shares, "shares": self.shares, "per_batch": self.counts,
            "batch_size": self.batch_size, "num_replicas": self.num_replicas, "batches_per_epoch": self.num_batches,
            "group_sizes": {g: int(len(v)) for g, v in self.groups.items()}, "oversampling": self.oversampling(),
            "notes": list(self.notes),
        }

    def _stream(self, group_no: int, group: str, need: int) -> np.ndarray:
        items = self.groups[group]
        rng = np.random.default_rng([self.seed, self.epoch, group_no])
        reps = -(-need // len(items))
        return np.concatenate([items[rng.permutation(len(items))] for _ in range(reps)])[:need]

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def __iter__(self):
        w = self.num_replicas
        streams = {}
        for gi, (g, c) in enumerate(self.counts.items()):
            if c > 0:
                streams[g] = self._stream(gi, g, c * w * self.num_batches)
        for b in range(self.start_batch, self.num_batches):
            batch: list[int] = []
            for g, s in streams.items():
                c = self.counts[g]
                lo = (b * w + self.rank) * c
                batch.extend(int(x) for x in s[lo: lo + c])
            yield batch
