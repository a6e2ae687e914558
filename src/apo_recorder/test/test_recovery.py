"""recover_bag on real damaged bags: truncated MCAP files and a writer process killed with SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from apo_core import topics as T
from apo_recorder import (
    EpisodeBagWriter,
    RecoveryError,
    TopicSpec,
    contract,
    iter_messages,
    read_bag_info,
    recover_bag,
    write_bag,
)
from apo_recorder.recovery import scan_mcap
from apo_recorder.synthetic import SyntheticMessages

SPECS = [TopicSpec(T.EPISODE, contract.DEFAULT_TOPICS[T.EPISODE]),
         TopicSpec(T.STEP, contract.DEFAULT_TOPICS[T.STEP]),
         TopicSpec(T.IMAGE, contract.DEFAULT_TOPICS[T.IMAGE])]


@pytest.fixture(scope="module")
def syn():
    return SyntheticMessages()


def _messages(syn, n):
    out = []
    for i in range(n):
        out.append((T.STEP, 1000 + 2 * i, syn.step("ep", i)))
        out.append((T.IMAGE, 1001 + 2 * i, syn.image(24, 24, seed=i)))
    return out


def _complete_bag(tmp_path, syn, n=60, chunk_bytes=8192):
    path = tmp_path / "ep"
    custom = contract.default_custom_data("ep", "stack the cubes", "Stack", "v2")
    write_bag(path, SPECS, custom, _messages(syn, n), chunk_bytes=chunk_bytes)
    return path, custom


def _kill_like(path, cut):
    """Turn a complete bag into what a killed recorder leaves: no metadata.yaml, MCAP cut at ``cut``."""
    (path / "metadata.yaml").unlink()
    mcap = path / "ep.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[:cut])
    return len(data)


def test_intact_bag_is_left_alone(tmp_path, syn):
    path, custom = _complete_bag(tmp_path, syn, n=5)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    rep = recover_bag(path)
    assert rep.status == "intact" and rep.messages_recovered == 10 and rep.custom_data == custom
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 0.5, 0.81, 0.97, 1.0])
def test_truncated_bag_recovers_a_prefix(tmp_path, syn, fraction):
    path, custom = _complete_bag(tmp_path, syn)
    original = [(m.topic, m.log_time_ns, m.data) for m in iter_messages(path, decode=False)]
    size = (path / "ep.mcap").stat().st_size
    # also a journal, as the writer leaves it, with the custom_data known at the time of the kill
    (path / contract.JOURNAL_NAME).write_text(yaml.safe_dump({
        "bag_file": "ep.mcap", "pid": 999999999, "hostname": "elsewhere",
        "custom_data": {**custom, contract.KEY_OUTCOME: "failure"}}))
    _kill_like(path, 8 + int((size - 8) * fraction))

    rep = recover_bag(path)
    assert rep.status == "recovered"
    info = read_bag_info(path)
    got = [(m.topic, m.log_time_ns, m.data) for m in iter_messages(path, decode=False)]
    assert info.message_count == rep.messages_recovered == len(got)
    # chunks are recovered whole or not at all, in order: the result is a prefix of the original
    assert got == original[:len(got)]
    if fraction == 1.0:  # only the summary/footer was lost
        assert len(got) == len(original)
    if fraction >= 0.5:
        assert len(got) >= len(original) // 3
    if fraction > 0.0:  # the connections sit in a small first chunk, written when the bag is opened
        assert set(info.topics) == {s.topic for s in SPECS}  # every connection, even without messages
    assert info.custom_data[contract.KEY_OUTCOME] == "failure"
    assert info.custom_data[contract.KEY_INSTRUCTION] == "stack the cubes"
    assert info.custom_data[contract.KEY_RECOVERED] == str(len(got))
    assert not (path / contract.JOURNAL_NAME).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep"]  # no leftovers
    assert recover_bag(path).status == "intact"  # idempotent


def test_garbage_tail_and_no_journal(tmp_path, syn):
    path, _ = _complete_bag(tmp_path, syn, n=20)
    (path / "metadata.yaml").unlink()
    mcap = path / "ep.mcap"
    data = mcap.read_bytes()
    cut = data.rfind(b"\x0f")  # somewhere in the summary region
    mcap.write_bytes(data[:cut] + b"\x06" + (10**9).to_bytes(8, "little") + os.urandom(100))
    rep = recover_bag(path, keep_original=True)
    info = read_bag_info(path)
    assert rep.messages_recovered == info.message_count > 0
    assert info.episode_id == "ep" and info.outcome == "unknown"  # defaults without a journal
    assert set(info.custom_data) >= set(contract.CUSTOM_DATA_KEYS)
    assert (tmp_path / ".ep.partial" / "ep.mcap").is_file()  # the damaged original, kept on request


def test_refuses_a_bag_that_is_still_being_written(tmp_path, syn):
    w = EpisodeBagWriter(tmp_path / "live", SPECS, contract.default_custom_data("live"), flush_period_s=0.05).start()
    w.write(T.STEP, 1, syn.step("live", 0))
    deadline = time.monotonic() + 20
    while w.stats().messages_on_disk < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    journal = yaml.safe_load((tmp_path / "live" / contract.JOURNAL_NAME).read_text())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        journal["pid"] = sleeper.pid  # as if another, live process were writing it
        (tmp_path / "live" / contract.JOURNAL_NAME).write_text(yaml.safe_dump(journal))
        with pytest.raises(RecoveryError, match="still being written"):
            recover_bag(tmp_path / "live")
    finally:
        sleeper.kill()
        sleeper.wait()
    w.close()


def test_not_a_bag(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(RecoveryError, match="no .mcap"):
        recover_bag(tmp_path / "x")
    (tmp_path / "x" / "x.mcap").write_bytes(b"hello world, not mcap")
    with pytest.raises(RecoveryError, match="not an MCAP"):
        recover_bag(tmp_path / "x")
    with pytest.raises(RecoveryError, match="does not exist"):
        recover_bag(tmp_path / "missing")


def test_interrupted_recovery_can_be_resumed(tmp_path, syn):
    path, _ = _complete_bag(tmp_path, syn, n=10)
    _kill_like(path, (path / "ep.mcap").stat().st_size - 50)
    recover_bag(path)
    # simulate a crash between the two renames of a recovery: the rebuilt bag still in the work dir
    work = tmp_path / ".ep.recovering"
    work.mkdir()
    shutil.move(str(path), str(work / "ep"))
    rep = recover_bag(path)
    assert rep.status == "intact" and read_bag_info(path).message_count == rep.messages_recovered


_KILL_CHILD = r"""
import sys, time
from apo_core import topics as T
from apo_recorder import EpisodeBagWriter, TopicSpec, contract
from apo_recorder.synthetic import SyntheticMessages
syn = SyntheticMessages()
specs = [TopicSpec(T.STEP, contract.DEFAULT_TOPICS[T.STEP]), TopicSpec(T.IMAGE, contract.DEFAULT_TOPICS[T.IMAGE])]
w = EpisodeBagWriter(sys.argv[1], specs, contract.default_custom_data("killed", "open the drawer", "Drawer", "v9"),
                     flush_period_s=0.2).start()
