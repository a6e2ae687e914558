"""The ``apo`` command: the project's entry point where no full ROS 2 install exists.

    apo deploy [name:=value ...]   start the deploy graph of config/deploy.yaml (as ros2 launch would)
    apo graph [name:=value ...]    print the nodes and parameters the graph would start
    apo demo [--quick]             the whole deploy-optimize loop on the simulated default
    apo bench [--preset quick]     the benchmark: base / DAgger / KTO / DPO / APO in simulation (apo_bench)
    apo models import|list|set-current   fill and inspect the model store the policy node loads from
"""

from __future__ import annotations

import argparse
import sys
import threading

import yaml

from apo_bringup.graph import default_graph_path, load_graph_file, parse_launch_arguments, resolve_graph
from apo_bringup.runner import GraphRunner, install_signal_forwarding
from apo_core.errors import ApoError


def _resolve(args):
    graph = load_graph_file(args.graph or default_graph_path())
    return graph, resolve_graph(graph, parse_launch_arguments(args.launch_args))


def cmd_graph(args) -> int:
    graph, specs = _resolve(args)
    print(f"# graph file: {graph.path}")
    print(yaml.safe_dump([{"name": s.name, "module": s.module, **({"config": s.config} if s.config else {}),
                           "parameters": s.parameters, "remappings": s.remappings, "required": s.required}
                          for s in specs], sort_keys=False))
    return 0


def cmd_deploy(args) -> int:
    graph, specs = _resolve(args)
    if not specs:
        print("[apo] the graph resolves to no nodes for these arguments", file=sys.stderr)
        return 2
    stop = threading.Event()
    install_signal_forwarding(stop)
    runner = GraphRunner(specs, log_dir=args.log_dir, shutdown_timeout=args.shutdown_timeout)
    runner.start()
    reason = runner.wait(duration=args.duration, until=stop.is_set)
    print(f"[apo] stopping the graph: {reason if not stop.is_set() else 'signal received'}", flush=True)
    codes = runner.stop()
    print(f"[apo] exit codes: {codes}; logs in {runner.log_dir}", flush=True)
    return 1 if reason.startswith("required node") else 0


def _demo(args) -> int:
    from apo_cli.demo import main_demo

    return main_demo(args)


def _bench(args) -> int:
    from apo_bench.cli import run

    return run(args)


def _sim_tasks() -> list[str]:
    """The tasks apo_sim supports (its registry), for ``--task`` choices."""
    from apo_sim.env import TASKS

    return sorted(TASKS)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="apo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def graph_args(p):
        p.add_argument("launch_args", nargs="*", metavar="name:=value", help="graph arguments, as for ros2 launch")
        p.add_argument("--graph", help="graph file (default: config/deploy.yaml)")

    p = sub.add_parser("deploy", help="start the deploy graph, each node its own process")
    graph_args(p)
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--log-dir", help="per-node logs and parameter files (default: a temporary directory)")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, help="seconds a node gets to exit on SIGINT")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("demo", help="the whole deploy-optimize loop on the embedded default (see apo_cli.demo)")
    p.add_argument("--quick", action="store_true", help="the short version (about 3 minutes)")
    p.add_argument("--out", default="runs/demo", help="output directory (data, models, bags, logs, report)")
    p.add_argument("--task", default="Lift", choices=_sim_tasks())
    for name in ("round-episodes", "retrain-steps", "bc-steps", "demo-episodes", "eval-episodes"):
        p.add_argument(f"--{name}", type=int, help="override the preset")
    from apo_bench.settings import ARCHITECTURES

    p.add_argument("--policy-architecture", choices=list(ARCHITECTURES),
                   help="the base policy: small VLA (default) or chunked pi0-FAST-style VLA")
    p.add_argument("--chunk-horizon", type=int, help="actions per chunk of a chunked_vla base (default 8)")
    p.add_argument("--camera", help="simulated camera of demos, deployment and evaluation (default: the bench's, "
                                    "config/bench.yaml: robot0_eye_in_hand)")
    p.set_defaults(func=_demo)

    from apo_bench.cli import __doc__ as bench_doc
    from apo_bench.cli import add_arguments as bench_arguments

    p = sub.add_parser("bench", help="the benchmark in simulation, resumable (see apo_bench.cli)",
                       description=bench_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_arguments(p)
    p.set_defaults(func=_bench)

    from apo_cli import models_cli

    p = sub.add_parser("models", help="import a trained policy or checkpoint into the model store, list, set current",
                       description=models_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models_cli.add_arguments(p)

    p = sub.add_parser("graph", help="print the resolved graph")
    graph_args(p)
    p.set_defaults(func=cmd_graph)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "bench":  # the command line recorded in the bench's results
        args.argv = argv[argv.index("bench") + 1:]
    try:
        return args.func(args)
    except ApoError as exc:
        print(f"apo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
