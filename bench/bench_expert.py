"""Scripted-expert success per task: from reset and when taking over after random actions.

Prints, per task and setting, the success rate over a fixed seed range, the control steps to
success (median, 90th percentile, max) and the failing seeds. The same protocol as
``apo_sim.demos.rollout_expert`` (random actions drawn from seed + 7919, not counted in the steps).

    python bench/bench_expert.py --tasks PickPlaceCan --seeds 50 --random-steps 0 20 30
    python bench/bench_expert.py --tasks Lift Stack PickPlaceCan --seeds 10 --perturbation position
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from apo_sim.demos import rollout_expert
from apo_sim.env import TASKS, SimEnv
from apo_sim.expert import ScriptedExpert
from apo_sim.perturbations import PERTURBATIONS


def run(task: str, seeds: range, random_steps: int, max_steps: int, perturbation: str | None) -> dict:
    started = time.monotonic()
    with SimEnv(task, render=False, perturbation=perturbation) as env:
        expert = ScriptedExpert(task)
        steps, failures = [], []
        for seed in seeds:
            result = rollout_expert(env, expert, max_steps, seed=seed, random_steps=random_steps, render=False)
            if result.success and result.steps_to_success is not None:
                steps.append(result.steps_to_success)
            else:
                failures.append(seed)
    return {"task": task, "random_steps": random_steps, "episodes": len(seeds), "successes": len(steps),
            "steps": steps, "failures": failures, "seconds": time.monotonic() - started}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=sorted(TASKS), choices=sorted(TASKS))
    p.add_argument("--seeds", type=int, default=50, help="seeds 0 .. N-1 (plus --seed-base)")
    p.add_argument("--seed-base", type=int, default=0)
    p.add_argument("--random-steps", type=int, nargs="+", default=[0, 20, 30])
    p.add_argument("--max-steps", type=int, default=250)
    p.add_argument("--perturbation", choices=PERTURBATIONS, default=None)
    args = p.parse_args(argv)
    seeds = range(args.seed_base, args.seed_base + args.seeds)
    print(f"seeds {seeds.start}..{seeds.stop - 1}, max {args.max_steps} steps, perturbation {args.perturbation}")
    print(f"{'task':<13} {'random':>6} {'success':>12} {'median':>6} {'p90':>5} {'max':>5} {'s/ep':>5}  failing seeds")
    for task in args.tasks:
        for random_steps in args.random_steps:
            r = run(task, seeds, random_steps, args.max_steps, args.perturbation)
            s = np.array(r["steps"]) if r["steps"] else np.array([np.nan])
            rate = f"{r['successes']}/{r['episodes']} {100 * r['successes'] / r['episodes']:.0f}%"
            print(f"{task:<13} {random_steps:>6} {rate:>12} {np.median(s):>6.0f} {np.percentile(s, 90):>5.0f} "
                  f"{np.max(s):>5.0f} {r['seconds'] / r['episodes']:>5.2f}  {r['failures']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
