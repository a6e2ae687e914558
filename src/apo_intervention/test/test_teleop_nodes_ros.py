"""Joystick and keyboard teleop nodes over real DDS: mapping, deadman, release, buttons, e-stop."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros


class TeleopProbe:
    """Records TELEOP_ACTION and ESTOP, and serves a stand-in EPISODE_CONTROL that records requests."""

    def __init__(self, graph, probe):
        from sensor_msgs.msg import Joy
        from std_msgs.msg import Bool

        from apo_core import topics
        from apo_interfaces.msg import ActionCommand
        from apo_interfaces.srv import EpisodeControl
        from apo_ros.qos import topic_qos

        self.g, self.probe, self.topics = graph, probe, topics
        self.requests = []

        def serve(req, res):
            self.requests.append((req.command, req.instruction))
            res.success, res.episode_id, res.message = True, "ep-test", "ok"
            return res

        probe.create_service(EpisodeControl, topics.EPISODE_CONTROL, serve)
        probe.create_subscription(ActionCommand, topics.TELEOP_ACTION, probe.rec.callback(topics.TELEOP_ACTION),
                                  topic_qos(topics.TELEOP_ACTION, depth=1000))
        probe.create_subscription(Bool, topics.ESTOP, probe.rec.callback(topics.ESTOP), topic_qos(topics.ESTOP))
        self.joy = probe.create_publisher(Joy, topics.JOY, topic_qos(topics.JOY))

    def teleop(self):
        return self.probe.rec.get(self.topics.TELEOP_ACTION)

    def wait_teleop(self, n):
        self.g.wait_until(lambda: len(self.teleop()) >= n, what=f"{n} teleop actions")


def joy_msg(axes, buttons):
    from sensor_msgs.msg import Joy

    return Joy(axes=[float(a) for a in axes], buttons=[int(b) for b in buttons])


def test_joy_node_maps_axes_only_with_deadman_and_releases(graph, probe, make_node):
    import numpy as np

    from apo_interfaces.srv import EpisodeControl
    from apo_intervention.joy_mapping import JoyMapping
    from apo_intervention.joy_teleop_node import JoyTeleopNode

    node = make_node(JoyTeleopNode, instruction="lift it")
    tp = TeleopProbe(graph, probe)
    graph.wait_for_subscribers(tp.joy)
    graph.wait_for_publishers(probe, tp.topics.TELEOP_ACTION)
    m = JoyMapping(node.cfg)
    idle, dead = m.buttons(), m.buttons({"deadman_button": True})
    axes = [0.0] * 8
    axes[1], axes[0], axes[5] = 1.0, -0.5, -1.0  # LY full, LX half right, RT pressed
    tp.joy.publish(joy_msg(axes, idle))  # no deadman: must produce nothing
    tp.joy.publish(joy_msg(axes, dead))
    tp.wait_teleop(1)
    first = tp.teleop()[0]
    expected = m.axes_to_action(np.float32(axes).tolist())
    assert first.source == first.SOURCE_TELEOP and np.allclose(first.action, expected)
    assert first.action[0] == 1.0 and first.action[1] < -0.4 and first.action[6] == 1.0
    axes2 = [0.0] * 8
    axes2[4], axes2[3] = 0.02, 0.8  # RY inside the deadzone, RX yaw
    tp.joy.publish(joy_msg(axes2, dead))
    tp.joy.publish(joy_msg(axes2, idle))  # deadman let go
    tp.joy.publish(joy_msg(axes2, idle))  # nothing more
    tp.wait_teleop(3)
    second, release = tp.teleop()[1:3]
    assert second.action[2] == 0.0 and second.action[5] == pytest.approx((0.8 - 0.05) / 0.95, abs=1e-6)
    assert list(release.action) == []
    # episode buttons: edge-triggered, asynchronous
    graph.wait_until(node.episodes.client.service_is_ready, what="episode service seen by the joy node")
    start = m.buttons({"start_button": True})
    for buttons in (start, start, start, idle, m.buttons({"success_button": True}), idle,
                    m.buttons({"estop_button": True}), m.buttons({"estop_button": True})):
        tp.joy.publish(joy_msg([0.0] * 8, buttons))
    graph.wait_until(lambda: len(tp.requests) >= 2 and tp.probe.rec.count(tp.topics.ESTOP) >= 1,
                     what="two episode requests and an e-stop")
    graph.wait_until(lambda: len(node.episodes.responses) >= 2, what="responses")
    assert tp.requests == [(EpisodeControl.Request.START, "lift it"), (EpisodeControl.Request.SUCCESS, "")]
    assert tp.probe.rec.get(tp.topics.ESTOP)[0].data is True
    assert len(tp.teleop()) == 3  # no deadman in any of these: no action


def test_keyboard_node_takeover_keys_and_handback(graph, probe, make_node):
    from apo_interfaces.srv import EpisodeControl
    from apo_intervention.keyboard_teleop_node import KeyboardTeleopNode

    node = graph.add(KeyboardTeleopNode(read_terminal=False, context=graph.context))
    tp = TeleopProbe(graph, probe)
    graph.wait_for_publishers(probe, tp.topics.TELEOP_ACTION)
    assert node.handle_key("w") == ["ignored"]
    node.handle_key("t")
    tp.wait_teleop(1)
    assert list(tp.teleop()[0].action) == [0, 0, 0, 0, 0, 0, -1.0]  # still, gripper as it was (open)

    def key_until_seen():  # terminal auto-repeat, in effect
        node.handle_key("w")
        return any(c.action and c.action[0] == 0.5 for c in tp.teleop())

    graph.wait_until(key_until_seen, what="+x from the w key")
    node.handle_key("t")
    graph.wait_until(lambda: any(len(c.action) == 0 for c in tp.teleop()), what="release on handback")
    graph.wait_until(node.episodes.client.service_is_ready, what="episode service")
    node.handle_key("n")
    graph.wait_until(lambda: len(tp.requests) == 1, what="start request")
    assert tp.requests[0][0] == EpisodeControl.Request.START
