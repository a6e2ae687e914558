"""Data integrity end to end: bags from the recorder's own writer carry CRCs, the reader checks them,
and conversion keeps damaged bytes (and stand-ins for lost frames) out of the dataset.

Damage is done the way a bad disk does it: bytes flipped in the middle of an image's pixels inside a
chunk, headers untouched, so every record still parses and only a CRC can tell.
"""

from pathlib import Path

import h5py
import numpy as np
import pytest

from apo_core import topics
from apo_core.bags import EpisodeBag
from apo_core.dataset import sorted_episode_names
from apo_trainer.bag_reader_samples import SampleEpisode, chunk_offsets, write_sample_bag
from apo_trainer.convert import convert_bags

bag_writer = pytest.importorskip("apo_recorder.bag_writer")
contract = pytest.importorskip("apo_recorder.contract")
synthetic = pytest.importorskip("apo_recorder.synthetic")

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000
H = W = 40  # 4.8 KB images: a 64 KiB chunk holds about a dozen steps
STEPS = 80


def pixels(seed: int) -> np.ndarray:
    """The image ``SyntheticMessages.image(H, W, seed)`` carries: step i's frame has seed i."""
    return np.random.default_rng(seed).integers(0, 256, size=H * W * 3, dtype=np.uint8).reshape(H, W, 3)


def record(root: Path, episode_id: str, n: int = STEPS, finish: bool = True, consistent: bool = True) -> Path:
    """An episode bag written by the recorder's writer: step i sees image i (stamped 2 ms before it).

    Steps have label 1 then 2 and the matching mode (``consistent=False``: mode 0 throughout)."""
    syn = synthetic.SyntheticMessages()
    msgs = [(topics.EPISODE, T0 - 10 * MS, syn.event(episode_id, contract.EVENT_START, "stack", "Stack", "v0001",
                                                     stamp_ns=T0 - 10 * MS))]
    for i in range(n):
        t = T0 + i * 100 * MS
        msgs.append((topics.IMAGE, t - 1 * MS, syn.image(H, W, seed=i, stamp_ns=t - 2 * MS)))
        msgs.append((topics.ROBOT_STATE, t - 1 * MS, syn.robot_state(np.full(9, float(i)), stamp_ns=t - 2 * MS)))
        label = 1 if i < n // 2 else 2
        msgs.append((topics.STEP, t + MS, syn.step(episode_id, i, label=label, mode=label - 1 if consistent else 0, stamp_ns=t)))
    end = T0 + n * 100 * MS
    msgs.append((topics.EPISODE, end, syn.event(episode_id, contract.EVENT_SUCCESS, stamp_ns=end)))
    specs = [bag_writer.TopicSpec(t, ty) for t, ty in contract.DEFAULT_TOPICS.items()]
    custom = contract.default_custom_data(episode_id, "stack", "Stack", "v0001", "success")
    path = root / episode_id
    if finish:
        bag_writer.write_bag(path, specs, custom, msgs, chunk_bytes=64 * 1024)
    else:
        write_unfinished(path, msgs)
    return path


def write_unfinished(path: Path, msgs) -> None:
    """What a killed recorder leaves: the chunks it flushed, no summary, no metadata.yaml."""
    from apo_recorder.mcap_storage import open_writer
    from apo_recorder.msgdefs import message_definition

    bag = open_writer(path)
    bag.open()
    bag.storage.chunk_bytes = 64 * 1024
    conns = {}
    for topic, msgtype in contract.DEFAULT_TOPICS.items():
        msgdef, digest = message_definition(msgtype)
        conns[topic] = bag.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest)
    for topic, ts, data in msgs:
        bag.write(conns[topic], ts, data)
    bag.storage.close_chunk()
    bag.abort()


def flip_image_bytes(mcap: Path, frame: int, count: int = 8) -> int:
    """Invert ``count`` bytes in the middle of frame ``frame``'s pixels; returns the chunk's offset."""
    data = bytearray(mcap.read_bytes())
    at = bytes(data).find(pixels(frame).tobytes())
    assert at > 0, "frame not found in the file (is the chunk compressed?)"
    mid = at + H * W * 3 // 2
    for k in range(count):
        data[mid + k] ^= 0xFF
    mcap.write_bytes(bytes(data))
    return max(off for off, _ in chunk_offsets(mcap) if off < mid)


