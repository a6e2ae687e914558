"""apo-export-lerobot: LeRobotDataset v3.0 and v2.1 written from a real APO HDF5 dataset and read back
the way LeRobot's readers read them, every frame compared with the HDF5 source.

Readers (redone with `datasets` + `pyarrow` + `pandas`, since lerobot itself cannot be installed
beside torch 2.13; these always run):
- v3.0 as lerobot 0.4 does (lerobot/datasets/utils.py: load_nested_dataset, get_hf_features_from_features,
  load_tasks, load_episodes): ``Dataset.from_parquet`` over data/*/*.parquet with the features of
  info.json; episode rows from meta/episodes/*/*.parquet; tasks from the pandas index of tasks.parquet.
- v2.1 as lerobot 0.3 does (lerobot_dataset.py load_hf_dataset): ``load_dataset("parquet",
  data_dir=ROOT/data)`` with no features given, so the types come from the parquet schema metadata;
  episodes/tasks from the jsonl files, episode ranges from cumulative lengths.

The real lerobot (test_real_lerobot_loads_the_export) runs in its own venv, through
lerobot_reader_probe.py, for each python named in APO_LEROBOT_PYTHONS (os.pathsep-separated) whose
lerobot reads the format (0.4.x: v3.0, 0.3.x: v2.1), or in this venv if lerobot is importable here;
otherwise it skips and says why (as in CI, which builds no such venv). lerobot_venvs.sh builds one
per reader (lerobot 0.4.4 and 0.3.3, past their torch pins, with the torch wheels of this machine)::

    bash src/apo_trainer/test/lerobot_venvs.sh /tmp/lerobot-venvs     # prints APO_LEROBOT_PYTHONS=...
    APO_LEROBOT_PYTHONS=... pytest src/apo_trainer/test/test_lerobot_export.py
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from apo_core.dataset import Episode, append_episode, sorted_episode_names
from apo_core.errors import MissingPathError
from apo_trainer.lerobot import LeRobotExportError, export_lerobot
from apo_trainer.lerobot_export import main

FPS = 10
H, W = 12, 16  # not square, so a height/width swap would show


@dataclass
class Loaded:
    info: dict
    frames: object  # datasets.Dataset
    episode_ranges: dict[int, tuple[int, int]]  # episode_index -> (from, to) global frame index
    episode_meta: list[dict]
    task_of: Callable[[int], str]
    stats: dict  # feature -> stat -> np.ndarray (aggregated over the dataset)

def lerobot_hf_features(features: dict):
    """The info.json -> datasets.Features mapping LeRobot applies (dtype image / shape (1,) / 1-D)."""
    import datasets

    out = {}
    for key, ft in features.items():
        if ft["dtype"] == "image":
            out[key] = datasets.Image()
        elif tuple(ft["shape"]) == (1,):
            out[key] = datasets.Value(dtype=ft["dtype"])
        else:
            out[key] = datasets.Sequence(length=ft["shape"][0], feature=datasets.Value(dtype=ft["dtype"]))
    return datasets.Features(out)


def load_v30(root: Path, cache_dir: Path) -> Loaded:
    import datasets
    import pandas as pd

    info = json.loads((root / "meta" / "info.json").read_text())
    paths = sorted((root / "data").glob("*/*.parquet"))
    frames = datasets.Dataset.from_parquet([str(p) for p in paths], features=lerobot_hf_features(info["features"]),
                                           cache_dir=str(cache_dir))
    episodes = datasets.Dataset.from_parquet(
        [str(p) for p in sorted((root / "meta" / "episodes").glob("*/*.parquet"))], cache_dir=str(cache_dir))
    episodes = episodes.select_columns([k for k in episodes.features if not k.startswith("stats/")])
    meta = [episodes[i] for i in range(len(episodes))]
    tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
    stats = {k: {s: np.asarray(v) for s, v in d.items()}
             for k, d in json.loads((root / "meta" / "stats.json").read_text()).items()}
    ranges = {m["episode_index"]: (m["dataset_from_index"], m["dataset_to_index"]) for m in meta}
    return Loaded(info, frames, ranges, meta, lambda i: tasks.iloc[i].name, stats)


def load_v21(root: Path, cache_dir: Path) -> Loaded:
    import datasets

    info = json.loads((root / "meta" / "info.json").read_text())
    frames = datasets.load_dataset("parquet", data_dir=str(root / "data"), split="train", cache_dir=str(cache_dir))

    def jsonl(name):
        return [json.loads(x) for x in (root / "meta" / name).read_text().splitlines()]

    meta = sorted(jsonl("episodes.jsonl"), key=lambda e: e["episode_index"])
    tasks = {t["task_index"]: t["task"] for t in jsonl("tasks.jsonl")}
    ends = np.cumsum([e["length"] for e in meta])
    ranges = {e["episode_index"]: (int(end - e["length"]), int(end)) for e, end in zip(meta, ends, strict=True)}
    per_episode = {e["episode_index"]: e["stats"] for e in jsonl("episodes_stats.jsonl")}
    return Loaded(info, frames, ranges, meta, tasks.__getitem__, _pool(list(per_episode.values())))


def _pool(per_episode: list[dict]) -> dict:
    """lerobot 0.3's aggregate_stats: pooled min / max / mean / std / count per feature."""
    out = {}
    for key in per_episode[0]:
        parts = [{s: np.asarray(v, dtype=np.float64) for s, v in e[key].items()} for e in per_episode]
        for p in parts:
            assert p["count"].shape == (1,), key
            if "image" in key:
                assert all(p[s].shape == (3, 1, 1) for s in ("min", "max", "mean", "std")), key
        counts = np.stack([p["count"] for p in parts])
        means = np.stack([p["mean"] for p in parts])
        w = counts.reshape(counts.shape[:1] + (1,) * (means.ndim - 1))
        mean = (means * w).sum(0) / counts.sum(0)
        var = ((np.stack([p["std"] ** 2 for p in parts]) + (means - mean) ** 2) * w).sum(0) / counts.sum(0)
        out[key] = {"min": np.min([p["min"] for p in parts], 0), "max": np.max([p["max"] for p in parts], 0),
                    "mean": mean, "std": np.sqrt(var), "count": counts.sum(0)}
    return out


