"""``apo bench``: the paper's protocol in simulation, resumable, with a table, records and plots.

    apo bench --preset quick --out runs/bench-quick
    apo bench --preset default --eval-seed-base 90000 --out runs/bench
    apo bench --preset default --only method=apo,dagger --only task=Lift --out runs/bench

Rerun the same command after a kill: finished cells are kept and never computed twice.

Split a long table over processes or machines, one --only seed=N (or task) each into its own --out, then
bring the pieces together and write one report (computing only what none of them finished):

    apo bench --preset default --out runs/bench --merge-from runs/bench-s0 --merge-from runs/bench-s1

On one machine, --jobs N does that split itself: up to N (task, training seed) units at once, each in its own
worker process writing into --out, then one report (apo_bench.jobs):

    apo bench --preset default --jobs 2 --out runs/bench
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from apo_core.config import parse_dotted_overrides
from apo_core.errors import ApoError, ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help="a preset of config/bench.yaml (quick, default, refit, gpu)")
    p.add_argument("--config", help="bench settings file (default: config/bench.yaml)")
    p.add_argument("--out", default="runs/bench", help="output directory (results, plots, work files)")
    p.add_argument("--eval-seed-base", type=int, help="first evaluation scene seed (default: the preset's)")
    p.add_argument("--only", action="append", default=[], metavar="KEY=V[,V]",
                   help="restrict to cells of these methods/tasks/seeds (and what they need); repeatable")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a bench setting (dotted key), e.g. eval.episodes=20")
    p.add_argument("--quiet", action="store_true", help="no per-episode progress lines")
    p.add_argument("--merge-from", action="append", default=[], metavar="DIR",
                   help="first copy the finished cells and work files of this apo bench output directory (run "
                        "with the same settings) into --out; refused, writing nothing, if a cell differs; repeatable")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run up to N (task, training seed) units at once, each in its own process (cells and "
                        "tables as in one process; most cells use one core); default 1")
    p.add_argument("--cells-only", action="store_true",
                   help="run the selected cells and write no report and no settings record (what --jobs' "
                        "worker processes run; the parent writes both)")


def run(args) -> int:
    from apo_bench.cells import CellStore, parse_only, run_cells, select
    from apo_bench.protocol import Protocol
    from apo_bench.report import write_report
    from apo_bench.run_settings import check_and_record
    from apo_bench.settings import load_bench_settings

    overrides = parse_dotted_overrides(args.set)
    if args.eval_seed_base is not None:
        overrides.setdefault("eval", {})["seed_base"] = args.eval_seed_base
    settings = load_bench_settings(args.preset, args.config, overrides)
    jobs, cells_only = args.jobs, args.cells_only
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if cells_only and (jobs > 1 or args.merge_from):
        raise ConfigError("--cells-only runs cells in this process: it takes neither --jobs nor --merge-from")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_and_record(out, settings, record=not cells_only)  # --jobs workers: their parent records
    if cells_only:
        from apo_bench.jobs import die_with_parent

        die_with_parent()
    if args.merge_from:
        from apo_bench.merge import merge_runs

        print(merge_runs(out, [Path(d) for d in args.merge_from], settings).line(), file=sys.stderr)
    only = parse_only(args.only)
    store = CellStore(out)
    if jobs > 1:
        from apo_bench.jobs import plan_units, run_units

        with Protocol(settings, out, progress=False) as protocol:  # the plan only: no pool is opened
            units = plan_units(select(protocol.cells(), only), store, settings.episode_limit)
        failed = run_units(args, units, only, jobs, max(1, settings.eval.workers // jobs), store)
        if failed:
            print("apo bench: error: " + "; ".join(failed) + ". The other units' cells are kept: run the same "
                  "command again to compute only what is missing.", file=sys.stderr)
            return 1
    import torch

    torch.set_num_threads(settings.torch_threads)
    with Protocol(settings, out, progress=not args.quiet) as protocol:  # closes the evaluation pools
        cells = select(protocol.cells(), only)
        results = run_cells(cells, store)
    if cells_only:
        return 0
    command = "apo bench " + " ".join(shlex.quote(a) for a in (args.argv or []))
    write_report(out, settings, {k: v for k, v in results.items() if v is not None}, args.preset, command)
    print(f"[bench] wrote {out / 'results.md'}, {out / 'results.json'} and plots", file=sys.stderr)
    print((out / "results.md").read_text())
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="apo bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except ApoError as exc:
        print(f"apo bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
