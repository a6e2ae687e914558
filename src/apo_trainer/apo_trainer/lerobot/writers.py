"""Writers of the two LeRobotDataset layouts; each can resume a dataset it wrote before.

v3.0 (lerobot >= 0.4)::

    meta/info.json                              codebase_version "v3.0", features, totals, path templates
    meta/tasks.parquet                          task string (pandas index) -> task_index
    meta/episodes/chunk-CCC/file-FFF.parquet    one row per episode: tasks, length, data/chunk_index,
                                                data/file_index, dataset_from_index/to_index,
                                                meta/episodes/*, stats/<feature>/<stat>, apo/*
    meta/stats.json                             statistics over all frames
    data/chunk-CCC/file-FFF.parquet             many episodes per file (about files_size_in_mb each)

v2.1 (lerobot 0.3)::

    meta/info.json, meta/tasks.jsonl, meta/episodes.jsonl, meta/episodes_stats.jsonl
    data/chunk-CCC/episode_EEEEEE.parquet       one file per episode

Appending follows LeRobot's own resume rule: new frames start a new data file (v3.0), and new
episode rows a new meta/episodes file, so nothing already written is rewritten except meta/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from apo_trainer.lerobot import stats as st
from apo_trainer.lerobot.errors import LeRobotExportError
from apo_trainer.lerobot.frames import SourceEpisode
from apo_trainer.lerobot.hf_schema import frame_table

CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's default)
DATA_FILES_SIZE_IN_MB = 100  # v3.0: a data file is closed once it reaches about this size
VIDEO_FILES_SIZE_IN_MB = 200  # v3.0 info.json field; no videos are written
V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"


@dataclass
class FrameBlock:
    """One episode ready to be written."""

    episode_index: int
    first_index: int
    task: str
    source: SourceEpisode
    columns: dict
    stats: dict

    @property
    def length(self) -> int:
        return len(self.source.episode)

    def apo_meta(self) -> dict:
        ep = self.source.episode
        return {"episode_id": ep.episode_id, "source": ep.source, "outcome": ep.outcome,
                "policy_version": ep.policy_version, "k_window": self.source.k_window}


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=4))
    tmp.replace(path)


class _DatasetTotals:
    """What both layouts track to resume a dataset: its task table, its episodes (by APO id) and totals."""

    def __init__(self, root: Path):
        self.root = root
        self.tasks: dict[str, int] = {}
        self.exported_ids: set[str] = set()
        self.total_episodes = self.total_frames = 0


class V30Writer(_DatasetTotals):
    version = "v3.0"
    quantiles = True

    def __init__(self, root: Path, info: dict | None):
        import pandas as pd
        import pyarrow.parquet as pq

        super().__init__(root)
        self.stats: dict = {}
        self.data_file = self.meta_file = (0, 0)
        self._rows: list[dict] = []
        self._new_stats: list[dict] = []
        self._writer = None
        self._bytes_in_file = 0
        if info is None:
            return
        ep_files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
        if not ep_files:
            raise LeRobotExportError(f"{root} has meta/info.json but no meta/episodes/*/*.parquet")
        last = None
        for path in ep_files:
            table = pq.read_table(path)
            if "apo/episode_id" not in table.column_names:
                raise LeRobotExportError(f"{root} holds a LeRobot dataset not written by apo-export-lerobot "
                                 f"({path} has no apo/episode_id column); choose an empty directory")
            cols = table.select(["apo/episode_id", "data/chunk_index", "data/file_index"]).to_pydict()
            self.exported_ids.update(cols["apo/episode_id"])
            if table.num_rows:
                last = (cols["data/chunk_index"][-1], cols["data/file_index"][-1])
        chunk, file = (int(p) for p in (ep_files[-1].parent.name[6:], ep_files[-1].stem[5:]))
        self.meta_file = _next_file(chunk, file)
        self.data_file = _next_file(*last) if last else (0, 0)
        tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
        self.tasks = {str(task): int(i) for task, i in zip(tasks.index, tasks["task_index"], strict=True)}
        self.total_episodes, self.total_frames = int(info["total_episodes"]), int(info["total_frames"])
        self.stats = st.from_json(json.loads((root / "meta" / "stats.json").read_text()))

    def add(self, block: FrameBlock, schema) -> None:
        import pyarrow.parquet as pq

        table = frame_table(block.columns, schema)
        limit = DATA_FILES_SIZE_IN_MB * 1024 * 1024
        if self._writer is not None and self._bytes_in_file + table.nbytes >= limit:
            self._writer.close()
            self._writer, self._bytes_in_file = None, 0
            self.data_file = _next_file(*self.data_file)
        if self._writer is None:
            path = self.root / V30_DATA_PATH.format(chunk_index=self.data_file[0], file_index=self.data_file[1])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, schema, compression="snappy")
        self._writer.write_table(table)
        self._bytes_in_file += table.nbytes
        row = {"episode_index": block.episode_index, "tasks": [block.task], "length": block.length,
               "data/chunk_index": self.data_file[0], "data/file_index": self.data_file[1],
               "dataset_from_index": block.first_index, "dataset_to_index": block.first_index + block.length,
               "meta/episodes/chunk_index": self.meta_file[0], "meta/episodes/file_index": self.meta_file[1]}
        for key, feature_stats in st.to_json(block.stats).items():
            for name, value in feature_stats.items():
                row[f"stats/{key}/{name}"] = value
        row.update({f"apo/{k}": v for k, v in block.apo_meta().items()})
        self._rows.append(row)
        self._new_stats.append(block.stats)
        self.total_episodes += 1
        self.total_frames += block.length
        self.exported_ids.add(block.source.episode.episode_id)

    def finish(self, info: dict) -> None:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._rows:
            return
        path = self.root / V30_EPISODES_PATH.format(chunk_index=self.meta_file[0], file_index=self.meta_file[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self._rows), path)
        tasks = sorted(self.tasks.items(), key=lambda kv: kv[1])
        pd.DataFrame({"task_index": [i for _, i in tasks]}, index=[t for t, _ in tasks]).to_parquet(
            self.root / "meta" / "tasks.parquet")
        self.stats = st.aggregate(([self.stats] if self.stats else []) + self._new_stats)
        _write_json(self.root / "meta" / "stats.json", st.to_json(self.stats))
        features = {k: {**ft, "fps": info["fps"]} for k, ft in info["features"].items()}
        _write_json(self.root / "meta" / "info.json", {
            "codebase_version": self.version, "robot_type": info["robot_type"],
            "total_episodes": self.total_episodes, "total_frames": self.total_frames,
            "total_tasks": len(self.tasks), "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB, "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
            "fps": info["fps"], "splits": {"train": f"0:{self.total_episodes}"},
            "data_path": V30_DATA_PATH, "video_path": None, "features": features, "apo": info["apo"]})
        self._rows, self._new_stats = [], []


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class V21Writer(_DatasetTotals):
    version = "v2.1"
    quantiles = False

    def __init__(self, root: Path, info: dict | None):
        super().__init__(root)
        self._episodes: list[dict] = []
        self._episode_stats: list[dict] = []
        if info is None:
            return
        episodes = _read_jsonl(root / "meta" / "episodes.jsonl")
        if any("episode_id" not in e.get("apo", {}) for e in episodes):
            raise LeRobotExportError(f"{root} holds a LeRobot dataset not written by apo-export-lerobot "
                             "(meta/episodes.jsonl has no apo.episode_id); choose an empty directory")
        self.exported_ids = {e["apo"]["episode_id"] for e in episodes}
        self.tasks = {t["task"]: int(t["task_index"]) for t in _read_jsonl(root / "meta" / "tasks.jsonl")}
        self.total_episodes, self.total_frames = int(info["total_episodes"]), int(info["total_frames"])

    def add(self, block: FrameBlock, schema) -> None:
        import pyarrow.parquet as pq

        path = self.root / V21_DATA_PATH.format(episode_chunk=block.episode_index // CHUNKS_SIZE,
                                                episode_index=block.episode_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(frame_table(block.columns, schema), path)
        self._episodes.append({"episode_index": block.episode_index, "tasks": [block.task],
                               "length": block.length, "apo": block.apo_meta()})
        self._episode_stats.append({"episode_index": block.episode_index, "stats": st.to_json(block.stats)})
        self.total_episodes += 1
        self.total_frames += block.length
        self.exported_ids.add(block.source.episode.episode_id)

    def finish(self, info: dict) -> None:
        if not self._episodes:
            return
        meta = self.root / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        for name, rows in (("episodes.jsonl", self._episodes), ("episodes_stats.jsonl", self._episode_stats)):
            with open(meta / name, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        tasks = sorted(self.tasks.items(), key=lambda kv: kv[1])
        (meta / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for t, i in tasks))
        _write_json(meta / "info.json", {
            "codebase_version": self.version, "robot_type": info["robot_type"],
            "total_episodes": self.total_episodes, "total_frames": self.total_frames,
            "total_tasks": len(self.tasks), "total_videos": 0,
            "total_chunks": (self.total_episodes - 1) // CHUNKS_SIZE + 1, "chunks_size": CHUNKS_SIZE,
            "fps": info["fps"], "splits": {"train": f"0:{self.total_episodes}"},
            "data_path": V21_DATA_PATH, "video_path": None, "features": info["features"], "apo": info["apo"]})
        self._episodes, self._episode_stats = [], []


WRITERS = {"v3.0": V30Writer, "v2.1": V21Writer}
