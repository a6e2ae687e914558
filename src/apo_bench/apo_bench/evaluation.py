"""Autonomous evaluation for the benchmark: one record per evaluation scene (seed), never an average.

Every figure of the report is recomputed from these records (success, steps per seed), so the
tables can be checked against them. The policy runs alone (no operator) on the same seeds for every
method; an episode's outcome depends only on policy, task, seed and perturbation.

Episodes run in the pooled evaluator (:mod:`apo_sim.pool_eval`): ``eval.workers`` simulators in
worker processes (one per core), one batched policy forward per step, records identical to the
sequential :func:`apo_sim.rollout.evaluate_policy`. Starting a pool costs about a second per
simulator (more on a loaded machine), so :class:`EvaluatorCache` keeps the pools of the last few
(task, image size, control rate, perturbation) combinations open across the policies of one run.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

MAX_OPEN_POOLS = 2  # the protocol evaluates runs of policies on one scene kind; more pools only hold memory


class EvaluatorCache:
    """Open :class:`~apo_sim.pool_eval.PoolEvaluator` s keyed by (task, image size, control rate, perturbation,
    camera; None = the simulator's default camera).

    At most ``max_open`` pools stay open (the least recently used is closed first): each simulator
    holds about 300 MB. ``envs`` simulators per pool in ``processes`` worker processes (default: one
    per core). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, envs: int, processes: int | None = None, max_open: int = MAX_OPEN_POOLS):
        if envs < 1 or max_open < 1:
            raise ValueError(f"envs and max_open must be >= 1, got {envs} and {max_open}")
        self.envs, self.processes, self.max_open = int(envs), processes, int(max_open)
        self._pools: OrderedDict[tuple, object] = OrderedDict()
        self.started = 0  # pools started so far (tests and logs)

    def get(self, task: str, image_size: int, control_freq: float = 20.0, perturbation: str | None = None,
            camera: str | None = None):
        from apo_sim.pool_eval import PoolEvaluator

        key = (task, int(image_size), float(control_freq), perturbation, camera)
        if key in self._pools:
            self._pools.move_to_end(key)
            return self._pools[key]
        while len(self._pools) >= self.max_open:
            _, old = self._pools.popitem(last=False)
            old.close()
        env_kwargs = {"camera": camera} if camera else None
        ev = PoolEvaluator(task, int(image_size), self.envs, self.processes, control_freq, env_kwargs,
                           perturbation=perturbation)
        self._pools[key] = ev
        self.started += 1
        return ev

    @property
    def open_keys(self) -> list[tuple]:
        return list(self._pools)

    def close(self) -> None:
        while self._pools:
            _, ev = self._pools.popitem(last=False)
            ev.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def evaluate_seeds(policy_dir, task: str, seeds: list[int], max_steps: int, *, control_freq: float = 20.0,
                   perturbation: str | None = None, workers: int = 1, progress: bool = False,
                   pools: EvaluatorCache | None = None, camera: str | None = None) -> list[dict]:
    """``[{"seed", "success", "steps"}]`` for each seed, in the order given.

    ``pools``: where to take a pool from (kept open for the next policy); without it a pool of
    ``workers`` simulators (never more than there are seeds) is started for this call and closed.
    """
    from apo_sim.rollout import as_policy, policy_env_settings

    seeds = [int(s) for s in seeds]
    if not seeds:
        return []
    policy, _ = as_policy(Path(policy_dir))  # loaded once here, in eval mode
    image_size, _ = policy_env_settings(policy)
    own = pools is None
    if own:
        pools = EvaluatorCache(max(1, min(int(workers), len(seeds))), max_open=1)
    try:
        ev = pools.get(task, image_size, control_freq, perturbation, camera)
        result = ev.evaluate(policy, seeds, max_steps=int(max_steps), progress=progress)
    finally:
        if own:
            pools.close()
    return [{"seed": int(r.seed), "success": bool(r.success), "steps": int(r.steps)} for r in result.records]
