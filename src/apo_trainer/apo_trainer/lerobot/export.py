"""Export (or extend) a LeRobotDataset from an APO HDF5 dataset: only episodes not exported yet."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from apo_core.errors import MissingPathError
from apo_trainer.lerobot.errors import LeRobotExportError
from apo_trainer.lerobot.frames import (
    episode_columns,
    image_key,
    list_source_episodes,
    read_source_episode,
)
from apo_trainer.lerobot.hf_schema import frame_schema
from apo_trainer.lerobot.stats import episode_stats
from apo_trainer.lerobot.writers import WRITERS, FrameBlock

FORMATS = tuple(WRITERS)  # ("v3.0", "v2.1")


@dataclass
class ExportResult:
    out: Path
    format: str
    new_episodes: int
    total_episodes: int
    total_frames: int


def _existing_info(out: Path, fmt: str) -> dict | None:
    info_path = out / "meta" / "info.json"
    if not info_path.exists():
        if out.exists() and any(out.iterdir()):
            raise LeRobotExportError(f"{out} is not empty and holds no LeRobot dataset (no meta/info.json); "
                                     "choose an empty or new directory")
        return None
    try:
        info = json.loads(info_path.read_text())
        version = info["codebase_version"]
    except (ValueError, KeyError) as exc:
        raise LeRobotExportError(f"{info_path} is not a LeRobot info.json ({exc})") from exc
    if version != fmt:
        raise LeRobotExportError(f"{out} holds a LeRobot {version} dataset, not {fmt}: export with "
                                 f"--format {version} to extend it, or choose another directory")
    return info


def _plain_features(features: dict) -> dict:
    """info.json features without the per-feature fps v3.0 adds, shapes as lists."""
    return {k: {"dtype": ft["dtype"], "shape": list(ft["shape"]), "names": ft.get("names")}
            for k, ft in features.items()}


def _check_same_features(expected: dict, got: dict, where: str) -> None:
    if expected == got:
        return
    if set(expected) != set(got):
        detail = (f"features only in the output: {sorted(set(expected) - set(got))}, "
                  f"only in the episode: {sorted(set(got) - set(expected))}")
    else:
        detail = "; ".join(f"{k}: {expected[k]} vs {got[k]}" for k in expected if expected[k] != got[k])
    raise LeRobotExportError(f"{where} does not match the features of the output dataset ({detail})")


def export_lerobot(dataset_path, out_dir, format: str = "v3.0", fps: int = 10, k: int | None = None,
                   camera: str = "agentview", robot_type: str = "panda", progress: bool = True) -> ExportResult:
    """Write the episodes of ``dataset_path`` that ``out_dir`` does not hold yet (matched by episode id).

    ``k`` None keeps the labels the converter stored (its K-window); an integer re-derives them.
    """
    if format not in WRITERS:
        raise LeRobotExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if fps <= 0:
        raise LeRobotExportError(f"fps must be positive, got {fps}")
    if k is not None and k < 0:
        raise LeRobotExportError(f"k must be >= 0, got {k}")
    dataset_path, out = Path(dataset_path), Path(out_dir)
    if not dataset_path.is_file():
        raise MissingPathError(f"dataset not found: {dataset_path}")
    sources = list_source_episodes(dataset_path)
    if not sources:
        raise LeRobotExportError(f"{dataset_path} holds no episodes")
    info = _existing_info(out, format)
    features = None
    if info is not None:
        if int(info["fps"]) != fps:
            raise LeRobotExportError(f"{out} was exported at fps {info['fps']}, not {fps}; pass --fps {info['fps']}")
        features = _plain_features(info["features"])
        cameras = [key.removeprefix("observation.images.") for key in features if key.startswith("observation.images.")]
        if image_key(camera) not in features:
            raise LeRobotExportError(f"{out} holds images of camera {cameras}, not {camera!r}; "
                                     f"pass --camera {cameras[0] if cameras else camera}")
        robot_type = info.get("robot_type", robot_type)
    writer = WRITERS[format](out, info)
    new = [name for name, episode_id in sources if episode_id not in writer.exported_ids]
    schema = None
    for n, name in enumerate(new):
        src = read_source_episode(dataset_path, name, k)
        got = src.features(camera)
        if features is None:
            features = got
        _check_same_features(features, got, f"episode {src.episode.episode_id!r} ({dataset_path}:{name})")
        schema = schema or frame_schema(features, format)
        task = src.episode.instruction
        task_index = writer.tasks.setdefault(task, len(writer.tasks))
        columns = episode_columns(src, camera, fps, writer.total_episodes, writer.total_frames, task_index)
        numeric = {key: v for key, v in columns.items() if key != image_key(camera)}
        stats = episode_stats(numeric, {image_key(camera): src.episode.images}, writer.quantiles)
        writer.add(FrameBlock(writer.total_episodes, writer.total_frames, task, src, columns, stats), schema)
        if progress and (n + 1) % 10 == 0:
            print(f"[export] {n + 1}/{len(new)} new episodes", flush=True)
    writer.finish({"robot_type": robot_type, "fps": fps, "features": features,
                   "apo": {"exporter": "apo-export-lerobot", "source_dataset": str(dataset_path),
                           "label_feature": "apo.label: 0 undesirable (K-window), 1 autonomous, 2 human"}})
    return ExportResult(out, format, len(new), writer.total_episodes, writer.total_frames)
