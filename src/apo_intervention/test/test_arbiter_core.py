"""ArbiterCore: the arbiter's tick -> labelled step, episode limits, takeover labels (ROS-free)."""

import numpy as np

from apo_intervention.arbiter_core import ArbiterCore
from apo_intervention.config import ArbiterConfig
from apo_intervention.episodes import Event
from apo_intervention.mux import Mode


def _core(**kw):
    ids = iter(f"ep{i}" for i in range(100))
    return ArbiterCore(ArbiterConfig(max_episode_steps=kw.pop("max_steps", 0), **kw), id_factory=lambda: next(ids))


def test_no_step_outside_an_episode():
    core = _core(policy_outside_episodes="run")
    core.submit_policy(np.zeros(7), 0.0, "v1")
    tick = core.tick(0.0)
    assert tick.step is None and tick.decision.mode == Mode.AUTONOMOUS


def test_the_policy_drives_only_inside_an_episode_by_default():
    """Ending or aborting an episode stops a real arm: outside an episode the policy's fresh actions are
    held (a human's teleop still drives), inside one they drive as soon as it starts."""
    core = _core(max_steps=2)
    move = np.full(7, 0.3)
    core.submit_policy(move, 0.0, "v1")
    tick = core.tick(0.0)
    assert tick.step is None and tick.decision.mode == Mode.HOLD and not tick.decision.action[:6].any()
    assert "outside an episode" in core.mux.masked_reasons(0.0, None)["policy"]
    core.submit_teleop(np.full(7, -0.2), 0.01)
    assert core.tick(0.01).decision.mode == Mode.HUMAN  # jogging the arm between episodes
    core.submit_teleop([], 0.02)
    core.start_episode("lift")
    core.submit_policy(move, 0.03, "v1")
    assert core.tick(0.03).decision.mode == Mode.AUTONOMOUS
    core.submit_policy(move, 0.04, "v1")
    assert [e.event for e in core.tick(0.04).events] == [Event.FAILURE, Event.END]  # the step limit
    core.submit_policy(move, 0.05, "v1")
    assert core.tick(0.05).decision.mode == Mode.HOLD  # the action after the end is not executed
    core.start_episode("lift")
    core.submit_policy(move, 0.06, "v1")
    assert core.tick(0.06).decision.mode == Mode.AUTONOMOUS
    core.finish_episode(Event.ABORT, "operator")
    assert core.tick(0.07).decision.mode == Mode.HOLD  # still fresh, but the episode was aborted


def test_labels_follow_the_winning_input_and_hold():
    core = _core()
    ok, _, events = core.start_episode("lift", "test")
    assert ok and [e.event for e in events] == [Event.START]
    labels, modes, proposals = [], [], []
    for k in range(6):
        now = 0.05 * k
        core.submit_policy(np.full(7, 0.1), now, "v1")
        if k in (2, 3):
            core.submit_teleop(np.full(7, -0.2), now)
        if k == 4:
            core.submit_teleop([], now)  # release
        tick = core.tick(now)
        labels.append(tick.step.label)
        modes.append(tick.step.mode)
        proposals.append(tick.step.policy_action is not None)
        assert tick.step.step_index == k and tick.step.policy_version == "v1"
    assert labels == [1, 1, 2, 2, 1, 1]
    assert modes == [Mode.AUTONOMOUS] * 2 + [Mode.HUMAN] * 2 + [Mode.AUTONOMOUS] * 2
    assert all(proposals)
    # nothing fresh for longer than the policy timeout: hold, label 1, no proposal
    tick = core.tick(10.0)
    assert tick.step.mode == Mode.HOLD and tick.step.label == 1 and tick.step.policy_action is None


def test_step_limit_ends_the_episode_after_the_last_step():
    core = _core(max_steps=3)
    core.start_episode()
    ends = []
    for k in range(3):
        core.submit_policy(np.zeros(7), k * 0.05)
        tick = core.tick(k * 0.05)
        ends.append([e.event for e in tick.events])
    assert ends == [[], [], [Event.FAILURE, Event.END]]
    assert core.tick(1.0).step is None


def test_task_success_needs_a_false_first():
    core = _core()
    core.start_episode()
    assert core.on_task_success(True) == []
    assert core.on_task_success(False) == []
    assert [e.event for e in core.on_task_success(True)] == [Event.SUCCESS, Event.END]


def test_start_refuses_a_bad_instruction():
    core = _core()
    for text in ("x" * 1001, "lift\x1b[2J", "   "):
        ok, message, events = core.start_episode(text)
        assert not ok and message.startswith("START refused") and events == [] and not core.episodes.active
    assert core.start_episode("lift the cube")[0]


def test_episode_after_a_model_swap_states_the_new_version():
    """The demo's CI failure: v0001 ran until the swap, the episode started before v0002's first action
    reached the arbiter, so START (and the recorded bag) named v0001 although every step ran v0002."""
    core = _core()
    core.submit_policy(np.zeros(7), 0.0, "v0001")
    core.tick(0.0)
    _, _, (start,) = core.start_episode("lift")
    assert start.policy_version == "v0001"  # all the arbiter knows at START
    events = []
    for k in range(1, 4):
        core.submit_policy(np.zeros(7), 0.05 * k, "v0002")
        assert core.tick(0.05 * k).step.policy_version == "v0002"
    _, _, events = core.finish_episode(Event.FAILURE)
    assert [e.policy_version for e in events] == ["v0002", "v0002"]
