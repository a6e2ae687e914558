"""``apo models``: fill and inspect the model store the deploy graph's policy node loads from.

    apo models import DIR [--store PATH] [--version vNNNN] [--set-current] [--unnorm-key KEY] [--full-check]
    apo models list [--store PATH]
    apo models set-current VERSION [--store PATH]

The default store is the deploy graph's ``model_path`` default (config/deploy.yaml), so
``apo models import DIR`` followed by ``ros2 launch apo_bringup deploy.launch.py`` (or ``apo deploy``)
from the same directory needs no path at all. The store logic is ROS-free (apo_core.model_store,
apo_core.model_import); this module only parses and prints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from apo_core.errors import MissingPathError
from apo_core.model_import import import_policy
from apo_core.model_store import ModelStore


def default_store_path() -> Path:
    """The policy node's ``model_path`` default in the deploy graph file (relative to the working directory)."""
    from apo_bringup.graph import default_graph_path, load_graph_file

    return Path(str(load_graph_file(default_graph_path()).arguments["model_path"].default))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True)

    def store_arg(p):
        p.add_argument("--store", help="model store root (default: the deploy graph's model_path, "
                                       f"{default_store_path()})")

    p = sub.add_parser("import", help="check a trained policy or checkpoint directory and copy it in as a new version")
    p.add_argument("directory", help="an apo-train run output, a policy directory, or a Hugging Face (OpenVLA) "
                                     "checkpoint with config.json, weights and dataset_statistics.json")
    store_arg(p)
    p.add_argument("--version", help="name of the new version (vNNNN, must be new; default: the next number)")
    p.add_argument("--set-current", action="store_true",
                   help="make it the current version (a store without a current version gets it anyway)")
    p.add_argument("--unnorm-key", help="dataset in dataset_statistics.json whose action statistics to use "
                                        "(needed when it holds several)")
    p.add_argument("--full-check", action="store_true",
                   help="also load a Hugging Face checkpoint on CPU before importing (slow for large models)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="with --full-check: let the checkpoint run its own code (only for code you trust)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("list", help="versions, which one is current, where each came from and when")
    store_arg(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("set-current", help="make VERSION the one the policy node loads")
    p.add_argument("version", help="a version of the store (vNNNN, see apo models list)")
    store_arg(p)
    p.set_defaults(func=cmd_set_current)


def _store(args) -> Path:
    return Path(args.store) if args.store else default_store_path()


def cmd_import(args) -> int:
    result = import_policy(_store(args), args.directory, version=args.version, set_current=args.set_current,
                           unnorm_key=args.unnorm_key, full_check=args.full_check,
                           trust_remote_code=args.trust_remote_code)
    src = result.source
    print(f"imported {args.directory} ({src.origin}, {src.kind}) as {result.version} in {result.store_root}")
    for warning in src.warnings:
        print(f"warning: {warning}")
    if result.current:
        print(f"{result.version} is now current: a running policy node loads it (deploy: model_path:={result.store_root})")
    else:
        print(f"current version unchanged; switch with: apo models set-current {result.version} --store {result.store_root}")
    return 0


def cmd_list(args) -> int:
    root = _store(args)
    if not ModelStore.is_store(root):
        raise MissingPathError(f"no model store at {root} (no versions/): create one with apo models import DIR "
                               f"--store {root}")
    store = ModelStore(root)
    records = store.version_records()
    print(f"model store {root.resolve()}: {len(records)} version(s)")
    if not records:
        return 0
    print(f"  {'version':<9} {'current':<7} {'added':<19}  source")
    for rec in records:
        added = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec["added"])) if rec["added"] else "-"
        print(f"  {rec['version']:<9} {'*' if rec['current'] else '':<7} {added:<19}  {describe_source(rec['note'])}")
    if not any(rec["current"] for rec in records):
        print(f"no current version: choose one with apo models set-current VERSION --store {root}")
    return 0


def describe_source(note: dict) -> str:
    """One line for where a version came from (an import, a retrain job, the demo's base training)."""
    if note.get("imported_by"):
        return f"{note.get('source')} ({note.get('origin')})"
    if note.get("job"):
        return f"retrain job {note['job']} (from {note.get('base') or '-'}, {note.get('loss') or '-'})"
    if note.get("source"):
        return str(note["source"])
    return "-"


def cmd_set_current(args) -> int:
    root = _store(args)
    if not ModelStore.is_store(root):
        raise MissingPathError(f"no model store at {root} (no versions/): nothing to set current")
    store = ModelStore(root)
    previous = store.version_records()
    before = next((r["version"] for r in previous if r["current"]), None)
    store.set_current(args.version)
    print(f"current version of {root}: {args.version} (was {before or 'none'})")
    return 0
