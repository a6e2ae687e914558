"""The recorder's bags carry real MCAP CRCs, checked here by an independent reader (the ``mcap`` library).

Chunk CRCs, the data-section CRC (DataEnd) and the summary CRC (Footer) must all be non-zero, equal to
what zlib computes over the bytes the spec names, and accepted by ``mcap``'s validating readers;
a flipped byte in an image must make those readers refuse. Also: recovery of a killed recording
leaves a chunk that fails its CRC out, and writes its rebuilt bag with CRCs too.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from apo_core import topics as T
from apo_recorder import TopicSpec, contract, iter_messages, recover_bag, write_bag
from apo_recorder.mcap_storage import open_writer
from apo_recorder.msgdefs import message_definition
from apo_recorder.synthetic import SyntheticMessages

mcap_reader = pytest.importorskip("mcap.reader")
stream_reader = pytest.importorskip("mcap.stream_reader")
records = pytest.importorskip("mcap.records")

SPECS = [TopicSpec(t, ty) for t, ty in contract.DEFAULT_TOPICS.items()]
H = W = 32
N = 60


@pytest.fixture(scope="module")
def syn():
    return SyntheticMessages()


def pixels(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=H * W * 3, dtype=np.uint8).tobytes()


def messages(syn, n=N):
    out = [(T.EPISODE, 500, syn.event("ep", contract.EVENT_START, "lift", "Lift", "v1"))]
    for i in range(n):
        out.append((T.IMAGE, 1000 + 10 * i, syn.image(H, W, seed=i)))
        out.append((T.STEP, 1005 + 10 * i, syn.step("ep", i)))
    return out


def flip(path: Path, seed: int) -> None:
    """Invert a byte in the middle of image ``seed``'s pixels (headers untouched)."""
    data = bytearray(path.read_bytes())
    at = bytes(data).find(pixels(seed))
    assert at > 0
    data[at + len(pixels(seed)) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def crc_records(path: Path):
    """Chunk, DataEnd and Footer records as the mcap library parses them (chunks not unpacked)."""
    recs = list(stream_reader.StreamReader(str(path), emit_chunks=True).records)
    chunks = [r for r in recs if isinstance(r, records.Chunk)]
    data_end = [r for r in recs if isinstance(r, records.DataEnd)]
    footer = [r for r in recs if isinstance(r, records.Footer)]
    return chunks, data_end, footer


def validate_with_mcap(path: Path) -> int:
    """Read everything through mcap's CRC-validating readers; returns the message count."""
    n = sum(1 for _ in stream_reader.StreamReader(str(path), validate_crcs=True).records)  # chunks + data section
    with open(path, "rb") as fh:
        count = sum(1 for _ in mcap_reader.make_reader(fh, validate_crcs=True).iter_messages())
    assert n > count
    return count


@pytest.mark.parametrize("compress", [False, True])
def test_fresh_bags_carry_crcs_an_independent_reader_verifies(tmp_path, syn, compress):
    path = tmp_path / "ep"
    if compress:  # the storage as a rosbags plugin, zstd chunks
        from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

        bag = open_writer(path)
        bag.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        bag.open()
        bag.storage.chunk_bytes = 16 * 1024
        conns = {}
        for spec in SPECS:
            msgdef, digest = message_definition(spec.msgtype)
            conns[spec.topic] = bag.add_connection(spec.topic, spec.msgtype, msgdef=msgdef, rihs01=digest)
        for topic, ts, data in messages(syn):
            bag.write(conns[topic], ts, data)
        bag.close()
    else:  # the episode writer, as the recorder node uses it
        write_bag(path, SPECS, contract.default_custom_data("ep"), messages(syn), chunk_bytes=16 * 1024)
    mcap = path / "ep.mcap"
    chunks, data_end, footer = crc_records(mcap)
    assert len(chunks) > 3 and all(c.uncompressed_crc != 0 for c in chunks)
    assert {c.compression for c in chunks} == {"zstd" if compress else ""}
    if not compress:
        assert [zlib.crc32(c.data) for c in chunks] == [c.uncompressed_crc for c in chunks]
    raw = mcap.read_bytes()
    # DataEnd: CRC-32 of every byte before it, magic included.
    (data_end,), (footer,) = data_end, footer
    end_at = footer.summary_start - (1 + 8 + 4)
    assert data_end.data_section_crc == zlib.crc32(raw[:end_at]) != 0
    # Footer: CRC-32 of the summary section and the footer's fields up to summary_crc.
    footer_at = len(raw) - 8 - (1 + 8 + 20)
    assert footer.summary_crc == zlib.crc32(raw[footer.summary_start:footer_at + 1 + 8 + 16]) != 0
    assert validate_with_mcap(mcap) == len(messages(syn))
    assert len(list(iter_messages(path))) == len(messages(syn))  # rosbags reads it as well

    flip(mcap, seed=N // 2)
    with pytest.raises(stream_reader.CRCValidationError):
        validate_with_mcap(mcap)


def test_recovery_leaves_out_a_chunk_failing_its_crc_and_rebuilds_with_crcs(tmp_path, syn):
    path = tmp_path / "ep"
    bag = open_writer(path)  # a killed recorder: flushed chunks, no summary, no metadata.yaml
    bag.open()
    bag.storage.chunk_bytes = 16 * 1024
    conns = {}
    for spec in SPECS:
        msgdef, digest = message_definition(spec.msgtype)
        conns[spec.topic] = bag.add_connection(spec.topic, spec.msgtype, msgdef=msgdef, rihs01=digest)
    msgs = messages(syn)
    for topic, ts, data in msgs:
        bag.write(conns[topic], ts, data)
    bag.storage.close_chunk()
    bag.abort()
    flip(path / "ep.mcap", seed=N // 2)

    report = recover_bag(path)
    assert report.status == "recovered" and len(report.chunks_dropped) == 1
    assert "CRC mismatch" in report.chunks_dropped[0]
    assert report.stop_reason == "end of file (no summary/footer)"  # the scan went on past the bad chunk
    recovered = list(iter_messages(path, [T.IMAGE]))
    assert 0 < len(recovered) < N and report.messages_recovered < len(msgs)
    for m in recovered:
        assert bytes(m.msg.data) == pixels((m.log_time_ns - 1000) // 10)
    assert N // 2 not in [(m.log_time_ns - 1000) // 10 for m in recovered]
    chunks, (data_end,), (footer,) = crc_records(path / "ep.mcap")
    assert all(c.uncompressed_crc for c in chunks) and data_end.data_section_crc and footer.summary_crc
    assert validate_with_mcap(path / "ep.mcap") == report.messages_recovered


def test_crc_field_sits_where_the_spec_puts_it(tmp_path, syn):
    """Our own check of the raw bytes: chunk CRC at offset 9 + 24 of the record, over the records."""
    path = tmp_path / "ep"
    write_bag(path, SPECS, contract.default_custom_data("ep"), messages(syn, 5))
    raw = (path / "ep.mcap").read_bytes()
    pos = 8 + 9 + struct.unpack_from("<Q", raw, 9)[0]  # after the magic and the header record
    assert raw[pos] == 0x06
    _, _, usize, crc, clen = struct.unpack_from("<QQQII", raw, pos + 9)
    start = pos + 9 + 32 + clen + 8
    assert crc == zlib.crc32(raw[start:start + usize]) != 0
