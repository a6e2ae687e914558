"""Decisions of the scripted operator (ROS-free): when to take over, when to hand back, when to start.

The operator stands in for a human supervisor in simulation. It sees what a human would judge by eye,
summarised by the simulator as task progress in [0, 1], the object's height and whether it is
grasped, one observation per simulator step. It takes over when the policy goes wrong:

- **stall**: the best progress has not improved by ``min_progress_delta`` for ``stall_steps`` steps
  (unless progress is already 1: a finished task is not stalled);
- **regress**: progress fell more than ``regress_threshold`` below the best seen while watching;
- **drop**: the object was grasped and is not any more (``detect_drop``);
- **away** (off by default): the policy's translation points away from the expert's for
  ``away_steps`` consecutive steps.

No trigger fires in the first ``grace_steps`` of an episode, within ``cooldown_steps`` of a handback,
after ``max_interventions`` in the episode, or while someone else (a real human) is driving. It hands
back after at least ``min_correction_steps`` once progress rose ``handback_progress_gain`` above its
level at the takeover, and in any case after ``max_correction_steps``. Baselines restart at handback.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from apo_intervention.config import OperatorConfig


class Phase(enum.Enum):
    IDLE = "idle"  # no episode
    WATCHING = "watching"
    CORRECTING = "correcting"


@dataclass
class OperatorObservation:
    progress: float
    object_height: float = 0.0
    grasped: bool = False
    # The policy's and the expert's latest actions (7-D), when known: used by the "away" trigger.
    policy_action: np.ndarray | None = None
    expert_action: np.ndarray | None = None
    # The arbiter reports a human driving although this operator is not correcting (a real person).
    other_human_driving: bool = False


@dataclass
class OperatorDecision:
    correcting: bool
    # The phase changed at this observation (takeover or handback).
    changed: bool = False
    reason: str = ""


class SupervisorLogic:
    def __init__(self, cfg: OperatorConfig):
        self.cfg = cfg
        self.phase = Phase.IDLE
        self.interventions = 0
        self.history: list[tuple[str, int, str]] = []  # (takeover|handback, episode step, reason)
        self._reset_episode()

    # --- episode life -----------------------------------------------------------------------------
    def _reset_episode(self) -> None:
        self.episode_steps = 0
        self.interventions = 0
        self._reset_watch(None, False)

    def _reset_watch(self, progress: float | None, grasped: bool) -> None:
        self._watch_steps = 0
        self._best = progress
        self._since_improvement = 0
        self._was_grasped = grasped
        self._away = 0
        self._correction_steps = 0
        self._takeover_progress = 0.0

    def episode_started(self) -> None:
        self._reset_episode()
        self.phase = Phase.WATCHING

    def episode_ended(self) -> OperatorDecision:
        was = self.phase == Phase.CORRECTING
        self.phase = Phase.IDLE
        return OperatorDecision(False, was, "episode ended")

    def stand_down(self, reason: str) -> OperatorDecision:
        """Stop correcting at once (e.g. e-stop); watching restarts from the next observation."""
        if self.phase != Phase.CORRECTING:
            return OperatorDecision(False)
        self.phase = Phase.WATCHING
        self._reset_watch(None, self._was_grasped)
        self.history.append(("handback", self.episode_steps, reason))
        return OperatorDecision(False, True, reason)

    @property
    def correcting(self) -> bool:
        return self.phase == Phase.CORRECTING

    # --- one step ---------------------------------------------------------------------------------
    def observe(self, obs: OperatorObservation) -> OperatorDecision:
        if self.phase == Phase.IDLE:
            return OperatorDecision(False)
        self.episode_steps += 1
        progress = float(obs.progress) if math.isfinite(obs.progress) else 0.0
        if self.phase == Phase.CORRECTING:
            return self._observe_correcting(progress, bool(obs.grasped))
        return self._observe_watching(progress, obs)

    def _observe_correcting(self, progress: float, grasped: bool) -> OperatorDecision:
        self._correction_steps += 1
        reason = ""
        target = min(self._takeover_progress + self.cfg.handback_progress_gain, 1.0)
        if self._correction_steps >= self.cfg.min_correction_steps and progress >= target:
            reason = f"progress regained ({self._takeover_progress:.2f} -> {progress:.2f})"
        elif self._correction_steps >= self.cfg.max_correction_steps:
            reason = f"max_correction_steps={self.cfg.max_correction_steps} reached"
        if not reason:
            return OperatorDecision(True)
        self.phase = Phase.WATCHING
        self._reset_watch(progress, grasped)
        self.history.append(("handback", self.episode_steps, reason))
        return OperatorDecision(False, True, reason)

    def _observe_watching(self, progress: float, obs: OperatorObservation) -> OperatorDecision:
        cfg = self.cfg
        self._watch_steps += 1
        grasped = bool(obs.grasped)
        if obs.other_human_driving:  # someone else is correcting: judge the policy afresh afterwards
            self._reset_watch(progress, grasped)
            return OperatorDecision(False)
        triggers = []
        if self._best is None or progress > self._best + cfg.min_progress_delta:
            self._best = progress if self._best is None else max(self._best, progress)
            self._since_improvement = 0
        else:
            self._since_improvement += 1
            if progress < self._best - cfg.regress_threshold:
                triggers.append(f"regress: progress {progress:.2f} < best {self._best:.2f} - {cfg.regress_threshold}")
        if self._since_improvement >= cfg.stall_steps and progress < 1.0:  # done is not stalled
            triggers.append(f"stall: no progress for {self._since_improvement} steps")
        if cfg.detect_drop and self._was_grasped and not grasped:
            triggers.append(f"drop: object released at height {obs.object_height:.3f}")
        self._was_grasped = grasped
        if cfg.away_steps > 0:
            self._away = self._away + 1 if _points_away(obs, cfg.away_cosine) else 0
            if self._away >= cfg.away_steps:
                triggers.append(f"away: policy moving away from the goal for {self._away} steps")
        allowed = (self.episode_steps > cfg.grace_steps
                   and (self.interventions == 0 or self._watch_steps > cfg.cooldown_steps)
                   and (cfg.max_interventions == 0 or self.interventions < cfg.max_interventions))
        if not triggers or not allowed:
            return OperatorDecision(False)
        self.phase = Phase.CORRECTING
        self.interventions += 1
        self._correction_steps = 0
        self._takeover_progress = progress
        reason = "; ".join(triggers)
        self.history.append(("takeover", self.episode_steps, reason))
        return OperatorDecision(True, True, reason)


def _points_away(obs: OperatorObservation, threshold: float) -> bool:
    if obs.policy_action is None or obs.expert_action is None:
        return False
    p = np.asarray(obs.policy_action, dtype=np.float64)[:3]
    e = np.asarray(obs.expert_action, dtype=np.float64)[:3]
    np_, ne = np.linalg.norm(p), np.linalg.norm(e)
    if not (np.isfinite(np_) and np.isfinite(ne)) or np_ < 1e-3 or ne < 1e-3:
        return False
    return float(p @ e / (np_ * ne)) < threshold


class EpisodeScheduler:
    """When the operator presses start: episodes run back to back, ``pause`` seconds apart.

    Only a START that follows one of its own presses counts towards ``num_episodes`` (latched event
    history from before the operator joined does not). An unanswered press is repeated after
    ``retry_timeout`` seconds.
    """

    def __init__(self, num_episodes: int, pause: float, retry_timeout: float, autostart: bool = True):
        self.num_episodes = num_episodes
        self.pause = pause
        self.retry_timeout = retry_timeout
        self.autostart = autostart
        self.episode_active = False
        self.started = 0
        self._last_end = -math.inf
        self._pressed_at: float | None = None

    @property
    def done(self) -> bool:
        return self.num_episodes > 0 and self.started >= self.num_episodes and not self.episode_active

    def on_start(self, now: float) -> None:
        self.episode_active = True
        if self._pressed_at is not None:
            self.started += 1
            self._pressed_at = None

    def on_end(self, now: float) -> None:
        self.episode_active = False
        self._last_end = now

    def should_press_start(self, now: float) -> bool:
        """True when the start button should be pressed now (the press is recorded)."""
        if not self.autostart or self.episode_active:
            return False
        if self.num_episodes > 0 and self.started >= self.num_episodes:
            return False
        if now - self._last_end < self.pause:
            return False
        if self._pressed_at is not None and now - self._pressed_at < self.retry_timeout:
            return False
        self._pressed_at = now
        return True
