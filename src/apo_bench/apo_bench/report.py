"""Tables and plots of a benchmark run, recomputed from the per-episode records every time.

``results.json`` holds every evaluation episode (method, task, training seed, round, perturbation,
scene seed, success, steps), every deployment episode (human steps, takeovers), the settings, the git
commit and package versions. ``results.md`` and the PNGs are derived from it alone, so a reader can
recount any cell. Intervals are Wilson 95 % score intervals over the pooled episodes of a cell.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

Z95 = 1.959963984540054
METHOD_ORDER = ("base", "dagger", "kto", "dpo", "apo")


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def collect_records(cells: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """Flatten the cells into evaluation-episode and deployment-episode records."""
    evals, deploys = [], []
    for key, value in cells.items():
        parts = key.split("/")
        if parts[0] == "eval":
            _, task, seed, policy, perturbation = parts
            method, round_ = _method_round(policy)
            for ep in value["episodes"]:
                evals.append({"task": task, "train_seed": int(seed[1:]), "method": method, "round": round_,
                              "perturbation": perturbation, **ep})
        elif parts[0] == "deploy":
            _, task, seed, method, round_ = parts
            for ep in value["episodes"]:
                deploys.append({"task": task, "train_seed": int(seed[1:]), "method": method,
                                "round": int(round_[1:]), **ep})
    return evals, deploys


def _method_round(policy: str) -> tuple[str, int]:
    if policy == "base":
        return "base", 0
    name, r = policy.rsplit("_r", 1)
    return name, int(r)


def _rate(records) -> tuple[int, int]:
    return sum(1 for r in records if r["success"]), len(records)


def _cell(records) -> str:
    k, n = _rate(records)
    if n == 0:
        return "-"
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} [{100 * lo:.0f}-{100 * hi:.0f}] (n={n})"


def main_table(evals: list[dict], tasks: list[str]) -> list[list[str]]:
    """Rows: methods; columns: tasks + average; round 1 (or base), unperturbed scenes."""
    rows = [["method", *tasks, "average"]]
    for method in METHOD_ORDER:
        recs = [r for r in evals if r["method"] == method and r["round"] in (0, 1) and r["perturbation"] == "none"]
        if not recs:
            continue
        rows.append([method, *[_cell([r for r in recs if r["task"] == t]) for t in tasks], _cell(recs)])
    return rows


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: a binomial(n, 1/2) test on the discordant scene counts."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_table(evals: list[dict]) -> list[list[str]]:
    """Each method (round 1, unperturbed) against the base on the very same scenes (task, training seed,
    evaluation seed): scenes both solve, only one solves, neither; and McNemar's exact p-value."""
    def key(r):
        return r["task"], r["train_seed"], r["seed"]

    base = {key(r): r["success"] for r in evals if r["method"] == "base" and r["perturbation"] == "none"}
    rows = [["method vs base", "scenes", "both", "only the method", "only the base", "neither", "McNemar p"]]
    for method in METHOD_ORDER[1:]:
        pairs = [(r["success"], base[key(r)]) for r in evals if r["method"] == method and r["round"] == 1
                 and r["perturbation"] == "none" and key(r) in base]
        if not pairs:
            continue
        both = sum(m and b for m, b in pairs)
        only_m = sum(m and not b for m, b in pairs)
        only_b = sum(b and not m for m, b in pairs)
        rows.append([method, str(len(pairs)), str(both), str(only_m), str(only_b),
                     str(len(pairs) - both - only_m - only_b), f"{mcnemar_p(only_m, only_b):.3f}"])
    return rows


def _scenes_note(settings) -> list[str]:
    """One line saying where the robot was deployed and evaluated, when that is not the demos' scenes."""
    arch = settings.policy_architecture
    if arch == "chunked_vla":
        arch += f" (action chunks of {settings.chunk_horizon} steps)"
    notes = [f"Policy: {arch}; camera: {settings.camera}."]
    if settings.deployment_scenes:
        notes.append(f"Deployment shift: demos in the training scenes; deployment with takeovers and this "
                     f"table's evaluation in `{settings.deployment_scenes}`-perturbed scenes "
                     f"(`deployment_scenes: {settings.deployment_scenes}`).")
    return notes


