"""Audit a deployment's labels: how bad are the actions the K-window calls undesirable?

APO pushes down the policy's actions on the K steps before each takeover. If those actions are mostly
what the expert would have done too, the push-down fights the likelihood on the expert's own actions,
which would explain a preference objective losing to DAgger on the same data. This script measures it
on a bench deployment (a converted ``interactive.h5`` of simulated episodes): it replays every episode in
the simulator from its seed with the recorded commands, asks the scripted expert (stepped as the
deployment's operator stepped it, once per control step) what it would do at each step, and compares
the policy's proposal there with the expert's action, per label (undesirable / autonomous / human).

The replay is checked, not assumed: the replayed robot state must equal the recorded one, and on human
steps the recorded command must equal the expert's action (the scripted operator drives with it).

    python bench/label_audit.py runs/bench/work/Lift/s0/data/base/interactive.h5 \
        --stats runs/bench/work/Lift/s0/action_stats.json --out runs/audit-lift-s0
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from apo_core.action_tokenizer import ActionTokenizer
from apo_core.labels import Label
from apo_core.normalization import ActionStats
from apo_sim.env import SimEnv
from apo_sim.expert import ScriptedExpert

LABEL_NAMES = {label: label.name.lower() for label in Label}  # undesirable, autonomous, human
STATE_TOL = 1e-6  # replayed vs recorded robot state (float32 records)
N_BINS = 256  # the small VLA's bins per dimension


def episode_seed(episode_id: str) -> int:
    """The scene seed a bench episode id ends with (``Task-policy-s0100000`` -> 100000)."""
    tail = episode_id.rsplit("-s", 1)
    if len(tail) != 2 or not tail[1].isdigit():
        raise ValueError(f"episode id {episode_id!r} does not end with -s<seed>")
    return int(tail[1])


def replay_expert_actions(env: SimEnv, expert: ScriptedExpert, seed: int, commands: np.ndarray,
                          states: np.ndarray) -> tuple[np.ndarray, float]:
    """The expert's action at every recorded step, and the largest replayed-vs-recorded state error."""
    obs = env.reset(seed=seed, render=False)
    expert.reset()
    out = np.empty_like(commands)
    worst = 0.0
    for t, command in enumerate(commands):
        worst = max(worst, float(np.max(np.abs(obs.proprio - states[t]))))
        out[t] = expert.act(env.task_state())
        obs = env.step(command, render=False)
    return out, worst


@dataclass
class ReplayedEpisode:
    """One recorded episode replayed: its recorded commands and labels, and the expert's action at each step."""

    episode_id: str
    commands: np.ndarray
    labels: np.ndarray
    expert_actions: np.ndarray
    state_error: float  # the largest replayed-vs-recorded robot state difference (> STATE_TOL: the replay left it)

    def human_command_mismatches(self) -> int:
        """Operator steps whose recorded command is not the expert's action (the scripted operator drives with it)."""
        human = self.labels == Label.HUMAN
        return int(np.sum(np.any(np.abs(self.commands[human] - self.expert_actions[human]) > 1e-9, axis=1)))


def replay_group(env: SimEnv, expert: ScriptedExpert, group) -> ReplayedEpisode:
    """Replay one ``data/<episode>`` group of a converted deployment (see :func:`replay_expert_actions`)."""
    eid = str(group.attrs["episode_id"])
    commands, labels = group["actions"][:], group["labels"][:]
    expert_actions, err = replay_expert_actions(env, expert, episode_seed(eid), commands, group["obs/state"][:])
    return ReplayedEpisode(eid, commands, labels, expert_actions, err)


def normalised_abs_error(policy: np.ndarray, expert: np.ndarray, stats: ActionStats) -> np.ndarray:
    """|policy - expert| per step and dimension, in the policy's normalised units clipped to [-1, 1]."""
    return np.abs(np.clip(stats.normalise(policy), -1, 1) - np.clip(stats.normalise(expert), -1, 1))


