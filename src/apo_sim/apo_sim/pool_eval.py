"""Pooled evaluation: several simulators in worker processes, one batched policy forward per step.

Same contract and same records as :func:`apo_sim.rollout.evaluate_policy` (an episode's outcome
depends only on policy, task and seed), faster: the simulators of a :class:`~apo_sim.env_pool.EnvPool`
step in parallel, and the parent decodes the actions of every running episode in one forward pass.
A worker whose episode ends gets the next seed at once, in the same round as the others' steps.

The batched forward must not change any action: :func:`predict_many` uses the policy's
``predict_batch_exact`` (rows bitwise equal to single-sample ``predict``) when it has one, and falls
back to one ``predict`` per observation otherwise (same results, no batching gain).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from apo_core.policy import Observation, VLAPolicy
from apo_sim.env_pool import EnvPool, StepReply
from apo_sim.episode import EpisodeRecord
from apo_sim.rollout import EvalResult, as_policy, policy_env_settings, seed_list


def default_pool_size() -> int:
    """Simulators to run: enough episodes per forward to amortise it, a few per core to overlap.

    bench/bench_eval.py measures the choice (2 cores: 4 workers, so each core has one simulator
    stepping while the other's reply is being read, and a batch of 4 for the forward).
    """
    return max(2, 2 * (os.cpu_count() or 1))


def predict_many(policy: VLAPolicy, observations: list[Observation]) -> list[np.ndarray]:
    """One action per observation, each exactly what ``policy.predict`` gives for it alone."""
    exact = getattr(policy, "predict_batch_exact", None)
    with_state = [o.state is not None for o in observations]
    if exact is None or len(observations) < 2 or len(set(with_state)) > 1:
        return [policy.predict(o) for o in observations]
    states = np.stack([np.asarray(o.state) for o in observations]) if with_state[0] else None
    acts = exact(np.stack([o.image for o in observations]), [o.instruction for o in observations], states)
    return list(acts)


class _Progress:
    """``[eval-pool]`` lines on stderr: episodes done / total, successes, rate and ETA."""

    def __init__(self, name: str, total: int, enabled: bool):
        self.name, self.total, self.enabled = name, total, enabled
        self.started = time.monotonic()
        self.done = self.wins = 0

    def episode(self, record: EpisodeRecord) -> None:
        self.done += 1
        self.wins += int(record.success)
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        print(f"[eval-pool] {self.name}: {self.done}/{self.total} episodes, {self.wins} successes, "
              f"{self.done / max(elapsed, 1e-9):.2f} ep/s, elapsed {elapsed:.0f} s, ETA {eta:.0f} s",
              file=sys.stderr, flush=True)


def evaluate_pooled(policy, task: str = "Lift", episodes: int = 10, seed: int = 10_000, max_steps: int = 150,
                    control_freq: float = 20.0, progress: bool = False, seeds=None, workers: int | None = None,
                    env_kwargs: dict | None = None) -> EvalResult:
    """Like :func:`~apo_sim.rollout.evaluate_policy`, with ``workers`` simulators (default
    :func:`default_pool_size`, never more than there are seeds). Records come in the order of ``seeds``."""
    pol, name = as_policy(policy)
    image_size, use_state = policy_env_settings(pol)
    todo = seed_list(episodes, seed, seeds)
    if not todo:
        return EvalResult.from_records(name, task, [])
    size = min(len(todo), workers or default_pool_size())
    kwargs = {"image_size": image_size, "control_freq": control_freq, **(env_kwargs or {})}
    records: list[EpisodeRecord | None] = [None] * len(todo)
    queue = list(enumerate(todo))[::-1]  # pop() from the end gives seeds in the order given
    slot: dict[int, int] = {}  # worker -> position in ``todo`` of its current episode
    report = _Progress(Path(name).name + f" {task}", len(todo), progress)
    with EnvPool(size, task, kwargs) as pool:
        replies: dict[int, StepReply] = {}
        commands: dict[int, tuple] = {}
        for w in range(size):
            slot[w], s = queue.pop()
            commands[w] = pool.start_command(s, max_steps)
        while commands:
            replies = pool.exchange(commands)
            commands = {}
            running = []
            for w, r in sorted(replies.items()):
                if not r.done:
                    running.append(w)
                    continue
                records[slot[w]] = r.record
                report.episode(r.record)
                if queue:
                    slot[w], s = queue.pop()
                    commands[w] = pool.start_command(s, max_steps)
            if running:
                obs = [Observation(replies[w].image, pool.instruction, replies[w].proprio if use_state else None)
                       for w in running]
                for w, action in zip(running, predict_many(pol, obs), strict=True):
                    commands[w] = pool.step_command(action)
    return EvalResult.from_records(name, task, records)
