"""One autonomous evaluation episode as a step-by-step object, shared by every evaluator.

The sequential evaluator (:func:`apo_sim.rollout.evaluate_policy`) and the pooled one
(:mod:`apo_sim.pool_eval`, where the policy runs in another process than the simulator) both drive
this class, so "an episode" means one thing: reset with the seed, then policy actions until the task
succeeds or ``max_steps`` actions have been executed. ``steps`` counts executed actions.

The record's ``final`` summary (end-effector and target-object positions, exact floats) makes a
repeatability check sensitive to any divergence of the trajectory, not only to the outcome.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from apo_sim.env import SimEnv, SimObservation


@dataclass
class EpisodeRecord:
    """The outcome of one evaluation episode (JSON-friendly through :meth:`to_dict`)."""

    seed: int
    success: bool
    steps: int
    final: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def final_summary(env: SimEnv) -> dict:
    """Where the hand and the task's target object ended up (world frame, metres)."""
    state = env.task_state()
    target = state.objects.get(env.spec.target)
    return {"eef_pos": [float(v) for v in state.eef_pos],
            "target_pos": [float(v) for v in target.pos] if target is not None else None,
            "grasped": bool(state.grasped)}


class PolicyEpisode:
    """Reset ``env`` with ``seed``; then :meth:`apply` one action at a time until :attr:`done`."""

    def __init__(self, env: SimEnv, seed: int, max_steps: int):
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        self.env = env
        self.seed = int(seed)
        self.max_steps = int(max_steps)
        self.steps = 0
        self.obs: SimObservation = env.reset(seed=self.seed)

    @property
    def done(self) -> bool:
        return bool(self.obs.success) or self.steps >= self.max_steps

    def policy_input(self, use_state: bool):
        """The policy's :class:`apo_core.policy.Observation` (imported here: simulator workers run no torch)."""
        from apo_core.policy import Observation as PolicyObservation

        return PolicyObservation(self.obs.image, self.env.instruction, self.obs.proprio if use_state else None)

    def apply(self, action) -> None:
        if self.done:
            raise RuntimeError(f"episode of seed {self.seed} is over; it takes no more actions")
        self.obs = self.env.step(np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0))
        self.steps += 1

    def record(self) -> EpisodeRecord:
        return EpisodeRecord(self.seed, bool(self.obs.success), self.steps, final_summary(self.env))
