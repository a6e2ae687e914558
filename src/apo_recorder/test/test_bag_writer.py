"""EpisodeBagWriter, message definitions and the readers: real bag files, no ROS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from apo_core import topics as T
from apo_recorder import (
    EpisodeBagWriter,
    TopicSpec,
    contract,
    iter_messages,
    list_episode_bags,
    list_unfinished_bags,
    qos_dict,
    read_bag_info,
    recover_bag,
    write_bag,
)
from apo_recorder.msgdefs import message_definition
from apo_recorder.recovery import scan_mcap
from apo_recorder.synthetic import SyntheticMessages

SPECS = [
    TopicSpec(T.EPISODE, contract.DEFAULT_TOPICS[T.EPISODE],
              (qos_dict(depth=20, durability="transient_local"),)),
    TopicSpec(T.STEP, contract.DEFAULT_TOPICS[T.STEP], (qos_dict(depth=200),)),
    TopicSpec(T.IMAGE, contract.DEFAULT_TOPICS[T.IMAGE], (qos_dict(depth=1, reliability="best_effort"),)),
    TopicSpec(T.ROBOT_STATE, contract.DEFAULT_TOPICS[T.ROBOT_STATE]),
    TopicSpec(T.COMMAND, contract.DEFAULT_TOPICS[T.COMMAND]),
]


@pytest.fixture(scope="module")
def syn():
    return SyntheticMessages()


def wait_until(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise TimeoutError(f"timed out waiting for {what}")


def episode_messages(syn, episode_id, n_steps, t0=1_000_000_000_000):
    msgs = [(T.EPISODE, t0, syn.event(episode_id, contract.EVENT_START, "lift the cube", "Lift", "v7"))]
    for i in range(n_steps):
        t = t0 + (i + 1) * 50_000_000
        msgs.append((T.IMAGE, t, syn.image(16, 16, seed=i)))
        msgs.append((T.ROBOT_STATE, t + 1, syn.robot_state([0.1 * i] * 9)))
        msgs.append((T.COMMAND, t + 2, syn.action([0.0] * 7)))
        msgs.append((T.STEP, t + 3, syn.step(episode_id, i)))
    msgs.append((T.EPISODE, t0 + (n_steps + 2) * 50_000_000, syn.event(episode_id, contract.EVENT_SUCCESS)))
    return msgs


@pytest.mark.parametrize("msgtype", sorted(set(contract.DEFAULT_TOPICS.values())))
def test_definitions_are_complete_and_hash_like_rosidl(msgtype):
    text, digest = message_definition(msgtype)
    assert digest.startswith("RIHS01_")
    pkg, _, name = msgtype.split("/")
    # rosidl writes the type hash next to the installed .msg file; ours must be the same
    from apo_recorder.msgdefs import _share_dirs

    for share in _share_dirs(pkg):
        desc = share / "msg" / f"{name}.json"
        if desc.is_file():
            hashes = {h["type_name"]: h["hash_string"] for h in json.loads(desc.read_text())["type_hashes"]}
            assert hashes[msgtype] == digest
            break
    else:
        pytest.skip(f"no rosidl type description installed for {msgtype}")
    if "Header" in text.split("\n", 1)[0] or "std_msgs/Header" in text:
        assert "MSG: std_msgs/Header" in text and "MSG: builtin_interfaces/Time" in text


def test_bag_round_trip_contract(tmp_path, syn):
    msgs = episode_messages(syn, "ep_1", 30)
    custom = contract.default_custom_data("ep_1", "lift the cube", "Lift", "v7", recorder_version="0.1.0")
    path = tmp_path / "ep_1"
    with EpisodeBagWriter(path, SPECS, custom) as w:
        for m in msgs:
            assert w.write(*m)
        w.update_custom_data({contract.KEY_OUTCOME: "success"})
    assert w.state == "closed"
    assert sorted(p.name for p in path.iterdir()) == ["ep_1.mcap", "metadata.yaml"]  # journal removed

    info = read_bag_info(path)
    assert info.version == 9 and info.storage_identifier == "mcap"
    assert info.custom_data == {**custom, contract.KEY_OUTCOME: "success"}
    assert set(info.custom_data) == set(contract.CUSTOM_DATA_KEYS)
    assert info.episode_id == "ep_1" and info.outcome == "success" and info.instruction == "lift the cube"
    assert info.message_count == len(msgs)
    assert info.topics[T.STEP].message_count == 30
    assert info.topics[T.STEP].msgtype == "apo_interfaces/msg/LabelledStep"
    assert info.topics[T.STEP].type_description_hash == message_definition(contract.DEFAULT_TOPICS[T.STEP])[1]
    assert info.topics[T.IMAGE].offered_qos_profiles[0]["reliability"] == "best_effort"
    assert info.topics[T.EPISODE].offered_qos_profiles[0]["durability"] == "transient_local"
    assert "MSG: std_msgs/Header" in info.topics[T.STEP].message_definition
    assert info.start_ns == msgs[0][1] and info.end_ns == msgs[-1][1]

    # the exact bytes come back, in log-time order, and decode from the bag's own definitions
    got = list(iter_messages(path))
    assert [(m.topic, m.log_time_ns, m.data) for m in got] == sorted(msgs, key=lambda m: m[1])
    steps = [m.msg for m in got if m.topic == T.STEP]
    assert [s.step_index for s in steps] == list(range(30))
    assert all(s.episode_id == "ep_1" for s in steps)
    img = next(m.msg for m in got if m.topic == T.IMAGE)
    assert (img.height, img.width, img.encoding, len(img.data)) == (16, 16, "rgb8", 768)


def test_independent_mcap_reader_decodes_everything(tmp_path, syn):
    """Foxglove / ros2 bag read MCAP with the mcap libraries: they must decode from the schemas alone."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    msgs = episode_messages(syn, "ep_x", 5)
    write_bag(tmp_path / "ep_x", SPECS, contract.default_custom_data("ep_x"), msgs)
    with open(tmp_path / "ep_x" / "ep_x.mcap", "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        decoded = [(c.topic, d) for _, c, _, d in reader.iter_decoded_messages()]
        summary = reader.get_summary()
    assert len(decoded) == len(msgs)
    assert [d.step_index for t, d in decoded if t == T.STEP] == list(range(5))
    assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
    assert all(c.metadata.get("offered_qos_profiles") is not None for c in summary.channels.values())


def test_write_never_blocks_and_counts_drops(tmp_path, syn):
    blocker = EpisodeBagWriter(tmp_path / "first", SPECS, contract.default_custom_data("first")).start()
    # the second bag may only open once the first is closed: its queue fills up meanwhile
    w = EpisodeBagWriter(tmp_path / "second", SPECS, contract.default_custom_data("second"),
                         max_queue_messages=5, after=blocker).start()
    data = syn.step("second", 0)
    results = [w.write(T.STEP, 1000 + i, data) for i in range(20)]
    assert results == [True] * 5 + [False] * 15
    assert w.stats().messages_dropped == 15 and w.stats().queue_depth == 5
    assert not (tmp_path / "second").exists()  # waits for the first bag
    blocker.close()
    stats = w.close()
    assert stats.state == "closed" and stats.messages_written == 5 and stats.messages_dropped == 15
    assert read_bag_info(tmp_path / "second").topics[T.STEP].message_count == 5
    assert not w.write(T.STEP, 5000, data)  # closed: rejected, not an exception
    assert w.stats().messages_rejected == 1


def test_queue_bounded_in_bytes(tmp_path, syn):
    blocker = EpisodeBagWriter(tmp_path / "a", SPECS, contract.default_custom_data("a")).start()
    img = syn.image(32, 32)
    w = EpisodeBagWriter(tmp_path / "b", SPECS, contract.default_custom_data("b"),
                         max_queue_bytes=3 * len(img) + 10, after=blocker).start()
    assert [w.write(T.IMAGE, i, img) for i in range(5)] == [True, True, True, False, False]
    blocker.close()
    assert w.close().messages_written == 3


def test_messages_reach_disk_without_close(tmp_path, syn):
    """Periodic chunk close + flush + fsync: what a SIGKILL would leave is readable while still open."""
    w = EpisodeBagWriter(tmp_path / "ep", SPECS, contract.default_custom_data("ep"), flush_period_s=0.05).start()
    for i in range(10):
        w.write(T.STEP, 10_000 + i, syn.step("ep", i))
    mcap = tmp_path / "ep" / "ep.mcap"
    wait_until(lambda: w.stats().messages_on_disk == 10, what="flush")
    assert sum(1 for _ in scan_mcap(mcap)) == 10
    assert (tmp_path / "ep" / contract.JOURNAL_NAME).is_file()
    assert list_unfinished_bags(tmp_path) == [tmp_path / "ep"] and list_episode_bags(tmp_path) == []
    w.close()
    assert list_episode_bags(tmp_path) == [tmp_path / "ep"] and list_unfinished_bags(tmp_path) == []


def test_unwritable_directory_reports_error_without_raising(tmp_path, syn):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    errors = []
    w = EpisodeBagWriter(blocker / "bags" / "ep", SPECS, contract.default_custom_data("ep"),
                         on_error=lambda writer, msg: errors.append(msg)).start()
    assert w.wait(20)
    assert w.failed and len(errors) == 1
    assert str(blocker) in errors[0] and "ENOTDIR" in errors[0] and "Not a directory" in errors[0]
    assert not w.write(T.STEP, 1, syn.step("ep", 0))
    assert w.close().state == "failed"


def test_existing_bag_is_never_overwritten(tmp_path, syn):
    write_bag(tmp_path / "ep", SPECS, contract.default_custom_data("ep"), [(T.STEP, 1, syn.step("ep", 0))])
    w = EpisodeBagWriter(tmp_path / "ep", SPECS, contract.default_custom_data("ep")).start()
    w.close()
    assert w.failed and "exists already" in w.error
    assert read_bag_info(tmp_path / "ep").message_count == 1


def test_discard_removes_the_bag(tmp_path, syn):
    w = EpisodeBagWriter(tmp_path / "ep", SPECS, contract.default_custom_data("ep")).start()
    w.write(T.STEP, 1, syn.step("ep", 0))
    w.discard()
    assert w.state == "discarded" and not (tmp_path / "ep").exists()


def test_concurrent_writers_from_many_threads(tmp_path, syn):
    w = EpisodeBagWriter(tmp_path / "ep", SPECS, contract.default_custom_data("ep"), flush_period_s=0.02).start()
    data = syn.step("ep", 1)

    def produce(k):
        for i in range(200):
            w.write(T.STEP, k * 1000 + i, data)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = w.close()
    assert stats.messages_written + stats.messages_dropped == 800
    assert read_bag_info(tmp_path / "ep").message_count == stats.messages_written


_EFBIG_CHILD = r"""
import resource, signal, sys, time
from apo_core import topics as T
from apo_recorder import EpisodeBagWriter, TopicSpec, contract
from apo_recorder.synthetic import SyntheticMessages
syn = SyntheticMessages()
img = syn.image(64, 64)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit now fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
errors = []
w = EpisodeBagWriter(sys.argv[1], [TopicSpec(T.IMAGE, "sensor_msgs/msg/Image")],
                     contract.default_custom_data("big"), on_error=lambda wr, m: errors.append(m),
                     flush_period_s=0.02, chunk_bytes=40_000).start()
i = 0
while not w.done and i < 100000:
    w.write(T.IMAGE, i, img)
    i += 1
    time.sleep(0.001)
w.close()
print("STATE", w.state)
print("ERRORS", len(errors))
print("ERROR", errors[0] if errors else "")
"""


def test_write_error_mid_episode_is_reported_and_bag_recoverable(tmp_path):
    """A real OS write error (EFBIG from RLIMIT_FSIZE, like ENOSPC) in the middle of an episode."""
    bag = tmp_path / "big"
    out = subprocess.run([sys.executable, "-c", _EFBIG_CHILD, str(bag)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines["STATE"] == "failed" and lines["ERRORS"] == "1"
    assert "EFBIG" in lines["ERROR"] and str(bag) in lines["ERROR"]
    report = recover_bag(bag)  # whatever reached the disk is usable
    assert report.status == "recovered" and report.messages_recovered > 0
    assert read_bag_info(bag).message_count == report.messages_recovered


def test_empty_bag_is_valid(tmp_path):
    EpisodeBagWriter(tmp_path / "empty", SPECS, contract.default_custom_data("empty")).start().close()
    info = read_bag_info(tmp_path / "empty")
    assert info.message_count == 0 and set(info.topics) == {s.topic for s in SPECS}
    assert list(iter_messages(tmp_path / "empty")) == []


def test_contract_helpers():
    assert contract.safe_episode_dir_name("../../etc/passwd") == "etc_passwd"
    assert contract.safe_episode_dir_name("ep_2024-01-01T10:00") == "ep_2024-01-01T10_00"
    assert contract.safe_episode_dir_name("") == "episode"
    with pytest.raises(ValueError):
        contract.default_custom_data(outcome="great")
    assert set(contract.DEFAULT_TOPICS) == {T.IMAGE, T.ROBOT_STATE, T.POLICY_ACTION, T.TELEOP_ACTION, T.COMMAND,
                                            T.STEP, T.EPISODE, T.MODE, T.JOY}
    assert Path(contract.bag_file_name("ep")).suffix == ".mcap"
