"""A tiny chunked VLA driving the real robosuite Lift simulator through the benchmark's pooled evaluator."""

import numpy as np
import pytest

from apo_core.policy.tiny_chunked import RecordingChunkedPolicy, tiny_chunked_policy

pytestmark = pytest.mark.sim

D, STEPS = 7, 10


def _tiny_policy():
    policy = tiny_chunked_policy(RecordingChunkedPolicy, state_dim=9, replan_every=2)
    return policy, policy.action_stats


def test_chunked_policy_drives_lift_one_action_per_step():
    from apo_sim.pool_eval import PoolEvaluator

    policy, stats = _tiny_policy()
    with PoolEvaluator("Lift", image_size=32, envs=1, processes=1) as ev:
        result = ev.evaluate(policy, [5], max_steps=STEPS)
    record = result.records[0]
    assert record.steps == STEPS and not record.success
    assert len(policy.actions) == STEPS  # one action per control step ...
    assert policy.plans == STEPS // 2  # ... from a chunk planned every replan_every = 2 steps
    actions = np.stack(policy.actions)
    assert actions.shape == (STEPS, D) and np.all(np.isfinite(actions))
    lo, hi = np.where(stats.mask, stats.q01, -1.0), np.where(stats.mask, stats.q99, 1.0)
    assert np.all(actions >= lo - 1e-12) and np.all(actions <= hi + 1e-12)
