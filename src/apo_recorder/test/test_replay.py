"""Replay publishes a real bag's messages on their topics, in order, with their recorded content."""

import numpy as np
import pytest

from apo_core import topics
from apo_recorder.replay_node import BagReplayer, expand_bags, message_class
from apo_ros.qos import qos_profile
from apo_ros.testing import RosGraph
from apo_trainer.bag_reader_samples import SampleEpisode, sample_action, write_sample_bag

pytestmark = pytest.mark.ros


def test_replay_in_order_at_rate(tmp_path):
    from sensor_msgs.msg import Image

    from apo_interfaces.msg import EpisodeEvent, LabelledStep

    ep = SampleEpisode("ep-r", [1] * 8 + [2] * 4, image_size=(8, 8), period_ns=20_000_000)
    bag = write_sample_bag(tmp_path, ep)
    assert expand_bags([tmp_path]) == [bag]
    steps, images, events = [], [], []
    with RosGraph() as g:
        player = g.probe_node("player")
        sub = g.probe_node("sub")
        replayer = BagReplayer(player, rate=2.0)
        pubs = replayer.prepare(bag)
        assert topics.STEP in pubs and topics.IMAGE in pubs
        sub.create_subscription(LabelledStep, topics.STEP, steps.append, qos_profile("reliable", 100))
        sub.create_subscription(Image, topics.IMAGE, images.append, qos_profile("sensor", 100))
        sub.create_subscription(EpisodeEvent, topics.EPISODE, events.append, qos_profile("latched", 20))
        for topic in (topics.STEP, topics.IMAGE, topics.EPISODE):
            g.wait_for_subscribers(pubs[topic])
        n = replayer.play(bag)
        g.wait_until(lambda: len(steps) == ep.num_steps, what="all steps")
    assert n > ep.num_steps
    assert [s.step_index for s in steps] == list(range(ep.num_steps))
    assert [s.label for s in steps] == list(ep.live_labels)
    assert np.allclose(steps[3].executed_action, sample_action(3))
    assert events[0].event == EpisodeEvent.EVENT_START and events[0].episode_id == "ep-r"
    assert images and images[0].height == 8 and images[0].encoding == "rgb8"


def test_missing_bag_and_unknown_type(tmp_path):
    with pytest.raises(FileNotFoundError):
        expand_bags([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete bag"):
        expand_bags([tmp_path / "empty"])
    with pytest.raises(RuntimeError, match="not installed"):
        message_class("no_such_pkg/msg/Thing")
