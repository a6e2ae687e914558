"""Checks of what a retrain request (or the retrain YAML) asks for, against the service's limits.

A request arrives from anyone on the ROS domain, so every field is checked before a job exists:
episode names are plain names of bags inside ``bags_dir`` (no traversal, no symlink out), the loss is
a known one, and the numbers are bounded (a 2^31-1 step job would hold the trainer for ever). Each
refusal names the request field and the limit. ROS-free: the manager and the settings use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from apo_core.errors import ApoError
from apo_core.names import child_path
from apo_trainer.objectives import LOSS_NAMES as LOSSES  # the objectives registry's keys

MAX_STEPS = 1_000_000
MAX_K = 1000
MAX_EPISODES = 10_000


class RetrainRequestError(ApoError, ValueError):
    """A retrain request that is refused before any job starts; the message names the field."""


@dataclass
class CheckedRequest:
    loss: str
    steps: int
    k: int
    episodes: list[str] | None  # None: every new episode


def shown(value, limit: int = 40) -> str:
    """``repr`` of a request value, cut so that a huge value cannot flood a reply or a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_loss(loss, field: str = "loss") -> str:
    if loss not in LOSSES:
        raise RetrainRequestError(f"unknown {field} {shown(loss)} (choose one of {', '.join(LOSSES)})")
    return loss


def check_steps(steps, field: str = "steps", allow_default: bool = True) -> int:
    low = 0 if allow_default else 1
    if isinstance(steps, bool) or not isinstance(steps, int) or not low <= steps <= MAX_STEPS:
        default = " (0 = configured default)" if allow_default else ""
        raise RetrainRequestError(f"{field} must be in [{low}, {MAX_STEPS}]{default}, got {shown(steps)}")
    return steps


def check_k(k, field: str = "k_window", allow_default: bool = True) -> int:
    ok = isinstance(k, int) and not isinstance(k, bool) and (0 <= k <= MAX_K or (allow_default and k == -1))
    if not ok:
        default = "-1 (configured default) or " if allow_default else ""
        raise RetrainRequestError(f"{field} must be {default}in [0, {MAX_K}], got {shown(k)}")
    return k


def check_episodes(bags_dir, episodes, field: str = "episodes") -> list[str]:
    """Sorted unique episode names, each an existing bag directory inside ``bags_dir``."""
    if len(episodes) > MAX_EPISODES:
        raise RetrainRequestError(f"{field}: {len(episodes)} entries, at most {MAX_EPISODES} per request")
    bags = Path(bags_dir)
    missing = []
    for name in episodes:
        # InvalidNameError (an ApoError) names the entry: not a plain name, too long, or resolving outside
        path = child_path(bags, name, f"{field} entry")
        if not path.is_dir():
            missing.append(name)
    if missing:
        listed = ", ".join(shown(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RetrainRequestError(f"{field}: episode bag(s) not found in {bags}: {listed}")
    return sorted(set(episodes))


def check_request(request, bags_dir, default_loss: str, default_steps: int, default_k: int) -> CheckedRequest:
    """The request's fields resolved against the defaults; RetrainRequestError/InvalidNameError if refused."""
    loss = check_loss(request.loss or default_loss)
    steps = check_steps(request.steps) or default_steps
    k = check_k(request.k)
    episodes = check_episodes(bags_dir, list(request.episodes)) if request.episodes else None
    return CheckedRequest(loss=loss, steps=steps, k=default_k if k == -1 else k, episodes=episodes)
