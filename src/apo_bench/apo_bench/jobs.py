"""``apo bench --jobs N``: one command that keeps every core busy, by running independent cells side by side.

Most cells use one core (behaviour cloning and retraining run with ``torch_threads`` = 1, a deployment steps
one simulator), so a single process leaves the other cores idle for most of a run. The cells of one
(task, training seed) depend only on each other, so each such *unit* is independent of the others: this
module runs up to N units at once, each in its own ``apo bench --cells-only`` process writing into the same
output directory (disjoint cell files and work directories), and starts the next unit as soon as one ends.
Units with the most unfinished work go first, so a long task does not start last.

What stays as in one process: every cell is computed once and stored atomically, so the cells are the same
as a sequential run's (each cell's computation does not depend on what runs beside it), a killed run
continues from its finished cells, and the parent writes the one report at the end. What changes: each
worker process gets ``eval.workers // N`` simulators per evaluation pool (an execution-only setting; the
pooled evaluator's records do not depend on it), so N units' pools together hold about as much memory as
one run's. A worker that fails or is killed (the kernel's out-of-memory killer) does not stop the others;
the parent names it and its log (``<out>/logs/jobs/``) and exits non-zero, and the same command run again
computes only what is missing. Worker processes die with the parent (:func:`die_with_parent`), so a killed
parent does not leave workers computing cells that a rerun would start a second time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from apo_bench.cells import Cell, CellStore

STATUS_EVERY_S = 60.0  # a status line at least this often while the workers run
POLL_S = 1.0


@dataclass
class Unit:
    """The cells of one (task, training seed) that are not finished yet."""

    task: str
    seed: int
    cells: list[str]
    weight: float  # the cells' weights times the task's episode step limit: a rough cost, for the order

    @property
    def name(self) -> str:
        return f"{self.task}-s{self.seed}"


def plan_units(cells: list[Cell], store: CellStore, step_limit) -> list[Unit]:
    """The unfinished cells grouped by (task, training seed), most work first."""
    units: dict[tuple[str, int], Unit] = {}
    for cell in cells:
        if store.has(cell.key):
            continue
        task, seed = cell.attrs["task"], int(cell.attrs["seed"])
        unit = units.setdefault((task, seed), Unit(task, seed, [], 0.0))
        unit.cells.append(cell.key)
        unit.weight += cell.weight * step_limit(task)
    return sorted(units.values(), key=lambda u: -u.weight)


def worker_argv(args, unit: Unit, only: dict[str, set[str]], eval_workers: int) -> list[str]:
    """The ``apo bench`` arguments of the worker running ``unit``: the user's settings and filters, the unit's
    task and seed as the only ones, its share of the evaluation simulators, no report."""
    argv = ["--preset", args.preset, "--out", str(args.out), "--cells-only", "--quiet"]
    if args.config:
        argv += ["--config", str(args.config)]
    if args.eval_seed_base is not None:
        argv += ["--eval-seed-base", str(args.eval_seed_base)]
    for item in args.set:
        argv += ["--set", item]
    argv += ["--set", f"eval.workers={eval_workers}"]
    for key, values in sorted(only.items()):
        if key not in ("task", "seed"):
            argv += ["--only", f"{key}={','.join(sorted(values))}"]
    argv += ["--only", f"task={unit.task}", "--only", f"seed={unit.seed}"]
    return argv


PARENT_ENV = "APO_BENCH_JOBS_PARENT"  # the parent's pid, in a worker's environment


def die_with_parent() -> None:
    """In a worker: end with SIGTERM when the parent that started it ends (Linux ``PR_SET_PDEATHSIG``), and at
    once if it is already gone. Set in the worker itself rather than between fork and exec, where the
    parent's threads (torch's) make running Python unsafe."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own clean-up still terminates its workers
        pass
    if os.getppid() != int(parent):  # the parent ended before the request took effect
        raise SystemExit(f"apo bench worker: its --jobs parent (pid {parent}) is gone; stopping")


@dataclass
class _Running:
    unit: Unit
    proc: subprocess.Popen
    log_path: Path
    started: float


def _last_cell_line(path: Path) -> str:
    """The worker's last ``[bench] (i/n) key ...`` line: the cell it is on."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 8192))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("[bench] (") and (line.endswith(" ...") or " done in " in line):
            return line[len("[bench] "):].split(";")[0]
    return ""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(log unreadable: {exc})"


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_units(args, units: list[Unit], only: dict[str, set[str]], jobs: int, eval_workers: int,
              store: CellStore, log=None) -> list[str]:
    """Run ``units`` in at most ``jobs`` (>= 1, checked by the command) worker processes; returns the failed units'
    descriptions (empty: none failed)."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    log_dir = Path(args.out) / "logs" / "jobs"
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = list(units)
    total_weight = sum(u.weight for u in units) or 1.0
    total_cells = sum(len(u.cells) for u in units)
    running: list[_Running] = []
    failed: list[str] = []
    started = last_status = time.monotonic()
    log(f"[bench] --jobs {jobs}: {len(units)} unit(s) of (task, training seed), {total_cells} cells to run, "
        f"{eval_workers} simulator(s) per evaluation pool in each worker; logs in {log_dir}")

    def done_weight() -> tuple[int, float]:
        n, w = 0, 0.0
        for u in units:
            finished = sum(1 for k in u.cells if store.has(k))
            n += finished
            w += u.weight * finished / len(u.cells)
        return n, w

    def status() -> None:
        n, w = done_weight()
        elapsed = time.monotonic() - started
        eta = elapsed / w * (total_weight - w) if w else 0.0
        on = "; ".join(f"{r.unit.name}: {_last_cell_line(r.log_path) or 'starting'}" for r in running)
        log(f"[bench] jobs: {n}/{total_cells} cells done ({100 * w / total_weight:.0f} % of the work), "
            f"elapsed {_hms(elapsed)}, ETA {_hms(eta)}; {len(queue)} unit(s) waiting; running: {on or '-'}")

    try:
        while queue or running:
            while queue and len(running) < jobs:
                unit = queue.pop(0)
                path = log_dir / f"{unit.name}.log"
                argv = [sys.executable, "-m", "apo_bench.cli", *worker_argv(args, unit, only, eval_workers)]
                with open(path, "a") as fh:
                    fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n")
                    fh.flush()
                    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())})
                running.append(_Running(unit, proc, path, time.monotonic()))
                log(f"[bench] jobs: started {unit.name} ({len(unit.cells)} cells, pid {proc.pid})")
            time.sleep(POLL_S)
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                code = r.proc.returncode
                took = _hms(time.monotonic() - r.started)
                if code == 0:
                    log(f"[bench] jobs: {r.unit.name} finished in {took}")
                    continue
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                failed.append(f"{r.unit.name} {how} after {took} (log: {r.log_path})")
                log(f"[bench] jobs: {r.unit.name} {how} after {took}; the other units go on. "
                    f"End of its log ({r.log_path}):\n{_tail(r.log_path)}")
                last_status = 0.0  # show where the run stands at once
            if time.monotonic() - last_status >= STATUS_EVERY_S:
                status()
                last_status = time.monotonic()
    finally:
        for r in running:  # interrupted (Ctrl-C, an error here): the workers stop with the parent
            if r.proc.poll() is None:
                r.proc.terminate()
        for r in running:
            try:
                r.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
    status()
    return failed
