"""FAST action tokenizer on real scripted-expert Lift demos: compression, speed and round-trip error.

Fits the tokenizer (DCT + BPE) on the chunks of every episode but the last ``--held-out`` ones and prints,
per horizon H, for the training chunks and the held-out chunks: tokens per chunk (mean, p90, max), the
compression ratio (tokens / (H x D); the OpenVLA tokenizer's ratio is 1.0 by construction), encode and
decode time per chunk, and the largest round-trip error (normalised, next to the quantisation bound, and
raw). Collects the demos with the simulator's expert unless ``--dataset`` names an existing file.

    python bench/bench_fast_tokenizer.py                     # 8 Lift episodes at 32 px, H = 10 and 16
    python bench/bench_fast_tokenizer.py --dataset runs/demo/data/expert.h5 --horizons 8 16 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from apo_core.dataset import sorted_episode_names
from apo_core.fast_tokenizer import FastActionTokenizer, chunks_from_actions
from apo_core.normalization import STATS_FILENAME, ActionStats


def load_episodes(path: Path) -> list[np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        return [f["data"][n]["actions"][()] for n in sorted_episode_names(f)]


def chunks(episodes: list[np.ndarray], horizon: int, stride: int) -> np.ndarray:
    parts = [c for c in (chunks_from_actions(a, horizon, stride) for a in episodes) if len(c)]
    return np.concatenate(parts) if parts else np.zeros((0, horizon, episodes[0].shape[1]))


def measure(tok: FastActionTokenizer, corpus: np.ndarray) -> dict:
    started = time.perf_counter()
    encoded = [tok.encode(c) for c in corpus]
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = np.stack([tok.decode(ids) for ids in encoded])
    decode_s = time.perf_counter() - started
    stats = tok.stats
    norm_err = np.abs(np.stack([tok.decode_normalised(ids) for ids in encoded]) - stats.normalise(corpus))
    raw_err = np.abs(decoded - stats.unnormalise(stats.normalise(corpus)))
    lengths = np.array([len(ids) for ids in encoded])
    return {"n": len(corpus), "mean": lengths.mean(), "p90": np.percentile(lengths, 90), "max": lengths.max(),
            "ratio": lengths.mean() / (tok.horizon * tok.action_dim), "encode_us": 1e6 * encode_s / len(corpus),
            "decode_us": 1e6 * decode_s / len(corpus), "norm_err": norm_err.max(), "raw_err": raw_err.max()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, default=None, help="existing apo_core dataset (default: collect demos)")
    p.add_argument("--episodes", type=int, default=8, help="Lift demos to collect when no --dataset is given")
    p.add_argument("--held-out", type=int, default=2, help="last episodes kept out of the BPE training")
    p.add_argument("--horizons", type=int, nargs="+", default=[10, 16])
    p.add_argument("--scale", type=float, default=10.0)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--stride", type=int, default=1, help="stride of the chunk windows (training and evaluation)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.dataset
        if path is None:
            from apo_sim.demos import collect_demos

            path = Path(tmp) / "lift.h5"
            res = collect_demos(path, task="Lift", episodes=args.episodes, image_size=32, progress=False)
            print(f"collected {res.written} Lift demos ({res.steps} steps) in {res.seconds:.1f} s")
        episodes = load_episodes(path)
        stats = ActionStats.load(path.parent / STATS_FILENAME)
    if len(episodes) <= args.held_out:
        p.error(f"{len(episodes)} episode(s): need more than --held-out {args.held_out}")
    train, held_out = episodes[:-args.held_out or None], episodes[len(episodes) - args.held_out:]
    print(f"{len(train)} training episode(s), {len(held_out)} held out; action dim {stats.dim}, scale {args.scale}, "
          f"vocab_size {args.vocab_size}, stride {args.stride}")
    print(f"{'H':>3} {'split':<8} {'chunks':>6} {'tok/chunk':>9} {'p90':>5} {'max':>4} {'ratio':>6} {'enc us':>7} "
          f"{'dec us':>7} {'err(norm)':>9} {'bound':>6} {'err(raw)':>8}  vocab  fit s")
    for horizon in args.horizons:
        corpus = chunks(train, horizon, args.stride)
        if not len(corpus):
            print(f"{horizon:>3} no training episode has {horizon} steps")
            continue
        started = time.perf_counter()
        tok = FastActionTokenizer.fit(corpus, stats, scale=args.scale, vocab_size=args.vocab_size)
        fit_s = time.perf_counter() - started
        for split, data in (("train", corpus), ("held-out", chunks(held_out, horizon, args.stride))):
            if not len(data):
                print(f"{horizon:>3} {split:<8} no chunks")
                continue
            m = measure(tok, data)
            print(f"{horizon:>3} {split:<8} {m['n']:>6} {m['mean']:>9.1f} {m['p90']:>5.0f} {m['max']:>4} "
                  f"{m['ratio']:>6.3f} {m['encode_us']:>7.0f} {m['decode_us']:>7.0f} {m['norm_err']:>9.4f} "
                  f"{tok.quantisation_bound:>6.4f} {m['raw_err']:>8.4f}  {tok.vocab_size:>5}  {fit_s:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
