"""The real arbiter and the real recorder: a recorder whose step subscription matches after an episode
started still writes that episode's first steps into its bag (issue 12: the soak found steps of a finished
episode missing from its bag; DDS discovery can match the recorder seconds after the arbiter's first
steps of the first episode).

Here the recorder is started on purpose after the arbiter has executed its first steps: the episode START
reaches it (latched), and so must the steps published before it joined."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from apo_core import topics as T  # noqa: E402
from apo_recorder import iter_messages, list_episode_bags, read_bag_info  # noqa: E402
from apo_recorder.recorder_node import RecorderNode  # noqa: E402
from apo_ros.qos import topic_qos  # noqa: E402
from apo_ros.testing import RosGraph  # noqa: E402

EARLY_STEPS = 5  # executed before the recorder exists


def _episode_control(graph, client, command):
    from apo_interfaces.srv import EpisodeControl

    res = graph.call(client, EpisodeControl.Request(command=command), timeout=20)
    assert res.success, res.message
    return res.episode_id


def test_recorder_started_mid_episode_gets_the_steps_before_it_joined(tmp_path):
    from apo_interfaces.msg import LabelledStep
    from apo_interfaces.srv import EpisodeControl
    from apo_intervention.arbiter_node import ArbiterNode

    with RosGraph() as g:
        # No policy, no teleop: the arbiter's watchdog executes a hold command (and a step) every tick.
        arbiter = g.add(ArbiterNode(context=g.context, parameter_overrides=[
            Parameter("control_rate_hz", value=20.0), Parameter("max_episode_steps", value=0)]))
        probe = g.probe_node("joins_probe")
        seen = []
        probe.create_subscription(LabelledStep, T.STEP, seen.append, topic_qos(T.STEP, depth=1000))
        client = probe.create_client(EpisodeControl, T.EPISODE_CONTROL)
        assert client.wait_for_service(timeout_sec=20)
        g.wait_for_subscribers(arbiter.step_pub, 1, 20)  # the probe sees every step of the episode
        episode = _episode_control(g, client, EpisodeControl.Request.START)
        g.wait_until(lambda: sum(s.episode_id == episode for s in seen) >= EARLY_STEPS, timeout=20,
                     what="the first steps")

        rec = g.add(RecorderNode(context=g.context, parameter_overrides=[
            Parameter("output_dir", value=str(tmp_path)), Parameter("grace_period_s", value=0.5),
            Parameter("flush_period_s", value=0.1)]))
        g.wait_until(lambda: rec.status()["episode_id"] == episode, timeout=20, what="recording the episode")
        g.wait_until(lambda: rec.status()[f"received {T.STEP}"] >= EARLY_STEPS + 3, timeout=20,
                     what="steps reaching the recorder")
        _episode_control(g, client, EpisodeControl.Request.SUCCESS)
        g.wait_until(lambda: rec.status()["bags_completed"] == 1, timeout=20, what="bag closed")
        status = rec.status()

    published = sorted(s.step_index for s in seen if s.episode_id == episode)
    assert published == list(range(len(published))) and len(published) > EARLY_STEPS
    [bag] = list_episode_bags(tmp_path)
    assert read_bag_info(bag).episode_id == episode
    in_bag = [m.msg.step_index for m in iter_messages(bag, [T.STEP]) if m.msg.episode_id == episode]
    # every step the arbiter executed in the episode, the ones before the recorder joined included
    assert in_bag == published, f"missing from the bag: {sorted(set(published) - set(in_bag))}"
    assert status["late_steps"] == 0 and status["step_subscription"] == "transient_local"
