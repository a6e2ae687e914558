"""The recorder against bad inputs and a bad disk, over real DDS: strict parameters (exit 2 naming the
parameter), hostile messages that must not kill it, and /diagnostics that says ERROR, naming the
path, whenever it cannot write."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from apo_core import topics as T  # noqa: E402
from apo_core.names import check_name  # noqa: E402
from apo_recorder import iter_messages, list_episode_bags, read_bag_info  # noqa: E402
from apo_recorder.recorder_node import RecorderNode  # noqa: E402
from apo_recorder.testing import EpisodeProbe  # noqa: E402
from apo_ros.testing import RosGraph, start_node_process, stop_process  # noqa: E402

MODULE = "apo_recorder.recorder_node"


def run_recorder(tmp_path, *params: str) -> subprocess.CompletedProcess:
    args = ["--ros-args", "-p", f"output_dir:={tmp_path / 'bags'}"]
    for p in params:
        args += ["-p", p]
    return subprocess.run([sys.executable, "-m", MODULE, *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))


@pytest.mark.parametrize("param,expected", [
    ("bogus:=1", ["unknown parameter 'bogus'", "known: output_dir, topics", "grace_period_s"]),
    ("grace_period:=2.0", ["unknown parameter 'grace_period'", "did you mean 'grace_period_s'"]),
    ("flush_period_s:=0.0", ["flush_period_s: 0.0 is outside 0.05..10.0"]),
    ("fsync:=maybe", ["fsync: expected true/false"]),
    ("topics:=[/nowhere]", ["topics: no known type for '/nowhere'"]),
])
def test_a_bad_parameter_stops_the_start_with_exit_code_2_and_names_it(tmp_path, param, expected):
    proc = run_recorder(tmp_path, param)
    assert proc.returncode == 2, proc.stderr
    for text in expected:
        assert text in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bags").exists()  # refused before touching the disk


def test_hostile_messages_do_not_kill_the_recorder(tmp_path):
    from std_srvs.srv import SetBool, Trigger

    from apo_ros.qos import topic_qos

    out = tmp_path / "bags"
    proc = start_node_process(MODULE, ["--ros-args", "-p", f"output_dir:={out}", "-p", "grace_period_s:=0.2",
                                       "-p", "flush_period_s:=0.1"], log_path=str(tmp_path / "recorder.log"))
    try:
        with RosGraph() as g:
            probe = EpisodeProbe(g)
            probe.wait_for_recorder(timeout=30)
            garbage = [b"", b"\x00", b"\x00\x01\x00\x00" + b"\xff" * 64, os.urandom(3000)]
            raw = {topic: probe.node.create_publisher(probe.pubs[topic].msg_type, topic, topic_qos(topic))
                   for topic in (T.EPISODE, T.STEP, T.IMAGE)}
            for pub in raw.values():
                g.wait_for_subscribers(pub)
            for data in garbage:  # undecodable CDR on every kind of subscription
                for pub in raw.values():
                    pub.publish(data)
            # Names that would become paths: far too long, traversal, control characters.
            hostile_ids = ["x" * 5000, "../../../../tmp/escape", "\x00\n;rm -rf /", "é" * 300]
            for eid in hostile_ids:
                probe.start(eid, instruction="i" * 100_000)
                for i in range(3):
                    probe.step(eid, i)
                probe.end(eid)
            probe.start("good")
            for i in range(5):
                probe.step("good", i)
            probe.end("good")
            g.wait_until(lambda: (out / "good" / "metadata.yaml").is_file(), 60, what="the good episode's bag")
            assert proc.poll() is None, (tmp_path / "recorder.log").read_text()
            for srv, typ, req in ((T.RECORDER_PAUSE, SetBool, SetBool.Request(data=True)),
                                  (T.RECORDER_PAUSE, SetBool, SetBool.Request(data=False)),
                                  (T.RECORDER_START, Trigger, Trigger.Request())):
                assert g.call(probe.node.create_client(typ, srv), req, timeout=30).success
        assert stop_process(proc, signal.SIGTERM, timeout=30) == 0
    finally:
        stop_process(proc)
    steps = [m.msg.step_index for m in iter_messages(out / "good", [T.STEP])]
    assert steps == list(range(5))
    bags = list_episode_bags(out)
    assert all(b.parent == out for b in bags) and not (tmp_path / "escape").exists()
    for bag in bags:
        check_name(bag.name, "episode bag")  # every directory is a plain, bounded name
    recorded_ids = {read_bag_info(b).episode_id for b in bags}
    assert recorded_ids >= {"good", "x" * 5000, "../../../../tmp/escape"}


def level(value) -> int:
    """DiagnosticStatus levels are ``byte`` fields: bytes in rclpy."""
    return int.from_bytes(value, "little") if isinstance(value, bytes) else int(value)


def diagnostics_of(graph, values=None):
    """Collect the recorder's DiagnosticStatus messages as they arrive: (level, message) pairs, and
    their key/value dicts into ``values`` if given."""
    from diagnostic_msgs.msg import DiagnosticArray

    seen = []
    node = graph.probe_node("diag_probe")

    def on_diag(msg):
        for s in msg.status:
            if s.name.startswith("apo_recorder"):
                if values is not None:
                    values.append((level(s.level), {kv.key: kv.value for kv in s.values}))
                seen.append((level(s.level), s.message))

    node.create_subscription(DiagnosticArray, T.DIAGNOSTICS, on_diag, 50)
    return seen


def wait_for_level(graph, seen, wanted, text="", timeout=30.0):
    start, wanted = len(seen), level(wanted)
    graph.wait_until(lambda: any(lv == wanted and text in msg for lv, msg in seen[start:]), timeout,
                     what=f"diagnostics level {wanted} mentioning {text!r}")


def test_diagnostics_say_error_naming_the_path_while_output_dir_is_unusable(tmp_path):
    from diagnostic_msgs.msg import DiagnosticStatus

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with RosGraph() as g:
        seen = diagnostics_of(g)
        g.add(RecorderNode(context=g.context, parameter_overrides=[
            Parameter("output_dir", value=str(blocker / "bags")), Parameter("diagnostics_period_s", value=0.2)]))
        wait_for_level(g, seen, DiagnosticStatus.ERROR, f"output_dir {blocker / 'bags'} is not writable")

    out = tmp_path / "bags"
    with RosGraph() as g:
        seen = diagnostics_of(g)
        rec = g.add(RecorderNode(context=g.context, parameter_overrides=[
            Parameter("output_dir", value=str(out)), Parameter("diagnostics_period_s", value=0.2)]))
        wait_for_level(g, seen, DiagnosticStatus.OK, "idle")
        moved = tmp_path / "moved"
        out.rename(moved)
        out.write_text("the disk was swapped for a file")  # output_dir is gone while idle
        wait_for_level(g, seen, DiagnosticStatus.ERROR, f"output_dir {out} is not writable")
        assert rec.status()["state"] == "error"
        out.unlink()
        moved.rename(out)  # fixed: back to OK without a restart
        wait_for_level(g, seen, DiagnosticStatus.OK, "idle")


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))


def test_diagnostics_say_error_after_a_disk_error_until_a_bag_is_written_again(tmp_path):
    from diagnostic_msgs.msg import DiagnosticStatus

    out = tmp_path / "bags"
    log_path = tmp_path / "recorder.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--ros-args", "-p", f"output_dir:={out}", "-p", "grace_period_s:=0.2",
             "-p", "flush_period_s:=0.1", "-p", "chunk_size_bytes:=50000", "-p", "diagnostics_period_s:=0.2"],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), preexec_fn=_limit_file_size,
            start_new_session=True)
    try:
        with RosGraph() as g:
            values = []
            seen = diagnostics_of(g, values)
            probe = EpisodeProbe(g, image_size=(64, 64))
            probe.wait_for_recorder(timeout=30)
            probe.start("big")
            i = 0
            while not any(lv == level(DiagnosticStatus.ERROR) for lv, _ in seen) and i < 5000:
                probe.step("big", i)
                i += 1
                time.sleep(0.005)
            wait_for_level(g, seen, DiagnosticStatus.ERROR, f"writing bag {out / 'big'} failed")
            assert any("EFBIG" in msg for _, msg in seen)
            probe.end("big")
            # Idle again (no bag open), and still ERROR: the last bag failed.
            g.wait_until(lambda: any(lv == level(DiagnosticStatus.ERROR) and v["bags_open"] == "0"
                                     and not v["ending_episodes"] and "EFBIG" in v.get("cannot_write", "")
                                     for lv, v in values), 30, what="ERROR once the failed bag is closed")
            probe.start("small")  # a bag below the file size limit: writing works again
            for k in range(3):
                probe.step("small", k)
            probe.end("small")
            g.wait_until(lambda: (out / "small" / "metadata.yaml").is_file(), 30, what="the small bag")
            wait_for_level(g, seen, DiagnosticStatus.OK, "idle")
            assert proc.poll() is None
        assert stop_process(proc, signal.SIGTERM, timeout=30) == 0
    finally:
        stop_process(proc)
