"""The bag reader on real rosbag2/MCAP bags written by rosbags, intact and damaged."""

import shutil

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from apo_core import topics
from apo_core.bags import BagReadError, EpisodeBag, find_bags, is_bag_dir, open_episode_bag
from apo_trainer.bag_reader_samples import (
    SampleEpisode,
    chunk_offsets,
    cut_file,
    overwrite_bytes,
    sample_action,
    write_sample_bag,
)

LABELS = [1] * 100 + [2] * 30 + [1] * 120  # 250 steps of 64x64 images: about 3.3 MB, 4 chunks


@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return write_sample_bag(root, SampleEpisode("ep_intact", LABELS, image_size=(64, 64)))


def read_all(path, **kw):
    with EpisodeBag(path, **kw) as bag:
        msgs = [(m.topic, m.log_time) for m in bag.messages()]
    return bag, msgs


@pytest.fixture(scope="module")
def full(intact):
    return read_all(intact)[1]


def damaged_copy(intact, tmp_path, name="damaged"):
    dst = tmp_path / name
    shutil.copytree(intact, dst)
    (dst / "ep_intact.mcap").rename(dst / f"{name}.mcap")
    text = (dst / "metadata.yaml").read_text().replace("ep_intact.mcap", f"{name}.mcap")
    (dst / "metadata.yaml").write_text(text)
    return dst, dst / f"{name}.mcap"


def test_intact_bag_is_read_through_its_index_in_log_time_order_with_types_from_the_bag(intact):
    with open_episode_bag(intact) as bag:
        assert bag.mode == "indexed"
        assert bag.custom_data["apo.episode_id"] == "ep_intact"
        assert bag.custom_data["apo.outcome"] == "success" and bag.custom_data["apo.schema_version"] == "1"
        assert bag.topics[topics.STEP] == "apo_interfaces/msg/LabelledStep"
        msgs = list(bag.messages())
        times = [m.log_time for m in msgs]
        assert times == sorted(times)
        counts = {}
        for m in msgs:
            counts[m.topic] = counts.get(m.topic, 0) + 1
        assert counts == bag.report.expected_counts
        steps = [m.msg for m in msgs if m.topic == topics.STEP]
        assert [s.step_index for s in steps] == list(range(len(LABELS)))
        np.testing.assert_allclose(steps[42].executed_action, sample_action(42))
        assert [s.label for s in steps] == LABELS
        # Decoded with definitions embedded in the bag: rosbags' own stores do not know the type.
        assert "apo_interfaces/msg/LabelledStep" not in get_typestore(Stores.LATEST).fielddefs
        assert "apo_interfaces/msg/LabelledStep" in bag.types.store.fielddefs
        assert not bag.report.lossy and not bag.report.problems


def test_topic_filter_and_byte_progress(intact):
    seen = []
    with EpisodeBag(intact) as bag:
        msgs = list(bag.messages([topics.STEP, topics.EPISODE], on_bytes=seen.append))
    assert {m.topic for m in msgs} == {topics.STEP, topics.EPISODE}
    assert sum(seen) == sum(m.size for m in msgs)
    events = [m.msg.event for m in msgs if m.topic == topics.EPISODE]
    assert events == [0, 2, 1]  # START, SUCCESS, END


def test_scanning_an_intact_bag_gives_the_same_stream(intact, full):
    bag, msgs = read_all(intact, recover="always")
    assert bag.mode == "recovered"
    assert msgs == full
    assert not bag.report.lossy


def test_missing_metadata_is_recovered_completely_with_custom_data_from_the_mcap(intact, full, tmp_path):
    dst, _ = damaged_copy(intact, tmp_path)
    (dst / "metadata.yaml").unlink()
    bag, msgs = read_all(dst)
    assert bag.mode == "recovered" and not bag.report.metadata_present
    assert msgs == full
    assert bag.custom_data["apo.episode_id"] == "ep_intact"
    assert not bag.report.lossy


def test_killed_recorder_bag_reads_up_to_the_last_chunk_on_disk(tmp_path, full):
    ep = SampleEpisode("ep_intact", LABELS, image_size=(64, 64))
    path = write_sample_bag(tmp_path, ep, finish=False)
    assert not (path / "metadata.yaml").exists()
    bag, msgs = read_all(path)
    assert bag.mode == "recovered"
    assert not bag.report.metadata_present and not bag.report.footer_present
    assert bag.custom_data == {}
    assert 0 < len(msgs) < len(full)
    assert msgs == full[:len(msgs)]
    assert any("footer" in p for p in bag.report.problems)


@pytest.mark.parametrize("keep_metadata", [False, True])
def test_torn_last_chunk_keeps_its_complete_records(intact, full, tmp_path, keep_metadata):
    dst, mcap = damaged_copy(intact, tmp_path)
    if not keep_metadata:
        (dst / "metadata.yaml").unlink()
    cut_file(mcap, int(mcap.stat().st_size * 0.7))
    bag, msgs = read_all(dst)
    assert bag.mode == "recovered"
    assert bag.report.metadata_present == keep_metadata
    assert bag.report.chunks_torn == 1 and bag.report.bytes_missing > 0 and bag.report.lossy
    assert len(full) * 0.6 < len(msgs) < len(full)
    assert msgs == full[:len(msgs)]  # a clean prefix: nothing invented, nothing reordered
    assert "torn" in bag.report.summary()


