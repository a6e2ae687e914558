"""Where a policy's failed episodes stop: the furthest stage of the task each evaluation episode reached.

A success rate says how often a policy finishes; this says where the rest get stuck, from the simulator's
privileged state at every step (the figures the scripted expert and operator use, `apo_sim.expert`):

    reached   the hand came within 3 cm of the target object
    grasped   the target object was held (fingers on it)
    lifted    held, with its bottom at least 1 cm above its resting height (Lift succeeds at 2 cm)
    over      held above where it must go (Stack: over the green cube; PickPlaceCan: over its compartment)
    placed    at its goal (Stack: resting on the green cube; PickPlaceCan: in its compartment) but not yet a
              success by robosuite's test (still held, or it slid off again)
    success

    python bench/failure_modes.py runs/bench/work/Stack/s0/policies/base runs/bench/work/Stack/s0/policies/apo_r1 \
        --task Stack --episodes 50 --seed-base 70000 --out runs/failure-modes
    python bench/failure_modes.py --expert --task Stack --episodes 30 --seed-base 70000 --out runs/failure-modes

For a task with a place to put the object on (Stack), each episode also records whether that place (the green cube's
centre) was inside the policy camera's field of view at the step the object first left the table
(``goal_in_view_at_lift``; occlusion by the held object not counted): a policy that sees one frame cannot head for
what its image does not show. ``--expert`` runs the scripted expert instead of a policy, for the same figures.

Episodes run one after the other (the sequential evaluator's loop, `apo_sim.episode.PolicyEpisode`), so each
policy's successes equal the bench's evaluation cell on the same scenes and machine kind. Writes one JSON per
policy (every episode's stage and peak progress) and ``failure_modes.png`` (a stacked bar per policy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

STAGES = ["none", "reached", "grasped", "lifted", "over", "placed", "success"]
REACH_M = 0.03
LIFT_M = 0.01


def stage_of(state) -> str:
    """The stage ``state`` (an `apo_sim.env.TaskState`) is in right now."""
    from apo_sim import bin_place
    from apo_sim.env import task_spec
    from apo_sim.expert import is_held, is_over, is_placed, object_height

    if state.success:
        return "success"
    spec = task_spec(state.task)
    obj = state.objects[spec.target]
    held = is_held(state)
    if (spec.place_on is not None or spec.place_in is not None) and is_placed(state):
        return "placed"
    if not held:
        return "reached" if np.linalg.norm(state.eef_pos - obj.pos) < REACH_M else "none"
    if object_height(state) < LIFT_M:
        return "grasped"
    if spec.place_on is not None:
        if is_over(obj, state.objects[spec.place_on]):
            return "over"
    elif spec.place_in is not None and bin_place.over_goal(state, obj):
        return "over"
    return "lifted"


def in_camera_view(env, point) -> bool:
    """Whether the world point projects inside ``env``'s camera image (square image; nothing occludes it)."""
    model, data = env.raw.sim.model, env.raw.sim.data
    cam = model.camera_name2id(env.camera)
    half = np.tan(np.deg2rad(model.cam_fovy[cam]) / 2.0)
    # MuJoCo cameras look along their frame's -z, with +y up in the image
    v = data.cam_xmat[cam].reshape(3, 3).T @ (np.asarray(point, dtype=float) - data.cam_xpos[cam])
    return bool(v[2] < 0 and abs(v[0] / -v[2]) < half and abs(v[1] / -v[2]) < half)


def goal_point(state):
    """Where the task's object must go, when that is another object (Stack's green cube); else None."""
    from apo_sim.env import task_spec

    spec = task_spec(state.task)
    return state.objects[spec.place_on].pos if spec.place_on is not None else None


def furthest(stages: list[str]) -> str:
    return max(stages, key=STAGES.index) if stages else "none"


