"""apo_core.bags: the one scanner in both modes on real recorder bags, truncated and with flipped bytes.

The bag is written by the recorder's writer (real chunk CRCs, several uncompressed chunks); which
message sits in which chunk is read with an independent reader (the ``mcap`` library). Damage:

- truncation at several byte offsets (inside a chunk, at a chunk boundary, inside a record header):
  stop mode keeps exactly the messages of the chunks complete before the cut; resync mode keeps
  those too, plus only genuine messages of the torn chunk (never anything altered);
- a flipped byte in a chunk's payload (its CRC fails): both modes leave that chunk out and read on;
- a flipped byte in a chunk's record length (the structure is broken): stop mode stops there, resync
  mode skips the damaged chunk and recovers every intact message after it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from apo_core import topics as T
from apo_core.bags.mcap_records import find_chunks
from apo_core.bags.scan import ScanError, ScanState, scan_mcap

apo_recorder = pytest.importorskip("apo_recorder")
mcap_reader = pytest.importorskip("mcap.reader")
stream_reader = pytest.importorskip("mcap.stream_reader")
records = pytest.importorskip("mcap.records")

N = 60
H = W = 32


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """(mcap path, its bytes, {log time: data}, [set of log times per chunk], [(offset, end) per chunk])."""
    from apo_recorder import TopicSpec, contract, write_bag
    from apo_recorder.synthetic import SyntheticMessages

    syn = SyntheticMessages()
    msgs = [(T.EPISODE, 500, syn.event("ep", contract.EVENT_START, "lift", "Lift", "v1"))]
    for i in range(N):
        msgs.append((T.IMAGE, 1000 + 10 * i, syn.image(H, W, seed=i)))
        msgs.append((T.STEP, 1005 + 10 * i, syn.step("ep", i)))
    path = tmp_path_factory.mktemp("bags") / "ep"
    specs = [TopicSpec(t, ty) for t, ty in contract.DEFAULT_TOPICS.items()]
    write_bag(path, specs, contract.default_custom_data("ep"), msgs, chunk_bytes=16 * 1024)
    mcap = path / "ep.mcap"
    raw = mcap.read_bytes()
    data = {t: d for _, t, d in msgs}
    assert len(data) == len(msgs)  # log times identify messages

    per_chunk = []
    for rec in stream_reader.StreamReader(str(mcap), emit_chunks=True).records:
        if isinstance(rec, records.Chunk):
            assert rec.uncompressed_crc != 0 and rec.compression == ""
            per_chunk.append({r.log_time for r in mcap_reader.breakup_chunk(rec, validate_crc=True)
                              if isinstance(r, records.Message)})
    spans = [(i, info.record_end) for i, info in find_chunks(raw)]
    assert len(spans) == len(per_chunk) >= 5
    assert set().union(*per_chunk) == set(data)
    return mcap, raw, data, per_chunk, spans


def _damaged(tmp_path: Path, raw: bytes) -> Path:
    out = tmp_path / "damaged.mcap"
    out.write_bytes(raw)
    return out


def _scan(path: Path, mode: str) -> tuple[dict[int, bytes], ScanState]:
    state = ScanState()
    got: dict[int, bytes] = {}
    for _cid, log_time, data in scan_mcap(path, state, mode=mode):
        assert log_time not in got
        got[log_time] = bytes(data)
    return got, state


def test_intact_bag_reads_the_same_in_both_modes(bag):
    mcap, _raw, data, _per_chunk, _spans = bag
    for mode in ("stop", "resync"):
        got, state = _scan(mcap, mode)
        assert got == data, mode
        assert not state.chunks_dropped
        assert {c[1] for c in state.channels.values()} >= {T.IMAGE, T.STEP, T.EPISODE}, mode
    _, state = _scan(mcap, "stop")
    assert state.stop_reason == "end of data section"


@pytest.mark.parametrize("where", ["mid_chunk_1", "mid_chunk_3", "chunk_boundary", "record_header", "mid_last"])
def test_truncated(tmp_path, bag, where):
    mcap, raw, data, per_chunk, spans = bag
    k = {"mid_chunk_1": 1, "mid_chunk_3": 3, "chunk_boundary": 2, "record_header": 2, "mid_last": len(spans) - 1}[where]
    start, end = spans[k]
    cut = {"chunk_boundary": start, "record_header": start + 5}.get(where, (start + end) // 2)
    path = _damaged(tmp_path, raw[:cut])
    before = set().union(*per_chunk[:k])  # the chunks complete before the cut

    stopped, state = _scan(path, "stop")
    assert set(stopped) == before
    assert all(stopped[t] == data[t] for t in stopped)
    assert "truncated" in state.stop_reason or state.stop_reason.startswith("end of file")
    assert state.bytes_used <= cut

    resynced, _ = _scan(path, "resync")
    assert before <= set(resynced) <= before | per_chunk[k]  # plus what the torn chunk still holds intact
    assert all(resynced[t] == data[t] for t in resynced)


@pytest.mark.parametrize("k", [1, 3])
def test_flipped_payload_byte_drops_that_chunk_in_both_modes(tmp_path, bag, k):
    mcap, raw, data, per_chunk, spans = bag
    start, end = spans[k]
    damaged = bytearray(raw)
    damaged[end - 100] ^= 0xFF  # inside the chunk's records: its CRC fails
    path = _damaged(tmp_path, bytes(damaged))
    expected = set(data) - per_chunk[k]
    for mode in ("stop", "resync"):
        got, state = _scan(path, mode)
        assert set(got) == expected, mode
        assert all(got[t] == data[t] for t in got)
        assert len(state.chunks_dropped) == 1 and f"byte {start}" in state.chunks_dropped[0], mode


@pytest.mark.parametrize("k", [1, 2, 4])
def test_broken_chunk_record_stop_mode_stops_resync_mode_reads_on(tmp_path, bag, k):
    mcap, raw, data, per_chunk, spans = bag
    start, _end = spans[k]
    damaged = bytearray(raw)
    damaged[start + 8] ^= 0x5A  # the top byte of the chunk record's length
    path = _damaged(tmp_path, bytes(damaged))
    before = set().union(*per_chunk[:k])

    stopped, state = _scan(path, "stop")
    assert set(stopped) == before
    assert str(start) in state.stop_reason
    assert state.bytes_used == start

    resynced, state = _scan(path, "resync")
    assert set(resynced) == set(data) - per_chunk[k]  # every intact message after the damage too
    assert all(resynced[t] == data[t] for t in resynced)
    assert state.report is not None and state.report.bytes_lost > 0


def test_not_mcap_raises_in_both_modes(tmp_path):
    path = tmp_path / "x.mcap"
    path.write_bytes(b"hello world, not mcap at all")
    for mode in ("stop", "resync"):
        with pytest.raises(ScanError, match="not an MCAP"):
            list(scan_mcap(path, mode=mode))
    with pytest.raises(ValueError, match="mode"):
        scan_mcap(path, mode="sometimes")


def test_bags_imports_no_ros_and_no_other_apo_package():
    code = (
        "import sys, apo_core.bags, apo_core.bags.mcap_records, apo_core.bags.scan, apo_core.bags.typestore, "
        "apo_core.bags.reader, apo_core.bags.layout, apo_core.bags.report; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('rclpy', 'rosidl_runtime_py', 'apo_interfaces', 'apo_recorder', 'apo_trainer', 'apo_ros', "
        "'apo_intervention', 'apo_bringup', 'apo_sim', 'apo_bench')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
