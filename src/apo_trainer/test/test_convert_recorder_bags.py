"""Conversion of bags written by the recorder's own writer (apo_recorder), not by the test helper.

Guards the contract between the two packages: whatever the recorder puts in a bag (its message
definitions, custom data, raw CDR payloads, chunking) converts. Skipped where apo_recorder is absent.
"""

import numpy as np
import pytest

from apo_core import topics
from apo_core.bags import EpisodeBag
from apo_trainer.bag_reader_samples import chunk_offsets, cut_file
from apo_trainer.convert import convert_bags

bag_writer = pytest.importorskip("apo_recorder.bag_writer")
contract = pytest.importorskip("apo_recorder.contract")
synthetic = pytest.importorskip("apo_recorder.synthetic")

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


def record(root, episode_id, labels, h=32, w=32):
    syn = synthetic.SyntheticMessages()
    msgs = [(topics.EPISODE, T0 - 10 * MS, syn.event(episode_id, contract.EVENT_START, "pick the can", "PickPlaceCan",
                                                     "v0003", stamp_ns=T0 - 10 * MS))]
    for i, label in enumerate(labels):
        t = T0 + i * 100 * MS
        msgs.append((topics.IMAGE, t - 1 * MS, syn.image(h, w, seed=i, stamp_ns=t - 2 * MS)))
        msgs.append((topics.ROBOT_STATE, t - 1 * MS, syn.robot_state(np.full(9, float(i)), stamp_ns=t - 2 * MS)))
        msgs.append((topics.STEP, t + MS, syn.step(episode_id, i, label=label, mode=label - 1, stamp_ns=t)))
    end = T0 + len(labels) * 100 * MS
    msgs.append((topics.EPISODE, end, syn.event(episode_id, contract.EVENT_FAILURE, stamp_ns=end)))
    specs = [bag_writer.TopicSpec(t, ty) for t, ty in contract.DEFAULT_TOPICS.items()]
    custom = contract.default_custom_data(episode_id, "pick the can", "PickPlaceCan", "v0003", "failure")
    path = root / contract.safe_episode_dir_name(episode_id)
    bag_writer.write_bag(path, specs, custom, msgs)
    return path


def test_recorder_bags_convert(tmp_path):
    root = tmp_path / "bags"
    labels = [1] * 20 + [2] * 5 + [1] * 5
    path = record(root, "rec_1", labels)
    with EpisodeBag(path) as bag:
        assert bag.mode == "indexed" and bag.custom_data["apo.episode_id"] == "rec_1"
    out = tmp_path / "out.h5"
    report = convert_bags(root, out, progress=False, settle_seconds=0)
    assert [b.status for b in report.bags] == ["added"], report.summary()
    import h5py

    with h5py.File(out, "r") as f:
        g = f["data/demo_0"]
        assert g.attrs["outcome"] == "failure" and g.attrs["policy_version"] == "v0003"
        assert g.attrs["instruction"] == "pick the can"
        np.testing.assert_array_equal(g["step_index"][()], np.arange(30))
        np.testing.assert_array_equal(g["obs/state"][:, 0], np.arange(30))
        np.testing.assert_allclose(g["actions"][:, 0], 0.01 * np.arange(30))
        expected = np.random.default_rng(7).integers(0, 256, size=32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
        np.testing.assert_array_equal(g["obs/image"][7], expected)
        assert g["labels"][()].tolist() == [1] * 10 + [0] * 10 + [2] * 5 + [1] * 5


def test_recorder_bag_cut_without_metadata_is_recovered(tmp_path):
    root = tmp_path / "bags"
    path = record(root, "rec_cut", [1] * 400, h=48, w=48)
    (path / "metadata.yaml").unlink()
    mcap = next(path.glob("*.mcap"))
    last = chunk_offsets(mcap)[-1]
    cut_file(mcap, last[0] + last[1] // 2)
    report = convert_bags(root, tmp_path / "out.h5", progress=False, settle_seconds=0)
    result = report.bags[0]
    assert result.status == "recovered" and result.episode_id == "rec_cut", report.summary()
    assert 0 < result.steps < 400
