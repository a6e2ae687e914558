"""The scripted expert on the real simulator: success from reset and after a random takeover."""

import numpy as np
import pytest

from apo_sim.demos import rollout_expert
from apo_sim.env import SimEnv
from apo_sim.expert import ScriptedExpert, task_progress

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def lift():
    with SimEnv("Lift", render=False) as env:
        yield env, ScriptedExpert("Lift")


@pytest.mark.parametrize("seed", [0, 1])
def test_lift_from_reset(lift, seed):
    env, expert = lift
    result = rollout_expert(env, expert, max_steps=150, seed=seed, render=False)
    assert result.success and result.steps_to_success < 100


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lift_takes_over_after_random_steps(lift, seed):
    env, expert = lift
    result = rollout_expert(env, expert, max_steps=300, seed=seed, random_steps=30, render=False)
    assert result.success


def test_lift_progress_rises_to_one(lift):
    env, expert = lift
    env.reset(seed=4, render=False)
    expert.reset()
    first = task_progress(env.task_state())
    assert 0.0 <= first.progress < 0.5 and not first.grasped and abs(first.object_height) < 0.005
    seen_grasp = False
    for _ in range(150):
        state = env.task_state()
        status = expert.status(state)
        assert 0.0 <= status.progress <= 1.0
        seen_grasp |= status.grasped
        if state.success:
            break
        action = expert.act(state)
        assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
        env.step(action, render=False)
    final = task_progress(env.task_state())
    assert final.progress == 1.0 and seen_grasp and final.object_height > 0.015
    assert final.as_list()[2] in (0.0, 1.0)


def test_stack_from_reset():
    with SimEnv("Stack", render=False) as env:
        expert = ScriptedExpert("Stack")
        result = rollout_expert(env, expert, max_steps=300, seed=0, render=False)
        assert result.success
        assert task_progress(env.task_state()).progress == 1.0
