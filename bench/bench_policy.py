"""Small VLA on this machine: parameter count, predict latency, batched log-prob pass.

Target (issue 2): predict under 50 ms median on 2 CPU cores, enough for a 10 Hz control loop.
Usage: python bench/bench_policy.py [--iters 50] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from apo_core.policy.base import Observation
from apo_core.policy.small_vla import SmallVLAPolicy


def _timed(fn, iters: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _summary(ms: list[float]) -> str:
    return f"median {statistics.median(ms):7.2f} ms   p90 {np.percentile(ms, 90):7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for size in (84, 128):
        policy = SmallVLAPolicy.create(state_dim=9, image_size=size)
        n_params = sum(p.numel() for p in policy.model.parameters())
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        obs = Observation(img, "lift the red cube", rng.normal(size=9))
        predict_ms = _timed(lambda obs=obs, policy=policy: policy.predict(obs), args.iters)
        b = args.batch
        images = rng.integers(0, 255, (b, size, size, 3), dtype=np.uint8)
        actions = rng.uniform(-1, 1, (b, 7))
        states = rng.normal(size=(b, 9))

        def logp_pass(policy=policy, images=images, actions=actions, states=states):
            with torch.no_grad():
                policy.forward_batch(policy.encode_batch(images, ["lift the red cube"] * len(images), states, actions))

        def logp_grad(policy=policy, images=images, actions=actions, states=states):
            m = policy.forward_batch(policy.encode_batch(images, ["lift the red cube"] * len(images), states, actions))
            m.logps.sum().backward()

        lp_ms = _timed(logp_pass, max(5, args.iters // 5))
        bw_ms = _timed(logp_grad, max(5, args.iters // 5))
        verdict = "OK" if statistics.median(predict_ms) < 50 else "ABOVE TARGET"
        print(f"\n{size}x{size} image, state-conditioned small VLA: {n_params / 1e6:.2f} M parameters")
        print(f"  predict (1 obs)                : {_summary(predict_ms)}   target < 50 ms median: {verdict}")
        print(f"  log-prob + L1 pass, batch {b:2d}  : {_summary(lp_ms)}")
        print(f"  same with backward, batch {b:2d}  : {_summary(bw_ms)}")


if __name__ == "__main__":
    main()
