"""HOLD / E-STOP steps do not use up the K-window: training data, stored labels, relabelling, analysis."""

import h5py
import numpy as np

from apo_core.dataset import MODE_AUTONOMOUS, MODE_HOLD, MODE_HUMAN, append_episode, read_episode
from apo_core.dataset_ops import relabel
from apo_trainer.analysis import EpisodeSummary, round_statistics
from apo_trainer.data import UNDESIRABLE, StepDataset
from apo_trainer.testing import synthetic_episode

# 20 policy steps, 6 hold ticks (every input stale), then 5 human steps.
LIVE = np.array([1] * 26 + [2] * 5, np.uint8)
MODES = np.array([MODE_AUTONOMOUS] * 20 + [MODE_HOLD] * 6 + [MODE_HUMAN] * 5, np.uint8)


def test_training_data_gets_ten_undesirable_steps(tmp_path):
    path = tmp_path / "held.hdf5"
    append_episode(path, synthetic_episode("held", len(LIVE), np.random.default_rng(0), image_size=16,
                                           source="interactive", live_labels=LIVE, modes=MODES), k=10)
    ds = StepDataset(path, k=10)
    assert ds.summary.kinds == {"expert": 0, "autonomous": 10, "human": 5, "undesirable": 10}
    assert ds.summary.dropped_hold_estop == 6
    und = sorted(ds.episode_of(i)[1] for i in np.flatnonzero(ds.kinds == UNDESIRABLE))
    assert und == list(range(10, 20))
    # the labels stored next to the live labels agree (Episode.labels passes the modes)
    stored = read_episode(path, "demo_0")
    assert stored.labels(10).tolist() == [1] * 10 + [0] * 10 + [1] * 6 + [2] * 5
    with h5py.File(path, "r") as f:
        assert int(np.sum(f["data/demo_0/labels"][()] == 0)) == 10


def test_relabel_uses_the_stored_modes(tmp_path):
    path = tmp_path / "held.hdf5"
    append_episode(path, synthetic_episode("held", len(LIVE), np.random.default_rng(0), image_size=16,
                                           source="interactive", live_labels=LIVE, modes=MODES), k=10)
    assert relabel(path, 3) == 1
    with h5py.File(path, "r") as f:
        assert np.flatnonzero(f["data/demo_0/labels"][()] == 0).tolist() == [17, 18, 19]


def test_analysis_label_histogram_skips_hold_steps():
    d = len(LIVE)
    ep = EpisodeSummary(episode_id="held", bag="", policy_version="v1", outcome="success", instruction="",
                        start_ns=0, live_labels=LIVE.astype(np.int64), modes=MODES.astype(np.int64),
                        actions=np.zeros((d, 7)), proposals=np.zeros((d, 7)))
    row = round_statistics([ep], k=10)[0]
    # driven steps only (hold steps are not counted): 10 autonomous, 10 undesirable, 5 human
    assert row["labels"] == {"UNDESIRABLE": 10, "AUTONOMOUS": 10, "HUMAN": 5}
    assert row["steps"] == 25
