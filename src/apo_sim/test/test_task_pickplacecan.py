"""PickPlaceCan on the real simulator: task state, scripted expert, progress signal, operator supervision."""

import numpy as np
import pytest

from apo_core.dataset import episode_ids, read_episode
from apo_sim.demos import DEFAULT_MAX_STEPS, main, rollout_expert
from apo_sim.env import TASKS, SimEnv
from apo_sim.expert import ScriptedExpert, task_progress

pytestmark = pytest.mark.sim
TASK = "PickPlaceCan"
MAX_STEPS = DEFAULT_MAX_STEPS[TASK]


@pytest.fixture(scope="module")
def can():
    with SimEnv(TASK, render=False, seed=0) as env:
        yield env, ScriptedExpert(TASK)


def test_task_state_describes_bins_and_can(can):
    env, _ = can
    env.reset(seed=3, render=False)
    state = env.task_state()
    assert env.instruction == TASKS[TASK].instruction == "put the can in the bin on the right"
    can_state = state.objects["Can"]
    np.testing.assert_allclose(can_state.half_size, [0.025, 0.025, 0.04], atol=0.002)
    assert abs(state.table_z - 0.82) < 1e-6  # the bins' floor
    assert abs(can_state.pos[2] - state.table_z - 0.04) < 0.003  # standing upright on it
    low, high = state.goal_region
    assert low[1] > 0.2 and high[1] > low[1] and not state.success  # the right-hand bin, can not in it
    assert can_state.pos[1] < 0.0 and not state.grasped


@pytest.mark.parametrize("seed", [0, 1])
def test_expert_places_the_can_from_reset(can, seed):
    env, expert = can
    result = rollout_expert(env, expert, MAX_STEPS, seed=seed, render=False, hold_steps=5)
    assert result.success and result.steps_to_success < 200
    assert env.success()  # still a success after the hold steps: the hand moved clear of the can


def test_expert_takes_over_after_random_steps(can):
    env, expert = can
    result = rollout_expert(env, expert, MAX_STEPS, seed=2, random_steps=25, render=False)
    assert result.success


def test_progress_rises_through_the_phases_without_a_drop(can):
    """The operator's signal: no regress and no 'drop' along a correct rollout, 1.0 at the end."""
    env, expert = can
    env.reset(seed=4, render=False)
    expert.reset()
    statuses = []
    for _ in range(MAX_STEPS):
        state = env.task_state()
        statuses.append(task_progress(state))
        if state.success:
            break
        env.step(expert.act(state), render=False)
    progress = np.array([s.progress for s in statuses])
    assert progress[-1] == 1.0 and progress[0] < 0.25
    assert np.all(np.diff(progress) > -0.05)  # never a fall the operator would call a regress
    phases = [s.phase for s in statuses]
    assert {"reach", "carry"} <= set(phases)
    first_grasp = next(i for i, s in enumerate(statuses) if s.grasped)
    assert all(s.grasped for s in statuses[first_grasp:])  # released in the bin: placed, not dropped
    assert max(s.object_height for s in statuses) > 0.1  # carried over the bins' walls


def test_scripted_operator_corrects_a_stalling_policy(can):
    """The ROS-free operator logic of apo_intervention supervises the task through the expert's signal."""
    operator_logic = pytest.importorskip("apo_intervention.operator_logic")
    from apo_intervention.config import OperatorConfig

    env, expert = can
    supervisor = operator_logic.SupervisorLogic(OperatorConfig())
    env.reset(seed=5, render=False)
    expert.reset()
    supervisor.episode_started()
    for _ in range(600):
        state = env.task_state()
        if state.success:
            break
        status = task_progress(state)
        supervisor.observe(operator_logic.OperatorObservation(status.progress, status.object_height, status.grasped))
        # The "policy" only holds still: every bit of progress comes from the operator's corrections.
        action = expert.act(state) if supervisor.correcting else np.zeros(7)
        env.step(action, render=False)
    takeovers = [h for h in supervisor.history if h[0] == "takeover"]
    assert env.success() and takeovers
    assert all(reason.startswith("stall") for _, _, reason in takeovers)


def test_expert_does_not_interfere_with_a_correct_policy(can):
    """Driven by the expert itself, the operator never takes over (no false stall, regress or drop)."""
    operator_logic = pytest.importorskip("apo_intervention.operator_logic")
    from apo_intervention.config import OperatorConfig

    env, expert = can
    supervisor = operator_logic.SupervisorLogic(OperatorConfig())
    env.reset(seed=6, render=False)
    expert.reset()
    supervisor.episode_started()
    for _ in range(MAX_STEPS):
        state = env.task_state()
        if state.success:
            break
        status = task_progress(state)
        supervisor.observe(operator_logic.OperatorObservation(status.progress, status.object_height, status.grasped))
        env.step(expert.act(state), render=False)
    assert env.success() and supervisor.history == []


def test_collect_demos_for_pickplacecan(tmp_path):
    out = tmp_path / "can.h5"
    assert main(["-o", str(out), "--task", TASK, "-n", "1", "--seed", "7", "--image-size", "32", "--quiet"]) == 0
    assert episode_ids(out) == [f"expert_{TASK}_7"]
    ep = read_episode(out, "demo_0")
    assert ep.task == TASK and ep.instruction == TASKS[TASK].instruction and ep.outcome == "success"
    assert ep.images.shape[1:] == (32, 32, 3) and len(ep) < MAX_STEPS


@pytest.mark.slow
def test_expert_success_rate_over_fixed_seeds(can):
    """Success over a fixed seed set (bench/bench_expert.py measures 50 seeds): from reset and after takeover."""
    env, expert = can
    from_reset = sum(rollout_expert(env, expert, MAX_STEPS, seed=s, render=False).success for s in range(100, 120))
    taken_over = sum(rollout_expert(env, expert, MAX_STEPS, seed=s, random_steps=25, render=False).success
                     for s in range(100, 120))
    assert from_reset >= 18 and taken_over >= 16