def run_policy(policy_dir: Path | None, task: str, seeds: list[int], max_steps: int, camera: str | None) -> list[dict]:
    """Every episode's stages; ``policy_dir`` None runs the scripted expert (on ``camera``, default the bench's)."""
    from apo_sim.env import SimEnv
    from apo_sim.episode import PolicyEpisode
    from apo_sim.expert import ScriptedExpert, task_progress

    if policy_dir is None:
        from apo_bench.settings import load_bench_settings

        policy, expert = None, ScriptedExpert(task)
        env = SimEnv(task, camera=camera or load_bench_settings("default").camera)
    else:
        from apo_sim.rollout import as_policy, camera_env_kwargs, policy_env_settings

        (policy, _), expert = as_policy(policy_dir), None
        image_size, use_state = policy_env_settings(policy)
        env = SimEnv(task, image_size=image_size, **camera_env_kwargs(policy, {"camera": camera} if camera else None))
    episodes = []
    started = time.monotonic()
    try:
        for i, seed in enumerate(seeds):
            ep = PolicyEpisode(env, seed, max_steps)
            if expert is not None:
                expert.reset()
            else:
                policy.reset()
            seen, peak, in_view_at_lift = [stage_of(env.task_state())], 0.0, None
            while not ep.done:
                if expert is not None:
                    ep.apply(expert.act(env.task_state()))
                else:
                    ep.apply(policy.predict(ep.policy_input(use_state)))
                state = env.task_state()
                seen.append(stage_of(state))
                peak = max(peak, float(task_progress(state).progress))
                if in_view_at_lift is None and seen[-1] in ("lifted", "over"):
                    goal = goal_point(state)  # only at the first lifted step: the rest need no goal
                    if goal is not None:
                        in_view_at_lift = in_camera_view(env, goal)
            record = ep.record()
            episodes.append({"seed": seed, "success": record.success, "steps": record.steps,
                             "furthest": furthest(seen), "final": seen[-1], "peak_progress": round(peak, 4),
                             "goal_in_view_at_lift": in_view_at_lift})
            print(f"[failure-modes] {policy_dir or 'expert'}: {i + 1}/{len(seeds)} seed {seed} furthest "
                  f"{episodes[-1]['furthest']} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    finally:
        env.close()
    return episodes


def view_line(episodes: list[dict]) -> str | None:
    """'k of n lifts' with the goal in view at lift-off, over the episodes that lifted (None: no such goal)."""
    lifts = [e["goal_in_view_at_lift"] for e in episodes if e.get("goal_in_view_at_lift") is not None]
    return f"{sum(lifts)} of {len(lifts)} lifts" if lifts else None


def summary(episodes: list[dict]) -> dict[str, int]:
    """Episodes per furthest stage (a success counts as 'success' whatever came before)."""
    counts = {s: 0 for s in STAGES}
    for e in episodes:
        counts["success" if e["success"] else e["furthest"]] += 1
    return counts


def plot(rows: dict[str, dict[str, int]], task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(rows), 4.2))
    names = list(rows)
    bottom = np.zeros(len(names))
    colours = plt.get_cmap("viridis")(np.linspace(0.05, 0.95, len(STAGES)))
    for stage, colour in zip(STAGES, colours, strict=True):
        values = np.array([rows[n][stage] for n in names], dtype=float)
        ax.bar(names, values, bottom=bottom, color=colour, label=stage)
        bottom += values
    ax.set_ylabel("evaluation episodes")
    ax.set_title(f"{task}: furthest stage reached")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policies", nargs="*", type=Path, help="policy directories")
    ap.add_argument("--expert", action="store_true", help="also run the scripted expert (row 'expert')")
    ap.add_argument("--task", default="Lift")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed-base", type=int, default=70000)
    ap.add_argument("--max-steps", type=int, default=None, help="default: the bench's limit for --task")
    ap.add_argument("--camera", default=None, help="default: the camera the policy was trained with")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/failure-modes"))
    a = ap.parse_args(argv)

    import torch

    from apo_bench.settings import load_bench_settings

    torch.set_num_threads(a.threads)
    max_steps = a.max_steps if a.max_steps is not None else load_bench_settings("default").episode_limit(a.task)
    seeds = list(range(a.seed_base, a.seed_base + a.episodes))
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.policies and not a.expert:
        print("failure_modes: give policy directories, --expert, or both", file=sys.stderr)
        return 2
    missing = [str(p) for p in a.policies if not p.is_dir()]
    if missing:
        print(f"failure_modes: not a policy directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows: dict[str, dict[str, int]] = {}
    views: dict[str, str | None] = {}
    for policy_dir in ([None] if a.expert else []) + list(a.policies):
        if policy_dir is None:
            name = "expert"
        else:
            name = policy_dir.name if policy_dir.name != "policy" else policy_dir.parent.name
        episodes = run_policy(policy_dir, a.task, seeds, max_steps, a.camera)
        rows[name], views[name] = summary(episodes), view_line(episodes)
        (a.out / f"{a.task}_{name}.json").write_text(json.dumps(
            {"policy": str(policy_dir or "scripted expert"), "task": a.task, "max_steps": max_steps, "seeds": seeds,
             "counts": rows[name], "goal_in_view_at_lift": views[name], "episodes": episodes}, indent=1))
    print(f"| policy ({a.task}, {len(seeds)} scenes from {a.seed_base}) | " + " | ".join(STAGES)
          + " | goal in view at lift-off |")
    print("|---" * (len(STAGES) + 2) + "|")
    for name, counts in rows.items():
        print(f"| {name} | " + " | ".join(str(counts[s]) for s in STAGES) + f" | {views[name] or '-'} |")
    plot(rows, a.task, a.out / f"{a.task}_failure_modes.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
