"""Evaluation speed: the pooled evaluator (apo_sim.pool_eval) against sequential evaluate_policy.

Both evaluate the same policy on the same seeds; the script prints episodes/s of each, for the whole
call (building the simulators included) and once running (what a pool reused across several
policies gives), the speed-ups, and the per-seed comparison of the records (success, steps, final
hand/target positions). It exits with status 1 if any record differs: the pooled evaluator must give
exactly the sequential outcomes.

Runs are interleaved (sequential, then each pool size, repeated) so machine load hits them alike;
the load average is printed. A third section explains the figures: one env.step, one predict, one
batched predict of the pool's size, and how far batched logits are from one-sample logits (which
``predict_batch_exact`` guards with EXACT_MARGIN) with the share of rows it had to decode again alone.

Policy: ``--policy DIR`` (a trained model), else the embedded default architecture (random weights,
seeded; the same compute per step as a trained one; it never succeeds, so every episode runs
``--max-steps`` steps).

Usage: python bench/bench_eval.py [--policy DIR] [--task Lift] [--episodes 16] [--max-steps 60]
                                  [--envs 4 8 12] [--processes P] [--repeats 1] [--image-size 84]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np
import torch


def _load_policy(args):
    from apo_core.policy import load_policy
    from apo_core.policy.small_vla import SmallVLAPolicy

    if args.policy:
        pol = load_policy(args.policy)
        pol.model.eval()
        return pol, args.policy
    pol = SmallVLAPolicy.create(state_dim=9, image_size=args.image_size, seed=0)
    return pol, f"random default SmallVLA ({args.image_size} px, state)"


def _compare(reference, other) -> list[str]:
    """Human-readable differences between two record lists (empty when identical)."""
    diffs = []
    for a, b in zip(reference, other, strict=True):
        if a.to_dict() != b.to_dict():
            diffs.append(f"seed {a.seed}: sequential {a.success}/{a.steps} steps/{a.final} "
                         f"vs pooled {b.success}/{b.steps} steps/{b.final}")
    return diffs


def _explain(pol, task: str, sizes: list[int], n_obs: int = 48) -> None:
    """Per-step costs behind the figures, and the batched-vs-single numerics of predict_batch_exact."""
    from apo_core.policy import Observation
    from apo_core.policy.small_vla import EXACT_MARGIN
    from apo_sim.env import SimEnv
    from apo_sim.rollout import policy_env_settings

    image_size, use_state = policy_env_settings(pol)
    rng = np.random.default_rng(0)
    obs, step_ms = [], []
    with SimEnv(task, image_size=image_size) as env:
        for s in range(n_obs // 8):
            o = env.reset(seed=90_000 + s)
            for _ in range(8):
                obs.append(Observation(o.image, env.instruction, o.proprio if use_state else None))
                t0 = time.perf_counter()
                o = env.step(rng.uniform(-0.5, 0.5, 7))
                step_ms.append((time.perf_counter() - t0) * 1e3)
    single_ms = []
    for o in obs[:16]:
        t0 = time.perf_counter()
        pol.predict(o)
        single_ms.append((time.perf_counter() - t0) * 1e3)
    print(f"   env.step + render {np.median(step_ms):6.1f} ms, predict (1 sample) {np.median(single_ms):6.1f} ms "
          f"(medians; sequential evaluation pays both every step)")
    if not hasattr(pol, "predict_batch_exact"):
        print("   this policy has no predict_batch_exact: the pool falls back to one predict per episode")
        return
    images = np.stack([o.image for o in obs])
    instr = [o.instruction for o in obs]
    states = np.stack([o.state for o in obs]) if use_state else None
    for b in sizes:
        t0 = time.perf_counter()
        for j in range(0, len(obs) - b + 1, b):
            pol.predict_batch_exact(images[j:j + b], instr[j:j + b], None if states is None else states[j:j + b])
        per_batch = (time.perf_counter() - t0) * 1e3 / (len(obs) // b)
        print(f"   predict_batch_exact of {b}: {per_batch:6.1f} ms = {per_batch / b:6.1f} ms per episode-step")
    # Numerics: how far a batched forward's logits are from one-sample logits, and the fallback share.
    base = pol._base_model()
    b = max(sizes)
    enc = pol.encode_batch(images[:b], instr[:b], None if states is None else states[:b])
    with torch.inference_mode():
        emb, mask, _ = base.build_inputs_embeds(enc["pixel_values"], enc["input_ids"], enc["attention_mask"],
                                                enc.get("state"))
        batched = base.language_model(inputs_embeds=emb, attention_mask=mask).logits[:, -1]
        worst = 0.0
        for i in range(b):
            e1, m1, _ = base.build_inputs_embeds(enc["pixel_values"][i:i + 1], enc["input_ids"][i:i + 1],
                                                 enc["attention_mask"][i:i + 1],
                                                 None if states is None else enc["state"][i:i + 1])
            one = base.language_model(inputs_embeds=e1, attention_mask=m1).logits[:, -1]
            worst = max(worst, (batched[i] - one[0]).abs().max().item())
    _, gaps = pol._decode_batch(images, instr, states, want_gaps=True)
    print(f"   batched vs one-sample logits (batch {b}): max |difference| {worst:.2e}; EXACT_MARGIN {EXACT_MARGIN:g}; "
          f"rows decoded again alone: {int((gaps < EXACT_MARGIN).sum())}/{len(gaps)} "
          f"(smallest gap {gaps.min():.2e})")


def main() -> int:
    from apo_sim.rollout import evaluate_policy

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default=None, help="model directory (default: random default SmallVLA)")
    p.add_argument("--task", default="Lift")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=70_000)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--envs", type=int, nargs="+", default=[4, 8, 12], help="pool sizes (simulators) to compare")
    p.add_argument("--processes", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--image-size", type=int, default=84, help="for the random default policy")
    p.add_argument("--skip-explain", action="store_true")
    args = p.parse_args()

    pol, name = _load_policy(args)
    seeds = list(range(args.seed, args.seed + args.episodes))
    print(f"policy: {name}; task {args.task}; {args.episodes} episodes (seeds {seeds[0]}-{seeds[-1]}), "
          f"max {args.max_steps} steps; torch threads {torch.get_num_threads()}; cores {os.cpu_count()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    from apo_sim.env import SimEnv
    from apo_sim.pool_eval import PoolEvaluator
    from apo_sim.rollout import policy_env_settings

    image_size, _ = policy_env_settings(pol)
    # per configuration: (start-up s, evaluation s) of every repeat
    times: dict[str, list[tuple[float, float]]] = {"sequential": []}
    reference, failures = None, 0
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        with SimEnv(args.task, image_size=image_size) as env:
            t1 = time.perf_counter()
            seq = evaluate_policy(pol, args.task, seeds=seeds, max_steps=args.max_steps, env=env)
            times["sequential"].append((t1 - t0, time.perf_counter() - t1))
        reference = reference or seq.records
        failures += bool(_compare(reference, seq.records))
        print(f"[{rep + 1}/{args.repeats}] sequential: {seq.successes}/{seq.episodes} successes, "
              f"{sum(seq.steps)} steps, start-up {times['sequential'][-1][0]:.1f} s + "
              f"{times['sequential'][-1][1]:.1f} s", flush=True)
        for n in args.envs:
            clock = {}
            t0 = time.perf_counter()
            with PoolEvaluator(args.task, image_size, envs=n, processes=args.processes) as ev:
                t1 = time.perf_counter()
                pooled = ev.evaluate(pol, seeds, args.max_steps, timings=clock)
                times.setdefault(f"pool of {n}", []).append((t1 - t0, time.perf_counter() - t1))
                procs = ev.pool.processes
            diffs = _compare(reference, pooled.records)
            failures += bool(diffs)
            print(f"[{rep + 1}/{args.repeats}] pool of {n} ({procs} processes): {pooled.successes}/{pooled.episodes} "
                  f"successes, start-up {t1 - t0:.1f} s + {times[f'pool of {n}'][-1][1]:.1f} s "
                  f"(waiting for simulators {clock['simulators_s']:.1f} s, policy forward {clock['forward_s']:.1f} s, "
                  f"{clock['rounds']} lockstep rounds); per-seed records "
                  f"{'IDENTICAL to sequential' if not diffs else f'DIFFER on {len(diffs)} seeds'}", flush=True)
            for d in diffs:
                print(f"      {d}")
    print("== episodes/s, medians over repeats: 'whole call' includes building the simulators, 'running' "
          "is an evaluator already started (a pool reused across policies, as apo bench does)")
    med = {k: (float(np.median([a + b for a, b in v])), float(np.median([b for _, b in v]))) for k, v in times.items()}
    seq_whole, seq_run = med["sequential"]
    for key, (whole, run) in med.items():
        print(f"   {key:12s} whole call {args.episodes / whole:6.3f} ep/s = {seq_whole / whole:5.2f}x sequential   "
              f"running {args.episodes / run:6.3f} ep/s = {seq_run / run:5.2f}x sequential")
    print("   per-seed outcomes (success, steps):", [(r.seed, int(r.success), r.steps) for r in reference])
    if not args.skip_explain:
        print("== where the time goes")
        _explain(pol, args.task, args.envs)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if failures:
        print(f"FAILED: {failures} run(s) gave records different from the first sequential run", file=sys.stderr)
        return 1
    print("all runs gave identical per-seed records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