def to_torch_like(value):
    """lerobot's hf_transform_to_torch on one value: PIL image -> (3, H, W) float32 in [0, 1]."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return np.asarray(value, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return np.asarray(value)


def action_chunk(loaded: Loaded, row: int, key: str, horizon: int, fps: int):
    """delta_timestamps {key: [k / fps for k < horizon]} as LeRobot resolves it: indices clamped to
    the episode, plus ``<key>_is_pad``."""
    frame = loaded.frames[row]
    start, end = loaded.episode_ranges[frame["episode_index"]]
    deltas = [round((k / fps) * fps) for k in range(horizon)]
    idx = frame["index"]
    query = [max(start, min(end - 1, idx + d)) for d in deltas]
    pad = np.array([(idx + d < start) or (idx + d >= end) for d in deltas])
    return np.stack([np.asarray(loaded.frames[q][key]) for q in query]), pad


# ---------------------------------------------------------------- the HDF5 source, written by the project


def _episode(rng, episode_id: str, n: int, instruction: str, source: str = "interactive",
             takeovers=(), image_shape=(H, W), state_dim: int = 3) -> Episode:
    live = np.ones(n, dtype=np.uint8)
    for start, stop in takeovers:
        live[start:stop] = 2
    actions = rng.normal(size=(n, 7))
    proposals = None
    if source == "interactive":  # the policy proposes on its own steps only: NaN rows on human steps
        proposals = np.where((live == 2)[:, None], np.nan, actions + rng.normal(0, 0.1, size=(n, 7)))
    modes = np.where(live == 2, 1, 0).astype(np.uint8)
    if n > 3 and not takeovers:
        modes[1] = 2  # a HOLD tick
    return Episode(episode_id, instruction, rng.integers(0, 255, (n, *image_shape, 3), dtype=np.uint8),
                   actions, live, states=rng.normal(size=(n, state_dim)), policy_actions=proposals, modes=modes,
                   source=source, outcome="success" if source == "expert" else "failure")


def _write(path: Path, specs, seed: int = 0, **kw) -> None:
    rng = np.random.default_rng(seed)
    for spec in specs:
        append_episode(path, _episode(rng, **spec, **kw), k=3)


FIRST = [dict(episode_id="inter-0", n=14, instruction="lift the red cube", takeovers=[(8, 12)]),
         dict(episode_id="demo-0", n=7, instruction="stack the cube", source="expert",
              takeovers=[(0, 7)]),
         dict(episode_id="inter-1", n=9, instruction="lift the red cube", takeovers=[(0, 2), (6, 9)])]
MORE = [dict(episode_id="inter-2", n=11, instruction="open the drawer", takeovers=[(5, 7)]),
        dict(episode_id="inter-3", n=5, instruction="lift the red cube")]


def _source(path: Path) -> list[dict]:
    with h5py.File(path, "r") as f:
        out = []
        for name in sorted_episode_names(f):
            g = f["data"][name]
            out.append({key: g[key][()] for key in ("obs/image", "obs/state", "actions", "policy_actions",
                                                     "live_labels", "labels", "modes")}
                       | {"instruction": str(g.attrs["instruction"]), "episode_id": str(g.attrs["episode_id"])})
        return out


# ---------------------------------------------------------------- the checks


def _check_every_frame(loaded: Loaded, source: list[dict]) -> None:
    """Every frame: types, shapes, ranges, no null / NaN, values equal to the HDF5 source."""
    info = loaded.info
    assert info["total_episodes"] == len(source) == len(loaded.episode_meta)
    assert info["total_frames"] == sum(len(e["actions"]) for e in source) == len(loaded.frames)
    assert info["total_tasks"] == len({e["instruction"] for e in source})
    feats = info["features"]
    h, w = source[0]["obs/image"].shape[1:3]
    assert feats["observation.images.agentview"]["dtype"] == "image"
    assert list(feats["observation.images.agentview"]["shape"]) == [h, w, 3]
    assert feats["complementary_info.is_intervention"]["dtype"] == "bool"
    assert set(loaded.frames.column_names) == set(feats)
    row = 0
    for ep_index, src in enumerate(source):
        start, end = loaded.episode_ranges[ep_index]
        assert (start, end) == (row, row + len(src["actions"]))
        meta = loaded.episode_meta[ep_index]
        assert meta["episode_index"] == ep_index and meta["tasks"] == [src["instruction"]]
        assert meta["length"] == len(src["actions"])
        has_policy = np.isfinite(src["policy_actions"]).all(axis=1)
        for t in range(len(src["actions"])):
            frame = loaded.frames[row]
            for key, value in frame.items():
                assert value is not None, (row, key)
                arr = to_torch_like(value)
                assert arr.dtype != object, (row, key)
                if arr.dtype.kind == "f":
                    assert np.isfinite(arr).all(), (row, key)
            image = to_torch_like(frame["observation.images.agentview"])
            assert image.shape == (3, h, w) and image.dtype == np.float32
            assert 0.0 <= image.min() and image.max() <= 1.0
            assert np.array_equal(np.asarray(frame["observation.images.agentview"]), src["obs/image"][t])
            action = np.asarray(frame["action"], dtype=np.float32)
            assert action.shape == (7,)
            np.testing.assert_allclose(action, src["actions"][t].astype(np.float32))
            np.testing.assert_allclose(np.asarray(frame["observation.state"]), src["obs/state"][t], rtol=1e-6)
            assert frame["apo.label"] == src["labels"][t] and frame["apo.label"] in (0, 1, 2)
            assert frame["apo.live_label"] == src["live_labels"][t]
            assert frame["apo.mode"] == src["modes"][t]
            assert frame["complementary_info.is_intervention"] is bool(src["live_labels"][t] == 2)
            assert frame["apo.has_policy_action"] is bool(has_policy[t])
            expected_policy = src["policy_actions"][t] if has_policy[t] else np.zeros(7)
            np.testing.assert_allclose(np.asarray(frame["apo.policy_action"]), expected_policy.astype(np.float32))
            assert frame["frame_index"] == t and frame["episode_index"] == ep_index and frame["index"] == row
            assert frame["timestamp"] == pytest.approx(t / FPS, abs=1e-6)
            assert frame["next.done"] is (t == len(src["actions"]) - 1)
            assert loaded.task_of(frame["task_index"]) == src["instruction"]
            row += 1
    # timestamps on the 1/fps grid inside each episode (lerobot 0.3's check_timestamps_sync, 1e-4 s)
    ts = np.asarray(loaded.frames["timestamp"], dtype=np.float64)
    ep = np.asarray(loaded.frames["episode_index"])
    inside = ep[1:] == ep[:-1]
    assert np.all(np.abs(np.diff(ts)[inside] - 1 / FPS) <= 1e-4)
    # dataset statistics cover every frame
    all_actions = np.concatenate([e["actions"] for e in source]).astype(np.float32)
    s = loaded.stats["action"]
    assert s["count"].tolist() == [len(all_actions)]
    np.testing.assert_allclose(s["min"], all_actions.min(0), rtol=1e-6)
    np.testing.assert_allclose(s["max"], all_actions.max(0), rtol=1e-6)
    np.testing.assert_allclose(s["mean"], all_actions.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s["std"], all_actions.std(0), rtol=1e-4, atol=1e-6)
    assert loaded.stats["observation.images.agentview"]["mean"].shape == (3, 1, 1)
    assert loaded.stats["apo.label"]["mean"].shape == (1,)


def _check_action_chunks(loaded: Loaded, source: list[dict], horizon: int = 4) -> None:
    """delta_timestamps {"action": [0, 1/fps, ...]}: chunks equal the HDF5 actions, padded at episode ends."""
    row = 0
    for src in source:
        n = len(src["actions"])
        for t in range(n):
            chunk, pad = action_chunk(loaded, row, "action", horizon, FPS)
            want = src["actions"][[min(t + k, n - 1) for k in range(horizon)]].astype(np.float32)
            np.testing.assert_allclose(chunk, want)
            assert pad.tolist() == [t + k >= n for k in range(horizon)]
            row += 1


def _check_no_nan_or_null_anywhere(root: Path) -> None:
    """Every column of every parquet file (frames, episodes, tasks) holds no null and no NaN/inf, down to
    list elements; every JSON / JSONL file parses without NaN/Infinity and holds no null value.
    (An image is a {bytes, path} struct: its bytes are never null; path is null by design, the bytes
    being embedded.)"""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def leaves(name: str, arr):
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        assert arr.null_count == 0, name
        if pa.types.is_struct(arr.type):
            if {f.name for f in arr.type} == {"bytes", "path"}:
                yield from leaves(f"{name}.bytes", arr.field("bytes"))
                return
            for i, field in enumerate(arr.type):
                yield from leaves(f"{name}.{field.name}", arr.field(i))
        elif pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
            yield from leaves(f"{name}[]", arr.flatten())
        else:
            yield name, arr

    parquet = sorted(root.rglob("*.parquet"))
    assert parquet
    for path in parquet:
        table = pq.read_table(path)
        assert table.num_rows > 0, path
        for column in table.column_names:
            for name, leaf in leaves(column, table[column]):
                assert leaf.null_count == 0, (path, name)
                if pa.types.is_floating(leaf.type):
                    assert pc.all(pc.is_finite(leaf)).as_py(), (path, name)

    def no_constant(value):
        raise AssertionError(f"{value} in a JSON file")

    def no_null(value, where):
        assert value is not None, where
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in ("video_path", "names"):  # info.json: no videos; unnamed dimensions
                    no_null(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                no_null(v, f"{where}[{i}]")

    for path in sorted(root.rglob("*.json")) + sorted(root.rglob("*.jsonl")):
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for n, line in enumerate(x for x in lines if x.strip()):
            no_null(json.loads(line, parse_constant=no_constant), f"{path.name}:{n}")


LOADERS = {"v3.0": load_v30, "v2.1": load_v21}


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("fmt", ["v3.0", "v2.1"])
def test_export_reads_back_frame_by_frame(tmp_path, fmt):
    _write(tmp_path / "d.h5", FIRST)
    result = export_lerobot(tmp_path / "d.h5", tmp_path / "lr", format=fmt, fps=FPS, progress=False)
    assert (result.new_episodes, result.total_episodes, result.total_frames) == (3, 3, 30)
    loaded = LOADERS[fmt](tmp_path / "lr", tmp_path / "cache")
    assert loaded.info["codebase_version"] == fmt
    source = _source(tmp_path / "d.h5")
    assert any(not np.isfinite(e["policy_actions"]).all() for e in source)  # the source has NaN proposals
    assert {0, 1, 2} <= set(np.concatenate([e["labels"] for e in source]).tolist())
    _check_every_frame(loaded, source)
    _check_action_chunks(loaded, source)
    _check_no_nan_or_null_anywhere(tmp_path / "lr")
    # labels and the intervention flag are plain scalar columns a LeRobot user filters on
    human = loaded.frames.filter(lambda r: r["complementary_info.is_intervention"])
    assert len(human) == sum(int((e["live_labels"] == 2).sum()) for e in source) > 0
    undesirable = loaded.frames.filter(lambda r: r["apo.label"] == 0)
    assert len(undesirable) == sum(int((e["labels"] == 0).sum()) for e in source) > 0
    assert not any(undesirable["complementary_info.is_intervention"])


@pytest.mark.parametrize("fmt", ["v3.0", "v2.1"])
def test_recorder_bags_to_lerobot(tmp_path, fmt):
    """The whole path a user takes: episode bags written by the recorder's writer -> apo-convert ->
    apo-export-lerobot, read back frame by frame against the converted HDF5."""
    from apo_recorder import synthetic
    from apo_trainer.convert import convert_bags

    bags = tmp_path / "bags"
    synthetic.write_recorded_episode(bags, "rec_a", [1] * 8 + [2] * 4 + [1] * 3, image_size=(24, 20))
    synthetic.write_recorded_episode(bags, "rec_b", [1] * 6, instruction="stack the cube", outcome="failure",
                                     image_size=(24, 20))
    h5 = tmp_path / "data.h5"
    report = convert_bags(bags, h5, progress=False, settle_seconds=0)
    assert [b.status for b in report.bags] == ["added", "added"], report.summary()
    assert main([str(h5), str(tmp_path / "lr"), "--format", fmt]) == 0
    source = _source(h5)
    assert {0, 1, 2} <= set(np.concatenate([e["labels"] for e in source]).tolist())
    loaded = LOADERS[fmt](tmp_path / "lr", tmp_path / "cache")
    assert loaded.info["features"]["observation.state"]["shape"] == [9]
    _check_every_frame(loaded, source)
    _check_action_chunks(loaded, source)
    _check_no_nan_or_null_anywhere(tmp_path / "lr")


def test_v30_layout(tmp_path):
    import pyarrow.parquet as pq

    _write(tmp_path / "d.h5", FIRST)
    export_lerobot(tmp_path / "d.h5", tmp_path / "lr", fps=FPS, progress=False)
    info = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] is None and info["chunks_size"] == 1000 and info["splits"] == {"train": "0:3"}
    assert all(ft["fps"] == FPS for ft in info["features"].values())
    assert sorted(p.relative_to(tmp_path / "lr").as_posix() for p in (tmp_path / "lr").rglob("*.parquet")) == [
        "data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/tasks.parquet"]
    episodes = pq.read_table(tmp_path / "lr" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    assert episodes["data/file_index"] == [0, 0, 0] and episodes["dataset_to_index"] == [14, 21, 30]
    assert np.asarray(episodes["stats/observation.images.agentview/mean"][0]).shape == (3, 1, 1)
    assert episodes["stats/action/count"][1] == [7] and len(episodes["stats/action/q99"][1]) == 7
    assert episodes["apo/episode_id"] == ["inter-0", "demo-0", "inter-1"]
    hf = json.loads(pq.read_schema(tmp_path / "lr" / "data" / "chunk-000" / "file-000.parquet").metadata[b"huggingface"])
    assert hf["info"]["features"]["observation.images.agentview"]["_type"] == "Image"


def test_v21_parquet_carries_datasets_3_feature_metadata(tmp_path):
    """lerobot 0.3 reads with datasets <= 3.6, which knows "Sequence", not datasets 4's "List"."""
    import pyarrow.parquet as pq

    _write(tmp_path / "d.h5", FIRST[:1])
    export_lerobot(tmp_path / "d.h5", tmp_path / "lr", format="v2.1", fps=FPS, progress=False)
    schema = pq.read_schema(tmp_path / "lr" / "data" / "chunk-000" / "episode_000000.parquet")
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["observation.images.agentview"] == {"mode": None, "decode": True, "id": None, "_type": "Image"}
    assert features["action"] == {"feature": {"dtype": "float32", "id": None, "_type": "Value"}, "length": 7,
                                  "id": None, "_type": "Sequence"}
    assert features["apo.has_policy_action"] == {"dtype": "bool", "id": None, "_type": "Value"}


