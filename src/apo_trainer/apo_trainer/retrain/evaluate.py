"""Candidate evaluation for promotion: held-out action L1 and (optionally) simulated success rate.

The simulated success rate comes from an evaluator the caller hands to :class:`RetrainManager`
(the retrain node passes ``apo_retrain.sim_gate.sim_success_rate``): the trainer installs on a GPU box
with no simulator, so it never imports one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from apo_core.dataset import read_episode, sorted_episode_names
from apo_core.labels import Label
from apo_core.policy import load_policy


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch CPU threads (0: leave torch's setting), then restore it."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def find_trained_policy(output_dir: Path) -> Path:
    """The policy directory a training run wrote (the trainer saves it under ``policy/``)."""
    for candidate in (output_dir / "policy", output_dir / "final", output_dir):
        if (candidate / "apo_policy.json").is_file():
            return candidate
    raise FileNotFoundError(f"training finished but wrote no policy: looked for {output_dir / 'policy'}/apo_policy.json")


def last_logged_step(output_dir: Path) -> int | None:
    """Last optimiser step in the trainer's metrics log (for progress), or None."""
    path = output_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        for line in reversed(lines):
            try:
                return int(json.loads(line)["step"])
            except (ValueError, KeyError, json.JSONDecodeError):
                continue
    except OSError:
        return None
    return None


def heldout_samples(path: Path, k: int, max_samples: int = 512, horizon: int | None = None):
    """Desirable driven steps (autonomous and human) of the held-out episodes; with ``horizon`` H each
    step's action is the (H, D) chunk a chunked policy is scored on (``apo_trainer.data.chunk_steps``:
    the next H steps not in HOLD / E-STOP, the last repeated)."""
    import h5py

    from apo_trainer.data import DROPPED_MODES, chunk_steps

    images, instructions, states, actions = [], [], [], []
    with h5py.File(path, "r") as f:
        names = sorted_episode_names(f)
    for name in names:
        ep = read_episode(path, name)
        labels = ep.labels(k)
        keep = np.isin(labels, [Label.AUTONOMOUS, Label.HUMAN]) & np.isin(ep.modes, [0, 1])
        rows = chunk_steps(~np.isin(ep.modes, DROPPED_MODES), horizon) if horizon is not None else None
        for i in np.flatnonzero(keep):
            images.append(ep.images[i])
            instructions.append(ep.instruction)
            states.append(ep.states[i])
            actions.append(ep.actions[i] if rows is None else ep.actions[rows[i]])
    if len(actions) > max_samples:
        idx = np.random.default_rng(0).choice(len(actions), max_samples, replace=False)
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        images, instructions, states, actions = pick(images), pick(instructions), pick(states), pick(actions)
    return images, instructions, states, actions


@torch.no_grad()
def mean_l1(policy_dir: Path, samples, batch_size: int = 32) -> float:
    images, instructions, states, actions = samples
    policy = load_policy(policy_dir)
    use_state = getattr(getattr(policy, "config", None), "state_dim", 0) > 0
    total, n = 0.0, 0
    for s in range(0, len(actions), batch_size):
        sl = slice(s, s + batch_size)
        batch = policy.encode_batch(np.stack(images[sl]), instructions[sl],
                                    np.stack(states[sl]) if use_state else None, np.stack(actions[sl]))
        m = policy.forward_batch(batch)
        total += float(m.l1.sum())
        n += len(m.l1)
    return total / max(n, 1)


def compare_heldout_l1(base_dir: Path, candidate_dir: Path, heldout: Path, k: int) -> tuple[float, float]:
    from apo_core.policy import read_policy_meta

    horizons = [read_policy_meta(d).get("horizon") for d in (base_dir, candidate_dir)]
    if horizons[0] != horizons[1]:
        raise ValueError(f"cannot compare held-out L1 of a policy predicting chunks of {horizons[0]} with one "
                         f"predicting chunks of {horizons[1]} (None: one action per step)")
    samples = heldout_samples(heldout, k, horizon=horizons[0])
    if not samples[3]:
        raise ValueError(f"{heldout} holds no desirable steps to evaluate on")
    return mean_l1(base_dir, samples), mean_l1(candidate_dir, samples)


# evaluator(policy_dir, *, task, episodes, seed, max_steps) -> success rate in [0, 1]: both versions are
# rolled out on the same seeds (max_steps None: the task's default episode limit).
SuccessRateEvaluator = Callable[..., float]


def compare_success_rates(base_dir: Path, candidate_dir: Path, ev,
                          evaluator: SuccessRateEvaluator) -> tuple[float, float]:
    kwargs = dict(task=ev.sim_task, episodes=ev.sim_episodes, seed=ev.sim_seed, max_steps=ev.sim_max_steps or None)
    return (checked_rate(evaluator(base_dir, **kwargs), evaluator),
            checked_rate(evaluator(candidate_dir, **kwargs), evaluator))


def checked_rate(rate, evaluator) -> float:
    """A success rate the gate can compare; anything else is the evaluator's bug, named as such."""
    name = getattr(evaluator, "__qualname__", repr(evaluator))
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or not 0 <= rate <= 1:
        raise ValueError(f"the simulator evaluator {name} returned {rate!r}, not a success rate in [0, 1]")
    return float(rate)


def promotion_decision(gate: str, ev, heldout_l1: tuple[float, float] | None = None,
                       success_rate: tuple[float, float] | None = None) -> tuple[bool, str]:
    """(promote, why) from the measured (deployed, candidate) figures under ``gate``.

    heldout_l1: candidate L1 <= ev.max_l1_ratio x deployed L1 (no held-out episodes yet: nothing to
    compare, promoted); sim_success_rate: candidate rate >= ev.min_success_ratio x deployed rate; both:
    each that was measured. Figures outside the gate are reported by the job but decide nothing.
    """
    checks: list[tuple[bool, str]] = []
    if gate in ("heldout_l1", "both"):
        if heldout_l1 is None:
            checks.append((True, "no held-out episodes to compare the held-out action L1 on"))
        else:
            base, cand = heldout_l1
            ok = cand <= ev.max_l1_ratio * base
            checks.append((ok, f"held-out action L1 {cand:.4f} {'<=' if ok else '>'} {ev.max_l1_ratio} x deployed "
                               f"{base:.4f}"))
    if gate in ("sim_success_rate", "both"):
        if success_rate is None:
            raise ValueError(f"the {gate} gate needs the simulated success rates")
        base, cand = success_rate
        ok = cand >= ev.min_success_ratio * base
        checks.append((ok, f"simulated success rate {cand:.2f} {'>=' if ok else '<'} {ev.min_success_ratio} x "
                           f"deployed {base:.2f} ({ev.sim_task}, {ev.sim_episodes} episodes)"))
    if not checks:
        raise ValueError(f"unknown promotion gate {gate!r}")
    failed = [why for ok, why in checks if not ok]
    return not failed, f"gate {gate}: " + "; ".join(failed or [why for _, why in checks])
