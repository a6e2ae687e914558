"""The scripted operator in the real loop: arbiter + joystick teleop + operator + a synthetic simulator.

The probe plays the simulator: on each COMMAND it publishes task progress (flat while the policy
drives, rising while the human drives) and the expert's action, and it plays the policy too. The
operator must start the episode with the start button, take over on the stall through /joy (so the
executed human steps are the expert's action after the joystick mapping round trip) and hand back.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros

P = [0.0, 0.1, 0.0, 0.0, 0.0, 0.0, -1.0]
E = [0.3, -0.2, 0.1, 0.0, 0.05, -0.1, 1.0]


def test_operator_starts_takes_over_on_stall_via_joy_and_hands_back(graph, probe, make_node):
    from sensor_msgs.msg import Joy
    from std_msgs.msg import Float64MultiArray

    from apo_core import topics
    from apo_interfaces.msg import ActionCommand
    from apo_intervention.arbiter_node import ArbiterNode
    from apo_intervention.joy_teleop_node import JoyTeleopNode
    from apo_intervention.mux import Mode
    from apo_intervention.scripted_operator_node import ScriptedOperatorNode
    from apo_ros.qos import topic_qos

    make_node(ArbiterNode, control_rate_hz=20.0, max_episode_steps=70, timeout_outcome="abort")
    make_node(JoyTeleopNode)
    operator = make_node(ScriptedOperatorNode, num_episodes=1, pause_between_episodes=0.0, grace_steps=3,
                         stall_steps=8, cooldown_steps=5, min_correction_steps=3, max_correction_steps=30,
                         handback_progress_gain=0.2)
    progress_pub = probe.create_publisher(Float64MultiArray, topics.SIM_TASK_PROGRESS,
                                          topic_qos(topics.SIM_TASK_PROGRESS))
    expert_pub = probe.create_publisher(ActionCommand, topics.SIM_EXPERT_ACTION, topic_qos(topics.SIM_EXPERT_ACTION))
    policy_pub = probe.create_publisher(ActionCommand, topics.POLICY_ACTION, topic_qos(topics.POLICY_ACTION))
    probe.create_subscription(Joy, topics.JOY, probe.rec.callback(topics.JOY), topic_qos(topics.JOY, depth=1000))
    state = {"progress": 0.1}

    def on_command(cmd):  # one simulator step per executed command
        if cmd.source == cmd.SOURCE_TELEOP:
            state["progress"] = min(1.0, state["progress"] + 0.04)
        progress_pub.publish(Float64MultiArray(data=[state["progress"], 0.0, 0.0]))
        expert_pub.publish(ActionCommand(action=E, source=ActionCommand.SOURCE_EXPERT))
        policy_pub.publish(ActionCommand(action=P, policy_version="v1"))

    for pub in (progress_pub, expert_pub, policy_pub):
        graph.wait_for_subscribers(pub, count=2 if pub is policy_pub else 1)  # policy: arbiter + operator
    sub = probe.create_subscription(ActionCommand, topics.COMMAND, on_command, topic_qos(topics.COMMAND))
    graph.wait_until(lambda: sub.get_publisher_count() >= 1, what="command subscription matched")

    def events():
        return probe.rec.get(topics.EPISODE)

    graph.wait_until(lambda: any(e.event == e.EVENT_END for e in events()), timeout=40, what="the episode's end")
    ev = events()
    assert [e.event for e in ev] == [ev[0].EVENT_START, ev[0].EVENT_ABORT, ev[0].EVENT_END]
    assert operator.scheduler.started == 1 and operator.scheduler.done  # started by the start button
    graph.wait_until(lambda: sum(s.episode_id == ev[0].episode_id for s in probe.rec.get(topics.STEP)) >= 70,
                     what="all 70 steps")
    steps = [s for s in probe.rec.get(topics.STEP) if s.episode_id == ev[0].episode_id]
    assert [s.step_index for s in steps] == list(range(70))
    labels = [s.label for s in steps]
    assert 2 in labels, "the operator never took over"
    first_human = labels.index(2)
    assert 1 in labels[first_human:], "the operator never handed back"
    human = [s for s in steps if s.label == 2]
    for s in human:
        # the expert's action via Joy (float32), or, when the expert action was older than expert_timeout
        # (a loaded machine), the deadman held with the sticks centred: zero motion, still the human's step
        assert s.mode == Mode.HUMAN
        assert np.allclose(s.executed_action, E, atol=1e-6) or np.allclose(s.executed_action[:6], 0.0)
    assert any(np.allclose(s.executed_action, E, atol=1e-6) for s in human), "no correction reached the arm"
    for s in steps:
        if s.label != 2:
            assert s.mode != Mode.HUMAN and (list(s.executed_action) == P or s.mode == Mode.HOLD)
    kinds = [h[0] for h in operator.logic.history]
    assert kinds[:2] == ["takeover", "handback"]
    assert operator.logic.history[0][2].startswith("stall") and "progress regained" in operator.logic.history[1][2]
    joys = probe.rec.get(topics.JOY)
    dead = operator.joy_cfg.deadman_button
    held = [j for j in joys if len(j.buttons) > dead and j.buttons[dead]]
    assert held and any(j.buttons[operator.joy_cfg.start_button] for j in joys)
    assert operator.saturated_dims == 0
