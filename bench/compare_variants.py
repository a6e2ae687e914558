"""Rows of bench/notes/apo-tuning.md from their records: pooled success and a paired test per row.

Each row is either a policy of an `apo bench` output directory (its evaluation cells, e.g. ``dagger_r1``)
or a `bench/retrain_variant.py` record per training seed (a path with ``{s}`` for the seed). Every row is
paired with the first one scene by scene (exact McNemar over the scenes both were evaluated on), so a note's
table can be recomputed from the records kept in ``bench/notes/runs/``:

    python bench/compare_variants.py --bench bench/notes/runs/2026-12-07-stack-3seeds --task Stack \
        base=base dagger=dagger_r1 'control=bench/notes/runs/2026-12-07-stack-3seeds/variants/stack_demos_only_s{s}.json'

A row evaluated on other scenes than the first row (another ``--seed-base``) cannot be paired: refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from apo_bench.report import mcnemar_p, wilson


class CompareError(Exception):
    """A row that cannot be read or paired; the message says which file."""


@dataclass
class Row:
    name: str
    # training seed -> (scenes evaluated, scenes solved)
    per_seed: dict[int, tuple[frozenset[int], frozenset[int]]]

    @property
    def successes(self) -> int:
        return sum(len(won) for _, won in self.per_seed.values())

    @property
    def episodes(self) -> int:
        return sum(len(seen) for seen, _ in self.per_seed.values())


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CompareError(f"{path}: cannot read it ({e})") from e


def _from_cell(path: Path) -> tuple[frozenset[int], frozenset[int]]:
    try:
        episodes = _read_json(path)["episodes"]
        return (frozenset(e["seed"] for e in episodes), frozenset(e["seed"] for e in episodes if e["success"]))
    except (KeyError, TypeError) as e:
        raise CompareError(f"{path}: not an evaluation cell of apo bench (no episodes list with seed/success)") from e


def _from_variant(path: Path) -> tuple[frozenset[int], frozenset[int]]:
    d = _read_json(path)
    try:
        # retrain_variant.py evaluates --episodes scenes from --seed-base (recorded since 2026-12-07 as
        # seed_base; older records used the bench's 70000)
        first = int(d.get("seed_base", 70000))
        seen = frozenset(range(first, first + int(d["episodes"])))
        won = frozenset(int(s) for s in d["success_seeds"])
    except (KeyError, TypeError, ValueError) as e:
        raise CompareError(f"{path}: not a retrain_variant.py record (needs episodes and success_seeds)") from e
    if not won <= seen or len(won) != int(d.get("successes", len(won))):
        raise CompareError(f"{path}: its success_seeds do not match its episodes / successes")
    return seen, won


def load_row(name: str, spec: str, bench: Path | None, task: str, seeds: list[int]) -> Row:
    """``spec``: a path pattern with ``{s}`` (variant records) or a policy name of ``bench``'s cells."""
    per_seed = {}
    for s in seeds:
        if "{s}" in spec:
            path = Path(spec.format(s=s))
            if path.exists():
                per_seed[s] = _from_variant(path)
        else:
            if bench is None:
                raise CompareError(f"row {name!r}: {spec!r} is a bench policy name; give --bench DIR")
            path = bench / "cells" / f"eval__{task}__s{s}__{spec}__none.json"
            if path.exists():
                per_seed[s] = _from_cell(path)
    if not per_seed:
        raise CompareError(f"row {name!r}: no record found for {spec!r} (training seeds {seeds})")
    return Row(name, per_seed)


def paired(row: Row, ref: Row) -> tuple[int, int]:
    """(scenes only ``row`` solves, scenes only ``ref`` solves) over the seeds both have."""
    only_row = only_ref = 0
    for s, (seen, won) in row.per_seed.items():
        if s not in ref.per_seed:
            continue
        ref_seen, ref_won = ref.per_seed[s]
        if seen != ref_seen:
            raise CompareError(f"row {row.name!r} and {ref.name!r} were evaluated on different scenes at training "
                               f"seed {s}: they cannot be paired")
        only_row += len(won - ref_won)
        only_ref += len(ref_won - won)
    return only_row, only_ref


def table(rows: list[Row], seeds: list[int]) -> str:
    ref = rows[0]
    lines = [f"| row | {' / '.join(f's{s}' for s in seeds)} | pooled (Wilson 95 %) | paired with {ref.name} |",
             "|---|---|---|---|"]
    for row in rows:
        counts = " / ".join(str(len(row.per_seed[s][1])) if s in row.per_seed else "-" for s in seeds)
        lo, hi = wilson(row.successes, row.episodes)
        pooled = f"{100 * row.successes / row.episodes:.1f} % [{100 * lo:.0f}-{100 * hi:.0f}] (n {row.episodes})"
        vs = ""
        if row is not ref:
            gained, lost = paired(row, ref)
            vs = f"+{gained} / -{lost}, p {mcnemar_p(gained, lost):.2f}"
        lines.append(f"| {row.name} | {counts} | {pooled} | {vs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", metavar="NAME=SPEC", help="the first row is the one the others are paired with")
    ap.add_argument("--bench", type=Path, help="an apo bench output directory (its cells/)")
    ap.add_argument("--task", default="Lift")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (default 0,1,2)")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    try:
        rows = []
        for item in a.rows:
            name, sep, spec = item.partition("=")
            if not sep or not name or not spec:
                raise CompareError(f"{item!r}: a row is NAME=SPEC")
            rows.append(load_row(name, spec, a.bench, a.task, seeds))
        print(table(rows, seeds))
    except CompareError as e:
        print(f"compare_variants: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
