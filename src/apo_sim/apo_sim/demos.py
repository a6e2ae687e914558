"""Expert demonstrations for behaviour cloning: roll out the scripted expert, store them in the schema.

Each successful rollout becomes one episode of the robomimic-style HDF5 file of
:mod:`apo_core.dataset`, written with :func:`apo_core.dataset.append_episode`, so the trainer sees
the same schema as for converted interactive bags:

- ``source="expert"``, ``outcome`` from the simulator's success check;
- ``live_labels`` all 2 (``Label.HUMAN``): the scripted expert stands in for a human operator, so its
  steps are desirable human-driven steps, exactly as a teleoperated demonstration would be labelled.
  They contain no takeover, so the K-window never turns any of them into 0;
- ``obs/image`` upright RGB, ``obs/state`` the 9-D proprio (eef pos, eef quat xyzw, finger qpos);
- ``actions`` the raw 7-D OSC_POSE inputs actually executed.

``action_stats.json`` (:class:`apo_core.normalization.ActionStats`, 1st/99th percentiles of every
action stored in the file; the gripper dimension is left out of the normalisation mask since it is
already -1/+1) is rewritten next to the HDF5 file after each run.

Episodes can start from a perturbed state (``random_steps`` random actions, not recorded) so the
demonstrations also show recoveries. Episode ids are ``expert_<task>_<seed>``; a rerun with the same
seeds skips episodes already stored, so an interrupted collection can simply be restarted.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apo_core.dataset import Episode, append_episode, episode_ids
from apo_core.dataset_ops import compute_action_stats
from apo_core.errors import ApoError
from apo_core.labels import Label
from apo_core.normalization import STATS_FILENAME
from apo_sim.env import DEFAULT_CAMERA, DEFAULT_CONTROL_FREQ, TASKS, SimEnv
from apo_sim.expert import ScriptedExpert

# Per-task episode budgets (control steps at 20 Hz), above the expert's longest from-reset rollout in
# bench/bench_expert.py (seeds 0..49: Lift 42, Stack 184, PickPlaceCan 128; after 30 random steps the
# longest successes were 171, 246 and 168).
DEFAULT_MAX_STEPS = {"Lift": 150, "Stack": 300, "PickPlaceCan": 250}
HOLD_STEPS_AFTER_SUCCESS = 3  # a few steps of "keep it there" so a cloned policy learns to stop


@dataclass
class Rollout:
    images: list
    states: list
    actions: list
    success: bool
    steps_to_success: int | None


def rollout_expert(env: SimEnv, expert: ScriptedExpert, max_steps: int, seed: int | None = None,
                   random_steps: int = 0, hold_steps: int = HOLD_STEPS_AFTER_SUCCESS,
                   render: bool = True) -> Rollout:
    """Reset ``env`` (optionally perturb it with unrecorded random actions) and let the expert act."""
    obs = env.reset(seed=seed, render=render)
    expert.reset()
    rng = np.random.default_rng(None if seed is None else seed + 7919)
    for _ in range(random_steps):
        obs = env.step(rng.uniform(-1.0, 1.0, env.action_dim), render=render)
    images, states, actions = [], [], []
    first_success = None
    for t in range(max_steps):
        state = env.task_state()
        if state.success and first_success is None:
            first_success = t
        if first_success is not None and t - first_success >= hold_steps:
            break
        action = expert.act(state)
        if render:
            images.append(obs.image)
        states.append(obs.proprio.astype(np.float32))
        actions.append(action)
        obs = env.step(action, render=render)
    return Rollout(images, states, actions, env.success(), first_success)


def rollout_to_episode(rollout: Rollout, env: SimEnv, episode_id: str, attrs: dict | None = None) -> Episode:
    t = len(rollout.actions)
    return Episode(
        episode_id=episode_id, instruction=env.instruction, task=env.task,
        images=np.stack(rollout.images), actions=np.stack(rollout.actions), states=np.stack(rollout.states),
        live_labels=np.full(t, int(Label.HUMAN), dtype=np.uint8),
        timestamps=np.arange(t, dtype=np.float64) / env.control_freq,
        outcome="success" if rollout.success else "failure", source="expert", attrs=dict(attrs or {}),
    )


@dataclass
class CollectResult:
    path: Path
    stats_path: Path | None
    written: int
    skipped_existing: int
    failed: int
    steps: int
    seconds: float


def collect_demos(output, task: str = "Lift", episodes: int = 10, seed: int = 0, image_size: int = 128,
                  camera: str = DEFAULT_CAMERA, control_freq: float = DEFAULT_CONTROL_FREQ,
                  max_steps: int | None = None, random_steps: int = 0, keep_failures: bool = False,
                  image_compression: str | None = None, progress: bool = True) -> CollectResult:
    """Roll out the expert for ``episodes`` seeds (seed, seed+1, ...) and append them to ``output``."""
    from tqdm import tqdm

    output = Path(output)
    max_steps = max_steps or DEFAULT_MAX_STEPS.get(task, 300)
    started = time.monotonic()
    existing = set(episode_ids(output))
    written = failed = steps = 0
    todo = [s for s in range(seed, seed + episodes) if f"expert_{task}_{s}" not in existing]
    skipped = episodes - len(todo)
    env = SimEnv(task, camera=camera, image_size=image_size, control_freq=control_freq, seed=seed) if todo else None
    expert = ScriptedExpert(task)
    try:
        bar = tqdm(todo, desc=f"{task} demos", unit="ep", disable=not progress, file=sys.stderr)
        for ep_seed in bar:
            episode_id = f"expert_{task}_{ep_seed}"
            rollout = rollout_expert(env, expert, max_steps, seed=ep_seed, random_steps=random_steps)
            if not rollout.success:
                failed += 1
                if not keep_failures:
                    continue
            attrs = {"seed": ep_seed, "robot": env.robot, "camera": camera, "image_size": image_size,
                     "control_freq": control_freq, "random_steps": random_steps}
            append_episode(output, rollout_to_episode(rollout, env, episode_id, attrs),
                           image_compression=image_compression)
            written += 1
            steps += len(rollout.actions)
            bar.set_postfix(written=written, failed=failed, steps=steps)
    finally:
        if env is not None:
            env.close()
    stats_path = None
    if episode_ids(output):
        stats_path = compute_action_stats(output)[0].save(output.parent / STATS_FILENAME)
    return CollectResult(output, stats_path, written, skipped, failed, steps, time.monotonic() - started)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apo-collect-demos", description=__doc__.split("\n")[0])
    p.add_argument("--output", "-o", required=True, help="HDF5 dataset file (created or appended to)")
    p.add_argument("--task", default="Lift", choices=sorted(TASKS))
    p.add_argument("--episodes", "-n", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="first episode seed (episode i uses seed+i)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--camera", default=DEFAULT_CAMERA)
    p.add_argument("--control-freq", type=float, default=DEFAULT_CONTROL_FREQ)
    budgets = ", ".join(f"{t} {n}" for t, n in DEFAULT_MAX_STEPS.items())
    p.add_argument("--max-steps", type=int, default=None, help=f"per episode (default: {budgets})")
    p.add_argument("--random-steps", type=int, default=0,
                   help="unrecorded random actions before the expert takes over (recovery demonstrations)")
    p.add_argument("--keep-failures", action="store_true", help="also store episodes the expert failed")
    p.add_argument("--compression", choices=["gzip", "lzf"], default=None, help="HDF5 image compression")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1:
        print("apo-collect-demos: --episodes must be at least 1", file=sys.stderr)
        return 2
    try:
        result = collect_demos(
            args.output, task=args.task, episodes=args.episodes, seed=args.seed, image_size=args.image_size,
            camera=args.camera, control_freq=args.control_freq, max_steps=args.max_steps,
            random_steps=args.random_steps, keep_failures=args.keep_failures,
            image_compression=args.compression, progress=not args.quiet,
        )
    except ApoError as exc:
        print(f"apo-collect-demos: {exc}", file=sys.stderr)
        return 2
    print(f"{result.path}: wrote {result.written} episode(s) ({result.steps} steps), "
          f"{result.failed} expert failure(s), {result.skipped_existing} already present, "
          f"{result.seconds:.1f} s; action statistics: {result.stats_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
