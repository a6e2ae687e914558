"""Export of an APO HDF5 dataset to the LeRobotDataset v2.1 layout, read back with pyarrow."""

import json

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from apo_core.dataset import Episode, append_episode
from apo_core.errors import MissingPathError
from apo_trainer.lerobot_export import export_lerobot


def _dataset(path):
    rng = np.random.default_rng(0)
    eps = []
    for i, (n, live) in enumerate([(6, [1, 1, 1, 2, 2, 1]), (4, [2, 2, 2, 2])]):
        ep = Episode(f"ep{i}", "lift the red cube" if i == 0 else "stack the cube",
                     rng.integers(0, 255, (n, 12, 16, 3), dtype=np.uint8), rng.normal(size=(n, 7)), live,
                     states=rng.normal(size=(n, 9)), outcome="success", source="interactive")
        append_episode(path, ep, k=2)
        eps.append(ep)
    return eps


def test_export_roundtrip(tmp_path):
    eps = _dataset(tmp_path / "d.h5")
    info = export_lerobot(tmp_path / "d.h5", tmp_path / "lr", fps=10, k=2, progress=False)
    assert info["total_episodes"] == 2 and info["total_frames"] == 10 and info["total_tasks"] == 2
    meta = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert meta["codebase_version"] == "v2.1" and meta["features"]["observation.images.agentview"]["shape"] == [12, 16, 3]
    episodes = [json.loads(x) for x in (tmp_path / "lr" / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert [e["length"] for e in episodes] == [6, 4]
    table = pq.read_table(tmp_path / "lr" / "data" / "chunk-000" / "episode_000000.parquet").to_pydict()
    assert table["apo.label"] == [1, 0, 0, 2, 2, 1]
    assert table["index"] == list(range(6)) and table["next.done"][-1] and not table["next.done"][0]
    assert np.allclose(table["action"], eps[0].actions, atol=1e-6)
    png = table["observation.images.agentview"][3]["bytes"]
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(img, eps[0].images[3])
    second = pq.read_table(tmp_path / "lr" / "data" / "chunk-000" / "episode_000001.parquet").to_pydict()
    assert second["index"] == list(range(6, 10)) and set(second["task_index"]) == {1}


def test_export_errors(tmp_path):
    with pytest.raises(MissingPathError, match="nope.h5"):
        export_lerobot(tmp_path / "nope.h5", tmp_path / "o", progress=False)
    _dataset(tmp_path / "d.h5")
    export_lerobot(tmp_path / "d.h5", tmp_path / "o", progress=False)
    with pytest.raises(FileExistsError, match="already holds"):
        export_lerobot(tmp_path / "d.h5", tmp_path / "o", progress=False)
