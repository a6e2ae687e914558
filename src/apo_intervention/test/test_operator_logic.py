"""Scripted operator decisions on synthetic progress traces (no ROS, no simulator)."""

import numpy as np

from apo_intervention.config import OperatorConfig
from apo_intervention.operator_logic import EpisodeScheduler, OperatorObservation, Phase, SupervisorLogic


def cfg(**kw):
    base = dict(grace_steps=5, cooldown_steps=5, stall_steps=10, min_progress_delta=0.01, regress_threshold=0.15,
                min_correction_steps=4, max_correction_steps=20, handback_progress_gain=0.2)
    base.update(kw)
    return OperatorConfig(**base)


def run(logic, trace, grasped=None):
    """Feed progress values; return the step numbers (1-based) where the decision changed, with phases."""
    changes = []
    for i, p in enumerate(trace):
        d = logic.observe(OperatorObservation(progress=p, grasped=bool(grasped[i]) if grasped else False))
        if d.changed:
            changes.append((i + 1, "takeover" if d.correcting else "handback", d.reason))
    return changes


def test_healthy_rising_trace_never_intervenes():
    logic = SupervisorLogic(cfg())
    logic.episode_started()
    assert run(logic, np.linspace(0, 1, 100)) == []


def test_idle_ignores_observations():
    logic = SupervisorLogic(cfg())
    assert run(logic, [0.1] * 50) == [] and logic.phase is Phase.IDLE


def test_stall_takes_over_then_hands_back_on_regained_progress():
    logic = SupervisorLogic(cfg())
    logic.episode_started()
    trace = [0.1] * 11  # stalled from the first step: 10 non-improving steps after step 1
    changes = run(logic, trace)
    assert changes and changes[0][:2] == (11, "takeover") and changes[0][2].startswith("stall")
    # correcting: progress climbs 0.1 -> 0.4; handback once >= 0.3 and >= 4 correction steps
    changes = run(logic, [0.15, 0.2, 0.25, 0.3, 0.35])
    assert [c[1] for c in changes] == ["handback"] and "progress regained" in changes[0][2]
    assert logic.phase is Phase.WATCHING and logic.interventions == 1


def test_finished_task_is_not_a_stall():
    logic = SupervisorLogic(cfg())
    logic.episode_started()
    assert run(logic, [0.5, 1.0] + [1.0] * 30) == []


def test_grace_period_delays_a_stall_takeover():
    logic = SupervisorLogic(cfg(grace_steps=30))
    logic.episode_started()
    changes = run(logic, [0.0] * 40)
    assert changes[0][:2] == (31, "takeover")


def test_regress_trace():
    logic = SupervisorLogic(cfg(stall_steps=100))
    logic.episode_started()
    trace = list(np.linspace(0, 0.5, 20)) + [0.45, 0.4, 0.34, 0.3]
    changes = run(logic, trace)
    assert len(changes) == 1 and changes[0][1] == "takeover" and changes[0][2].startswith("regress")
    assert changes[0][0] == 23  # 0.34 < 0.5 - 0.15


def test_drop_trace():
    logic = SupervisorLogic(cfg(stall_steps=100))
    logic.episode_started()
    trace = list(np.linspace(0, 0.6, 20)) + [0.6] * 3
    grasped = [0] * 10 + [1] * 10 + [0] * 3
    changes = run(logic, trace, grasped)
    assert changes[0][:2] == (21, "takeover") and changes[0][2].startswith("drop")
    logic2 = SupervisorLogic(cfg(stall_steps=100, detect_drop=False))
    logic2.episode_started()
    assert run(logic2, trace, grasped) == []


def test_max_correction_steps_hand_back_and_cooldown():
    logic = SupervisorLogic(cfg(max_correction_steps=8))
    logic.episode_started()
    changes = run(logic, [0.2] * 60)
    kinds = [(c[0], c[1]) for c in changes]
    # takeover at 11, handback after 8 correction steps (19), cooldown 5 + stall 10 -> next takeover at 29
    assert kinds[:3] == [(11, "takeover"), (19, "handback"), (29, "takeover")]
    assert "max_correction_steps" in changes[1][2]


def test_max_interventions_per_episode_and_reset_on_new_episode():
    logic = SupervisorLogic(cfg(max_correction_steps=4, max_interventions=1))
    logic.episode_started()
    changes = run(logic, [0.2] * 80)
    assert [c[1] for c in changes] == ["takeover", "handback"]
    logic.episode_ended()
    logic.episode_started()
    assert run(logic, [0.2] * 11)[0][1] == "takeover"


def test_episode_end_while_correcting_reports_release():
    logic = SupervisorLogic(cfg())
    logic.episode_started()
    run(logic, [0.0] * 11)
    assert logic.correcting
    d = logic.episode_ended()
    assert d.changed and not d.correcting and logic.phase is Phase.IDLE


def test_someone_else_driving_resets_the_watch():
    logic = SupervisorLogic(cfg())
    logic.episode_started()
    for _ in range(30):
        assert not logic.observe(OperatorObservation(progress=0.1, other_human_driving=True)).changed
    changes = run(logic, [0.1] * 11)
    assert changes[0][:2] == (10, "takeover")  # baseline = progress at the last step someone else drove


def test_stand_down_on_estop():
    logic = SupervisorLogic(cfg())
    logic.episode_started()
    run(logic, [0.0] * 11)
    d = logic.stand_down("e-stop")
    assert d.changed and not logic.correcting and logic.history[-1] == ("handback", 11, "e-stop")
    assert not logic.stand_down("again").changed


def test_away_trigger_uses_policy_vs_expert_direction():
    logic = SupervisorLogic(cfg(stall_steps=1000, away_steps=3, grace_steps=0))
    logic.episode_started()
    expert = np.array([0.5, 0, 0, 0, 0, 0, -1])
    good, bad = expert.copy(), -expert
    steps = [good, good, bad, bad, good, bad, bad, bad]
    changes = []
    for i, pol in enumerate(steps):
        d = logic.observe(OperatorObservation(progress=0.01 * i, policy_action=pol, expert_action=expert))
        if d.changed:
            changes.append(i + 1)
    assert changes == [8]


def test_scheduler_runs_n_episodes_with_pause_and_retry():
    s = EpisodeScheduler(num_episodes=2, pause=1.0, retry_timeout=5.0)
    s.on_start(0.0)  # a latched START from before: not ours, does not count
    assert not s.should_press_start(0.0)
    s.on_end(0.5)
    assert not s.should_press_start(1.0) and s.should_press_start(1.6)
    assert not s.should_press_start(2.0)  # waiting for the START
    assert s.should_press_start(6.7)  # unanswered: press again
    s.on_start(6.8)
    assert s.started == 1 and not s.should_press_start(7.0)
    s.on_end(10.0)
    assert s.should_press_start(11.0)
    s.on_start(11.1)
    s.on_end(12.0)
    assert s.started == 2 and s.done and not s.should_press_start(100.0)
    manual = EpisodeScheduler(num_episodes=0, pause=0.0, retry_timeout=1.0, autostart=False)
    assert not manual.should_press_start(10.0)
