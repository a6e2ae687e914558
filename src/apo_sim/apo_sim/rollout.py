"""Autonomous evaluation of a policy in simulation: the policy alone, no operator, fixed seeds.

Used by the retrain service's optional success-rate gate and by ``apo demo`` to compare versions.
Seeds are shared between versions, so two versions face the same initial scenes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apo_core.policy import Observation, load_policy
from apo_sim.env import SimEnv


@dataclass
class EvalResult:
    policy: str
    task: str
    episodes: int
    successes: int
    steps: list[int] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


def evaluate_policy(policy_dir, task: str = "Lift", episodes: int = 10, seed: int = 10_000, max_steps: int = 150,
                    control_freq: float = 20.0, progress: bool = False, env: SimEnv | None = None) -> EvalResult:
    """Roll the policy out for ``episodes`` seeds (seed, seed+1, ...); success ends an episode early."""
    policy = load_policy(Path(policy_dir))
    image_size = int(getattr(getattr(policy, "config", None), "image_size", 128))
    use_state = getattr(getattr(policy, "config", None), "state_dim", 0) > 0
    own_env = env is None
    env = env or SimEnv(task, image_size=image_size, control_freq=control_freq)
    result = EvalResult(str(policy_dir), task, episodes, 0)
    try:
        for i in range(episodes):
            obs = env.reset(seed=seed + i)
            t = 0
            for t in range(max_steps):  # noqa: B007 (t is reported)
                if obs.success:
                    break
                action = policy.predict(Observation(obs.image, env.instruction, obs.proprio if use_state else None))
                obs = env.step(np.clip(action, -1.0, 1.0))
            result.successes += int(obs.success)
            result.steps.append(t + 1)
            if progress:
                print(f"[eval] {Path(policy_dir).name}: episode {i + 1}/{episodes} "
                      f"{'success' if obs.success else 'failure'} after {t + 1} steps", file=sys.stderr, flush=True)
    finally:
        if own_env:
            env.close()
    return result


def success_rate(policy_dir, task: str = "Lift", episodes: int = 10, seed: int = 10_000, max_steps: int = 150) -> float:
    return evaluate_policy(policy_dir, task, episodes, seed, max_steps).success_rate
