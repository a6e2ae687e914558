"""Resumable work: a benchmark is a graph of cells, each computed once and stored as one JSON file.

A cell (demos, base policy, a deployment round, a training run, an evaluation) is keyed by what it
is (``train/Lift/s0/apo/r1``), depends on other cells, and stores its result atomically when it
finishes. Rerunning the same command skips finished cells, so a killed run continues where it
stopped and never computes a cell twice; ``--only`` selects cells and adds what they depend on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from apo_core.errors import ConfigError


@dataclass
class Cell:
    key: str
    run: Callable[[], dict]
    deps: list[str] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)  # task, seed, method, ... (what --only filters on)
    weight: float = 1.0  # expected cost relative to the others (for the ETA)


class CellStore:
    def __init__(self, root):
        self.dir = Path(root) / "cells"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.dir / (key.replace("/", "__") + ".json")

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def has(self, key: str) -> bool:
        """Whether ``key`` is finished (without reading its record)."""
        return self._path(key).is_file()

    def put(self, key: str, value: dict) -> None:
        path = self._path(key)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value, indent=1, default=_jsonable))
        os.replace(tmp, path)

    def all(self) -> dict[str, dict]:
        return {p.stem.replace("__", "/"): json.loads(p.read_text()) for p in sorted(self.dir.glob("*.json"))}


def parse_only(items: list[str]) -> dict[str, set[str]]:
    """``["method=apo,kto", "task=Lift"]`` -> ``{"method": {"apo", "kto"}, "task": {"Lift"}}``."""
    out: dict[str, set[str]] = {}
    for item in items or []:
        for part in item.split(";"):
            if "=" not in part:
                raise ConfigError(f"--only {part!r} must look like key=value[,value] (keys: method, task, seed)")
            key, values = part.split("=", 1)
            key = key.strip()
            if key not in ("method", "task", "seed"):
                raise ConfigError(f"--only: unknown key {key!r} (valid: method, task, seed)")
            out.setdefault(key, set()).update(v.strip() for v in values.split(",") if v.strip())
    return out


def select(cells: list[Cell], only: dict[str, set[str]]) -> list[Cell]:
    """Cells matching every filter (a cell without the attribute matches), plus their dependencies."""
    by_key = {c.key: c for c in cells}

    def matches(cell: Cell) -> bool:
        return all(str(cell.attrs[k]) in v for k, v in only.items() if k in cell.attrs)

    wanted: set[str] = set()
    stack = [c.key for c in cells if matches(c)]
    while stack:
        key = stack.pop()
        if key in wanted:
            continue
        wanted.add(key)
        stack.extend(by_key[key].deps)
    return [c for c in cells if c.key in wanted]


def run_cells(cells: list[Cell], store: CellStore, log=None) -> dict[str, dict]:
    """Run what is not done yet, in order (dependencies come first in ``cells``), with an ETA."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    todo = [c for c in cells if store.get(c.key) is None]
    total = sum(c.weight for c in todo)
    log(f"[bench] {len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run")
    done_weight = 0.0
    started = time.monotonic()
    for i, cell in enumerate(todo, 1):
        missing = [d for d in cell.deps if store.get(d) is None]
        if missing:
            raise RuntimeError(f"cell {cell.key} depends on unfinished {missing} (cells out of order)")
        t0 = time.monotonic()
        log(f"[bench] ({i}/{len(todo)}) {cell.key} ...")
        result = cell.run()
        result.setdefault("seconds", round(time.monotonic() - t0, 1))
        store.put(cell.key, result)
        done_weight += cell.weight
        elapsed = time.monotonic() - started
        eta = elapsed / done_weight * (total - done_weight) if done_weight else 0.0
        pct = 100.0 * done_weight / total if total else 100.0
        log(f"[bench] ({i}/{len(todo)}) {cell.key} done in {time.monotonic() - t0:.0f} s; "
            f"{pct:.0f} % of the work, elapsed {_hms(elapsed)}, ETA {_hms(eta)}")
    return {c.key: store.get(c.key) for c in cells}


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