def frames_match_their_steps(h5: Path) -> dict[str, list[int]]:
    """Every stored frame equals the original image of its step; returns episode id -> step indices."""
    out = {}
    with h5py.File(h5, "r") as f:
        for name in sorted_episode_names(f):
            g = f["data"][name]
            steps = g["step_index"][()].tolist()
            images = g["obs/image"][()]
            for k, step in enumerate(steps):
                assert np.array_equal(images[k], pixels(step)), f"{name}: frame of step {step} differs"
                assert g["obs/state"][k, 0] == step
            out[str(g.attrs["episode_id"])] = steps
    return out


def test_flipped_bytes_in_an_image_are_caught_reported_and_kept_out_of_the_dataset(tmp_path):
    root = tmp_path / "bags"
    for eid in ("ep_1", "ep_2", "ep_3"):
        record(root, eid)
    mcap = root / "ep_2" / "ep_2.mcap"
    chunk_at = flip_image_bytes(mcap, frame=40)
    out = tmp_path / "out.h5"
    report = convert_bags(root, out, progress=False, settle_seconds=0)
    text = report.summary()

    by_id = {b.episode_id: b for b in report.bags}
    assert [by_id[e].status for e in ("ep_1", "ep_2", "ep_3")] == ["added", "recovered", "added"], text
    damage = by_id["ep_2"].read["damage"]
    assert len(damage) == 1 and damage[0]["offset"] == chunk_at and "CRC mismatch" in damage[0]["reason"]
    assert damage[0]["lost"][topics.IMAGE] == damage[0]["lost"][topics.STEP] > 0
    assert f"episode ep_2: damaged chunk at byte {chunk_at} of ep_2.mcap" in text
    assert "CRC mismatch" in text and f"{topics.IMAGE} " in text

    steps = frames_match_their_steps(out)  # no frame differs from the recorded image of its step
    assert steps["ep_1"] == steps["ep_3"] == list(range(STEPS))  # the other episodes are complete
    kept = steps["ep_2"]
    assert 40 not in kept and 0 < len(kept) < STEPS - damage[0]["lost"][topics.STEP]
    assert kept == sorted(kept)
    with h5py.File(out, "r") as f:
        attrs = {str(g.attrs["episode_id"]): dict(g.attrs) for g in (f["data"][n] for n in sorted_episode_names(f))}
    assert attrs["ep_2"]["bag_damage"] == 1 and attrs["ep_2"]["bag_read_mode"] == "recovered"
    assert attrs["ep_2"]["missing_steps"] == damage[0]["lost"][topics.STEP]  # the steps lost with the chunk
    assert attrs["ep_2"]["dropped_steps"] == STEPS - len(kept) - attrs["ep_2"]["missing_steps"] > 0
    assert by_id["ep_2"].dropped == {"observation may have been in a damaged part of the bag":
                                     attrs["ep_2"]["dropped_steps"]}
    assert {attrs[e]["bag_integrity"] for e in attrs} == {"verified"}


def test_a_killed_recording_with_a_damaged_chunk_is_scanned_and_the_chunk_dropped(tmp_path):
    root = tmp_path / "bags"
    path = record(root, "ep_k", finish=False)
    assert not (path / "metadata.yaml").exists()
    flip_image_bytes(path / "ep_k.mcap", frame=20)
    with EpisodeBag(path) as bag:
        images = [m for m in bag.messages([topics.IMAGE])]
        report = bag.report
    assert report.mode == "recovered" and report.chunks_dropped == 1 and report.chunks_verified > 0
    assert report.damage[0]["lost"][topics.IMAGE] > 0
    assert len(images) == STEPS - report.damage[0]["lost"][topics.IMAGE]
    for m in images:
        i = round((m.log_time - T0 + MS) / (100 * MS))
        assert np.array_equal(np.asarray(m.msg.data).reshape(H, W, 3), pixels(i))


