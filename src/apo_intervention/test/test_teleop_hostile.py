"""Hostile messages to the joystick teleop, the keyboard teleop and the scripted operator over real DDS.

Each node gets messages malformed in every way the message types allow (no axes, thousands of axes,
NaN/inf, absurd button values, unknown mode and event codes, huge strings). None may stop the node
(the conftest graph fails the test if a callback exception reaches the executor), none may make it
publish a non-finite action, and each must still do its job afterwards.
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.ros

NAN, INF = float("nan"), float("inf")


def _finite(actions):
    return all(math.isfinite(v) for a in actions for v in a.action)


def test_joy_teleop_survives_hostile_joy_and_still_maps(graph, probe, make_node):
    from sensor_msgs.msg import Joy

    from apo_core import topics
    from apo_interfaces.msg import ActionCommand
    from apo_intervention.joy_teleop_node import JoyTeleopNode
    from apo_ros.qos import topic_qos

    node = make_node(JoyTeleopNode)
    probe.create_subscription(ActionCommand, topics.TELEOP_ACTION, probe.rec.callback(topics.TELEOP_ACTION),
                              topic_qos(topics.TELEOP_ACTION, depth=1000))
    joy = probe.create_publisher(Joy, topics.JOY, topic_qos(topics.JOY, depth=1000))
    graph.wait_for_subscribers(joy)
    graph.wait_for_publishers(probe, topics.TELEOP_ACTION)
    deadman = [0] * 11
    deadman[node.cfg.deadman_button] = 1
    for axes, buttons in (([], []), ([NAN] * 8, deadman), ([INF] * 8, deadman), ([0.5] * 5000, [1] * 5000),
                          ([0.0] * 8, [-(2**31)] * 11), ([0.0] * 3, deadman), ([-INF] * 8, [2**31 - 1] * 11)):
        joy.publish(Joy(axes=axes, buttons=buttons))
    # A good message with the deadman held is still mapped to an action.
    good = [0.0] * 8
    good[node.cfg.axis[0]] = 0.5
    graph.wait_until(lambda: joy.publish(Joy(axes=good, buttons=deadman)) or any(
        len(a.action) == 7 and a.action[0] == pytest.approx(0.5, abs=0.05)
        for a in probe.rec.get(topics.TELEOP_ACTION)), interval=0.1, what="the good Joy message's action")
    assert _finite(probe.rec.get(topics.TELEOP_ACTION))
    assert graph.error is None


def test_keyboard_teleop_ignores_a_non_finite_executed_gripper(graph, probe):
    from apo_core import topics
    from apo_interfaces.msg import ActionCommand
    from apo_intervention.keyboard_teleop_node import KeyboardTeleopNode
    from apo_ros.qos import topic_qos

    node = graph.add(KeyboardTeleopNode(read_terminal=False, context=graph.context))
    probe.create_subscription(ActionCommand, topics.TELEOP_ACTION, probe.rec.callback(topics.TELEOP_ACTION),
                              topic_qos(topics.TELEOP_ACTION, depth=1000))
    command = probe.create_publisher(ActionCommand, topics.COMMAND, topic_qos(topics.COMMAND))
    graph.wait_for_subscribers(command)
    graph.wait_for_publishers(probe, topics.TELEOP_ACTION)
    command.publish(ActionCommand(action=[0.0] * 6 + [0.7]))
    # (the mapping has no public getter for the followed gripper value)
    graph.wait_until(lambda: node.mapping._gripper == 0.7, what="the executed gripper value followed")
    for values in ([NAN] * 7, [0.0] * 6 + [INF], [], [1.0] * 10_000):
        command.publish(ActionCommand(action=values))
    command.publish(ActionCommand(action=[0.0] * 6 + [0.9]))  # sent last: when seen, the bad ones were handled
    graph.wait_until(lambda: node.mapping._gripper == 0.9, what="the last finite gripper value")
    node.handle_key("t")
    graph.wait_until(lambda: len(probe.rec.get(topics.TELEOP_ACTION)) >= 1, what="a takeover action")
    assert list(probe.rec.get(topics.TELEOP_ACTION)[0].action) == [0, 0, 0, 0, 0, 0, 0.9]
    assert _finite(probe.rec.get(topics.TELEOP_ACTION))
    node.handle_key("t")


def test_scripted_operator_survives_hostile_inputs_and_still_presses_start(graph, probe, make_node):
    from sensor_msgs.msg import Joy
    from std_msgs.msg import Float64MultiArray

    from apo_core import topics
    from apo_interfaces.msg import ActionCommand, EpisodeEvent, InterventionMode
    from apo_intervention.scripted_operator_node import ScriptedOperatorNode
    from apo_ros.qos import topic_qos

    operator = make_node(ScriptedOperatorNode, num_episodes=1, pause_between_episodes=0.0)
    pubs = {topic: probe.create_publisher(t, topic, topic_qos(topic)) for t, topic in (
        (Float64MultiArray, topics.SIM_TASK_PROGRESS), (ActionCommand, topics.SIM_EXPERT_ACTION),
        (ActionCommand, topics.POLICY_ACTION), (InterventionMode, topics.MODE), (EpisodeEvent, topics.EPISODE))}
    for pub in pubs.values():
        graph.wait_for_subscribers(pub)
    junk = "\x1b[2J" + "x" * 100_000
    for data in ([NAN, NAN, NAN], [INF, -INF, INF], [], [0.5] * 10_000):
        pubs[topics.SIM_TASK_PROGRESS].publish(Float64MultiArray(data=data))
    for values in ([NAN] * 7, [0.1] * 3, [], [INF] * 7):
        pubs[topics.SIM_EXPERT_ACTION].publish(ActionCommand(action=values))
        pubs[topics.POLICY_ACTION].publish(ActionCommand(action=values, policy_version=junk))
    pubs[topics.MODE].publish(InterventionMode(mode=200, active_input=junk, reason=junk))
    pubs[topics.EPISODE].publish(EpisodeEvent(episode_id=junk, event=200, instruction=junk, task=junk))
    # Only now does /joy get a subscriber, so the operator's start press necessarily comes after the above.
    probe.create_subscription(Joy, topics.JOY, probe.rec.callback(topics.JOY), topic_qos(topics.JOY, depth=1000))
    start = operator.joy_cfg.start_button
    graph.wait_until(lambda: any(len(j.buttons) > start and j.buttons[start] for j in probe.rec.get(topics.JOY)),
                     timeout=20, what="the operator's start press")
    assert all(math.isfinite(v) for j in probe.rec.get(topics.JOY) for v in j.axes)
    assert operator.guard.errors == 0 and graph.error is None
