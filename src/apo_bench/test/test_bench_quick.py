"""`apo bench --preset quick` through the real `apo` command: killed (SIGKILL) part-way and rerun, it finishes
without recomputing a finished cell and leaves no simulator process behind; every figure of results.md is
recomputed here from the per-episode records of results.json; results.json holds the settings, the git
commit, package versions and every evaluation seed; the plots exist.

The quick preset runs unchanged (no --set): about 3 minutes on 2 shared cores, and every cell type is in
it (demos, base, deployment, each method, the three perturbations, two lifelong rounds).
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from scipy.stats import binomtest

from apo_bench.settings import load_bench_settings

# About 4 minutes here (2 loaded cores); the run's own limits are generous, so is the test's.
pytestmark = [pytest.mark.sim, pytest.mark.slow, pytest.mark.timeout(3000)]

REPO = Path(__file__).resolve().parents[3]
Z95 = 1.959963984540054
KILL_AFTER = "eval__Lift__s0__base__none.json"  # an evaluation pool is open when the kill comes


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "apo_cli.cli", "bench", "--preset", "quick", "--out", str(out), "--quiet"]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the simulator workers and multiprocessing's resource tracker)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is missing


def _wilson(k: int, n: int) -> tuple[float, float]:
    p, z2 = k / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _expected(recs: list[dict]) -> str:
    k, n = sum(1 for r in recs if r["success"]), len(recs)
    if n == 0:
        return "-"
    lo, hi = _wilson(k, n)
    return f"{100 * k / n:.1f} [{100 * lo:.0f}-{100 * hi:.0f}] (n={n})"


def _table(md: list[str], header_start: str) -> tuple[list[str], list[list[str]]]:
    at = next(i for i, line in enumerate(md) if line.startswith(header_start))
    columns = [c.strip() for c in md[at].strip().strip("|").split("|")]
    rows = []
    for line in md[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return columns, rows


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f} %"


def test_quick_bench_resumes_after_sigkill_and_its_tables_match_the_records(tmp_path):
    started = time.monotonic()
    out = tmp_path / "bench"
    cells = out / "cells"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # 1. First run, killed with SIGKILL (no cleanup at all) right after the base policy's evaluation.
    with open(tmp_path / "run1.log", "w") as log:
        proc = subprocess.Popen(_command(out), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None and not (cells / KILL_AFTER).is_file():
            time.sleep(0.2)
        assert proc.poll() is None, "the bench ended before it was killed:\n" + (tmp_path / "run1.log").read_text()[-3000:]
        assert (cells / KILL_AFTER).is_file(), "no evaluation cell finished in 900 s"
        children = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert len(children) >= 2, children  # simulator worker process(es) and multiprocessing's resource tracker
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.2)
    assert not [p for p in children if _alive(p)], "simulator processes outlived the killed bench"
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in cells.glob("*.json")}
    assert KILL_AFTER in before and len(before) >= 4
    first_run_s = time.monotonic() - started

    # 2. The same command again: it completes and keeps every finished cell as it was.
    t0 = time.monotonic()
    done = subprocess.run(_command(out), env=env, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    rerun_s = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-4000:]
    for name, (mtime, text) in before.items():
        assert (cells / name).stat().st_mtime_ns == mtime and (cells / name).read_text() == text, f"{name} recomputed"
    final_cells = {p.stem.replace("__", "/") for p in cells.glob("*.json")}
    kept = {n[:-len(".json")].replace("__", "/") for n in before}
    assert f"[bench] {len(final_cells)} cells, {len(kept)} already done, {len(final_cells) - len(kept)} to run" \
        in done.stderr
    ran = {line.split(") ", 1)[1][:-len(" ...")] for line in done.stderr.splitlines()
           if line.startswith("[bench] (") and line.endswith(" ...")}
    assert ran == final_cells - kept  # the rerun computed exactly the missing cells
    assert not list(cells.glob("*.tmp"))

    # Every cell type of the protocol is there.
    methods = ("dagger", "kto", "dpo", "apo")
    expected_cells = {"demos/Lift/s0", "base/Lift/s0", "deploy/Lift/s0/base/r0", "eval/Lift/s0/base/none"}
    expected_cells |= {f"train/Lift/s0/{m}/r1" for m in methods} | {f"eval/Lift/s0/{m}_r1/none" for m in methods}
    expected_cells |= {f"eval/Lift/s0/{p}/{k}" for p in ("base", "apo_r1") for k in ("position", "background", "texture")}
    for m in ("apo", "dagger"):
        expected_cells |= {f"deploy/Lift/s0/{m}/r1", f"deploy/Lift/s0/{m}/r2", f"train/Lift/s0/{m}/r2",
                           f"eval/Lift/s0/{m}_r2/none"}
    assert final_cells == expected_cells

    # 3. results.json: command, settings, commit, versions, every evaluation seed.
    results = json.loads((out / "results.json").read_text())
    assert results["command"] == f"apo bench --preset quick --out {out} --quiet"
    settings = load_bench_settings("quick")
    assert results["settings"] == json.loads(json.dumps(asdict(settings)))
    assert results["preset"] == "quick"
    commit = results["git_commit"]
    assert subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"]).returncode == 0, commit
    for name in ("torch", "numpy", "mujoco", "robosuite", "transformers"):
        assert results["versions"][name] == version(name)
    # What else decides the floating-point results (CPU, torch's kernel family, OpenGL back end).
    assert results["numerics"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert results["numerics"]["mujoco_gl"] == os.environ["MUJOCO_GL"]
    assert results["numerics"]["cpu"] and results["numerics"]["cpu"] in results["machine"]
    evals = results["evaluation_episodes"]
    base_seed = settings.eval.seed_base
    groups: dict[tuple, list[int]] = {}
    for e in evals:
        assert set(e) == {"task", "train_seed", "method", "round", "perturbation", "seed", "success", "steps"}
        assert 0 <= e["steps"] <= settings.episode_limit("Lift") and isinstance(e["success"], bool)
        groups.setdefault((e["method"], e["round"], e["perturbation"]), []).append(e["seed"])
    expected_groups = {("base", 0, "none"): settings.eval.episodes}
    expected_groups |= {(m, 1, "none"): settings.eval.episodes for m in methods}
    expected_groups |= {(m, r, k): settings.perturbations.episodes for m, r in (("base", 0), ("apo", 1))
                        for k in settings.perturbations.kinds}
    expected_groups |= {(m, 2, "none"): settings.lifelong.eval_episodes for m in settings.lifelong.methods}
    assert groups == {g: list(range(base_seed, base_seed + n)) for g, n in expected_groups.items()}
    deploys = results["deployment_episodes"]
    assert len(deploys) == settings.deploy.episodes * (1 + 2 * settings.lifelong.rounds)
    assert not {d["seed"] for d in deploys} & {e["seed"] for e in evals}, "evaluated on an interactive scene"
    for png in ("success.png", "lifelong.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png

    # 4. Every figure of results.md, recomputed from the records.
    md = (out / "results.md").read_text().splitlines()
    assert md[2].startswith(f"`apo bench --preset quick --out {out} --quiet`") and commit in md[2]
    columns, rows = _table(md, "| method | Lift |")
    assert columns == ["method", "Lift", "average"]
    assert [r[0] for r in rows] == ["base", *methods]
    for row in rows:
        recs = [e for e in evals if e["method"] == row[0] and e["round"] in (0, 1) and e["perturbation"] == "none"]
        assert len(recs) == settings.eval.episodes
        for col, text in zip(columns[1:], row[1:], strict=True):
            assert text == _expected([r for r in recs if col == "average" or r["task"] == col]), (row[0], col)
            pct, n = float(text.split()[0]), int(text.split("(n=")[1][:-1])
            assert (round(pct * n / 100), n) == (sum(r["success"] for r in recs), len(recs))
    columns, rows = _table(md, "| method vs base |")
    assert [r[0] for r in rows] == list(methods)
    base = {(e["task"], e["train_seed"], e["seed"]): e["success"] for e in evals
            if e["method"] == "base" and e["perturbation"] == "none"}
    for method, scenes, both, only_m, only_b, neither, p in rows:
        pairs = [(e["success"], base[(e["task"], e["train_seed"], e["seed"])]) for e in evals
                 if e["method"] == method and e["round"] == 1 and e["perturbation"] == "none"]
        assert [int(scenes), int(both), int(only_m), int(only_b), int(neither)] == [
            len(pairs), sum(a and b for a, b in pairs), sum(a and not b for a, b in pairs),
            sum(b and not a for a, b in pairs), sum(not a and not b for a, b in pairs)]
        discordant = int(only_m) + int(only_b)
        expected_p = binomtest(int(only_m), discordant, 0.5).pvalue if discordant else 1.0
        assert p == f"{expected_p:.3f}"
    columns, rows = _table(md, "| method | none |")
    assert columns == ["method", "none", *settings.perturbations.kinds]
    assert [r[0] for r in rows] == ["base", "apo"]
    for row in rows:
        for col, text in zip(columns[1:], row[1:], strict=True):
            recs = [e for e in evals if e["method"] == row[0] and e["round"] in (0, 1) and e["perturbation"] == col]
            assert recs and text == _expected(recs), (row[0], col)
    columns, rows = _table(md, "| method | round |")
    assert len(rows) == len(settings.lifelong.methods) * (settings.lifelong.rounds + 1)
    for method, round_, n_dep, interventions, takeovers, operator, autonomous in rows:
        r = int(round_)
        dep = [d for d in deploys if (r == 0 and d["method"] == "base") or (d["method"] == method and d["round"] == r)]
        ev = [e for e in evals if e["perturbation"] == "none"
              and ((r == 0 and e["method"] == "base") or (e["method"] == method and e["round"] == r))]
        assert int(n_dep) == len(dep) == settings.deploy.episodes
        assert interventions == _pct(sum(d["human_steps"] for d in dep) / sum(d["steps"] for d in dep))
        assert takeovers == f"{sum(d['takeovers'] for d in dep) / len(dep):.2f}"
        assert operator == _pct(sum(d["outcome"] == "success" for d in dep) / len(dep))
        assert ev and autonomous == f"{_pct(sum(e['success'] for e in ev) / len(ev))} ({len(ev)})"
    print(f"\n[test_bench_quick] first run until killed {first_run_s:.0f} s, rerun {rerun_s:.0f} s, "
          f"{len(kept)} of {len(final_cells)} cells kept", file=sys.stderr)

    # 5. The same table run in two pieces (as two machines would, each with the shared cells) and merged:
    # the merged run computes nothing and reports what the single run reported.
    _split_and_merge(tmp_path, out, env, set(groups))


def _split_and_merge(tmp_path: Path, out: Path, env: dict, groups: set) -> None:
    import shutil

    pieces = {"piece_a": lambda key: "/kto" not in key and "/dpo" not in key,
              "piece_b": lambda key: key.split("/")[0] in ("demos", "base") or "/base/" in key
              or "/kto" in key or "/dpo" in key}
    for name, keep in pieces.items():
        piece = tmp_path / name
        shutil.copytree(out / "work", piece / "work")
        shutil.copy2(out / "bench_settings.json", piece / "bench_settings.json")
        (piece / "cells").mkdir()
        for cell in (out / "cells").glob("*.json"):
            if keep(cell.stem.replace("__", "/")):  # as the piece's own run would have written it
                (piece / "cells" / cell.name).write_text(cell.read_text().replace(str(out), str(piece)))
    merged = tmp_path / "merged"
    n_cells = len(list((out / "cells").glob("*.json")))
    done = subprocess.run([*_command(merged), "--merge-from", str(tmp_path / "piece_a"), "--merge-from",
                           str(tmp_path / "piece_b")], env=env, capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"[bench] {n_cells} cells, {n_cells} already done, 0 to run" in done.stderr
    assert "work files copied" in done.stderr
    base_cell = json.loads((merged / "cells" / "base__Lift__s0.json").read_text())
    assert base_cell["policy"].startswith(str(merged.resolve()))
    assert Path(base_cell["policy"]).is_dir()
    single = json.loads((out / "results.json").read_text())
    joined = json.loads((merged / "results.json").read_text())
    assert joined["evaluation_episodes"] == single["evaluation_episodes"]
    assert {(e["method"], e["round"], e["perturbation"]) for e in joined["evaluation_episodes"]} == groups
    assert joined["deployment_episodes"] == single["deployment_episodes"]
    # Every line of the report but the command that wrote it.
    md_single, md_joined = ((d / "results.md").read_text().splitlines() for d in (out, merged))
    assert len(md_single) == len(md_joined)
    assert [a for i, a in enumerate(md_single) if i != 2] == [b for i, b in enumerate(md_joined) if i != 2]
    # A piece computed on another machine kind (one scene re-drawn) is refused, and the table is kept as it was.
    other = tmp_path / "piece_c"
    shutil.copytree(tmp_path / "piece_b", other)
    cell = other / "cells" / "eval__Lift__s0__base__none.json"
    record = json.loads(cell.read_text())
    record["episodes"][0]["success"] = not record["episodes"][0]["success"]
    cell.write_text(json.dumps(record))
    before = {p.name: p.read_text() for p in (merged / "cells").glob("*.json")}
    refused = subprocess.run([*_command(merged), "--merge-from", str(other)], env=env, capture_output=True,
                             text=True, timeout=900, cwd=tmp_path)
    assert refused.returncode == 2 and "eval/Lift/s0/base/none" in refused.stderr, refused.stderr[-2000:]
    assert {p.name: p.read_text() for p in (merged / "cells").glob("*.json")} == before