def compare(policy: np.ndarray, expert: np.ndarray, stats: ActionStats) -> dict[str, np.ndarray]:
    """Per step: translation cosine, gripper agreement, xyz dimensions within one bin, normalised L1.

    Bins are counted on x, y, z only: the rotation dimensions' 1-99 % range is so narrow in these tasks
    (the expert hardly turns the hand) that one of their bins is below the simulator's noise."""
    tok = ActionTokenizer(vocab_size=N_BINS + 1, n_bins=N_BINS)
    pn, en = stats.normalise(policy), stats.normalise(expert)
    bins_p, bins_e = tok.encode(pn), tok.encode(en)
    dp, de = policy[:, :3], expert[:, :3]
    norms = np.linalg.norm(dp, axis=1) * np.linalg.norm(de, axis=1)
    cos = np.where(norms > 1e-9, np.sum(dp * de, axis=1) / np.maximum(norms, 1e-9), np.nan)
    return {
        "xyz_cos": cos,
        "grip_agree": (np.sign(policy[:, 6]) == np.sign(expert[:, 6])).astype(float),
        "xyz_within_1_bin": np.mean(np.abs(bins_p[:, :3] - bins_e[:, :3]) <= 1, axis=1),
        "norm_l1": normalised_abs_error(policy, expert, stats).mean(axis=1),
    }


def steps_before_takeover(labels: np.ndarray) -> np.ndarray:
    """For each undesirable step, how many steps before the next human step it is (1 = just before)."""
    out = np.zeros(len(labels), dtype=int)
    nxt = None
    for t in range(len(labels) - 1, -1, -1):
        if labels[t] == Label.HUMAN:
            nxt = t
        elif labels[t] == Label.UNDESIRABLE and nxt is not None:
            out[t] = nxt - t
    return out


def audit(path: Path, stats: ActionStats, max_episodes: int | None, control_freq: float) -> dict:
    rows: dict[str, list] = {"label": [], "before": []}
    checks = {"episodes": 0, "worst_state_error": 0.0, "human_steps": 0, "human_command_mismatches": 0,
              "skipped": []}
    with h5py.File(path, "r") as h5:
        demos = sorted(h5["data"], key=lambda k: int(k.split("_")[-1]))[:max_episodes]
        task = str(h5["data"][demos[0]].attrs["task"])
        with SimEnv(task, render=False, control_freq=control_freq) as env:
            expert = ScriptedExpert(task)
            for i, name in enumerate(demos):
                g = h5["data"][name]
                ep = replay_group(env, expert, g)
                eid, labels, expert_actions, err = ep.episode_id, ep.labels, ep.expert_actions, ep.state_error
                if err > STATE_TOL:
                    # The replay left the recorded trajectory: its expert actions would be of other states.
                    checks["skipped"].append({"episode": eid, "state_error": err})
                    print(f"[audit] {eid}: replay diverged (state error {err:.2e}); skipped", file=sys.stderr)
                    continue
                checks["episodes"] += 1
                checks["worst_state_error"] = max(checks["worst_state_error"], err)
                checks["human_steps"] += int((labels == Label.HUMAN).sum())
                checks["human_command_mismatches"] += ep.human_command_mismatches()
                for key, values in compare(g["policy_actions"][:], expert_actions, stats).items():
                    rows.setdefault(key, []).extend(values.tolist())
                rows["label"].extend(labels.tolist())
                rows["before"].extend(steps_before_takeover(labels).tolist())
                print(f"[audit] {i + 1}/{len(demos)} {eid}: {len(labels)} steps, "
                      f"{int((labels == Label.UNDESIRABLE).sum())} undesirable", file=sys.stderr, flush=True)
    return {"task": task, "checks": checks, "rows": {k: np.asarray(v) for k, v in rows.items()}}


