"""The rosbag2 metadata of our bags, read back by two independent readers.

A real recorder node records a real episode over DDS; the bag is then read with Foxglove's
decoding path (``mcap`` + ``mcap_ros2``: header, channels, every message decoded from the bag's own
schemas) and with ``rosbags`` (metadata.yaml: ros_distro, QoS parsed into its Qos objects, counts).
"""

from __future__ import annotations

from collections import Counter
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.metadata import parse_qos

from apo_core import topics as T
from apo_recorder import EpisodeBagWriter, TopicSpec, __version__, contract, qos_dict, recover_bag, write_bag
from apo_recorder.bag_metadata import (
    QOS_KEYS,
    QosProfileError,
    complete_offered_qos,
    distro_for_rclpy_version,
    qos_profiles_yaml,
    ros_distro,
)
from apo_recorder.synthetic import SyntheticMessages

INFINITE = QosTime(9223372036, 854775807)  # RMW_DURATION_INFINITE, what discovery reports
ROSBAG2_TOP_KEYS = ["version", "storage_identifier", "duration", "starting_time", "message_count",
                    "topics_with_message_count", "compression_format", "compression_mode", "relative_file_paths",
                    "files", "custom_data", "ros_distro"]
STEPS = 6


def installed_distro() -> str:
    return distro_for_rclpy_version(version("ros-rclpy"))


