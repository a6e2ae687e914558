"""The arbiter's decisions without ROS: mux + episodes + the labelled step of each executed command.

:class:`ArbiterCore` is what the arbiter node and the in-process (lockstep) deployment of the
benchmark both run, so a step is labelled, an episode is started and ended, and a takeover is
decided by one piece of code whether messages arrive over DDS or in a loop. Callers pass ``now``
(any monotonic clock: the node's, or simulated time), and publish every :class:`Tick` they get back:
one command each, plus its labelled step inside an episode.

When a command is executed (``cfg.publish_mode``):

- ``tick``: :meth:`ArbiterCore.control_tick` executes one every control period (fixed rate);
- ``event``: :meth:`ArbiterCore.on_input` executes one as soon as a new action of the input that wins
  the mux arrives, unless the previous command is younger than ``1 / max_rate``: then it is pending,
  and :meth:`ArbiterCore.flush` (called at :meth:`ArbiterCore.pending_due`) executes the newest action
  then. :meth:`ArbiterCore.control_tick` is the watchdog: hold and e-stop commands every period (a
  stale input, a released deadman, an e-stop), and an overdue pending command.

Either way a command and its step come out of the same :meth:`ArbiterCore.tick`, so labels, step
indices, the K-window and the recorder's alignment do not depend on the mode.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from apo_intervention.config import ArbiterConfig
from apo_intervention.episodes import EpisodeEventData, EpisodeManager, Event, make_id_factory
from apo_intervention.mux import ActionMux, MuxDecision, MuxInput
from apo_intervention.validation import ActionValidator, Checked

POLICY, TELEOP = "policy", "teleop"
# A START's instruction goes into every episode event, the bag metadata and the policy's prompt.
MAX_INSTRUCTION_CHARS = 1000


def instruction_problem(text: str) -> str:
    """Why ``text`` cannot be an episode instruction ("" if it can; "" itself means the default)."""
    if len(text) > MAX_INSTRUCTION_CHARS:
        return f"instruction is {len(text)} characters long (at most {MAX_INSTRUCTION_CHARS})"
    bad = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        return f"instruction contains the control character {bad!r}: use plain text on one line"
    if text and not text.strip():
        return "instruction is blank (send '' for the configured instruction)"
    return ""


@dataclass(frozen=True)
class StepRecord:
    """One executed control step of an episode (what the node publishes as LabelledStep)."""

    episode_id: str
    step_index: int
    executed_action: np.ndarray
    policy_action: np.ndarray | None  # the policy's fresh proposal at this tick, None if it had none
    policy_version: str
    label: int  # live label c_t: 2 human, 1 otherwise (hold and e-stop included, with their mode)
    mode: int


@dataclass
class Tick:
    decision: MuxDecision
    step: StepRecord | None = None  # None outside an episode
    events: list[EpisodeEventData] = field(default_factory=list)  # e.g. the step limit ended it


class ArbiterCore:
    def __init__(self, cfg: ArbiterConfig, id_factory: Callable[[], str] | None = None):
        self.cfg = cfg
        self.mux = ActionMux(
            [MuxInput(POLICY, cfg.policy.priority, cfg.policy.timeout, human=False),
             MuxInput(TELEOP, cfg.teleop.priority, cfg.teleop.timeout, human=True)],
            ActionValidator(cfg.action_low, cfg.action_high), gripper_index=cfg.gripper_index,
            hold_gripper=cfg.hold_gripper, hold_gripper_value=cfg.hold_gripper_value)
        self.episodes = EpisodeManager(
            task=cfg.task, instruction=cfg.effective_instruction(), max_steps=cfg.effective_max_episode_steps(),
            end_on_success=cfg.end_on_success, timeout_outcome=Event[cfg.timeout_outcome.upper()],
            id_factory=id_factory or make_id_factory(cfg.episode_id_prefix))
        self.policy_version = ""
        self.ticks = 0  # commands executed (a step each inside an episode), whatever the mode
        self.event_driven = cfg.publish_mode == "event"
        self.min_interval = 1.0 / cfg.effective_max_rate_hz()
        self._last_command_at: float | None = None
        self._pending = False  # event mode: a new winning action waits for the rate limit
        self._policy_gated_outside = cfg.policy_outside_episodes == "hold"
        self._sync_policy_gate()

    # --- inputs -----------------------------------------------------------------------------------
    def submit_policy(self, action, now: float, version: str = "") -> Checked:
        if version:
            self.policy_version = version
            self.episodes.set_policy_version(version)
        return self.mux.submit(POLICY, action, now)

    def submit_teleop(self, action, now: float) -> Checked:
        """A human input's action; an empty one releases the robot back to the policy."""
        return self.mux.submit(TELEOP, action, now)

    def on_task_success(self, success: bool) -> list[EpisodeEventData]:
        events = self.episodes.on_task_success(success)
        self._sync_policy_gate()
        return events

    def _sync_policy_gate(self) -> None:
        """policy_outside_episodes=hold: the policy drives only inside an episode, so the end of one
        (outcome, step limit, task success) stops the robot at the next command."""
        if self._policy_gated_outside:
            self.mux.gate(POLICY, "" if self.episodes.active else "outside an episode (policy_outside_episodes=hold)")

    # --- episodes ---------------------------------------------------------------------------------
    def start_episode(self, instruction: str = "", reason: str = "") -> tuple[bool, str, list[EpisodeEventData]]:
        problem = instruction_problem(instruction)
        if problem:
            return False, f"START refused: {problem}", []
        result = self.episodes.start(instruction, self.policy_version, reason=reason)
        self._sync_policy_gate()
        return result

    def finish_episode(self, outcome: Event, reason: str = "") -> tuple[bool, str, list[EpisodeEventData]]:
        result = self.episodes.finish(outcome, reason)
        self._sync_policy_gate()
        return result

    # --- when a command is executed ---------------------------------------------------------------
    def on_input(self, name: str, checked: Checked, now: float) -> Tick | None:
        """Event mode, after ``submit_*`` of ``name``: the command this new action causes, if any.

        None when the action was not accepted, another input wins (a policy action under a takeover, any
        action in e-stop), the mode is ``tick``, or the rate limit makes it wait (see :meth:`pending_due`).
        """
        if not self.event_driven or not checked.verdict.accepted or self.mux.winner(now) != name:
            return None
        if self._last_command_at is not None and now - self._last_command_at < self.min_interval:
            self._pending = True  # newest wins: the mux keeps only the latest action per input
            return None
        return self.tick(now)

    def pending_due(self) -> float | None:
        """When the waiting command may be executed (None if nothing waits)."""
        if not self._pending:
            return None
        return (self._last_command_at or 0.0) + self.min_interval

    def flush(self, now: float) -> Tick | None:
        """Execute the waiting command if it is due and its input still drives (else it is dropped:
        e-stop or staleness is the watchdog's to handle)."""
        due = self.pending_due()
        if due is None or now < due:
            return None
        self._pending = False
        return self.tick(now) if self.mux.winner(now) is not None else None

    def control_tick(self, now: float) -> Tick | None:
        """The fixed-rate timer: every period a command in ``tick`` mode; in ``event`` mode the watchdog
        (an overdue waiting command, else hold / e-stop when no input drives, else nothing)."""
        if not self.event_driven:
            return self.tick(now)
        flushed = self.flush(now)
        if flushed is not None:
            return flushed
        if self.mux.winner(now) is None:
            self._pending = False
            return self.tick(now)
        return None

    def tick(self, now: float) -> Tick:
        """Execute one command now: the mux's decision and, inside an episode, its labelled step and the
        limit events (the lockstep deployment calls this directly, once per simulator step)."""
        decision = self.mux.tick(now)
        self.ticks += 1
        self._last_command_at = now
        self._pending = False  # whatever waited is superseded by this command (newest action wins)
        index = self.episodes.step(self.policy_version if decision.source == POLICY else "")
        if index is None:
            return Tick(decision)
        proposal = self.mux.fresh_action(POLICY, now)
        step = StepRecord(self.episodes.episode_id, index, decision.action, proposal, self.policy_version,
                          decision.label, int(decision.mode))
        events = self.episodes.check_limit()
        self._sync_policy_gate()
        return Tick(decision, step, events)