def test_overwritten_bytes_are_reported_and_the_scan_resynchronises(intact, full, tmp_path):
    dst, mcap = damaged_copy(intact, tmp_path)
    second = chunk_offsets(mcap)[1]
    overwrite_bytes(mcap, second[0] + second[1] // 2, 65536)  # record headers in the middle of chunk 2
    with pytest.raises(BagReadError):
        read_all(dst, recover="never")
    # rosbags either stops parsing the chunk silently (the per-topic counts show it) or hands over
    # a garbled message (the reader then switches to scanning): the loss is reported either way.
    bag, msgs = read_all(dst)
    report = bag.report
    assert report.messages_missing + report.messages_undecodable == len(full) - len(msgs) > 0
    assert report.lossy and "not read" in report.summary()
    assert set(msgs) < set(full)
    bag, scanned = read_all(dst, recover="always")
    assert [t for _, t in scanned] == sorted(t for _, t in scanned)
    assert set(scanned) < set(full)
    assert len(full) - 60 < len(scanned) < len(full)  # 64 KB is about 5 steps of 12 KB images
    assert bag.report.bytes_lost >= 65536
    assert bag.report.messages_missing + bag.report.messages_undecodable == len(full) - len(scanned)


def test_a_chunk_the_index_points_at_that_cannot_be_read_switches_to_scanning(intact, full, tmp_path):
    dst, mcap = damaged_copy(intact, tmp_path)
    third = chunk_offsets(mcap)[2]
    overwrite_bytes(mcap, third[0] + 9 + 8 + 8, 12)  # its uncompressed size and CRC: rosbags raises
    with pytest.raises(BagReadError):
        read_all(dst, recover="never")
    bag, msgs = read_all(dst)
    assert bag.mode == "recovered"
    assert any("continued by scanning" in p for p in bag.report.problems)
    # The chunk header is rejected; its uncompressed records are then found one by one as
    # plausible message records, so nothing but the header bytes is lost.
    assert msgs == full
    assert 0 < bag.report.bytes_lost < 100 and bag.report.messages_missing == 0


def test_zstd_compressed_bag_reads_and_recovers_when_cut(tmp_path):
    path = write_sample_bag(tmp_path, SampleEpisode("ep_z", LABELS, image_size=(64, 64)), compress=True)
    full = read_all(path)[1]
    assert read_all(path, recover="always")[1] == full
    (path / "metadata.yaml").unlink()
    mcap = path / "ep_z.mcap"
    last = chunk_offsets(mcap)[-1]
    cut_file(mcap, last[0] + last[1] * 2 // 3)
    bag, msgs = read_all(path)
    assert bag.report.chunks_torn == 1
    assert 0 < len(msgs) < len(full) and msgs == full[:len(msgs)]


def test_garbage_is_not_a_bag(tmp_path, intact):
    bag = tmp_path / "garbage"
    bag.mkdir()
    (bag / "garbage.mcap").write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, np.uint8).tobytes())
    with pytest.raises(BagReadError, match="not an MCAP file"):
        open_episode_bag(bag)
    shutil.copy(intact / "metadata.yaml", bag / "metadata.yaml")
    with pytest.raises(BagReadError):
        open_episode_bag(bag)


def test_find_bags_lists_bag_directories_only(tmp_path, intact):
    shutil.copytree(intact, tmp_path / "b_one")
    (tmp_path / "a_killed").mkdir()
    (tmp_path / "a_killed" / "a_killed_0.mcap").write_bytes(b"\x89MCAP0\r\n")
    (tmp_path / "not_a_bag").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_bags(tmp_path)] == ["a_killed", "b_one"]
    assert is_bag_dir(tmp_path / "b_one") and not is_bag_dir(tmp_path / "not_a_bag")


def mcap_library_bag(tmp_path, name, use_chunking, compression):
    """The same messages re-written by the ``mcap`` library (other chunking, CRCs, compression)."""
    from mcap.writer import CompressionType, Writer

    src = write_sample_bag(tmp_path / "src", SampleEpisode(name, [1] * 40 + [2] * 10, image_size=(32, 32)))
    dst = tmp_path / name
    dst.mkdir()
    with EpisodeBag(src) as bag:
        conns = bag._source.reader.connections
        with open(dst / f"{name}.mcap", "wb") as f:
            w = Writer(f, chunk_size=64 * 1024, use_chunking=use_chunking,
                       compression=getattr(CompressionType, compression))
            w.start(profile="ros2", library="test")
            schemas = {c.msgtype: w.register_schema(c.msgtype, "ros2msg", c.msgdef.data.encode()) for c in conns}
            chans = {c.id: w.register_channel(c.topic, "cdr", schemas[c.msgtype]) for c in conns}
            for conn, log_time, data in bag._source.reader.messages():
                w.add_message(chans[conn.id], log_time, data, log_time)
            w.finish()
    return dst, read_all(src)[1]


@pytest.mark.parametrize("use_chunking,compression", [(False, "NONE"), (True, "LZ4"), (True, "ZSTD")])
def test_bags_from_the_mcap_library_scan_and_recover(tmp_path, use_chunking, compression):
    dst, full = mcap_library_bag(tmp_path, "ep_m", use_chunking, compression)
    bag, msgs = read_all(dst)  # no metadata.yaml: scanned
    assert bag.mode == "recovered" and msgs == full and not bag.report.lossy
    mcap = dst / "ep_m.mcap"
    size = mcap.stat().st_size
    overwrite_bytes(mcap, size // 3, 2000)
    cut_file(mcap, size * 3 // 4)
    bag, msgs = read_all(dst)
    assert bag.report.lossy
    assert 0 < len(msgs) < len(full) * 0.8 and set(msgs) < set(full)
    assert [t for _, t in msgs] == sorted(t for _, t in msgs)
