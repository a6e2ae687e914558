"""A chunked VLA in the evaluators and the lockstep deployment: every episode starts from a fresh chunk,
and the pooled evaluator (one chunk state per simulator) gives exactly the sequential evaluator's episodes."""

import numpy as np
import pytest

from apo_bench.deploy import LockstepDeployment
from apo_bench.evaluation import EvaluatorCache, evaluate_seeds
from apo_core.policy.tiny_chunked import RecordingChunkedPolicy, tiny_chunked_policy
from apo_sim.env import SimEnv
from apo_sim.rollout import evaluate_policy

pytestmark = pytest.mark.sim

D = 7
SEEDS = [70003, 70000, 70002]  # more seeds than simulators: a simulator that finishes takes the next one
MAX_STEPS = 7  # not a multiple of replan_every: an episode ends part-way through a chunk


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """Saved tiny chunked policies: receding horizon (with robot state) and temporal ensembling (image only)."""
    root = tmp_path_factory.mktemp("chunked")
    out = []
    for name, kwargs in (("receding", {"state_dim": 9, "replan_every": 2}),
                         ("ensembling", {"replan_every": 1, "ensemble_decay": 0.5})):
        p = tiny_chunked_policy(**kwargs)
        p.version = name
        p.save(root / name)
        out.append(root / name)
    return out


def test_pooled_records_equal_sequential_ones_per_seed(policies):
    with SimEnv("Lift", image_size=32) as env, EvaluatorCache(envs=2) as pools:
        for policy_dir in policies:
            records = evaluate_seeds(policy_dir, "Lift", SEEDS, MAX_STEPS, pools=pools)
            sequential = evaluate_policy(policy_dir, "Lift", seeds=SEEDS, max_steps=MAX_STEPS, env=env)
            assert records == [{"seed": r.seed, "success": r.success, "steps": r.steps} for r in sequential.records]
            # Full records (final hand and cube positions, exact floats): the same trajectories, seed by seed.
            full = pools.get("Lift", 32).evaluate(policy_dir, SEEDS, max_steps=MAX_STEPS)
            assert [r.to_dict() for r in full.records] == [r.to_dict() for r in sequential.records]


def test_an_episode_after_another_starts_from_a_fresh_chunk():
    policy = tiny_chunked_policy(RecordingChunkedPolicy, state_dim=9, replan_every=2)
    with SimEnv("Lift", image_size=32) as env:
        after = evaluate_policy(policy, "Lift", seeds=[5, 6], max_steps=MAX_STEPS, env=env)
        # A fresh chunk at step 0 of each episode, then one every 2 steps: steps 0, 2, 4, 6.
        assert policy.plans == 2 * 4
        alone = evaluate_policy(policy, "Lift", seeds=[6], max_steps=MAX_STEPS, env=env)
    assert after.records[1].to_dict() == alone.records[0].to_dict()


def test_lockstep_deployment_starts_each_episode_from_a_fresh_chunk():
    policy = tiny_chunked_policy(RecordingChunkedPolicy, replan_every=2)
    with SimEnv("Lift", image_size=32) as env:
        deploy = LockstepDeployment(env, policy, max_steps=MAX_STEPS, bags_dir=None, operator=False)
        first = deploy.run_episode(11)
        n = len(policy.actions)
        assert n == MAX_STEPS and policy.plans == 4
        second = deploy.run_episode(11)
    assert policy.plans == 8  # not 7: the second episode did not finish the first one's chunk
    assert (first.steps, first.outcome) == (second.steps, second.outcome)
    np.testing.assert_array_equal(np.stack(policy.actions[:n]), np.stack(policy.actions[n:]))


def test_a_batch_of_several_environments_needs_their_slots():
    policy = tiny_chunked_policy()
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="pass slots="):
        policy.predict_batch_exact(images, "lift the cube")
    from apo_core.policy import Observation
    from apo_sim.pool_eval import predict_many

    obs = [Observation(images[0], "lift the cube"), Observation(images[1], "lift the cube")]
    with pytest.raises(ValueError, match="2 observations but 1 slots"):
        predict_many(policy, obs, [0])
    acts = predict_many(policy, obs, [3, 5])  # two environments, two chunk states
    assert len(acts) == 2 and all(a.shape == (D,) and np.all(np.isfinite(a)) for a in acts)
    assert not policy.executor.needs_plan(3) and not policy.executor.needs_plan(5)
    assert policy.executor.needs_plan(0)
