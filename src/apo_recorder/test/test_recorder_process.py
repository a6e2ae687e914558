"""The recorder as a separate process: SIGKILL mid-episode (then recover_bag), SIGTERM/SIGINT shutdown."""

from __future__ import annotations

import signal
import time

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from apo_core import topics as T  # noqa: E402
from apo_recorder import contract, iter_messages, list_episode_bags, read_bag_info, recover_bag  # noqa: E402
from apo_recorder.recovery import count_messages_on_disk  # noqa: E402
from apo_recorder.testing import EpisodeProbe  # noqa: E402
from apo_ros.testing import RosGraph, start_node_process, stop_process  # noqa: E402

MODULE = "apo_recorder.recorder_node"


def recorder_args(out, **params):
    params.setdefault("grace_period_s", 0.3)
    params.setdefault("flush_period_s", 0.2)
    args = ["--ros-args", "-p", f"output_dir:={out}"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    return args


def steps_of(bag):
    return [m.msg.step_index for m in iter_messages(bag, [T.STEP])]


def record_episode(g, probe, out, eid, n, event=None):
    probe.start(eid)
    for i in range(n):
        probe.step(eid, i)
        time.sleep(0.005)
    probe.end(eid, event)
    g.wait_until(lambda: (out / eid / "metadata.yaml").is_file(), 30, what=f"bag {eid} closed")


def test_sigkill_mid_episode_keeps_earlier_bags_and_the_partial_one_is_recoverable(tmp_path):
    out = tmp_path / "bags"
    proc = start_node_process(MODULE, recorder_args(out), log_path=str(tmp_path / "recorder.log"))
    try:
        with RosGraph() as g:
            probe = EpisodeProbe(g, image_size=(32, 32))
            probe.wait_for_recorder(timeout=30)
            record_episode(g, probe, out, "ep_1", 20)
            record_episode(g, probe, out, "ep_2", 20, probe.EpisodeEvent.EVENT_FAILURE)
            probe.start("ep_3")
            mcap = out / "ep_3" / "ep_3.mcap"
            published, on_disk = 0, 0
            deadline = time.monotonic() + 60
            while on_disk < 40 and time.monotonic() < deadline:
                probe.step("ep_3", published)
                published += 1
                time.sleep(0.01)
                if published % 5 == 0 and mcap.exists():
                    on_disk = count_messages_on_disk(mcap).get(T.STEP, 0)
            assert on_disk >= 40, "steps never reached the disk"
            for _ in range(20):  # keep the episode going while the recorder dies
                probe.step("ep_3", published)
                published += 1
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
    finally:
        stop_process(proc)

    assert [b.name for b in list_episode_bags(out)] == ["ep_1", "ep_2"]  # ep_3 has no metadata.yaml
    for eid, outcome in (("ep_1", "success"), ("ep_2", "failure")):
        assert recover_bag(out / eid).status == "intact"
        assert read_bag_info(out / eid).outcome == outcome
        assert steps_of(out / eid) == list(range(20))

    rep = recover_bag(out / "ep_3")
    assert rep.status == "recovered"
    info = read_bag_info(out / "ep_3")
    assert info.episode_id == "ep_3" and info.outcome == "unknown" and info.instruction == "lift the red cube"
    assert info.custom_data[contract.KEY_RECOVERED] == str(rep.messages_recovered)
    steps = steps_of(out / "ep_3")
    assert steps == list(range(len(steps)))  # contiguous from step 0
    assert len(steps) >= on_disk  # everything flushed before the kill is back
    assert len(steps) <= published
    assert {T.IMAGE, T.ROBOT_STATE, T.COMMAND, T.EPISODE} <= set(rep.per_topic)


@pytest.mark.parametrize("sig,end_first,outcome", [(signal.SIGTERM, False, "unknown"),
                                                   (signal.SIGINT, True, "success")])
def test_signal_closes_the_open_bag(tmp_path, sig, end_first, outcome):
    out = tmp_path / "bags"
    # long grace: the bag is still open when the signal arrives, even after the end event
    proc = start_node_process(MODULE, recorder_args(out, grace_period_s=30.0),
                              log_path=str(tmp_path / "recorder.log"))
    try:
        with RosGraph() as g:
            probe = EpisodeProbe(g)
            probe.wait_for_recorder(timeout=30)
            probe.start("ep_s")
            for i in range(10):
                probe.step("ep_s", i)
            mcap = out / "ep_s" / "ep_s.mcap"
            g.wait_until(lambda: mcap.exists() and count_messages_on_disk(mcap).get(T.STEP, 0) == 10, 30,
                         what="steps on disk")
            if end_first:
                probe.end("ep_s")
                g.wait_until(lambda: count_messages_on_disk(mcap).get(T.EPISODE, 0) == 2, 30, what="end event")
            assert stop_process(proc, sig, timeout=30) == 0
    finally:
        stop_process(proc)
    info = read_bag_info(out / "ep_s")
    assert info.outcome == outcome
    assert steps_of(out / "ep_s") == list(range(10))
    assert sorted(p.name for p in (out / "ep_s").iterdir()) == ["ep_s.mcap", "metadata.yaml"]
    assert "closing the open bag" in (tmp_path / "recorder.log").read_text()


def _limit_file_size():
    """Child set-up: a write past 1 MB fails with EFBIG (instead of SIGXFSZ), like a full disk."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))


def test_write_error_mid_episode_stops_recording_cleanly_and_node_keeps_running(tmp_path):
    import os
    import subprocess
    import sys

    from std_srvs.srv import SetBool

    out = tmp_path / "bags"
    log_path = tmp_path / "recorder.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", MODULE, *recorder_args(out, chunk_size_bytes=100_000)],
                                stdout=log,
                                stderr=subprocess.STDOUT, env=dict(os.environ), preexec_fn=_limit_file_size,
                                start_new_session=True)
    try:
        with RosGraph() as g:
            probe = EpisodeProbe(g, image_size=(64, 64))
            pause = probe.node.create_client(SetBool, T.RECORDER_PAUSE)
            probe.wait_for_recorder(timeout=30)
            probe.start("big")
            i = 0
            while "EFBIG" not in log_path.read_text() and i < 5000:
                probe.step("big", i)
                i += 1
                time.sleep(0.005)
            assert "EFBIG" in log_path.read_text()
            probe.end("big")
            assert g.call(pause, SetBool.Request(data=True)).success  # still serving
            assert proc.poll() is None
            assert stop_process(proc, signal.SIGTERM, timeout=30) == 0
    finally:
        stop_process(proc)
    text = log_path.read_text()
    assert f"writing bag {out / 'big'} failed: File too large [EFBIG]" in text
    assert "the recorder keeps running" in text
    rep = recover_bag(out / "big")  # what reached the disk before the error is usable
    assert rep.messages_recovered > 0
    steps = steps_of(out / "big")
    assert steps == list(range(len(steps)))
