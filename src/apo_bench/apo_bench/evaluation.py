"""Autonomous evaluation for the benchmark: one record per evaluation scene (seed), never an average.

Every figure of the report is recomputed from these records (success, steps per seed), so the
tables can be checked against them. The policy runs alone (no operator) on the same seeds for every
method; an episode's outcome depends only on policy, task, seed and perturbation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def evaluate_seeds(policy_dir, task: str, seeds: list[int], max_steps: int, *, control_freq: float = 20.0,
                   perturbation: str | None = None, workers: int = 1, progress: bool = False) -> list[dict]:
    """``[{"seed", "success", "steps"}]`` for each seed, in the order given."""
    from apo_core.policy import Observation, load_policy
    from apo_sim.env import SimEnv

    policy = load_policy(Path(policy_dir))
    policy.model.eval()
    cfg = getattr(policy, "config", None)
    image_size = int(getattr(cfg, "image_size", 128))
    use_state = getattr(cfg, "state_dim", 0) > 0
    kwargs = {"perturbation": perturbation} if perturbation else {}
    env = SimEnv(task, image_size=image_size, control_freq=control_freq, **kwargs)
    records = []
    try:
        for i, seed in enumerate(seeds, 1):
            obs = env.reset(seed=int(seed))
            steps = 0
            while not obs.success and steps < max_steps:
                action = policy.predict(Observation(obs.image, env.instruction, obs.proprio if use_state else None))
                obs = env.step(np.clip(action, -1.0, 1.0))
                steps += 1
            records.append({"seed": int(seed), "success": bool(obs.success), "steps": steps})
            if progress:
                wins = sum(r["success"] for r in records)
                print(f"[eval] {Path(policy_dir).name} {task} {perturbation or ''}: {i}/{len(seeds)} episodes, "
                      f"{wins} successes", file=sys.stderr, flush=True)
    finally:
        env.close()
    return records
