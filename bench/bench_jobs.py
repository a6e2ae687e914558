"""`apo bench --jobs N` against one process: wall time of the same table, and whether the cells are the same.

Runs the same small table (the quick preset with more training seeds and budgets closer to the default's,
set below) into fresh output directories, once per ``--jobs`` value, one after the other on the same machine,
and prints the wall time of each, the speed-up against ``--jobs 1``, the machine's load average before each
run, and whether every cell record (timings and directory names aside) equals the ``--jobs 1`` run's. It
exits with status 1 if a run fails or a cell differs.

Usage: python bench/bench_jobs.py [--jobs 1 2] [--seeds 3] [--bc-steps 200] [--eval-episodes 6] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _same_cell(path: Path, out: Path, ref: Path, ref_out: Path) -> bool:
    from apo_bench.merge import rebase_paths, same_result

    ours = rebase_paths(json.loads(path.read_text()), str(out), str(ref_out))
    return same_result(ours, json.loads(ref.read_text()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seeds", type=int, default=3, help="training seeds (units of the run)")
    ap.add_argument("--bc-steps", type=int, default=200)
    ap.add_argument("--eval-episodes", type=int, default=6)
    ap.add_argument("--keep", help="keep the output directories under this directory (default: a temporary one)")
    args = ap.parse_args()
    if args.jobs[0] != 1:
        args.jobs = [1, *[j for j in args.jobs if j != 1]]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_jobs_"))
    root.mkdir(parents=True, exist_ok=True)
    sets = [f"train_seeds={list(range(args.seeds))}", f"bc.steps={args.bc_steps}",
            f"eval.episodes={args.eval_episodes}", "eval.workers=6", "deploy.episodes=4",
            "perturbations.kinds=[]", "lifelong.methods=[]"]
    print(f"[bench_jobs] {os.cpu_count()} cores; quick preset with {' '.join(sets)}; methods base, dagger, apo")
    walls: dict[int, float] = {}
    dirs: dict[int, Path] = {}
    failed = False
    for jobs in args.jobs:
        out = root / f"jobs{jobs}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "apo_cli.cli", "bench", "--preset", "quick", "--only", "method=base,dagger,apo",
               "--out", str(out), "--quiet", "--jobs", str(jobs)]
        for item in sets:
            cmd += ["--set", item]
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True)
        walls[jobs], dirs[jobs] = time.monotonic() - t0, out
        print(f"[bench_jobs] --jobs {jobs}: {walls[jobs]:.0f} s wall (load average before {load:.2f}), "
              f"exit {done.returncode}")
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            failed = True
    base = walls.get(1)
    for jobs in args.jobs[1:]:
        if jobs not in walls or base is None:
            continue
        ref = sorted((dirs[1] / "cells").glob("*.json"))
        differ = [p.name for p in ref if not (dirs[jobs] / "cells" / p.name).is_file()
                  or not _same_cell(dirs[jobs] / "cells" / p.name, dirs[jobs], p, dirs[1])]
        print(f"[bench_jobs] --jobs {jobs}: {base / walls[jobs]:.2f}x the speed of --jobs 1; "
              f"{len(ref) - len(differ)} of {len(ref)} cells identical" + (f"; DIFFERENT: {differ}" if differ else ""))
        failed |= bool(differ)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