img = syn.image(64, 64)
i = 0
while True:
    w.write(T.STEP, 10_000 + i, syn.step("killed", i))
    w.write(T.IMAGE, 10_000 + i, img)
    i += 1
    if i % 10 == 0:
        print("ON_DISK", w.stats().messages_on_disk, "QUEUED", 2 * i, flush=True)
    time.sleep(0.005)
"""


def test_sigkill_of_a_writing_process(tmp_path):
    """The real thing: a process writing a bag is SIGKILLed; everything it had flushed is recovered."""
    bag = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(bag)], stdout=subprocess.PIPE, text=True)
    on_disk = 0
    try:
        for line in proc.stdout:
            parts = line.split()
            on_disk = int(parts[1])
            if on_disk >= 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert on_disk >= 300, "the writer never reported enough flushed messages"
    assert not (bag / "metadata.yaml").exists()
    assert (bag / contract.JOURNAL_NAME).exists()

    rep = recover_bag(bag)
    assert rep.status == "recovered"
    assert rep.messages_recovered >= on_disk  # everything fsynced before the kill is back
    info = read_bag_info(bag)
    assert info.custom_data[contract.KEY_INSTRUCTION] == "open the drawer"
    assert info.custom_data[contract.KEY_RECOVERED] == str(rep.messages_recovered)
    steps = [m.msg.step_index for m in iter_messages(bag, [T.STEP])]
    assert steps == list(range(len(steps)))  # contiguous from the start, nothing missing in between
    assert len(steps) >= on_disk // 2
    assert sum(1 for _ in scan_mcap(bag / "killed.mcap")) == rep.messages_recovered


def test_recovery_cli(tmp_path, syn, capsys):
    from apo_recorder.recovery_cli import main

    path, _ = _complete_bag(tmp_path, syn, n=10)
    _kill_like(path, (path / "ep.mcap").stat().st_size - 100)
    write_bag(tmp_path / "fine", SPECS, contract.default_custom_data("fine"), [(T.STEP, 1, syn.step("fine", 0))])
    assert main([str(tmp_path)]) == 0  # an output directory: every unfinished bag in it
    out = capsys.readouterr().out
    assert f"{path}: recovered" in out and "fine" not in out
    assert read_bag_info(path).message_count > 0
    assert main([str(path)]) == 0 and "intact" in capsys.readouterr().out


def test_ros_free_modules_do_not_import_rclpy():
    code = ("import sys, apo_recorder, apo_recorder.bag_writer, apo_recorder.recovery, apo_recorder.reader, "
            "apo_recorder.contract, apo_recorder.episode, apo_recorder.msgdefs, apo_recorder.cdr_peek, "
            "apo_recorder.synthetic, apo_recorder.recovery_cli, apo_recorder.testing; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_runtime_py', 'apo_interfaces')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
