"""Pooled evaluation: several simulators in worker processes, one batched policy forward per step.

Same contract and same records as :func:`apo_sim.rollout.evaluate_policy` (an episode's outcome
depends only on policy, task and seed), faster: the simulators of a :class:`~apo_sim.env_pool.EnvPool`
step in parallel, and the parent decodes the actions of every running episode in one forward pass.
A simulator whose episode ends gets the next seed at once, in the same round as the others' steps.
:class:`PoolEvaluator` keeps a pool open across several policies; :func:`evaluate_pooled` is one call.

Pool size (bench/bench_eval.py, 2 cores): the simulators alone keep both cores busy (a step with its
render costs about 20 ms of CPU, so 10 ms per episode-step at best), and the forward per
episode-step falls from 17-28 ms alone to 3-4 ms in a batch of 12; beyond 12 simulators nothing is
gained but start-up time (about a second each) and memory (about 300 MB each). Hence
``POOL_SIZE_PER_CORE`` = 6: 12 simulators in two processes on this machine.

The batched forward must not change any action: :func:`predict_many` uses the policy's
``predict_batch_exact`` (rows bitwise equal to single-sample ``predict``) when it has one, and falls
back to one ``predict`` per observation otherwise (same results, no batching gain). A policy with
per-episode state (a chunked policy's chunk) keeps it per simulator: it is reset when that simulator
starts a seed and told which simulator each row comes from.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from apo_core.policy import Observation, VLAPolicy, check_camera
from apo_sim.env import DEFAULT_CAMERA
from apo_sim.env_pool import EnvPool, StepReply
from apo_sim.episode import EpisodeRecord
from apo_sim.perturbations import check as check_perturbation
from apo_sim.rollout import EvalResult, as_policy, camera_env_kwargs, policy_env_settings, seed_list

POOL_SIZE_PER_CORE = 6


def default_pool_size() -> int:
    """Simulators to run: enough episodes per forward to amortise it (bench/bench_eval.py measures it)."""
    return POOL_SIZE_PER_CORE * (os.cpu_count() or 1)


def predict_many(policy: VLAPolicy, observations: list[Observation], slots: list[int]) -> list[np.ndarray]:
    """One action per observation, each exactly what ``policy.predict`` gives for it alone.

    ``slots[i]`` is the simulator observation i comes from: a policy with per-episode state
    (``episode_state_per_slot``, e.g. a chunked policy executing its chunk) keeps one state per simulator.
    """
    if len(slots) != len(observations):
        raise ValueError(f"{len(observations)} observations but {len(slots)} slots")
    per_slot = policy.episode_state_per_slot
    exact = getattr(policy, "predict_batch_exact", None)
    with_state = [o.state is not None for o in observations]
    if exact is None or len(observations) < 2 or len(set(with_state)) > 1:
        if per_slot:
            return [policy.predict(o, slot=w) for o, w in zip(observations, slots, strict=True)]
        return [policy.predict(o) for o in observations]
    states = np.stack([np.asarray(o.state) for o in observations]) if with_state[0] else None
    images, instructions = np.stack([o.image for o in observations]), [o.instruction for o in observations]
    if per_slot:
        return list(exact(images, instructions, states, slots=list(slots)))
    return list(exact(images, instructions, states))


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


class PoolEvaluator:
    """A pool of simulators kept open across evaluations (several policies, one task, image size and scene
    perturbation: ``perturbation`` (None, or one of :data:`apo_sim.perturbations.PERTURBATIONS`) is
    applied by every simulator at every reset, as ``SimEnv(perturbation=...)`` does in the sequential
    evaluator; it may equally be given as ``env_kwargs["perturbation"]``).

    Starting the pool costs about a second per simulator; ``apo bench`` evaluates many policies on the
    same task, so it pays that once. Use as a context manager; :func:`evaluate_pooled` is the one-shot form.
    """

    def __init__(self, task: str, image_size: int, envs: int | None = None, processes: int | None = None,
                 control_freq: float = 20.0, env_kwargs: dict | None = None, perturbation: str | None = None):
        self.task = task
        self.image_size = int(image_size)
        kwargs = {"image_size": self.image_size, "control_freq": control_freq, **(env_kwargs or {})}
        if perturbation is not None:
            if kwargs.get("perturbation") not in (None, perturbation):
                raise ValueError(f"perturbation {perturbation!r} contradicts env_kwargs {kwargs['perturbation']!r}")
            kwargs["perturbation"] = perturbation
        check_perturbation(kwargs.get("perturbation"))  # here, not as a traceback from every worker
        self.perturbation: str | None = kwargs.get("perturbation")
        self.camera: str = kwargs.get("camera") or DEFAULT_CAMERA
        t0 = time.perf_counter()
        self.pool = EnvPool(envs or default_pool_size(), task, kwargs, processes)
        self.startup_s = time.perf_counter() - t0

    def evaluate(self, policy, seeds, max_steps: int = 150, progress: bool = False,
                 timings: dict | None = None) -> EvalResult:
        """Records of ``policy`` on ``seeds`` (in that order), as :func:`~apo_sim.rollout.evaluate_policy` gives.

        ``timings``, if given, receives the seconds spent waiting for the simulators and in the policy
        forward, and the number of lockstep rounds (for bench/bench_eval.py).
        """
        pol, name = as_policy(policy)
        image_size, use_state = policy_env_settings(pol)
        if image_size != self.image_size:
            raise ValueError(f"{name} takes {image_size} px images; this pool renders {self.image_size} px")
        check_camera(pol, self.camera, f"this pool (camera {self.camera!r})")
        todo = [int(s) for s in seeds]
        pool = self.pool
        records: list[EpisodeRecord | None] = [None] * len(todo)
        queue = list(enumerate(todo))[::-1]  # pop() from the end gives seeds in the order given
        slot: dict[int, int] = {}  # simulator -> position in ``todo`` of its current episode
        label = f"{Path(name).name} {self.task}" + (f" {self.perturbation}" if self.perturbation else "")
        report = _Progress(label, len(todo), progress)
        clock = {"simulators_s": 0.0, "forward_s": 0.0, "rounds": 0}
        commands: dict[int, tuple] = {}
        for w in range(min(pool.size, len(todo))):
            slot[w], s = queue.pop()
            pol.reset(w)  # a new episode in simulator w: the policy's state for w (a chunk) starts fresh
            commands[w] = pool.start_command(s, max_steps)
        while commands:
            t0 = time.perf_counter()
            replies: dict[int, StepReply] = pool.exchange(commands)
            clock["simulators_s"] += time.perf_counter() - t0
            clock["rounds"] += 1
            commands = {}
            running = []
            for w, r in sorted(replies.items()):
                if not r.done:
                    running.append(w)
                    continue
                records[slot[w]] = r.record
                report.episode(r.record)
                if queue:  # the free simulator takes the next seed in this same round
                    slot[w], s = queue.pop()
                    pol.reset(w)
                    commands[w] = pool.start_command(s, max_steps)
            if running:
                t0 = time.perf_counter()
                obs = [Observation(replies[w].image, pool.instruction, replies[w].proprio if use_state else None)
                       for w in running]
                for w, action in zip(running, predict_many(pol, obs, running), strict=True):
                    commands[w] = pool.step_command(action)
                clock["forward_s"] += time.perf_counter() - t0
        if timings is not None:
            timings.update(clock)
        return EvalResult.from_records(name, self.task, records)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def evaluate_pooled(policy, task: str = "Lift", episodes: int = 10, seed: int = 10_000, max_steps: int = 150,
                    control_freq: float = 20.0, progress: bool = False, seeds=None, envs: int | None = None,
                    processes: int | None = None, env_kwargs: dict | None = None,
                    timings: dict | None = None, perturbation: str | None = None) -> EvalResult:
    """Like :func:`~apo_sim.rollout.evaluate_policy`, with ``envs`` simulators (default
    :func:`default_pool_size`, never more than there are seeds) in ``processes`` worker processes
    (default one per core). Records come in the order of ``seeds``; ``timings`` also gets ``startup_s``.
    ``perturbation``: a scene perturbation for every episode (see :class:`PoolEvaluator`).
    """
    pol, name = as_policy(policy)
    image_size, _ = policy_env_settings(pol)
    todo = seed_list(episodes, seed, seeds)
    if not todo:
        return EvalResult.from_records(name, task, [])
    size = min(len(todo), envs or default_pool_size())
    env_kwargs = camera_env_kwargs(pol, env_kwargs)
    with PoolEvaluator(task, image_size, size, processes, control_freq, env_kwargs, perturbation) as ev:
        result = ev.evaluate(pol, todo, max_steps, progress, timings)
        if timings is not None:
            timings["startup_s"] = ev.startup_s
    return result
