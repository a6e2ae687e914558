"""Optimiser-step time of APO against BC on the same model (+ LoRA) and the same batch, per architecture.

APO needs the reference policy's log-probs; they are cached once per round before training, so an
APO step should cost about what a BC step costs (goal: APO / BC <= 1.10). For comparison, the
same APO step with the reference recomputed every step (``reference.mode=online``: a second forward
with the LoRA adapter disabled) and a DPO step (chosen + rejected forward) are timed too.

Both architectures are measured: the small VLA (one token per action dimension) and the chunked VLA
(FAST tokens of a chunk of ``--horizon`` actions, tokenizer fitted on the benchmark data's chunks).

    python bench/bench_train.py [--arch small|chunked|both] [--image-size 128] [--batch 8] [--steps 10]
        [--threads 1] [--horizon 8]

Variants run interleaved, one step each per round in a shuffled order, and the ratios are taken per
round, so a machine shared with other jobs disturbs all variants alike; the CPU time of the process
(``time.process_time``; with one thread the work done) is reported beside the wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from apo_core.fast_tokenizer import FastActionTokenizer
from apo_core.normalization import ActionStats
from apo_core.policy import load_policy
from apo_core.policy.chunked_vla import ChunkedVLAPolicy
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_trainer.config import load_train_config
from apo_trainer.data import KIND_NAMES, StepDataset, collate_steps
from apo_trainer.testing import write_interactive_dataset
from apo_trainer.train import Trainer


class Variant:
    def __init__(self, name: str, cfg_map: dict, rows: list[int]):
        self.name = name
        self.trainer = Trainer(load_train_config(cfg_map))
        self.trainer.setup()
        self.batch = collate_steps([self.trainer.dataset[i] for i in rows])
        self.times: list[float] = []
        self.cpu: list[float] = []

    def step(self) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        self.trainer.train_step([self.batch])
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        self.times.append(dt)
        self.cpu.append(dc)
        return dt, dc


def start_policy(arch: str, tmp: Path, data: Path, stats: ActionStats, args) -> Path:
    """The saved starting policy of an architecture (default sizes, random weights)."""
    if arch == "small":
        return SmallVLAPolicy.create(stats, image_size=args.image_size).save(tmp / "start_small")
    ds = StepDataset(data, horizon=args.horizon)
    fast = FastActionTokenizer.fit(stats.normalise(ds.all_chunks()), None)
    ds.close()
    return ChunkedVLAPolicy.create(fast, stats, image_size=args.image_size).save(tmp / "start_chunked")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("small", "chunked", "both"), default="both")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=8, help="chunk length of the chunked VLA")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_interactive_dataset(tmp / "d" / "inter.hdf5", n_episodes=2, length=30,
                                         image_size=args.image_size)
        stats = ActionStats.from_actions(np.random.default_rng(0).uniform(-1, 1, size=(100, 7)))
        for arch in (("small", "chunked") if args.arch == "both" else (args.arch,)):
            summary[arch] = bench_architecture(arch, start_policy(arch, tmp, data, stats, args), tmp / arch, data,
                                               args)
    if len(summary) > 1:
        print("APO step / BC step (cached reference; wall; CPU), goal <= 1.10:")
        for arch, (wall, cpu) in summary.items():
            print(f"  {arch:<8} {wall:.3f}; {cpu:.3f}")


def bench_architecture(arch: str, start: Path, tmp: Path, data: Path, args) -> tuple[float, float]:
    """Time every variant on one architecture; returns APO / BC (median per-round ratio, wall and CPU)."""
    policy = load_policy(start)
    n_params = sum(p.numel() for p in policy.model.parameters())
    shape = (f"chunks of {policy.chunk_horizon}, FAST vocabulary {policy.fast_tokenizer.vocab_size}"
             if arch == "chunked" else "one token per action dimension")
    del policy

    def cfg(name, loss, **extra):
        # Every variant reads the same steps (all kinds), so the same rows make the same batch.
        base = {"output_dir": str(tmp / name), "data": {"paths": [str(data)], "kinds": list(KIND_NAMES)},
                "policy": {"path": str(start)},
                "loss": {"name": loss},
                "train": {"batch_size": args.batch, "max_steps": 10_000, "progress_bar": False,
                          "tensorboard": False, "torch_threads": args.threads, "resume": False}}
        for k, v in extra.items():
            base.setdefault(k, {}).update(v)
        return base

    # The same rows for every variant: a balanced batch (half desirable, a quarter each human / undesirable).
    ds = StepDataset(data, horizon=args.horizon if arch == "chunked" else None)
    groups = ds.group_indices()
    b = args.batch
    rows = (list(groups["desirable"][: b // 2]) + list(groups["human"][: b // 4])
            + list(groups["undesirable"][: b - b // 2 - b // 4]))
    variants = [
        ("bc (LoRA)", cfg("bc", "bc")),
        ("apo, cached reference", cfg("apo", "apo")),
        ("apo, online reference", cfg("apo_online", "apo", reference={"mode": "online"})),
        ("kto, cached reference", cfg("kto", "kto")),
        ("dpo, cached reference", cfg("dpo", "dpo")),
    ]
    und = set(groups["undesirable"].tolist())
    # DPO pairs each desirable row with its synthetic negative: same rows minus the undesirable ones.
    built = [Variant(name, c, [r for r in rows if r not in und] if name.startswith("dpo") else rows)
             for name, c in variants]
    print(f"{arch} VLA ({n_params / 1e6:.2f} M parameters, {shape}), image {args.image_size}px, "
          f"batch {args.batch}, LoRA r=32, {args.threads} threads; variants interleaved step by step, "
          f"{args.steps} rounds")
    ratios: dict[str, list[float]] = {v.name: [] for v in built}
    cpu_ratios: dict[str, list[float]] = {v.name: [] for v in built}
    rng = np.random.default_rng(0)
    for i in range(args.warmup + args.steps):
        order = rng.permutation(len(built))  # alternate the order so load changes hit all variants alike
        dts = {built[j].name: built[j].step() for j in order}
        if i >= args.warmup:
            for name, (dt, dc) in dts.items():
                ratios[name].append(dt / dts["bc (LoRA)"][0])
                cpu_ratios[name].append(dc / dts["bc (LoRA)"][1])
    for v in built:
        t, c = v.times[args.warmup:], v.cpu[args.warmup:]
        print(f"  {v.name:<24} wall median {1000 * statistics.median(t):7.1f} ms (best {1000 * min(t):7.1f}), "
              f"CPU median {1000 * statistics.median(c):7.1f} ms")
    print("step time / BC step time, median of per-round ratios (wall; CPU time of the process):")
    for v in built[1:]:
        note = "  (goal <= 1.10)" if v.name == "apo, cached reference" else ""
        print(f"  {v.name:<24} {statistics.median(ratios[v.name]):.3f}; "
              f"{statistics.median(cpu_ratios[v.name]):.3f}{note}")
    print("  (DPO: rows without undesirable steps, chosen + rejected in one forward)")
    for v in built:
        v.trainer.close()
    apo = "apo, cached reference"
    return statistics.median(ratios[apo]), statistics.median(cpu_ratios[apo])


if __name__ == "__main__":
    main()
