"""The arbiter's decisions without ROS: mux + episodes + the labelled step of each control tick.

:class:`ArbiterCore` is what the arbiter node and the in-process (lockstep) deployment of the
benchmark both run, so a step is labelled, an episode is started and ended, and a takeover is
decided by one piece of code whether messages arrive over DDS or in a loop. Callers pass ``now``
(any monotonic clock: the node's, or simulated time), and publish what :meth:`ArbiterCore.tick`
returns.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from apo_intervention.config import ArbiterConfig
from apo_intervention.episodes import EpisodeEventData, EpisodeManager, Event, make_id_factory
from apo_intervention.mux import ActionMux, Decision, MuxInput
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
    decision: Decision
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
        self.ticks = 0

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
        return self.episodes.on_task_success(success)

    # --- episodes ---------------------------------------------------------------------------------
    def start_episode(self, instruction: str = "", reason: str = "") -> tuple[bool, str, list[EpisodeEventData]]:
        problem = instruction_problem(instruction)
        if problem:
            return False, f"START refused: {problem}", []
        return self.episodes.start(instruction, self.policy_version, reason=reason)

    def finish_episode(self, outcome: Event, reason: str = "") -> tuple[bool, str, list[EpisodeEventData]]:
        return self.episodes.finish(outcome, reason)

    # --- the control tick -------------------------------------------------------------------------
    def tick(self, now: float) -> Tick:
        """Decide what executes now; inside an episode also the labelled step and limit events."""
        decision = self.mux.tick(now)
        self.ticks += 1
        index = self.episodes.step()
        if index is None:
            return Tick(decision)
        proposal = self.mux.fresh_action(POLICY, now)
        step = StepRecord(self.episodes.episode_id, index, decision.action, proposal, self.policy_version,
                          decision.label, int(decision.mode))
        return Tick(decision, step, self.episodes.check_limit())
