"""Read a LeRobot dataset with the real ``lerobot`` and save what it returned, for test_lerobot_export.py.

Run by the test with the python of a venv that has lerobot (it cannot be installed in the project's
.venv: lerobot 0.4.x pins torch < 2.11, 0.3.x torch < 2.8, the project runs torch 2.13). This file
imports only lerobot, torch and numpy, never APO code, so that venv needs nothing of the project::

    python lerobot_reader_probe.py --version          # prints lerobot's CODEBASE_VERSION and version
    python lerobot_reader_probe.py ROOT OUT.npz --fps 10 --horizon 4

The second form opens ROOT with ``LeRobotDataset(repo_id, root=ROOT, delta_timestamps={"action":
[k / fps for k < horizon]})``, reads **every** item with ``dataset[i]`` and writes OUT.npz: one array
per item key (stacked over the items; ``task`` as strings) and ``__meta__``, a JSON string with the
dataset's length, episode count, codebase version, each key's dtype and shape, and the shapes of
``meta.stats``.
"""

from __future__ import annotations

import argparse
import json
import sys


def _version() -> int:
    from importlib.metadata import version

    from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION

    print(json.dumps({"codebase_version": CODEBASE_VERSION, "lerobot": version("lerobot")}))
    return 0


def _read(root: str, out: str, fps: int, horizon: int) -> int:
    import numpy as np
    import torch
    from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset

    ds = LeRobotDataset("apo/export", root=root, delta_timestamps={"action": [k / fps for k in range(horizon)]})
    columns: dict[str, list] = {}
    kinds: dict[str, tuple[str, list[int]]] = {}
    for i in range(len(ds)):
        for key, value in ds[i].items():
            if isinstance(value, torch.Tensor):
                arr = value.numpy()
            elif isinstance(value, str):
                arr = np.asarray(value)
            else:
                raise TypeError(f"item {i}: {key} is a {type(value).__name__}, not a tensor or a string")
            kinds.setdefault(key, (str(arr.dtype), list(arr.shape)))
            if kinds[key] != (str(arr.dtype), list(arr.shape)) and key != "task":
                raise TypeError(f"item {i}: {key} is {arr.dtype} {arr.shape}, item 0 was {kinds[key]}")
            columns.setdefault(key, []).append(arr)
    stats_shapes = {key: {name: list(np.asarray(v).shape) for name, v in s.items()} for key, s in ds.meta.stats.items()}
    meta = {"len": len(ds), "num_episodes": ds.num_episodes, "codebase_version": CODEBASE_VERSION,
            "kinds": kinds, "stats_shapes": stats_shapes}
    np.savez(out, __meta__=np.asarray(json.dumps(meta)),
             **{key: np.stack(values) if key != "task" else np.asarray([str(v) for v in values])
                for key, values in columns.items()})
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="store_true")
    ap.add_argument("root", nargs="?")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--horizon", type=int, default=4)
    args = ap.parse_args(argv)
    if args.version:
        return _version()
    if not (args.root and args.out):
        ap.error("ROOT and OUT are required")
    return _read(args.root, args.out, args.fps, args.horizon)


if __name__ == "__main__":
    sys.exit(main())