def perturbation_table(evals: list[dict], kinds: list[str]) -> list[list[str]]:
    rows = [["method", "none", *kinds]]
    for method in METHOD_ORDER:
        recs = [r for r in evals if r["method"] == method and r["round"] in (0, 1)]
        if not any(r["perturbation"] != "none" for r in recs):
            continue
        rows.append([method, *[_cell([r for r in recs if r["perturbation"] == p]) for p in ("none", *kinds)]])
    return rows


def lifelong_rows(evals: list[dict], deploys: list[dict], methods: list[str]) -> list[dict]:
    """Per method and round: intervention rate, takeovers per episode, deployment and autonomous success."""
    out = []
    for method in methods:
        rounds = sorted({d["round"] for d in deploys if d["method"] == method} | {0})
        for r in rounds:
            dep = [d for d in deploys if (d["method"] == "base" and r == 0) or (d["method"] == method and d["round"] == r)]
            ev = [e for e in evals if e["perturbation"] == "none"
                  and ((r == 0 and e["method"] == "base") or (e["method"] == method and e["round"] == r))]
            steps = sum(d["steps"] for d in dep)
            k, n = _rate(ev)
            out.append({
                "method": method, "round": r, "deploy_episodes": len(dep),
                "intervention_rate": sum(d["human_steps"] for d in dep) / steps if steps else None,
                "takeovers_per_episode": sum(d["takeovers"] for d in dep) / len(dep) if dep else None,
                "deploy_success": sum(d["outcome"] == "success" for d in dep) / len(dep) if dep else None,
                "autonomous_success": k / n if n else None, "autonomous_n": n,
            })
    return out


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def write_report(out, settings, cells: dict[str, dict], preset: str, command: str) -> dict:
    out = Path(out)
    evals, deploys = collect_records(cells)
    tasks = list(settings.tasks)
    # The seeds that have records (an --only seed=... run covers fewer than settings.train_seeds).
    seeds_run = sorted({r["train_seed"] for r in evals}) or list(settings.train_seeds)
    lifelong = lifelong_rows(evals, deploys, list(settings.lifelong.methods))
    results = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "preset": preset, "command": command,
        "settings": asdict(settings), "train_seeds_run": seeds_run, "git_commit": _git_commit(),
        "machine": _machine(), "numerics": numerics_fingerprint(), "versions": _versions(),
        "evaluation_episodes": evals, "deployment_episodes": deploys, "lifelong": lifelong,
        "training": {k: v for k, v in cells.items() if k.startswith(("train/", "base/"))},
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    md = [f"# APO benchmark ({preset})", "",
          f"`{command}` on {results['machine']}, {results['created']}, commit {results['git_commit']}.",
          "Numerics: torch kernels {torch_cpu_capability}, MUJOCO_GL {mujoco_gl}, OSMesa {osmesa}; the same "
          "settings can give other per-scene outcomes on another CPU or renderer (README).".format(**results["numerics"]),
          "", "Autonomous success % of evaluation episodes, Wilson 95 % interval, episode count "
          f"(pooled over training seeds {seeds_run}; evaluation scenes seeds "
          f"{settings.eval.seed_base}..{settings.eval.seed_base + settings.eval.episodes - 1}, disjoint from "
          "demo and interactive scenes). Methods after one deploy -> retrain round from the same base and data.",
          *_scenes_note(settings), "",
          _md_table(main_table(evals, tasks)), ""]
    paired = paired_table(evals)
    if len(paired) > 1:
        md += ["## Paired with the base", "", "The same scenes (task, training seed, evaluation seed) for both "
               "policies: a retrained policy typically gains some scenes and loses others, so a difference in "
               "success rate means little unless the discordant scenes are one-sided (exact McNemar test).", "",
               _md_table(paired), ""]
    if any(e["perturbation"] != "none" for e in evals):
        md += ["## Perturbed scenes (average over tasks)", "", _md_table(perturbation_table(evals, list(
            settings.perturbations.kinds))), ""]
    if lifelong:
        md += ["## Lifelong rounds", "", "Round 0 is the base policy's deployment; round r's policy was retrained "
               "from round r-1's on everything collected so far.", "",
               "| method | round | deploy episodes | intervention rate | takeovers / episode | success with operator "
               "| autonomous success (n) |", "|---|---|---|---|---|---|---|"]
        md += [f"| {r['method']} | {r['round']} | {r['deploy_episodes']} | {_pct(r['intervention_rate'])} | "
               f"{_num(r['takeovers_per_episode'])} | {_pct(r['deploy_success'])} | "
               f"{_pct(r['autonomous_success'])} ({r['autonomous_n']}) |" for r in lifelong]
        md.append("")
    (out / "results.md").write_text("\n".join(md))
    plot(out, evals, lifelong, tasks)
    return results


