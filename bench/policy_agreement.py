"""Offline: how far each retrained policy's actions moved from the scripted expert's, and where.

A retrained policy can lose closed-loop success in two ways: it got worse where it used to be right
(the expert's own states), or it did not get better where the base went wrong (the states before a
takeover). This script scores base and retrained small-VLA policies on both, against the expert:

- held-out expert trajectories: fresh scene seeds (default 90000..), disjoint from the bench's demo,
  deployment and evaluation seeds, rolled out by the scripted expert;
- the deployment's own states (optional ``--deployment interactive.h5``), replayed as
  ``bench/label_audit.py`` does, split by label (undesirable / autonomous / human).

Each policy's greedy action is compared with the expert's (translation cosine, gripper agreement,
x/y/z within one bin, normalised L1; ``label_audit.compare``).

    python bench/policy_agreement.py --task PickPlaceCan --stats W/action_stats.json \
        --deployment W/data/base/interactive.h5 base=W/policies/base apo=W/policies/apo_r1 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
from label_audit import (
    LABEL_NAMES,
    STATE_TOL,
    compare,
    episode_seed,
    normalised_abs_error,
    replay_expert_actions,
)

from apo_core.normalization import ActionStats
from apo_core.policy import load_policy
from apo_sim.demos import collect_demos
from apo_sim.env import SimEnv
from apo_sim.expert import ScriptedExpert
from apo_sim.rollout import policy_env_settings

BATCH = 64


def load_steps(path: Path, with_labels: bool) -> dict[str, np.ndarray | list]:
    """Images, instructions, states, recorded actions (and labels) of every episode, concatenated."""
    out: dict[str, list] = {"images": [], "instructions": [], "states": [], "actions": [], "labels": [],
                            "episodes": []}
    with h5py.File(path, "r") as h5:
        for name in sorted(h5["data"], key=lambda k: int(k.split("_")[-1])):
            g = h5["data"][name]
            n = len(g["actions"])
            out["images"].append(g["obs/image"][:])
            out["states"].append(g["obs/state"][:])
            out["actions"].append(g["actions"][:])
            out["instructions"] += [str(g.attrs.get("instruction", ""))] * n
            out["episodes"].append((str(g.attrs.get("episode_id", name)), n))
            if with_labels:
                out["labels"].append(g["labels"][:])
    return {k: (np.concatenate(v) if k in ("images", "states", "actions", "labels") and v else v)
            for k, v in out.items()}


def expert_actions_of_deployment(path: Path, task: str, steps: dict, control_freq: float) -> np.ndarray:
    """The expert's action at every deployment step, by replay; refuses a replay that left the record."""
    result, start = np.empty_like(steps["actions"]), 0
    with SimEnv(task, render=False, control_freq=control_freq) as env:
        expert = ScriptedExpert(task)
        for eid, n in steps["episodes"]:
            sl = slice(start, start + n)
            acts, err = replay_expert_actions(env, expert, episode_seed(eid), steps["actions"][sl],
                                              steps["states"][sl])
            if err > STATE_TOL:
                raise RuntimeError(f"{eid}: the replay left the recorded trajectory (state error {err:.2e})")
            result[sl] = acts
            start += n
    return result


def predict_all(policy, steps: dict) -> np.ndarray:
    if not hasattr(policy, "predict_batch"):
        raise SystemExit(f"{type(policy).__name__} has no per-step predict_batch: this script scores "
                         "single-step policies (the small VLA); a chunked policy's action depends on its chunk")
    _, use_state = policy_env_settings(policy)
    out = []
    for i in range(0, len(steps["actions"]), BATCH):
        states = steps["states"][i:i + BATCH] if use_state else None
        out.append(policy.predict_batch(steps["images"][i:i + BATCH], steps["instructions"][i:i + BATCH], states))
    return np.concatenate(out)


def score(pred: np.ndarray, expert: np.ndarray, stats: ActionStats, sel=None) -> dict:
    pred, expert = (pred, expert) if sel is None else (pred[sel], expert[sel])
    m = compare(pred, expert, stats)
    per_dim = normalised_abs_error(pred, expert, stats).mean(axis=0)
    return {"steps": int(len(m["norm_l1"])), **{k: float(np.nanmean(v)) for k, v in m.items()},
            "norm_l1_per_dim": per_dim.round(4).tolist()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("policies", nargs="+", metavar="NAME=DIR", help="policies to score, base first")
    p.add_argument("--task", required=True)
    p.add_argument("--stats", type=Path, required=True, help="action_stats.json for the bins and L1")
    p.add_argument("--deployment", type=Path, help="a converted bench deployment to score on, by label")
    p.add_argument("--heldout-seed", type=int, default=90000)
    p.add_argument("--heldout-episodes", type=int, default=10)
    p.add_argument("--camera", default="robot0_eye_in_hand")
    p.add_argument("--control-freq", type=float, default=20.0)
    p.add_argument("--out", type=Path, help="write agreement.json here")
    args = p.parse_args(argv)
    named = [a.split("=", 1) for a in args.policies]
    if any(len(n) != 2 for n in named):
        p.error("policies are NAME=DIR")
    stats = ActionStats.load(args.stats)
    policies = {name: load_policy(Path(d)) for name, d in named}
    image_size = {policy_env_settings(pol)[0] for pol in policies.values()}
    if len(image_size) != 1:
        p.error(f"the policies see different image sizes: {sorted(image_size)}")
    for pol in policies.values():
        pol.model.eval()

    sets: dict[str, tuple[dict, np.ndarray, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "heldout.h5"
        collect_demos(h5, task=args.task, episodes=args.heldout_episodes, seed=args.heldout_seed,
                      image_size=image_size.pop(), camera=args.camera, control_freq=args.control_freq)
        held = load_steps(h5, with_labels=False)
    sets["held-out expert states"] = (held, held["actions"], {"all": None})
    if args.deployment:
        dep = load_steps(args.deployment, with_labels=True)
        expert = expert_actions_of_deployment(args.deployment, args.task, dep, args.control_freq)
        sets["deployment states"] = (dep, expert, {name: dep["labels"] == lab for lab, name in LABEL_NAMES.items()})

    results: dict = {}
    for set_name, (steps, expert, groups) in sets.items():
        for name, pol in policies.items():
            print(f"[agreement] {name} on {set_name} ({len(steps['actions'])} steps)", file=sys.stderr, flush=True)
            pred = predict_all(pol, steps)
            for group, sel in groups.items():
                results.setdefault(set_name, {}).setdefault(group, {})[name] = score(pred, expert, stats, sel)

    for set_name, groups in results.items():
        for group, per_policy in groups.items():
            n = next(iter(per_policy.values()))["steps"]
            print(f"\n{set_name}, {group} ({n} steps): agreement with the expert")
            print(f"{'policy':<10s} {'xyz cos':>8s} {'grip':>6s} {'<=1 bin':>8s} {'L1 norm':>8s}  L1 per dimension")
            for name, r in per_policy.items():
                print(f"{name:<10s} {r['xyz_cos']:8.3f} {r['grip_agree']:6.3f} {r['xyz_within_1_bin']:8.3f} "
                      f"{r['norm_l1']:8.3f}  {' '.join(f'{v:.3f}' for v in r['norm_l1_per_dim'])}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "agreement.json").write_text(json.dumps(
            {"task": args.task, "policies": dict(named), "heldout_seed": args.heldout_seed,
             "heldout_episodes": args.heldout_episodes, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
