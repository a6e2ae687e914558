"""Autonomous evaluation of a policy in simulation: the policy alone, no operator, fixed seeds.

Used by the retrain service's optional success-rate gate and by ``apo demo`` to compare versions.
Seeds are shared between versions, so two versions face the same initial scenes. An episode's
outcome depends only on policy, task and seed (not on the order of the seeds nor on which SimEnv
runs them): SimEnv builds every scene model from one seed and resets every other piece of state,
and the policy's greedy decoding is deterministic. :mod:`apo_sim.pool_eval` gives the same records
faster, with several simulators and one batched policy forward per step.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from apo_core.policy import VLAPolicy, check_camera, load_policy
from apo_sim.env import SimEnv, task_spec
from apo_sim.episode import EpisodeRecord, PolicyEpisode


@dataclass
class EvalResult:
    policy: str
    task: str
    episodes: int
    successes: int
    steps: list[int] = field(default_factory=list)
    records: list[EpisodeRecord] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    @classmethod
    def from_records(cls, policy: str, task: str, records: list[EpisodeRecord]) -> EvalResult:
        return cls(policy, task, len(records), sum(r.success for r in records), [r.steps for r in records],
                   list(records))


def policy_env_settings(policy: VLAPolicy) -> tuple[int, bool]:
    """(image size, uses robot state) the policy was built for."""
    cfg = getattr(policy, "config", None)
    return int(getattr(cfg, "image_size", 128)), getattr(cfg, "state_dim", 0) > 0


def camera_env_kwargs(policy: VLAPolicy, env_kwargs: dict | None) -> dict:
    """``env_kwargs`` with the camera the policy was trained on when none is given; ConfigError when one
    is given and the policy was trained on another (its images would be a view it never saw)."""
    kwargs = dict(env_kwargs or {})
    if kwargs.get("camera"):
        check_camera(policy, kwargs["camera"], "the evaluation")
    elif policy.camera:
        kwargs["camera"] = policy.camera
    return kwargs


def as_policy(policy) -> tuple[VLAPolicy, str]:
    """A loaded policy and a name for it, from a policy object or a model directory."""
    if isinstance(policy, VLAPolicy):
        return policy, policy.version or type(policy).__name__
    pol = load_policy(Path(policy))
    pol.model.eval()
    return pol, str(policy)


def seed_list(episodes: int, seed: int, seeds=None) -> list[int]:
    return [int(s) for s in seeds] if seeds is not None else list(range(seed, seed + episodes))


def default_max_steps(task: str, max_steps: int | None = None) -> int:
    """``max_steps``, or when None the task's default episode limit (``TaskSpec.max_episode_steps``)."""
    return task_spec(task).max_episode_steps if max_steps is None else int(max_steps)


def evaluate_policy(policy_dir, task: str = "Lift", episodes: int = 10, seed: int = 10_000,
                    max_steps: int | None = None, control_freq: float = 20.0, progress: bool = False,
                    env: SimEnv | None = None, seeds=None, env_kwargs: dict | None = None) -> EvalResult:
    """Roll the policy out on ``seeds`` (default seed, seed+1, ... for ``episodes``), one after the other.

    ``policy_dir`` is a model directory or a loaded policy; success ends an episode early, and so does
    ``max_steps`` actions (None: the task's default, e.g. Lift 150, PickPlaceCan 250).
    """
    max_steps = default_max_steps(task, max_steps)
    policy, name = as_policy(policy_dir)
    image_size, use_state = policy_env_settings(policy)
    todo = seed_list(episodes, seed, seeds)
    own_env = env is None
    if own_env:
        env = SimEnv(task, image_size=image_size, control_freq=control_freq, **camera_env_kwargs(policy, env_kwargs))
    else:
        check_camera(policy, env.camera, "the given simulator")
    records: list[EpisodeRecord] = []
    started = time.monotonic()
    try:
        for i, s in enumerate(todo):
            ep = PolicyEpisode(env, s, max_steps)
            policy.reset()  # per-episode state (a chunked policy's chunk) must not leak into the next seed
            while not ep.done:
                ep.apply(policy.predict(ep.policy_input(use_state)))
            records.append(ep.record())
            if progress:
                r = records[-1]
                print(f"[eval] {Path(name).name}: episode {i + 1}/{len(todo)} (seed {s}) "
                      f"{'success' if r.success else 'failure'} after {r.steps} steps, "
                      f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        if own_env:
            env.close()
    return EvalResult.from_records(name, task, records)


def success_rate(policy_dir, task: str = "Lift", episodes: int = 10, seed: int = 10_000,
                 max_steps: int | None = None) -> float:
    return evaluate_policy(policy_dir, task, episodes, seed, max_steps).success_rate
