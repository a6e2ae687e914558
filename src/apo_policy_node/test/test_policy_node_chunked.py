"""A chunked VLA in the policy node: one action per frame, and each episode START plans a fresh chunk."""

import numpy as np
import pytest

from apo_core import topics
from apo_core.image_codec import rgb_to_image_fields
from apo_core.policy.tiny_chunked import tiny_chunked_policy
from apo_ros.qos import topic_qos
from apo_ros.testing import RosGraph

pytestmark = pytest.mark.ros

def _chunked_policy_dir(root):
    policy = tiny_chunked_policy(seed=0, replan_every=4)  # a plan every 4 frames (H = 4)
    policy.version = "chunked"
    return policy.save(root / "chunked")


def test_each_episode_start_resets_the_chunk_and_every_frame_gets_one_action(tmp_path):
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from apo_interfaces.msg import ActionCommand, EpisodeEvent
    from apo_policy_node.policy_node import PolicyNode

    rng = np.random.default_rng(0)
    got = []
    with RosGraph() as g:
        node = g.add(PolicyNode(context=g.context, parameter_overrides=[
            Parameter("model_path", value=str(_chunked_policy_dir(tmp_path))), Parameter("num_threads", value=1)]))
        probe = g.probe_node()
        probe.create_subscription(ActionCommand, topics.POLICY_ACTION, got.append, topic_qos(topics.POLICY_ACTION))
        img_pub = probe.create_publisher(Image, topics.IMAGE, topic_qos(topics.IMAGE))
        ep_pub = probe.create_publisher(EpisodeEvent, topics.EPISODE, topic_qos(topics.EPISODE))
        g.wait_for_subscribers(img_pub)
        g.wait_for_subscribers(ep_pub)
        g.wait_until(lambda: probe.count_publishers(topics.POLICY_ACTION) > 0)
        executor = node._policy.executor

        def frame():  # one at a time, each answered before the next (newest-frame semantics drop none)
            n = len(got)
            msg = Image(**rgb_to_image_fields(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)))
            msg.header.stamp = probe.get_clock().now().to_msg()
            img_pub.publish(msg)
            g.wait_until(lambda: len(got) > n, what="the frame's action")

        def start(episode_id):
            resets = node.stats["episode_resets"]
            ep_pub.publish(EpisodeEvent(event=EpisodeEvent.EVENT_START, episode_id=episode_id,
                                        instruction="lift the red cube"))
            g.wait_until(lambda: node._episode_started or node.stats["episode_resets"] > resets,
                         what="episode start seen")

        start("e1")
        for _ in range(2):
            frame()
        assert executor._slots[0].since_plan == 2  # two steps into the first chunk of 4
        start("e2")
        frame()
        # a fresh plan at the new episode's first frame, not the third step of the old chunk
        assert executor._slots[0].since_plan == 1 and node.stats["episode_resets"] == 2
        assert all(len(m.action) == 7 and np.all(np.isfinite(m.action)) for m in got) and len(got) == 3
