"""Merge the finished cells of other ``apo bench`` output directories into this run's (``--merge-from``).

A table of 3 tasks x 3 training seeds is hours of CPU, so it is run in pieces: one ``--only seed=N`` (or
task) per process or machine, each into its own ``--out``. Merging brings their cells and work files
(demos, policies, interactive data) into one directory; the run that follows computes only what is
still missing and writes one report over all of them.

What makes a merge safe:
- every source must have been run with this run's settings (the same rule as a rerun into one directory:
  only which cells exist and how fast they run may differ);
- a cell present on both sides must hold the same result (the seconds it took aside): two machine kinds
  can compute the same cell differently (bench notes, tenth pass), and a table must not mix them;
- everything is checked before anything is written, so a refused merge leaves the directory as it was.
  Work files already present in the target are kept, cells are written after the work files they point
  to, so an interrupted merge is finished by running it again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from apo_bench.cells import CellStore
from apo_bench.run_settings import FILE_NAME, current_record, differences, read_record
from apo_core.errors import ConfigError

# Bookkeeping of how long a cell took (at any depth: a training cell's last logged step has its step time),
# not what it computed.
TIMING_KEYS = frozenset({"seconds", "step_time_s"})


@dataclass
class MergeSummary:
    cells_added: dict[str, int] = field(default_factory=dict)  # source -> cells copied
    cells_same: int = 0  # present on both sides with the same result
    files_copied: int = 0

    def line(self) -> str:
        added = ", ".join(f"{n} from {src}" for src, n in self.cells_added.items())
        return (f"[bench] merged {sum(self.cells_added.values())} cells ({added}); {self.cells_same} already here "
                f"with the same result; {self.files_copied} work files copied")


def merge_runs(out: Path, sources: list[Path], settings) -> MergeSummary:
    """Copy the cells and work files of ``sources`` into ``out``; refuse (writing nothing) on any conflict."""
    out = Path(out).resolve()
    current = current_record(settings)
    pending: dict[str, tuple[Path, dict]] = {}  # cell key -> (source, result as it will be stored here)
    store = CellStore(out)
    existing = store.all()
    summary = MergeSummary()
    conflicts: list[str] = []
    source_cells: dict[Path, dict[str, dict]] = {}  # each source's cells, read once
    for src in sources:
        src = Path(src).resolve()
        _check_source(src, out, current)
        added = 0
        source_cells[src] = CellStore(src).all()
        for key, result in source_cells[src].items():
            result = rebase_paths(result, str(src), str(out))
            have = existing.get(key)
            seen = pending.get(key)
            if have is None and seen is None:
                pending[key] = (src, result)
                added += 1
            elif same_result(have if have is not None else seen[1], result):
                summary.cells_same += have is not None
            else:
                where = "here" if have is not None else str(seen[0])
                conflicts.append(f"{key} ({src} vs {where})")
        summary.cells_added[str(src)] = added
    if conflicts:
        shown = "; ".join(conflicts[:5]) + (f"; and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        raise ConfigError(f"--merge-from: {len(conflicts)} cell(s) hold different results on two sides: {shown}. "
                          f"Each side computed its own (another machine kind, or another code version); merge "
                          f"runs that split the cells between them (--only seed=N / task=T). Nothing was written.")
    for src in {src for src, _ in pending.values()}:
        summary.files_copied += _copy_missing_files(src / "work", out / "work",
                                                    _unfinished_training_runs(src, source_cells[src]))
    for key, (_, result) in pending.items():
        store.put(key, result)
    return summary


def _check_source(src: Path, out: Path, current: dict) -> None:
    if src == out:
        raise ConfigError(f"--merge-from {src}: that is this run's own --out")
    record = src / FILE_NAME
    if not record.is_file():
        raise ConfigError(f"--merge-from {src}: no {FILE_NAME} there, so not an apo bench output directory "
                          f"(or one from before settings were recorded, whose cells cannot be checked)")
    recorded = read_record(record, f"restore it or leave --merge-from {src} out")
    changed = differences(recorded, current)
    if changed:
        raise ConfigError(f"--merge-from {src}: its cells were computed with other settings than this run's "
                          f"({changed}); run with its settings, or leave it out. Nothing was written.")


def without_timings(value):
    """``value`` (a cell's result) without the keys that say how long it took."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def same_result(a: dict, b: dict) -> bool:
    """Whether two results of one cell computed the same (timings aside; paths already pointed at one place)."""
    return without_timings(a) == without_timings(b)


def rebase_paths(value, src: str, out: str):
    """Paths a cell recorded under its own output directory, pointed at the same files in ``out``."""
    if isinstance(value, str):
        if value == src or value.startswith(src + "/"):
            return out + value[len(src):]
        return value
    if isinstance(value, dict):
        return {k: rebase_paths(v, src, out) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase_paths(v, src, out) for v in value]
    return value


def _unfinished_training_runs(src: Path, cells: dict[str, dict]) -> set[Path]:
    """``src``'s training directories (``policies/<name>_run``) whose cell did not finish there (``cells``: its
    finished cells, as read from it).

    Such a directory holds a killed training's checkpoints and its cached reference log-probabilities, keyed
    by the data paths of ``src``: a resume in another directory would refuse the cache (other data), so the
    cell is trained again from the start there instead. A finished cell's directory (its configuration and
    metrics) is copied."""
    finished = {Path(r["policy"]).resolve() for r in cells.values() if isinstance(r.get("policy"), str)}
    return {run for run in (src / "work").glob("*/s*/policies/*_run")
            if run.with_name(run.name[:-len("_run")]).resolve() not in finished}


def _copy_missing_files(src: Path, dst: Path, skip_dirs: set[Path] = frozenset()) -> int:
    """Copy every file under ``src`` that ``dst`` lacks (through a temporary name, so a file is whole or
    absent); files already in ``dst`` are kept: equal cells on both sides came from the same inputs. What a
    killed run left unfinished is not copied: ``*.tmp`` files and directories (a policy is published through
    ``<name>.tmp``), a killed merge's ``*.merging`` files, and what is under ``skip_dirs``."""
    copied = 0
    if not src.is_dir():
        return 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if not path.is_file() or any(part.endswith((".tmp", ".merging")) for part in rel.parts):
            continue
        if any(d in path.parents for d in skip_dirs):
            continue
        target = dst / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".merging")
        shutil.copy2(path, partial)
        partial.replace(target)
        copied += 1
    return copied
