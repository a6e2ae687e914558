"""append_episode never leaves a half-written episode group behind (real HDF5 files)."""

import numpy as np
import pytest

from apo_core.dataset import Episode, append_episode, episode_ids, read_episode
from apo_core.labels import LabelError


def _episode(episode_id, labels, modes=None, t=None):
    t = len(labels) if t is None else t
    return Episode(episode_id=episode_id, instruction="lift", images=np.zeros((t, 8, 8, 3), np.uint8),
                   actions=np.zeros((t, 7)), live_labels=np.asarray(labels, np.int64),
                   states=np.zeros((t, 9)), policy_actions=np.zeros((t, 7)),
                   modes=(np.asarray(labels) == 2).astype(np.uint8) if modes is None else np.asarray(modes, np.uint8),
                   step_index=np.arange(t), timestamps=np.arange(t, dtype=np.float64))


def test_bad_labels_leave_the_file_as_it_was(tmp_path):
    path = tmp_path / "d.h5"
    append_episode(path, _episode("good", [1, 1, 2]))
    bad = _episode("bad", [1, 2, 1], modes=[0, 0, 0])  # a human step recorded in autonomous mode
    with pytest.raises(LabelError):
        append_episode(path, bad)
    assert episode_ids(path) == ["good"]
    append_episode(path, _episode("after", [1, 2]))  # the file stays usable
    assert episode_ids(path) == ["good", "after"]
    assert read_episode(path, "demo_1").episode_id == "after"
