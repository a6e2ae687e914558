"""An upper bound for learning from deployments: every deployed step labelled with the scripted expert's action.

A takeover labels only the steps the operator drove (plus the K steps before each takeover as undesirable):
DAgger, KTO and APO learn from those. Classic DAgger, with an expert that can label any state, labels every
state the deployed policy visited. This script builds that dataset from a bench deployment (a converted
``interactive.h5``): it replays each episode in the simulator from its seed with the recorded commands, asks
the scripted expert (stepped once per control step, as the operator steps it) what it would do at each step,
and writes a copy in which every executed step's action is the expert's and its label and mode human. Retraining on it
(``bench/retrain_variant.py NAME --loss bc --data expert.h5 --data OUT.h5``) answers: does this policy improve
at all when the deployment's every state has the right action, or is the limit the policy and its retraining?

The replay is checked, not assumed: the replayed robot state must equal the recorded one at every step (an
episode whose replay leaves the record is left out and named), and on the steps the operator drove the
recorded command must equal the expert's action.

    python bench/oracle_relabel.py runs/bench/work/Lift/s0/data/base/interactive.h5 runs/oracle/lift_s0.h5
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
from label_audit import STATE_TOL, replay_group

from apo_core.labels import MODE_AUTONOMOUS, MODE_HUMAN, Label
from apo_sim.env import SimEnv
from apo_sim.expert import ScriptedExpert


def relabel(src: Path, dst: Path, control_freq: float = 20.0) -> dict:
    """Write ``dst``: ``src`` with every executed step's action the expert's and its label human; returns the
    checks (``steps``: the steps relabelled)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    checks = {"episodes": 0, "steps": 0, "human_steps": 0, "human_command_mismatches": 0,
              "worst_state_error": 0.0, "left_out": []}
    with h5py.File(tmp, "r+") as h5:
        names = sorted(h5["data"], key=lambda k: int(k.split("_")[-1]))
        task = str(h5["data"][names[0]].attrs["task"])
        with SimEnv(task, render=False, control_freq=control_freq) as env:
            expert = ScriptedExpert(task)
            for i, name in enumerate(names, 1):
                g = h5["data"][name]
                ep = replay_group(env, expert, g)
                eid, commands, labels, err = ep.episode_id, ep.commands, ep.labels, ep.state_error
                if err > STATE_TOL:
                    checks["left_out"].append({"episode": eid, "state_error": err})
                    print(f"[oracle] {eid}: the replay left the recorded states (error {err:.2e}); left out",
                          file=sys.stderr)
                    del h5["data"][name]
                    continue
                checks["human_command_mismatches"] += ep.human_command_mismatches()
                checks["human_steps"] += int((labels == Label.HUMAN).sum())
                checks["episodes"] += 1
                checks["worst_state_error"] = max(checks["worst_state_error"], err)
                # Steps the robot executed (the policy's or the operator's) become the expert's; HOLD / E-STOP
                # steps, which no trainer learns from, keep their mode and label.
                executed = np.isin(g["modes"][:], (MODE_AUTONOMOUS, MODE_HUMAN))
                actions = commands.copy()
                actions[executed] = ep.expert_actions[executed]
                g["actions"][...] = actions
                g["modes"][...] = np.where(executed, MODE_HUMAN, g["modes"][:])
                for key in ("labels", "live_labels"):
                    g[key][...] = np.where(executed, int(Label.HUMAN), g[key][:])
                checks["steps"] += int(executed.sum())
                g.attrs["relabelled"] = "every step: the scripted expert's action (bench/oracle_relabel.py)"
                print(f"[oracle] {i}/{len(names)} {eid}: {int(executed.sum())} of {len(labels)} steps relabelled "
                      f"({int((labels == Label.HUMAN).sum())} were the operator's)", file=sys.stderr, flush=True)
    if checks["episodes"] == 0:
        tmp.unlink()
        raise SystemExit(f"oracle_relabel: no episode of {src} replayed onto its record")
    tmp.replace(dst)
    return checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="a converted deployment (interactive.h5)")
    ap.add_argument("dst", type=Path, help="the relabelled copy to write")
    ap.add_argument("--control-freq", type=float, default=20.0)
    args = ap.parse_args(argv)
    if not args.src.is_file():
        ap.error(f"{args.src} not found")
    checks = relabel(args.src, args.dst, args.control_freq)
    print(json.dumps(checks, indent=1))
    if checks["human_command_mismatches"]:
        print(f"oracle_relabel: {checks['human_command_mismatches']} operator steps differ from the expert's action: "
              "the replay does not reproduce the deployment's expert", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
