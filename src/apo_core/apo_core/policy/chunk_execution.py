"""Executing action chunks one control step at a time: receding horizon, optional temporal ensembling.

A chunked policy predicts H actions at once but the arbiter, labels and recorder take one action per
control step. :class:`ChunkExecutor` holds the chunks planned so far and says, per step, whether a
new chunk must be planned and which single action to execute:

- **receding horizon**: a new chunk is planned at the first step of an episode and then every
  ``replan_every`` steps (1 <= replan_every <= H; default H // 2), so the policy looks again at the
  scene before its plan runs out; between plans the newest chunk's next action is executed.
- **temporal ensembling** (``ensemble_decay`` not None): the executed action is the weighted mean
  of what every chunk still covering this step planned for it, with weight ``exp(-decay * age)``,
  ``age`` = steps since that chunk was planned (0 for the newest). ``decay = 0`` averages them
  equally; larger values trust fresher plans more. It smooths the jumps between consecutive plans
  (ACT, Zhao et al. 2023, weights the other way round; fresher first suits a re-planning policy).

Every step is done in normalised action space, so a mean of in-range actions stays in range.
State is kept per *slot* (one slot per environment when several are driven at once); ``reset``
starts an episode: a slot with no chunk plans at its next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Plan:
    chunk: np.ndarray  # (H, D) normalised
    age: int = 0  # control steps executed since it was planned


@dataclass
class _SlotState:
    plans: list[_Plan] = field(default_factory=list)  # oldest first
    since_plan: int = 0  # steps executed since the newest plan


def default_replan_every(horizon: int) -> int:
    return max(1, horizon // 2)


def check_execution(horizon: int, replan_every: int, ensemble_decay: float | None) -> None:
    """Refuse settings that would run past a chunk or weigh plans with a non-finite weight."""
    if isinstance(replan_every, bool) or int(replan_every) != replan_every or not 1 <= replan_every <= horizon:
        raise ValueError(f"replan_every must be an integer in [1, {horizon}] (the chunk horizon), got {replan_every!r}")
    if ensemble_decay is not None and not (np.isfinite(ensemble_decay) and ensemble_decay >= 0):
        raise ValueError(f"ensemble_decay must be a finite number >= 0 (or None: no ensembling), got {ensemble_decay!r}")


class ChunkExecutor:
    """Per-slot chunk state of a chunked policy (see the module docstring)."""

    def __init__(self, horizon: int, replan_every: int | None = None, ensemble_decay: float | None = None):
        replan_every = default_replan_every(horizon) if replan_every is None else replan_every
        check_execution(horizon, replan_every, ensemble_decay)
        self.horizon = int(horizon)
        self.replan_every = int(replan_every)
        self.ensemble_decay = None if ensemble_decay is None else float(ensemble_decay)
        self._slots: dict[int, _SlotState] = {}

    def reset(self, slot: int | None = None) -> None:
        """Forget the chunks of ``slot`` (None: of every slot); its next step plans anew."""
        if slot is None:
            self._slots.clear()
        else:
            self._slots.pop(int(slot), None)

    def needs_plan(self, slot: int = 0) -> bool:
        st = self._slots.get(int(slot))
        return st is None or not st.plans or st.since_plan >= self.replan_every

    def add_plan(self, slot: int, chunk: np.ndarray) -> None:
        """A chunk planned from this step's observation (normalised, (H, D))."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[0] != self.horizon:
            raise ValueError(f"a plan must be a ({self.horizon}, D) chunk, got shape {chunk.shape}")
        st = self._slots.setdefault(int(slot), _SlotState())
        st.plans.append(_Plan(chunk))
        st.since_plan = 0
        # Without ensembling only the newest plan is ever read.
        st.plans = [p for p in st.plans if p.age < self.horizon] if self.ensemble_decay is not None else st.plans[-1:]

    def next_action(self, slot: int = 0) -> np.ndarray:
        """This step's normalised action, (D,); advances the slot by one step."""
        st = self._slots.get(int(slot))
        if st is None or not st.plans:
            raise RuntimeError(f"slot {slot} has no plan: call add_plan when needs_plan is true")
        if st.since_plan >= self.horizon:
            raise RuntimeError(f"slot {slot} ran past its chunk of {self.horizon} steps without a new plan")
        if self.ensemble_decay is None:
            action = st.plans[-1].chunk[st.plans[-1].age]
        else:
            live = [p for p in st.plans if p.age < self.horizon]
            w = np.exp(-self.ensemble_decay * np.array([p.age for p in live], dtype=np.float64))
            action = (w[:, None] * np.stack([p.chunk[p.age] for p in live])).sum(axis=0) / w.sum()
        for p in st.plans:
            p.age += 1
        st.since_plan += 1
        return np.clip(action, -1.0, 1.0)