@pytest.mark.parametrize("fmt", ["v3.0", "v2.1"])
def test_incremental_export_appends_only_new_episodes(tmp_path, fmt):
    h5, out = tmp_path / "d.h5", tmp_path / "lr"
    _write(h5, FIRST)
    export_lerobot(h5, out, format=fmt, fps=FPS, progress=False)
    _write(h5, MORE, seed=1)
    result = export_lerobot(h5, out, format=fmt, fps=FPS, progress=False)
    assert (result.new_episodes, result.total_episodes, result.total_frames) == (2, 5, 46)
    if fmt == "v3.0":  # LeRobot's resume rule: new frames and new episode rows go to new files
        assert (out / "data" / "chunk-000" / "file-001.parquet").exists()
        assert (out / "meta" / "episodes" / "chunk-000" / "file-001.parquet").exists()
    loaded = LOADERS[fmt](out, tmp_path / "cache")
    assert loaded.info["total_tasks"] == 3 and loaded.info["splits"] == {"train": "0:5"}
    _check_every_frame(loaded, _source(h5))
    _check_action_chunks(loaded, _source(h5))
    _check_no_nan_or_null_anywhere(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = export_lerobot(h5, out, format=fmt, fps=FPS, progress=False)
    assert again.new_episodes == 0 and again.total_episodes == 5
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("fmt", ["v3.0", "v2.1"])
def test_files_and_chunks_roll_over(tmp_path, monkeypatch, fmt):
    """Tiny limits: a v3.0 data file per episode and 2 files (v2.1: episodes) per chunk directory."""
    from apo_trainer.lerobot import writers

    monkeypatch.setattr(writers, "DATA_FILES_SIZE_IN_MB", 0)
    monkeypatch.setattr(writers, "CHUNKS_SIZE", 2)
    h5, out = tmp_path / "d.h5", tmp_path / "lr"
    _write(h5, FIRST)
    export_lerobot(h5, out, format=fmt, fps=FPS, progress=False)
    _write(h5, MORE, seed=1)
    export_lerobot(h5, out, format=fmt, fps=FPS, progress=False)
    data = sorted(p.relative_to(out / "data").as_posix() for p in (out / "data").rglob("*.parquet"))
    if fmt == "v3.0":
        assert data == ["chunk-000/file-000.parquet", "chunk-000/file-001.parquet", "chunk-001/file-000.parquet",
                        "chunk-001/file-001.parquet", "chunk-002/file-000.parquet"]
        assert [m["data/chunk_index"] for m in load_v30(out, tmp_path / "c0").episode_meta] == [0, 0, 1, 1, 2]
    else:
        assert data[2:4] == ["chunk-001/episode_000002.parquet", "chunk-001/episode_000003.parquet"]
        assert json.loads((out / "meta" / "info.json").read_text())["total_chunks"] == 3
    loaded = LOADERS[fmt](out, tmp_path / "cache")
    _check_every_frame(loaded, _source(h5))
    _check_action_chunks(loaded, _source(h5))


def test_export_refuses_other_format_and_other_features(tmp_path):
    h5, out = tmp_path / "d.h5", tmp_path / "lr"
    _write(h5, FIRST[:1])
    export_lerobot(h5, out, format="v2.1", fps=FPS, progress=False)
    with pytest.raises(LeRobotExportError, match="holds a LeRobot v2.1 dataset, not v3.0.*--format v2.1"):
        export_lerobot(h5, out, fps=FPS, progress=False)
    with pytest.raises(LeRobotExportError, match="exported at fps 10, not 20"):
        export_lerobot(h5, out, format="v2.1", fps=20, progress=False)
    with pytest.raises(LeRobotExportError, match="camera \\['agentview'\\], not 'wrist'"):
        export_lerobot(h5, out, format="v2.1", fps=FPS, camera="wrist", progress=False)
    other = tmp_path / "other.h5"
    _write(other, MORE[:1], image_shape=(8, 8))
    with pytest.raises(LeRobotExportError, match=r"inter-2.*observation.images.agentview.*\[12, 16, 3\]"):
        export_lerobot(other, out, format="v2.1", fps=FPS, progress=False)
    wider = tmp_path / "wider.h5"
    _write(wider, MORE[:1], state_dim=5)
    export_lerobot(wider, tmp_path / "v3", fps=FPS, progress=False)
    with pytest.raises(LeRobotExportError, match="observation.state"):
        export_lerobot(h5, tmp_path / "v3", fps=FPS, progress=False)
    assert json.loads((tmp_path / "v3" / "meta" / "info.json").read_text())["total_episodes"] == 1


def test_export_refuses_to_extend_a_dataset_it_did_not_write(tmp_path):
    import pyarrow.parquet as pq

    h5 = tmp_path / "d.h5"
    _write(h5, FIRST[:1])
    export_lerobot(h5, tmp_path / "v3", fps=FPS, progress=False)
    meta = tmp_path / "v3" / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(meta)
    pq.write_table(table.drop([c for c in table.column_names if c.startswith("apo/")]), meta)
    with pytest.raises(LeRobotExportError, match="not written by apo-export-lerobot"):
        export_lerobot(h5, tmp_path / "v3", fps=FPS, progress=False)
    export_lerobot(h5, tmp_path / "v21", format="v2.1", fps=FPS, progress=False)
    episodes = tmp_path / "v21" / "meta" / "episodes.jsonl"
    episodes.write_text(json.dumps({"episode_index": 0, "tasks": ["x"], "length": 14}) + "\n")
    with pytest.raises(LeRobotExportError, match="not written by apo-export-lerobot"):
        export_lerobot(h5, tmp_path / "v21", format="v2.1", fps=FPS, progress=False)


def test_export_input_errors(tmp_path, capsys):
    with pytest.raises(MissingPathError, match="nope.h5"):
        export_lerobot(tmp_path / "nope.h5", tmp_path / "o", progress=False)
    h5py.File(tmp_path / "empty.h5", "w").close()
    with pytest.raises(LeRobotExportError, match="empty.h5 holds no episodes"):
        export_lerobot(tmp_path / "empty.h5", tmp_path / "o", progress=False)
    _write(tmp_path / "d.h5", FIRST[:1])
    with pytest.raises(LeRobotExportError, match="fps must be positive, got 0"):
        export_lerobot(tmp_path / "d.h5", tmp_path / "o", fps=0, progress=False)
    with pytest.raises(LeRobotExportError, match="unknown format 'v2.0'"):
        export_lerobot(tmp_path / "d.h5", tmp_path / "o", format="v2.0", progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(LeRobotExportError, match="not empty and holds no LeRobot dataset"):
        export_lerobot(tmp_path / "d.h5", tmp_path / "busy", progress=False)
    assert main([str(tmp_path / "d.h5"), str(tmp_path / "busy")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_formats_and_k(tmp_path, capsys):
    h5 = tmp_path / "d.h5"
    _write(h5, FIRST)
    assert main([str(h5), str(tmp_path / "v3")]) == 0
    assert "3 new episodes" in capsys.readouterr().out
    assert json.loads((tmp_path / "v3" / "meta" / "info.json").read_text())["codebase_version"] == "v3.0"
    assert main([str(h5), str(tmp_path / "v21"), "--format", "v2.1", "--k", "0"]) == 0
    loaded = load_v21(tmp_path / "v21", tmp_path / "cache")
    assert 0 not in loaded.frames["apo.label"]  # K = 0: no step marked undesirable
    assert [e["apo"]["k_window"] for e in loaded.episode_meta] == [0, 0, 0]


def _lerobot_pythons() -> list[str]:
    """Interpreters to try: those in APO_LEROBOT_PYTHONS (os.pathsep-separated), then this one."""
    named = [p for p in os.environ.get("APO_LEROBOT_PYTHONS", "").split(os.pathsep) if p.strip()]
    return [*named, sys.executable]


@functools.cache
def _lerobot_reading(fmt: str) -> tuple[str, dict] | None:
    """(python, its lerobot's {codebase_version, lerobot}) of the first interpreter whose lerobot reads ``fmt``."""
    for python in _lerobot_pythons():
        if python == sys.executable and importlib.util.find_spec("lerobot") is None:
            continue
        run = subprocess.run([python, str(PROBE), "--version"], capture_output=True, text=True, timeout=600,
                             env=_offline_env(Path(tempfile.gettempdir())))
        if run.returncode != 0:
            raise RuntimeError(f"{python} {PROBE.name} --version failed:\n{run.stderr[-3000:]}")
        found = json.loads(run.stdout.strip().splitlines()[-1])
        if found["codebase_version"] == fmt:
            return python, found
    return None


def _offline_env(cache: Path) -> dict:
    """No hub access (a dataset that does not load locally fails instead of being downloaded), caches in ``cache``."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(cache / "hf"),
               HF_DATASETS_CACHE=str(cache / "hf-datasets"), HF_LEROBOT_HOME=str(cache / "lerobot"))
    env.pop("PYTHONPATH", None)  # the lerobot venv must not see the project's packages
    return env


PROBE = Path(__file__).with_name("lerobot_reader_probe.py")
NO_LEROBOT = ("no python with a lerobot that reads {fmt}: lerobot cannot be installed in the project's venv "
              "(lerobot 0.4.x pins torch < 2.11, 0.3.x torch < 2.8; the project runs torch 2.13), so this test "
              "needs APO_LEROBOT_PYTHONS naming the python of a separate venv with lerobot {release} (built by "
              "lerobot_venvs.sh; CI builds none); the datasets/pyarrow readers of the other tests check every frame")


@pytest.mark.parametrize(("fmt", "release"), [("v3.0", "0.4.x"), ("v2.1", "0.3.x")])
def test_real_lerobot_loads_the_export(tmp_path, fmt, release):
    """The real LeRobotDataset (run in its own venv) opens an export that was extended once, with
    delta_timestamps action chunks; every item it returns is compared with the HDF5 source."""
    found = _lerobot_reading(fmt)
    if found is None:
        pytest.skip(NO_LEROBOT.format(fmt=fmt, release=release))
    python, versions = found
    h5, root = tmp_path / "d.h5", tmp_path / "apo" / "export"
    _write(h5, FIRST)
    export_lerobot(h5, root, format=fmt, fps=FPS, progress=False)
    _write(h5, MORE, seed=1)
    export_lerobot(h5, root, format=fmt, fps=FPS, progress=False)
    out = tmp_path / "read.npz"
    run = subprocess.run([python, str(PROBE), str(root), str(out), "--fps", str(FPS), "--horizon", "4"],
                         capture_output=True, text=True, timeout=1200, env=_offline_env(tmp_path / "cache"))
    assert run.returncode == 0, f"lerobot {versions['lerobot']} could not read the {fmt} export:\n{run.stderr[-4000:]}"
    with np.load(out) as npz:
        items = {key: npz[key] for key in npz.files}
    meta = json.loads(str(items.pop("__meta__")))
    assert (meta["codebase_version"], meta["len"], meta["num_episodes"]) == (fmt, 46, 5)
    kinds = {key: (dtype, tuple(shape)) for key, (dtype, shape) in meta["kinds"].items()}
    assert kinds["observation.images.agentview"] == ("float32", (3, H, W))
    assert kinds["action"] == ("float32", (4, 7)) and kinds["action_is_pad"] == ("bool", (4,))
    assert kinds["observation.state"] == ("float32", (3,))
    assert kinds["apo.policy_action"] == ("float32", (7,))
    for key in ("apo.label", "apo.live_label", "apo.mode", "frame_index", "episode_index", "index", "task_index"):
        assert kinds[key] == ("int64", ()), key
    for key in ("complementary_info.is_intervention", "apo.has_policy_action", "next.done"):
        assert kinds[key] == ("bool", ()), key
    assert meta["stats_shapes"]["observation.images.agentview"]["mean"] == [3, 1, 1]
    for key, values in items.items():  # nothing NaN or infinite in anything lerobot returned
        if values.dtype.kind == "f":
            assert np.isfinite(values).all(), key

    source = _source(h5)
    images = np.concatenate([e["obs/image"] for e in source]).transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(items["observation.images.agentview"], images, atol=1e-6)
    assert 0.0 <= items["observation.images.agentview"].min() and items["observation.images.agentview"].max() <= 1.0
    chunks, pads, policy, has_policy = [], [], [], []
    for src in source:
        n = len(src["actions"])
        for t in range(n):
            chunks.append(src["actions"][[min(t + k, n - 1) for k in range(4)]])
            pads.append([t + k >= n for k in range(4)])
        has = np.isfinite(src["policy_actions"]).all(axis=1)
        has_policy.append(has)
        policy.append(np.where(has[:, None], src["policy_actions"], 0.0))
    np.testing.assert_allclose(items["action"], np.stack(chunks).astype(np.float32))
    assert items["action_is_pad"].tolist() == pads
    np.testing.assert_allclose(items["observation.state"], np.concatenate([e["obs/state"] for e in source]),
                               rtol=1e-6)
    np.testing.assert_array_equal(items["apo.label"], np.concatenate([e["labels"] for e in source]))
    np.testing.assert_array_equal(items["apo.live_label"], np.concatenate([e["live_labels"] for e in source]))
    np.testing.assert_array_equal(items["apo.mode"], np.concatenate([e["modes"] for e in source]))
    np.testing.assert_array_equal(items["complementary_info.is_intervention"],
                                  np.concatenate([e["live_labels"] for e in source]) == 2)
    np.testing.assert_array_equal(items["apo.has_policy_action"], np.concatenate(has_policy))
    np.testing.assert_allclose(items["apo.policy_action"], np.concatenate(policy).astype(np.float32))
    assert items["task"].tolist() == [e["instruction"] for e in source for _ in e["actions"]]
    np.testing.assert_array_equal(items["episode_index"], [i for i, e in enumerate(source) for _ in e["actions"]])
    np.testing.assert_array_equal(items["index"], np.arange(46))
