"""Analysis of recorded sessions: does the robot need the human less, round after round?

Reads episode bags (streaming only the step and episode topics), groups episodes into rounds by the
policy version that drove them, and writes

- ``report.json`` and ``report.md``: per round the success rate, intervention rate (share of steps
  a human drove), takeovers per episode and the label histogram (K-window applied with
  :func:`apo_core.labels.apply_k_window`, the same function conversion uses);
- PNG plots: success and intervention trends per round, the label histogram per round, and
  per-episode action traces with human segments shaded, takeovers and the K-window marked.

Usage: ``apo-report BAGS_DIR [BAGS_DIR ...] --out DIR [--k 10] [--traces 4]``
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apo_core import topics
from apo_core.bag_contract import (  # noqa: F401 (EVENT_*: re-exported, were defined here)
    EVENT_ABORT,
    EVENT_END,
    EVENT_FAILURE,
    EVENT_START,
    EVENT_SUCCESS,
    MODE_AUTONOMOUS,
    MODE_HUMAN,
    OUTCOME_ABORT,
    OUTCOME_EVENTS,
    OUTCOME_FAILURE,
    OUTCOME_SUCCESS,
    episode_facts,
)
from apo_core.bags import BagReadError, find_bags, is_bag_dir, open_episode_bag
from apo_core.labels import DEFAULT_K, Label, apply_k_window, label_counts, takeover_indices

# The outcome of each success/failure/abort event (apo_core.bag_contract.OUTCOME_EVENTS; old name kept).
OUTCOME_BY_EVENT = OUTCOME_EVENTS


@dataclass
class EpisodeSummary:
    episode_id: str
    bag: str
    policy_version: str
    outcome: str
    instruction: str
    start_ns: int
    live_labels: np.ndarray
    modes: np.ndarray
    actions: np.ndarray  # (T, D) executed
    proposals: np.ndarray  # (T, D) policy proposals, NaN where none
    read_problems: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return int(len(self.live_labels))

    @property
    def driven(self) -> np.ndarray:
        """Steps someone actually drove (hold / e-stop steps excluded)."""
        return np.isin(self.modes, [MODE_AUTONOMOUS, MODE_HUMAN])

    @property
    def human_steps(self) -> int:
        return int(np.sum(self.live_labels[self.driven] == Label.HUMAN))

    @property
    def takeovers(self) -> int:
        return int(len(takeover_indices(self.live_labels)))


def summarise_bag(path) -> EpisodeSummary:
    """One pass over the step and episode topics of a bag (damaged bags are read as far as they go).

    Episode id, instruction, policy version and outcome follow :func:`apo_core.bag_contract.episode_facts`,
    the rule conversion uses too, so the report and the dataset agree on every episode.
    """
    labels, modes, actions, proposals = [], [], [], []
    events, step_versions = [], []
    first_id = ""
    start_ns = None
    with open_episode_bag(path) as bag:
        for m in bag.messages([topics.STEP, topics.EPISODE]):
            start_ns = m.log_time if start_ns is None else start_ns
            first_id = first_id or getattr(m.msg, "episode_id", "")
            if m.topic == topics.STEP:
                labels.append(int(m.msg.label))
                modes.append(int(m.msg.mode))
                actions.append(np.asarray(m.msg.executed_action, dtype=np.float64))
                prop = np.asarray(m.msg.policy_action, dtype=np.float64)
                proposals.append(prop if prop.size else None)
                step_versions.append(m.msg.policy_version)
            else:
                events.append(m.msg)
        custom = dict(bag.custom_data)
        problems = list(bag.report.problems)
    dim = max((a.size for a in actions), default=0)
    act = np.stack(actions) if actions else np.zeros((0, dim))
    prop = np.full_like(act, np.nan)
    for i, p in enumerate(proposals):
        if p is not None and p.size == dim:
            prop[i] = p
    facts = episode_facts(custom, events, first_episode_id=first_id, step_policy_versions=step_versions,
                          default_episode_id=Path(path).name)
    return EpisodeSummary(
        episode_id=facts.episode_id, bag=str(path), policy_version=facts.policy_version or "unknown",
        outcome=facts.outcome, instruction=facts.instruction,
        start_ns=start_ns or 0, live_labels=np.asarray(labels, dtype=np.int64),
        modes=np.asarray(modes, dtype=np.int64), actions=act, proposals=prop, read_problems=problems,
    )


def collect_episodes(bag_roots, progress: bool = True) -> tuple[list[EpisodeSummary], list[str]]:
    """Summaries of every episode bag under the given directories; unreadable bags are listed, not fatal."""
    paths = []
    for root in bag_roots:
        root = Path(root)
        paths.extend([root] if is_bag_dir(root) else find_bags(root))
    episodes, skipped = [], []
    for i, path in enumerate(paths):
        try:
            episodes.append(summarise_bag(path))
        except (BagReadError, OSError, ValueError) as exc:
            skipped.append(f"{path}: {exc}")
        if progress and (i + 1) % 20 == 0:
            print(f"[report] read {i + 1}/{len(paths)} bags", flush=True)
    episodes.sort(key=lambda e: e.start_ns)
    return episodes, skipped


def round_order(episodes: list[EpisodeSummary]) -> list[str]:
    """Policy versions in the order they were first deployed."""
    seen = []
    for e in episodes:
        if e.policy_version not in seen:
            seen.append(e.policy_version)
    return seen


def round_statistics(episodes: list[EpisodeSummary], k: int = DEFAULT_K) -> list[dict]:
    rows = []
    for version in round_order(episodes):
        eps = [e for e in episodes if e.policy_version == version]
        finished = [e for e in eps if e.outcome in (OUTCOME_SUCCESS, OUTCOME_FAILURE)]
        driven = sum(int(e.driven.sum()) for e in eps)
        human = sum(e.human_steps for e in eps)
        labels = np.concatenate([apply_k_window(e.live_labels, k, modes=e.modes)[e.driven] for e in eps]) \
            if eps else []
        rows.append({
            "round": len(rows),
            "policy_version": version,
            "episodes": len(eps),
            "successes": sum(e.outcome == OUTCOME_SUCCESS for e in eps),
            "success_rate": (sum(e.outcome == OUTCOME_SUCCESS for e in finished) / len(finished)) if finished else None,
            "aborted": sum(e.outcome == OUTCOME_ABORT for e in eps),
            "steps": driven,
            "human_steps": human,
            "intervention_rate": human / driven if driven else None,
            "takeovers_per_episode": float(np.mean([e.takeovers for e in eps])) if eps else None,
            "episodes_with_takeover": sum(e.takeovers > 0 for e in eps),
            "labels": label_counts(labels),
        })
    return rows


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_trends(rows: list[dict], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(rows))
    names = [r["policy_version"] for r in rows]
    sr = [np.nan if r["success_rate"] is None else 100 * r["success_rate"] for r in rows]
    ir = [np.nan if r["intervention_rate"] is None else 100 * r["intervention_rate"] for r in rows]
    tk = [np.nan if r["takeovers_per_episode"] is None else r["takeovers_per_episode"] for r in rows]
    for ax, values, title, unit, color in (
        (axes[0], sr, "Success rate", "%", "tab:green"),
        (axes[1], ir, "Intervention rate (human steps)", "%", "tab:red"),
        (axes[2], tk, "Takeovers per episode", "", "tab:orange"),
    ):
        ax.plot(x, values, marker="o", color=color)
        for xi, v in zip(x, values, strict=True):
            if np.isfinite(v):
                ax.annotate(f"{v:.1f}{unit}" if unit else f"{v:.2f}", (xi, v), textcoords="offset points",
                            xytext=(0, 6), ha="center", fontsize=8)
        ax.set_title(title)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_xlabel("round (policy version)")
        ax.grid(alpha=0.3)
        if unit == "%":
            ax.set_ylim(-5, 115)
    fig.suptitle("APO deploy-optimize loop: trend per round")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_label_histogram(rows: list[dict], path: Path, k: int) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    colors = {"AUTONOMOUS": "tab:blue", "HUMAN": "tab:green", "UNDESIRABLE": "tab:red"}
    for name in ("AUTONOMOUS", "HUMAN", "UNDESIRABLE"):
        vals = np.array([r["labels"][name] for r in rows], dtype=float)
        ax.bar(x, vals, bottom=bottom, label=f"{Label[name].value} {name.lower()}", color=colors[name])
        bottom += vals
    ax.set_xticks(x, [r["policy_version"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("steps")
    ax.set_title(f"Labels per round (K = {k})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_episode_trace(ep: EpisodeSummary, path: Path, k: int) -> Path:
    """Executed action per dimension, policy proposals dashed, human segments shaded, K-window hatched."""
    plt = _plt()
    dims = ep.actions.shape[1] if ep.actions.ndim == 2 else 0
    names = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"][:dims] + [f"a{i}" for i in range(7, dims)]
    fig, axes = plt.subplots(max(dims, 1), 1, figsize=(10, 1.2 * max(dims, 1) + 1), sharex=True, squeeze=False)
    t = np.arange(ep.steps)
    labels = apply_k_window(ep.live_labels, k, modes=ep.modes)
    human = ep.live_labels == Label.HUMAN
    for d in range(dims):
        ax = axes[d, 0]
        ax.plot(t, ep.actions[:, d], color="black", lw=1, label="executed")
        ax.plot(t, ep.proposals[:, d], color="tab:blue", lw=0.8, ls="--", label="policy proposal")
        _shade(ax, human, "tab:green", 0.25)
        _shade(ax, labels == Label.UNDESIRABLE, "tab:red", 0.18)
        for s in takeover_indices(ep.live_labels):
            ax.axvline(s, color="tab:red", lw=1)
        ax.set_ylabel(names[d], rotation=0, ha="right", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("step   (green: human drove; red: K-window before a takeover; line: takeover)")
    fig.suptitle(f"{ep.episode_id}  [{ep.policy_version}, {ep.outcome}, {ep.takeovers} takeover(s)]", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _shade(ax, mask: np.ndarray, color: str, alpha: float) -> None:
    if not mask.any():
        return
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        ax.axvspan(s - 0.5, e - 0.5, color=color, alpha=alpha, lw=0)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def write_report(bag_roots, out_dir, k: int = DEFAULT_K, traces: int = 4, progress: bool = True) -> dict:
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    episodes, skipped = collect_episodes(bag_roots, progress=progress)
    if not episodes:
        raise ValueError(f"no readable episode bags under {', '.join(map(str, bag_roots))}"
                         + (f" ({len(skipped)} unreadable)" if skipped else ""))
    rows = round_statistics(episodes, k)
    plots = [plot_trends(rows, out / "plots" / "trends.png"), plot_label_histogram(rows, out / "plots" / "labels.png", k)]
    # traces: prefer episodes with takeovers, one or more per round
    chosen = []
    for version in round_order(episodes):
        eps = sorted((e for e in episodes if e.policy_version == version), key=lambda e: -e.takeovers)
        chosen.extend(eps[: max(1, traces // max(1, len(rows)))])
    for ep in chosen[:traces]:
        plots.append(plot_episode_trace(ep, out / "plots" / f"trace_{_safe(ep.episode_id)}.png", k))
    report = {
        "k_window": k,
        "rounds": rows,
        "episodes": [{"episode_id": e.episode_id, "policy_version": e.policy_version, "outcome": e.outcome,
                      "steps": e.steps, "human_steps": e.human_steps, "takeovers": e.takeovers, "bag": e.bag,
                      "read_problems": e.read_problems} for e in episodes],
        "skipped_bags": skipped,
        "plots": [str(p) for p in plots],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render_markdown(report))
    return report


def render_markdown(report: dict) -> str:
    lines = [f"# APO-ROS session report (K = {report['k_window']})", "",
             "| round | version | episodes | success rate | intervention rate | takeovers/episode | labels 0/1/2 |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        sr = "n/a" if r["success_rate"] is None else f"{100 * r['success_rate']:.1f} %"
        ir = "n/a" if r["intervention_rate"] is None else f"{100 * r['intervention_rate']:.1f} %"
        tk = "n/a" if r["takeovers_per_episode"] is None else f"{r['takeovers_per_episode']:.2f}"
        lab = r["labels"]
        lines.append(f"| {r['round']} | {r['policy_version']} | {r['episodes']} | {sr} | {ir} | {tk} | "
                     f"{lab['UNDESIRABLE']}/{lab['AUTONOMOUS']}/{lab['HUMAN']} |")
    lines += ["", "Plots:"] + [f"- `{p}`" for p in report["plots"]]
    if report["skipped_bags"]:
        lines += ["", "Unreadable bags (skipped):"] + [f"- {s}" for s in report["skipped_bags"]]
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="apo-report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bags", nargs="+", help="directories of episode bags (or single bag directories)")
    ap.add_argument("--out", required=True, help="output directory for report.json/md and plots/")
    ap.add_argument("--k", type=int, default=DEFAULT_K, help="K-window for undesirable labels")
    ap.add_argument("--traces", type=int, default=4, help="how many per-episode action trace plots")
    args = ap.parse_args(argv)
    try:
        report = write_report(args.bags, args.out, args.k, args.traces)
    except (ValueError, OSError) as exc:
        print(f"apo-report: error: {exc}", file=sys.stderr)
        return 2
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
