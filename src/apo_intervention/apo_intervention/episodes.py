"""Episode bookkeeping of the arbiter (ROS-free): ids, step indices, outcome and end transitions.

Life of an episode: ``START`` -> steps 0, 1, 2, ... (contiguous, one per control tick) -> exactly one
outcome event (``SUCCESS``, ``FAILURE`` or ``ABORT``) -> ``END``. Outcomes come from the operator
(service / joystick), from the simulator's ``task_success`` (if ``end_on_success``), or from the step
limit (``max_episode_steps`` steps executed -> ``timeout_outcome``). Only one episode is active at a
time: START while one is active is refused (end it first), so an episode can never be silently cut.

``task_success`` only counts once the driver has reported ``False`` during the episode: a simulator
still showing the previous episode's success before it resets must not end the new one at step 0.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from apo_core.bag_contract import OUTCOME_EVENTS, EpisodeEventCode

# apo_interfaces/EpisodeEvent.EVENT_* as an enum (START, END, SUCCESS, FAILURE, ABORT), from the bag contract.
Event = EpisodeEventCode

OUTCOMES = tuple(Event(e) for e in OUTCOME_EVENTS)  # SUCCESS, FAILURE, ABORT: the events that state an outcome


@dataclass(frozen=True)
class EpisodeEventData:
    episode_id: str
    event: Event
    instruction: str
    task: str
    policy_version: str
    reason: str


@dataclass
class _Episode:
    episode_id: str
    instruction: str
    task: str
    policy_version: str  # provisional: the version last seen before the episode started
    steps: int = 0
    saw_not_success: bool = False
    # Policy-executed steps per version. The version last seen at START can be stale (a new model is
    # swapped in and its first action arrives after the episode started), so the outcome and END
    # events state the version most of the episode's policy steps ran instead.
    policy_steps: Counter = field(default_factory=Counter)

    def version(self) -> str:
        return self.policy_steps.most_common(1)[0][0] if self.policy_steps else self.policy_version


def make_id_factory(prefix: str = "ep", clock: Callable[[], float] = time.time) -> Callable[[], str]:
    """Ids like ``ep-20250101-120000-0003-9f2c1a7b``: sortable by time, unique across restarts.

    The random suffix keeps two arbiters (or a restart within one second) from colliding; the
    characters are safe in file and bag names.
    """
    counter = 0

    def new_id() -> str:
        nonlocal counter
        counter += 1
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock()))
        return f"{prefix}-{stamp}-{counter:04d}-{secrets.token_hex(4)}"

    return new_id


class EpisodeManager:
    def __init__(self, *, task: str, instruction: str, max_steps: int = 0, end_on_success: bool = True,
                 timeout_outcome: Event = Event.FAILURE, id_factory: Callable[[], str] | None = None):
        if timeout_outcome not in OUTCOMES:
            raise ValueError(f"timeout_outcome must be an outcome event, got {timeout_outcome!r}")
        self.task = task
        self.default_instruction = instruction
        self.max_steps = max_steps
        self.end_on_success = end_on_success
        self.timeout_outcome = timeout_outcome
        self._new_id = id_factory or make_id_factory()
        self._used: set[str] = set()
        self._current: _Episode | None = None
        self.started = 0
        self.outcomes = {e.name: 0 for e in OUTCOMES}

    @property
    def active(self) -> bool:
        return self._current is not None

    @property
    def episode_id(self) -> str:
        return self._current.episode_id if self._current else ""

    @property
    def steps(self) -> int:
        """Steps executed in the current episode (the next step's index)."""
        return self._current.steps if self._current else 0

    @property
    def instruction(self) -> str:
        return self._current.instruction if self._current else self.default_instruction

    def start(self, instruction: str = "", policy_version: str = "",
              reason: str = "") -> tuple[bool, str, list[EpisodeEventData]]:
        """Begin an episode; returns (ok, message, events)."""
        if self._current is not None:
            return False, f"episode {self._current.episode_id} is still active: end it first", []
        episode_id = self._new_id()
        while episode_id in self._used:  # cannot happen with the default factory; cheap to make sure
            episode_id = self._new_id()
        self._used.add(episode_id)
        self._current = _Episode(episode_id, instruction or self.default_instruction, self.task, policy_version)
        self.started += 1
        return True, f"started {episode_id}", [self._event(Event.START, reason)]

    def finish(self, outcome: Event, reason: str = "") -> tuple[bool, str, list[EpisodeEventData]]:
        """End the current episode with ``outcome``; emits the outcome event then END."""
        if outcome not in OUTCOMES:
            return False, f"{outcome!r} is not an outcome (SUCCESS, FAILURE, ABORT)", []
        if self._current is None:
            return False, f"no active episode to end with {outcome.name}", []
        events = [self._event(outcome, reason), self._event(Event.END, reason)]
        done, steps = self._current.episode_id, self._current.steps
        self.outcomes[outcome.name] += 1
        self._current = None
        return True, f"{done}: {outcome.name.lower()} after {steps} steps", events

    def step(self, policy_version: str = "") -> int | None:
        """Account one executed step; returns its index, or None outside an episode.

        ``policy_version``: the version of the policy action this step executed ("" for a human or
        hold step); the episode's stated version is the one most of its policy steps ran.
        """
        if self._current is None:
            return None
        index = self._current.steps
        self._current.steps += 1
        if policy_version:
            self._current.policy_steps[policy_version] += 1
        return index

    def check_limit(self) -> list[EpisodeEventData]:
        """Call after each step: ends the episode once ``max_steps`` steps were executed."""
        if self._current is None or self.max_steps <= 0 or self._current.steps < self.max_steps:
            return []
        return self.finish(self.timeout_outcome, f"timeout: reached max_episode_steps={self.max_steps}")[2]

    def on_task_success(self, success: bool) -> list[EpisodeEventData]:
        """Feed the driver's task_success flag; may end the episode with SUCCESS."""
        if self._current is None:
            return []
        if not success:
            self._current.saw_not_success = True
            return []
        if self.end_on_success and self._current.saw_not_success:
            return self.finish(Event.SUCCESS, "simulator: task_success")[2]
        return []

    def set_policy_version(self, version: str) -> None:
        """The version recorded for the current episode is the first one seen during it."""
        if self._current is not None and not self._current.policy_version and version:
            self._current.policy_version = version

    def _event(self, event: Event, reason: str) -> EpisodeEventData:
        ep = self._current
        return EpisodeEventData(ep.episode_id, event, ep.instruction, ep.task, ep.version(), reason)
