"""Export an APO dataset (HDF5, apo_core.dataset schema) to the LeRobotDataset v2.1 layout.

Layout written::

    meta/info.json              codebase_version v2.1, fps, features, totals, path templates
    meta/tasks.jsonl            one line per distinct instruction
    meta/episodes.jsonl         episode_index, tasks, length
    meta/episodes_stats.jsonl   per-episode min/max/mean/std/count of numeric features
    data/chunk-000/episode_000000.parquet

Frames carry ``observation.images.<camera>`` (PNG bytes in the Hugging Face ``Image`` struct
{bytes, path}, so no video encoder is needed), ``observation.state``, ``action``, ``timestamp``,
``frame_index``, ``episode_index``, ``index``, ``task_index``, ``next.done`` and the APO columns
``apo.label`` (K-window applied), ``apo.live_label``, ``apo.mode``, ``apo.policy_action``.

Usage: ``apo-export-lerobot DATASET.h5 OUT_DIR [--fps 10] [--k 10] [--camera agentview]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from apo_core.dataset import read_episode, sorted_episode_names
from apo_core.errors import MissingPathError
from apo_core.labels import DEFAULT_K

CODEBASE_VERSION = "v2.1"
CHUNK_SIZE = 1000
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # cv2 expects BGR
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _stats(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    v = v.reshape(len(v), -1)
    return {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
            "std": v.std(0).tolist(), "count": [int(len(v))]}


def export_lerobot(dataset_path, out_dir, fps: int = 10, k: int = DEFAULT_K, camera: str = "agentview",
                   robot_type: str = "panda", progress: bool = True) -> dict:
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    dataset_path, out = Path(dataset_path), Path(out_dir)
    if not dataset_path.is_file():
        raise MissingPathError(f"dataset not found: {dataset_path}")
    if (out / "meta" / "info.json").exists():
        raise FileExistsError(f"{out} already holds a LeRobot dataset; choose an empty directory")
    with h5py.File(dataset_path, "r") as f:
        names = sorted_episode_names(f)
    if not names:
        raise ValueError(f"{dataset_path} holds no episodes")
    (out / "meta").mkdir(parents=True, exist_ok=True)
    tasks: dict[str, int] = {}
    index = 0
    image_shape = state_dim = action_dim = None
    episodes_meta, episode_stats = [], []
    for ep_index, name in enumerate(names):
        ep = read_episode(dataset_path, name)
        t = len(ep)
        task_index = tasks.setdefault(ep.instruction, len(tasks))
        image_shape = list(ep.images.shape[1:])
        state_dim, action_dim = ep.states.shape[1], ep.actions.shape[1]
        labels = ep.labels(k)
        columns = {
            f"observation.images.{camera}": pa.array(
                [{"bytes": _png(img), "path": None} for img in ep.images],
                type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "observation.state": pa.array(ep.states.astype(np.float32).tolist(), type=pa.list_(pa.float32())),
            "action": pa.array(ep.actions.astype(np.float32).tolist(), type=pa.list_(pa.float32())),
            "timestamp": pa.array((np.arange(t) / fps).astype(np.float32)),
            "frame_index": pa.array(np.arange(t, dtype=np.int64)),
            "episode_index": pa.array(np.full(t, ep_index, dtype=np.int64)),
            "index": pa.array(np.arange(index, index + t, dtype=np.int64)),
            "task_index": pa.array(np.full(t, task_index, dtype=np.int64)),
            "next.done": pa.array(np.arange(t) == t - 1),
            "apo.label": pa.array(labels.astype(np.int64)),
            "apo.live_label": pa.array(ep.live_labels.astype(np.int64)),
            "apo.mode": pa.array(ep.modes.astype(np.int64)),
            "apo.policy_action": pa.array(ep.policy_actions.astype(np.float32).tolist(), type=pa.list_(pa.float32())),
        }
        chunk = ep_index // CHUNK_SIZE
        path = out / "data" / f"chunk-{chunk:03d}" / f"episode_{ep_index:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        episodes_meta.append({"episode_index": ep_index, "tasks": [ep.instruction], "length": t,
                              "apo": {"episode_id": ep.episode_id, "outcome": ep.outcome, "source": ep.source,
                                      "policy_version": ep.policy_version}})
        episode_stats.append({"episode_index": ep_index, "stats": {
            "observation.state": _stats(ep.states) if state_dim else None,
            "action": _stats(ep.actions),
            f"observation.images.{camera}": _image_stats(ep.images),
            "timestamp": _stats(np.arange(t) / fps),
            "frame_index": _stats(np.arange(t)),
            "episode_index": _stats(np.full(t, ep_index)),
            "index": _stats(np.arange(index, index + t)),
            "task_index": _stats(np.full(t, task_index)),
        }})
        index += t
        if progress and (ep_index + 1) % 10 == 0:
            print(f"[export] {ep_index + 1}/{len(names)} episodes", flush=True)
    features = {
        f"observation.images.{camera}": {"dtype": "image", "shape": image_shape,
                                          "names": ["height", "width", "channel"]},
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "action": {"dtype": "float32", "shape": [action_dim],
                   "names": ACTION_NAMES if action_dim == len(ACTION_NAMES) else None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "apo.label": {"dtype": "int64", "shape": [1], "names": None},
        "apo.live_label": {"dtype": "int64", "shape": [1], "names": None},
        "apo.mode": {"dtype": "int64", "shape": [1], "names": None},
        "apo.policy_action": {"dtype": "float32", "shape": [action_dim], "names": None},
    }
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(names),
        "total_frames": index, "total_tasks": len(tasks), "total_videos": 0,
        "total_chunks": (len(names) - 1) // CHUNK_SIZE + 1, "chunks_size": CHUNK_SIZE, "fps": fps,
        "splits": {"train": f"0:{len(names)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": None, "features": features, "apo": {"k_window": k, "source": str(dataset_path)},
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    _jsonl(out / "meta" / "tasks.jsonl", [{"task_index": i, "task": t} for t, i in tasks.items()])
    _jsonl(out / "meta" / "episodes.jsonl", episodes_meta)
    _jsonl(out / "meta" / "episodes_stats.jsonl", episode_stats)
    return info


def _image_stats(images: np.ndarray) -> dict:
    # LeRobot keeps per-channel image statistics in [0, 1], shaped (3, 1, 1).
    x = images.astype(np.float64) / 255.0
    per = lambda fn: [[[float(v)]] for v in fn(x, axis=(0, 1, 2))]  # noqa: E731
    return {"min": per(np.min), "max": per(np.max), "mean": per(np.mean), "std": per(np.std),
            "count": [int(len(images))]}


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="apo-export-lerobot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="APO HDF5 dataset")
    ap.add_argument("out", help="output directory (must not hold a dataset yet)")
    ap.add_argument("--fps", type=int, default=10, help="control rate the episodes were recorded at")
    ap.add_argument("--k", type=int, default=DEFAULT_K, help="K-window for apo.label")
    ap.add_argument("--camera", default="agentview", help="camera name in the image feature key")
    args = ap.parse_args(argv)
    try:
        info = export_lerobot(args.dataset, args.out, args.fps, args.k, args.camera)
    except (ValueError, OSError) as exc:
        print(f"apo-export-lerobot: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {info['total_episodes']} episodes, {info['total_frames']} frames to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
