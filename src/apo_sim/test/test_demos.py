"""Expert demonstrations written in the shared dataset schema, with action statistics."""

import numpy as np
import pytest

from apo_core.dataset import episode_ids, read_episode
from apo_core.normalization import STATS_FILENAME, ActionStats
from apo_sim.demos import main

pytestmark = pytest.mark.sim


def test_collect_demos_cli(tmp_path, capsys):
    out = tmp_path / "demos" / "lift.h5"
    assert main(["-o", str(out), "-n", "2", "--seed", "10", "--image-size", "48", "--quiet"]) == 0
    assert episode_ids(out) == ["expert_Lift_10", "expert_Lift_11"]
    ep = read_episode(out, "demo_0")
    assert ep.source == "expert" and ep.outcome == "success" and ep.task == "Lift"
    assert ep.instruction == "lift the red cube"
    assert ep.images.shape[1:] == (48, 48, 3) and ep.images.dtype == np.uint8
    assert ep.states.shape == (len(ep), 9) and ep.actions.shape == (len(ep), 7)
    assert np.all(ep.live_labels == 2) and np.all(ep.labels() == 2)
    assert ep.attrs["seed"] == 10
    stats = ActionStats.load(out.parent / STATS_FILENAME)
    assert stats.dim == 7 and stats.mask.tolist() == [True] * 6 + [False]
    # Rerunning skips the stored seeds instead of failing on duplicate ids.
    assert main(["-o", str(out), "-n", "2", "--seed", "10", "--quiet"]) == 0
    assert "2 already present" in capsys.readouterr().out
    assert len(episode_ids(out)) == 2


def test_collect_demos_reports_bad_camera(tmp_path, capsys):
    assert main(["-o", str(tmp_path / "x.h5"), "-n", "1", "--camera", "nope", "--quiet"]) == 2
    assert "unknown camera 'nope'" in capsys.readouterr().err