def test_a_chunk_without_crc_in_a_bag_written_with_crcs_is_not_trusted(tmp_path):
    path = record(tmp_path, "ep_z")
    mcap = path / "ep_z.mcap"
    second = chunk_offsets(mcap)[1][0]
    data = bytearray(mcap.read_bytes())
    data[second + 9 + 24:second + 9 + 28] = bytes(4)  # its CRC field zeroed, as by a wiped sector
    mcap.write_bytes(bytes(data))
    with EpisodeBag(path) as bag:
        n = sum(1 for _ in bag.messages())
    assert bag.mode == "recovered" and bag.report.chunks_dropped == 1
    assert "without a CRC" in " ".join(bag.report.problems)
    assert "no CRC" in bag.report.damage[0]["reason"]
    assert n == sum(bag.report.expected_counts.values()) - sum(bag.report.damage[0]["lost"].values())


def test_a_damaged_summary_is_not_used(tmp_path):
    path = record(tmp_path, "ep_s")
    mcap = path / "ep_s.mcap"
    with EpisodeBag(path) as bag:
        full = [(m.topic, m.log_time) for m in bag.messages()]
    data = bytearray(mcap.read_bytes())
    summary_start = int.from_bytes(data[-8 - 20:-8 - 12], "little")
    data[summary_start + 20] ^= 0x01  # inside the first summary record
    mcap.write_bytes(bytes(data))
    with EpisodeBag(path) as bag:
        msgs = [(m.topic, m.log_time) for m in bag.messages()]
    assert bag.mode == "recovered" and msgs == full and not bag.report.lossy
    assert any("summary CRC mismatch" in p for p in bag.report.problems)
    assert bag.report.integrity == "verified"


def test_an_old_bag_without_crcs_is_read_and_reported_unverified(tmp_path):
    root = tmp_path / "bags"
    write_sample_bag(root, SampleEpisode("ep_old", [1] * 30 + [2] * 10, image_size=(32, 32)))  # rosbags: CRC 0
    record(root, "ep_new")
    with EpisodeBag(root / "ep_old") as bag:
        n = sum(1 for _ in bag.messages())
        assert bag.mode == "indexed" and n == sum(bag.report.expected_counts.values())
        assert bag.report.integrity == "unverified" and bag.report.chunks_unverified > 0
        assert not bag.report.problems and not bag.report.lossy
    with EpisodeBag(root / "ep_new") as bag:
        sum(1 for _ in bag.messages())
        assert bag.report.integrity == "verified" and bag.report.chunks_unverified == 0
    report = convert_bags(root, tmp_path / "out.h5", progress=False, settle_seconds=0)
    old = next(b for b in report.bags if b.episode_id == "ep_old")
    assert old.status == "added" and old.steps == 40 and old.read["integrity"] == "unverified"
    assert "integrity: unverified" in old.line()
    assert "1 episode(s) added without full CRC verification" in report.summary()
    with h5py.File(tmp_path / "out.h5", "r") as f:
        integrity = {str(g.attrs["episode_id"]): g.attrs["bag_integrity"]
                     for g in (f["data"][n] for n in sorted_episode_names(f))}
    assert integrity == {"ep_old": "unverified", "ep_new": "verified"}


def test_a_bag_that_fails_conversion_leaves_the_dataset_untouched(tmp_path):
    root = tmp_path / "bags"
    record(root, "ep_bad", n=20, consistent=False)  # human-labelled steps in autonomous mode: refused
    record(root, "ep_good", n=20)
    out = tmp_path / "out.h5"
    report = convert_bags(root, out, progress=False, settle_seconds=0)
    assert {b.episode_id: b.status for b in report.bags} == {"ep_bad": "failed", "ep_good": "added"}
    with h5py.File(out, "r") as f:
        names = sorted_episode_names(f)
        assert [str(f["data"][n].attrs["episode_id"]) for n in names] == ["ep_good"]
    frames_match_their_steps(out)