def summarise(rows: dict[str, np.ndarray]) -> dict:
    metrics = [k for k in rows if k not in ("label", "before")]
    table = {}
    for label, name in LABEL_NAMES.items():
        sel = rows["label"] == label
        table[name] = {"steps": int(sel.sum()),
                       **{m: float(np.nanmean(rows[m][sel])) if sel.any() else None for m in metrics}}
    by_before = {}
    und = rows["label"] == Label.UNDESIRABLE
    for b in sorted(set(rows["before"][und].tolist())):
        sel = und & (rows["before"] == b)
        by_before[int(b)] = {"steps": int(sel.sum()), **{m: float(np.nanmean(rows[m][sel])) for m in metrics}}
    return {"by_label": table, "undesirable_by_steps_before_takeover": by_before}


def plot(rows: dict[str, np.ndarray], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for label, name in LABEL_NAMES.items():
        if label == Label.HUMAN:
            continue  # the policy's proposals while the human drives: shown in the table, not here
        sel = (rows["label"] == label) & ~np.isnan(rows["xyz_cos"])
        axes[0].hist(rows["xyz_cos"][sel], bins=40, range=(-1, 1), density=True, alpha=0.5, label=name)
    axes[0].set_xlabel("cosine(policy's xyz move, expert's xyz move)")
    axes[0].set_ylabel("density")
    axes[0].legend()
    und = rows["label"] == Label.UNDESIRABLE
    befores = sorted(set(rows["before"][und].tolist()))
    auto = rows["label"] == Label.AUTONOMOUS
    for key, style in (("xyz_cos", "o-"), ("xyz_within_1_bin", "s-"), ("grip_agree", "^-")):
        axes[1].plot(befores, [np.nanmean(rows[key][und & (rows["before"] == b)]) for b in befores], style,
                     label=f"{key} (undesirable)")
        axes[1].axhline(np.nanmean(rows[key][auto]), ls=":", color=axes[1].lines[-1].get_color(),
                        label=f"{key} (autonomous, outside the window)")
    axes[1].set_xlabel("steps before the takeover")
    axes[1].set_ylabel("agreement with the expert (mean)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", type=Path, help="a converted bench deployment (interactive.h5)")
    p.add_argument("--stats", type=Path, required=True, help="the base policy's action_stats.json")
    p.add_argument("--out", type=Path, required=True, help="directory for audit.json and audit.png")
    p.add_argument("--episodes", type=int, help="audit only the first N episodes")
    p.add_argument("--control-freq", type=float, default=20.0, help="the deployment's control rate (Hz)")
    args = p.parse_args(argv)
    stats = ActionStats.load(args.stats)
    result = audit(args.dataset, stats, args.episodes, args.control_freq)
    checks = result["checks"]
    if checks["episodes"] == 0:
        print("[audit] no episode replayed exactly; nothing to compare", file=sys.stderr)
        return 1
    summary = {"dataset": str(args.dataset), "task": result["task"], "checks": checks,
               **summarise(result["rows"])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audit.json").write_text(json.dumps(summary, indent=1))
    plot(result["rows"], args.out / "audit.png", f"{result['task']}: the policy's proposals vs the expert")
    print(f"replayed {checks['episodes']} episodes exactly (worst state error {checks['worst_state_error']:.1e}); "
          f"human steps whose command differs from the expert's action: {checks['human_command_mismatches']} of "
          f"{checks['human_steps']}")
    print(f"{'label':<12s} {'steps':>6s} {'xyz cos':>8s} {'grip':>6s} {'<=1 bin':>8s} {'L1 norm':>8s}")
    for name, r in summary["by_label"].items():
        if r["steps"]:
            print(f"{name:<12s} {r['steps']:6d} {r['xyz_cos']:8.3f} {r['grip_agree']:6.3f} "
                  f"{r['xyz_within_1_bin']:8.3f} {r['norm_l1']:8.3f}")
    print("undesirable steps by distance to the takeover (1 = the step before it):")
    for b, r in summary["undesirable_by_steps_before_takeover"].items():
        print(f"  {b:3d}: {r['steps']:4d} steps, xyz cos {r['xyz_cos']:.3f}, grip {r['grip_agree']:.3f}, "
              f"<=1 bin {r['xyz_within_1_bin']:.3f}")
    print(f"wrote {args.out / 'audit.json'} and {args.out / 'audit.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
