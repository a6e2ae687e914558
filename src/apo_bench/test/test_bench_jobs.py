"""`apo bench --jobs 2` through the real command: two (task, training seed) units in two worker processes.

One worker is killed with SIGKILL part-way (as the kernel's out-of-memory killer would): the parent names the
unit and its log, exits non-zero, and the other unit still finishes. The same command run again computes only
the killed unit's missing cells and writes the report. The cells equal those of a plain sequential run of the
same unit, so running side by side changes no figure. Small settings (the quick preset, base and APO, no
perturbations or lifelong rounds): about 3-4 minutes on 2 shared cores.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apo_bench.cells import CellStore
from apo_bench.jobs import Unit, plan_units, worker_argv
from apo_bench.merge import rebase_paths, same_result
from apo_bench.protocol import Protocol
from apo_bench.settings import load_bench_settings

pytestmark = [pytest.mark.sim, pytest.mark.slow, pytest.mark.timeout(2400)]

SETTINGS = ["--set", "train_seeds=[0,1]", "--set", "perturbations.kinds=[]", "--set", "lifelong.methods=[]"]


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "apo_cli.cli", "bench", "--preset", "quick", *SETTINGS,
            "--only", "method=base,apo", "--out", str(out), "--quiet", *extra]


def _worker_of(parent: int, unit_filter: str) -> int | None:
    """The pid of ``parent``'s worker whose command line has ``unit_filter`` (e.g. 'seed=1')."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"--cells-only" in cmdline and unit_filter.encode() in cmdline:
            return int(proc.name)
    return None


def test_two_jobs_survive_a_killed_worker_resume_and_match_a_sequential_run(tmp_path):
    out = tmp_path / "bench"
    cells = out / "cells"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # 1. Two units side by side; the worker of training seed 1 is killed after its base policy is trained.
    with open(tmp_path / "run1.log", "w") as log:
        proc = subprocess.Popen(_command(out, "--jobs", "2"), env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=tmp_path)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None and not (cells / "base__Lift__s1.json").is_file():
            time.sleep(0.2)
        worker = _worker_of(proc.pid, "seed=1")
        assert worker is not None, "no worker of seed 1:\n" + (tmp_path / "run1.log").read_text()[-3000:]
        os.kill(worker, signal.SIGKILL)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / "run1.log").read_text()
    assert proc.returncode == 1, text[-3000:]
    assert "Lift-s1 was killed by signal 9" in text and str(out / "logs" / "jobs" / "Lift-s1.log") in text
    assert "run the same command again" in text
    assert not (out / "results.md").exists()  # no report from a run with a unit missing
    s0 = sorted(p.name for p in cells.glob("*__s0*.json"))
    assert len(s0) == 6, s0  # the other unit finished: demos, base, deploy, eval base, train apo, eval apo
    assert not (cells / "eval__Lift__s1__apo_r1__none.json").exists()
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in cells.glob("*.json")}

    # 2. The same command again: only the killed unit's missing cells run, then the report.
    done = subprocess.run(_command(out, "--jobs", "2"), env=env, capture_output=True, text=True, timeout=1200,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "--jobs 2: 1 unit(s) of (task, training seed)" in done.stderr
    for name, (mtime, content) in before.items():
        assert (cells / name).stat().st_mtime_ns == mtime and (cells / name).read_text() == content, name
    assert len(list(cells.glob("*.json"))) == 12
    assert "[bench] 12 cells, 12 already done, 0 to run" in done.stderr
    assert (out / "results.md").is_file() and "| apo |" in (out / "results.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert {(e["train_seed"], e["method"]) for e in results["evaluation_episodes"]} >= {(0, "base"), (1, "base"), (1, "apo")}

    # 3. Seed 1's unit run alone in one process gives the same cells (the same numbers, the same scenes).
    alone = tmp_path / "alone"
    ref = subprocess.run(_command(alone, "--only", "seed=1"), env=env, capture_output=True, text=True,
                         timeout=1200, cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-4000:]
    ref_cells = sorted((alone / "cells").glob("*__s1*.json"))
    assert len(ref_cells) == 6
    for path in ref_cells:
        ours = rebase_paths(json.loads((cells / path.name).read_text()), str(out), str(alone))
        assert same_result(ours, json.loads(path.read_text())), path.name


def test_units_are_planned_per_task_and_seed_with_the_most_work_first(tmp_path):
    s = load_bench_settings("quick", overrides={"tasks": ["Lift", "Stack"], "train_seeds": [0, 1]})
    store = CellStore(tmp_path)
    cells = Protocol(s, tmp_path).cells()
    store.put("demos/Lift/s0", {"written": 3})
    units = plan_units(cells, store, s.episode_limit)
    assert {(u.task, u.seed) for u in units} == {("Lift", 0), ("Lift", 1), ("Stack", 0), ("Stack", 1)}
    assert sum(len(u.cells) for u in units) == len(cells) - 1
    assert "demos/Lift/s0" not in next(u for u in units if u.name == "Lift-s0").cells
    assert [u.task for u in units[:2]] == ["Stack", "Stack"]  # the longer episodes first
    assert all(u.weight >= v.weight for u, v in zip(units, units[1:], strict=False))


def test_a_worker_gets_the_users_settings_and_filters_with_its_own_task_and_seed():
    class Args:
        preset, out, config, eval_seed_base = "default", "runs/b", None, 90000
        set = ["eval.episodes=20"]

    argv = worker_argv(Args, Unit("Stack", 2, ["x"], 1.0), {"method": {"apo", "base"}, "seed": {"1", "2"}}, 4)
    assert argv[:6] == ["--preset", "default", "--out", "runs/b", "--cells-only", "--quiet"]
    assert argv[argv.index("--eval-seed-base") + 1] == "90000"
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert sets == ["eval.episodes=20", "eval.workers=4"]
    onlys = [argv[i + 1] for i, a in enumerate(argv) if a == "--only"]
    assert onlys == ["method=apo,base", "task=Stack", "seed=2"]  # the user's seed filter is replaced by the unit's


@pytest.mark.parametrize("extra, message", [
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--cells-only", "--jobs", "2"], "--cells-only runs cells in this process"),
])
def test_bad_job_arguments_are_refused(tmp_path, extra, message):
    done = subprocess.run([sys.executable, "-m", "apo_cli.cli", "bench", "--preset", "quick", "--out",
                           str(tmp_path / "b"), *extra], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