def record_one_episode(out: Path) -> Path:
    """A real recorder node records one episode published by a probe over DDS; returns the bag dir."""
    pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from apo_recorder.recorder_node import RecorderNode
    from apo_recorder.testing import EpisodeProbe
    from apo_ros.testing import RosGraph

    with RosGraph() as g:
        params = {"output_dir": str(out), "grace_period_s": 0.3, "flush_period_s": 0.1}
        rec = g.add(RecorderNode(context=g.context,
                                 parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
        probe = EpisodeProbe(g)
        probe.wait_for_recorder()
        probe.start("ep_meta")
        g.wait_until(lambda: rec.status()["episode_id"] == "ep_meta", what="episode start")
        for i in range(STEPS):
            probe.step("ep_meta", i)
        g.wait_until(lambda: rec.status()["episode_messages_written"] >= 1 + 4 * STEPS, what="messages written")
        probe.end("ep_meta")
        g.wait_until(lambda: rec.status()["bags_completed"] == 1, what="bag closed")
    return out / "ep_meta"


def read_with_mcap(bag: Path):
    """(header, channels by topic, rosbag2 metadata records, decoded message count per topic)."""
    counts: Counter = Counter()
    with open(bag / contract.bag_file_name(bag.name), "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        summary = reader.get_summary()
        channels = {c.topic: c for c in summary.channels.values()}
        records = [m for m in reader.iter_metadata() if m.name == "rosbag2"]
        for _schema, channel, _message, ros_msg in reader.iter_decoded_messages():
            assert ros_msg is not None
            counts[channel.topic] += 1
        stats = summary.statistics
    return header, channels, records, counts, stats


@pytest.mark.ros
def test_recorded_bag_metadata_reads_back_with_mcap_ros2_and_rosbags(tmp_path, monkeypatch):
    monkeypatch.delenv("ROS_DISTRO", raising=False)  # the distro then comes from the installed rclpy
    bag = record_one_episode(tmp_path)

    # --- Foxglove's path: mcap + mcap_ros2 decode every message from the bag's own schemas
    header, channels, records, decoded, stats = read_with_mcap(bag)
    assert header.profile == "ros2"
    assert header.library == f"apo_recorder {__version__}; rosbags {version('rosbags')}"
    assert set(channels) == set(contract.DEFAULT_TOPICS)
    assert decoded[T.STEP] == STEPS and decoded[T.EPISODE] == 2
    assert sum(decoded.values()) == stats.message_count

    # --- rosbags reads metadata.yaml
    with Reader(bag) as reader:
        assert reader.ros_distro == installed_distro() == "kilted"
        assert reader.message_count == sum(decoded.values())
        conns = {c.topic: c for c in reader.connections}
        assert {t: c.msgcount for t, c in conns.items() if c.msgcount} == dict(decoded)
        qos = {t: c.ext.offered_qos_profiles for t, c in conns.items()}

    # offered QoS as our publishers offer it (apo_ros.qos), history/depth no longer unknown/0
    def offered(history_depth, reliability, durability):
        return Qos(QosHistory.KEEP_LAST, history_depth, reliability, durability, INFINITE, INFINITE,
                   QosLiveliness.AUTOMATIC, INFINITE, False)

    assert qos[T.IMAGE] == [offered(1, QosReliability.BEST_EFFORT, QosDurability.VOLATILE)]
    assert qos[T.STEP] == [offered(200, QosReliability.RELIABLE, QosDurability.VOLATILE)]
    assert qos[T.EPISODE] == [offered(20, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)]
    assert qos[T.COMMAND] == [offered(10, QosReliability.RELIABLE, QosDurability.VOLATILE)]

    # --- metadata.yaml as rosbag2 lays it out, and the same in the MCAP's rosbag2 record
    doc = yaml.safe_load((bag / "metadata.yaml").read_text(encoding="utf-8"))
    info = doc["rosbag2_bagfile_information"]
    assert list(info) == ROSBAG2_TOP_KEYS
    assert info["ros_distro"] == "kilted" and info["version"] == 9 and info["storage_identifier"] == "mcap"
    assert info["message_count"] == sum(decoded.values()) == info["files"][0]["message_count"]
    assert len(records) == 1
    assert yaml.safe_load(records[0].metadata["serialized_metadata"]) == info
    for entry in info["topics_with_message_count"]:
        tm = entry["topic_metadata"]
        assert entry["message_count"] == decoded.get(tm["name"], 0)
        assert list(tm) == ["name", "type", "serialization_format", "offered_qos_profiles", "type_description_hash"]
        assert [list(p) for p in tm["offered_qos_profiles"]] == [list(QOS_KEYS)]
        # the channel's copy (what rosbag2's MCAP storage reads) says the same
        channel = channels[tm["name"]]
        assert parse_qos(channel.metadata["offered_qos_profiles"]) == qos[tm["name"]]
        assert channel.metadata["topic_type_hash"] == tm["type_description_hash"]


def small_bag(path: Path, **writer_kwargs) -> Path:
    topics = [TopicSpec(T.EPISODE, contract.DEFAULT_TOPICS[T.EPISODE],
                        (qos_dict(history="unknown", depth=0, durability="transient_local"),)),
              TopicSpec("/extra", contract.DEFAULT_TOPICS[T.EPISODE], (qos_dict(history="unknown", depth=0),))]
    data = SyntheticMessages().event("ep", contract.EVENT_START)
    write_bag(path, topics, contract.default_custom_data("ep", outcome="success"),
              [(T.EPISODE, 1_000, data), ("/extra", 2_000, data)], **writer_kwargs)
    return path


def test_ros_distro_environment_variable_wins_and_foreign_topics_keep_discovered_history(tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    bag = small_bag(tmp_path / "ep", fsync=False)
    with Reader(bag) as reader:
        assert reader.ros_distro == "jazzy"
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
    assert (qos[T.EPISODE].history, qos[T.EPISODE].depth) == (QosHistory.KEEP_LAST, 20)  # designed profile
    assert (qos["/extra"].history, qos["/extra"].depth) == (QosHistory.UNKNOWN, 0)  # not ours: as discovered
    _, _, records, decoded, _ = read_with_mcap(bag)
    assert yaml.safe_load(records[0].metadata["serialized_metadata"])["ros_distro"] == "jazzy"
    assert decoded == {T.EPISODE: 1, "/extra": 1}


def test_recovered_bag_gets_the_same_metadata(tmp_path, monkeypatch):
    monkeypatch.delenv("ROS_DISTRO", raising=False)
    bag = small_bag(tmp_path / "ep", fsync=False)
    (bag / "metadata.yaml").unlink()  # what a killed recorder leaves (the MCAP itself is whole)
    report = recover_bag(bag)
    assert report.status == "recovered" and report.messages_recovered == 2
    with Reader(bag) as reader:
        assert reader.ros_distro == installed_distro()
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
    assert qos[T.EPISODE].depth == 20 and qos[T.EPISODE].durability == QosDurability.TRANSIENT_LOCAL
    header, *_ = read_with_mcap(bag)
    assert header.library.startswith(f"apo_recorder {__version__}; ")


def test_ros_distro_sources():
    assert [distro_for_rclpy_version(v) for v in ("3.3.16", "4.1.7", "7.1.4", "9.1.2", "8.0.0")] == \
        ["humble", "iron", "jazzy", "kilted", ""]
    assert ros_distro({"ROS_DISTRO": "rolling"}) == "rolling"
    assert ros_distro({"ROS_DISTRO": "  "}) == ros_distro({}) == installed_distro()
    with pytest.raises(ValueError, match="not an rclpy version"):
        distro_for_rclpy_version("kilted")


def test_qos_profiles_checked_and_completed():
    [done] = complete_offered_qos(T.STEP, [qos_dict(history="UNKNOWN", depth=0)])
    assert list(done) == list(QOS_KEYS) and (done["history"], done["depth"]) == ("keep_last", 200)
    [kept] = complete_offered_qos(T.STEP, [qos_dict(history="keep_all", depth=0)])
    assert (kept["history"], kept["depth"]) == ("keep_all", 0)  # a known history is what was offered
    assert qos_profiles_yaml([]) == "[]"
    assert parse_qos(qos_profiles_yaml([done]))[0].depth == 200

    bad = [({**qos_dict(), "reliability": "sometimes"}, "reliability 'sometimes'"),
           ({**qos_dict(), "depth": -1}, "depth must be an integer >= 0"),
           ({**qos_dict(), "deadline": {"sec": 1}}, r"deadline must be \{sec, nsec\}"),
           ({**qos_dict(), "lifespan": {"sec": 0, "nsec": 2_000_000_000}}, "lifespan is out of range"),
           ({k: v for k, v in qos_dict().items() if k != "durability"}, "lacks durability"),
           ("reliable", "must be a mapping")]
    for profile, message in bad:
        with pytest.raises(QosProfileError, match=message):
            complete_offered_qos("/x", [profile])


def test_writer_refuses_a_bad_qos_profile_naming_the_topic(tmp_path):
    spec = TopicSpec(T.STEP, contract.DEFAULT_TOPICS[T.STEP], ({**qos_dict(), "durability": 7},))
    with pytest.raises(QosProfileError, match=f"offered QoS of {T.STEP}: QoS durability 7"):
        EpisodeBagWriter(tmp_path / "ep", [spec], contract.default_custom_data("ep"))
    assert not (tmp_path / "ep").exists()