def plot(out: Path, evals: list[dict], lifelong: list[dict], tasks: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    methods = [m for m in METHOD_ORDER if any(e["method"] == m for e in evals)]
    if methods:
        cols = [*tasks, "average"]
        fig, ax = plt.subplots(figsize=(2 + 1.6 * len(cols), 4))
        width = 0.8 / len(methods)
        for i, m in enumerate(methods):
            xs, ys, lo, hi = [], [], [], []
            for j, col in enumerate(cols):
                recs = [e for e in evals if e["method"] == m and e["round"] in (0, 1) and e["perturbation"] == "none"
                        and (col == "average" or e["task"] == col)]
                k, n = _rate(recs)
                if not n:
                    continue
                a, b = wilson(k, n)
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                ys.append(100 * k / n)
                lo.append(max(0.0, 100 * (k / n - a)))  # rounding can make a 0 width slightly negative
                hi.append(max(0.0, 100 * (b - k / n)))
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=m)
        ax.set_xticks(range(len(cols)), cols)
        ax.set_ylabel("autonomous success (%)")
        ax.set_ylim(0, 100)
        ax.legend(ncol=len(methods), fontsize=8)
        ax.set_title("Success after one round (Wilson 95 % intervals)")
        fig.tight_layout()
        path = out / "success.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    if lifelong:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for method in sorted({r["method"] for r in lifelong}):
            rows = [r for r in lifelong if r["method"] == method]
            axes[0].plot([r["round"] for r in rows], [100 * (r["intervention_rate"] or 0) for r in rows], "o-",
                         label=method)
            pts = [(r["round"], 100 * r["autonomous_success"]) for r in rows if r["autonomous_success"] is not None]
            if pts:
                axes[1].plot(*zip(*pts, strict=True), "o-", label=method)
        axes[0].set_title("Intervention rate per round (share of human steps)")
        axes[1].set_title("Autonomous success per round")
        rounds = sorted({r["round"] for r in lifelong})
        for ax in axes:
            ax.set_xticks(rounds)  # whole rounds only (matplotlib's default ticks put 0.5, 1.5, ... between them)
            ax.set_xlabel("round")
            ax.set_ylabel("%")
            ax.set_ylim(bottom=0)  # a few points' change must not look like a collapse
            ax.legend()
        fig.tight_layout()
        path = out / "lifelong.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _machine() -> str:
    import os

    return f"{platform.machine()}, {_cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def numerics_fingerprint() -> dict[str, str]:
    """What decides the floating-point results besides the code and the package versions.

    The bench is bit-for-bit deterministic on one machine, but a policy's greedy tokens and the rendered
    frames can differ between CPUs (torch's kernel family, MKL's code path on AMD vs Intel) and OpenGL
    back ends, and one flipped token changes an episode. A reader whose figures differ from the README's
    compares these first.
    """
    import os

    import torch

    return {"cpu": _cpu_model(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mujoco_gl": os.environ.get("MUJOCO_GL", "unset"), "torch_threads_default": str(torch.get_num_threads()),
            "osmesa": _debian_package_version("libosmesa6")}


def _debian_package_version(name: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "absent"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "robosuite", "mujoco", "numpy", "rosbags", "h5py"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out
