"""Guard against mixing settings in one output directory.

Finished cells are reused on a rerun, so rerunning into the same ``--out`` with a different learning rate,
camera or evaluation seed base would silently build a table from cells computed two ways. The first run
records its settings in ``bench_settings.json``; a later run may add cells (more tasks, seeds, lifelong
or perturbation methods and rounds) and change how fast it runs, but any other difference is refused
with the keys named.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from apo_core.config import flatten_dotted
from apo_core.errors import ConfigError
from apo_core.files import atomic_write_text

FILE_NAME = "bench_settings.json"
# Which cells exist, not what a cell computes: a rerun may widen them.
EXTENDS_CELLS = frozenset({"tasks", "train_seeds", "lifelong.methods", "lifelong.rounds",
                           "perturbations.kinds", "perturbations.methods"})
# How fast the run goes, not what it computes (the pooled evaluator equals the sequential one).
EXECUTION_ONLY = frozenset({"torch_threads", "eval.workers"})


def _effective(settings) -> dict:
    """The settings as the run's cells see them: each method's overrides for the run's architecture merged
    into its ``overrides`` (the other architectures' entries compute nothing here). So a run that sets a
    chunked lr through ``overrides_by_architecture`` records the same as one that set it in ``overrides``,
    and adding an entry for another architecture does not lock older output directories out."""
    data = asdict(settings)
    for name, method in data["methods"].items():
        del method["overrides_by_architecture"]
        method["overrides"] = settings.method_overrides(name)
    return data


def current_record(settings) -> dict:
    """``settings`` as ``bench_settings.json`` records them (flat dotted keys; through JSON so tuples compare
    equal to the lists read back from a file)."""
    return flatten_dotted(json.loads(json.dumps(_effective(settings))))


def differences(recorded: dict, current: dict) -> str:
    """The keys whose difference would change a finished cell, as ``key: old there, new now; ...`` ('' if none)."""
    changed = sorted(k for k in set(recorded) | set(current)
                     if k not in EXTENDS_CELLS | EXECUTION_ONLY and recorded.get(k) != current.get(k))
    return "; ".join(f"{k}: {recorded.get(k)!r} there, {current.get(k)!r} now" for k in changed)


def read_record(path: Path, advice: str) -> dict:
    """A recorded ``bench_settings.json``; a corrupt one is a clear error with ``advice``."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); {advice}") from exc


def check_and_record(out: Path, settings, record: bool = True) -> None:
    """Record ``settings`` on the first run into ``out``; refuse a rerun whose cells would differ.
    ``record=False`` checks only (a ``--jobs`` worker, whose parent has recorded them)."""
    path = Path(out) / FILE_NAME
    current = current_record(settings)
    if path.is_file():
        recorded = read_record(path, "restore it or use a new --out")
        changed = differences(recorded, current)
        if changed:
            raise ConfigError(f"{out} holds cells computed with other settings ({changed}). Finished cells are "
                              f"reused on a rerun, so mixing would corrupt the table: use a new --out, or "
                              f"rerun with the recorded values ({path})")
    # Past the check only the widening and speed keys can differ, so the record becomes this run's settings.
    # A directory from before this file existed adopts the settings given now (they cannot be checked).
    if record:
        atomic_write_text(path, json.dumps(current, indent=1, sort_keys=True))
