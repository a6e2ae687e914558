"""Conversion of bags written by the recorder's own writer (apo_recorder), not by the test helper.

Guards the contract between the two packages: whatever the recorder puts in a bag (its message
definitions, custom data, raw CDR payloads, chunking) converts. Skipped where apo_recorder is absent.
"""

import numpy as np
import pytest

from apo_core.bags import EpisodeBag
from apo_trainer.bag_reader_samples import chunk_offsets, cut_file
from apo_trainer.convert import convert_bags

synthetic = pytest.importorskip("apo_recorder.synthetic")


def record(root, episode_id, labels, h=32, w=32):
    return synthetic.write_recorded_episode(root, episode_id, labels, instruction="pick the can", task="PickPlaceCan",
                                            policy_version="v0003", outcome="failure", image_size=(h, w))


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
