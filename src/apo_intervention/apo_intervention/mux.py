"""The arbiter's input multiplexer (ROS-free): which action is executed at each control tick.

Semantics, after twist_mux:

- every input has a priority and a timeout; it is *active* while its newest valid action is younger
  than its timeout (``now - received < timeout``, receive time on the caller's monotonic clock);
- the highest-priority active input wins; the human (teleop) input has the highest priority, so it
  takes over while active and the policy gets the robot back at the first tick after it goes
  inactive. There is no hysteresis. An input that sends an empty action (explicit release, see
  :mod:`apo_intervention.validation`) is inactive from the next tick on;
- a rejected action (NaN/inf, wrong dimension) also makes its input inactive until its next valid
  action: re-executing an older action of an input that has just proven faulty is worse than holding;
- when no input is active the mux holds: zero motion on every dimension, and the gripper keeps its
  last commanded value (``hold_gripper="keep_last"``, the default: an object held when the policy
  pauses is not dropped) or a fixed value (``"value"``). Before any command, ``hold_gripper_value``;
- the e-stop lock forces hold and is cleared only by an explicit :meth:`ActionMux.release_estop`.

Every action leaving :meth:`ActionMux.tick` is finite and within the validator's limits (a final guard
replaces anything else by hold and counts it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from apo_core.labels import MODE_AUTONOMOUS, MODE_ESTOP, MODE_HOLD, MODE_HUMAN
from apo_intervention.validation import ActionValidator, Checked, Verdict


class Mode(IntEnum):
    """apo_interfaces/InterventionMode.MODE_* as an enum; the codes are apo_core.labels' (re-exported by
    apo_core.bag_contract, compared with the generated interface by its tests), not restated here."""

    AUTONOMOUS = MODE_AUTONOMOUS
    HUMAN = MODE_HUMAN
    HOLD = MODE_HOLD
    ESTOP = MODE_ESTOP


@dataclass(frozen=True)
class MuxInput:
    name: str
    priority: int
    timeout: float
    human: bool = False


@dataclass
class InputStats:
    received: int = 0
    accepted: int = 0
    clamped: int = 0
    rejected_nonfinite: int = 0
    rejected_dimension: int = 0
    released: int = 0
    last_problem: str = ""

    @property
    def rejected(self) -> int:
        return self.rejected_nonfinite + self.rejected_dimension


@dataclass
class _InputState:
    spec: MuxInput
    action: np.ndarray | None = None
    received_at: float | None = None
    # Why the input is inactive although it had data: "released" or "rejected".
    dropped: str = ""
    stats: InputStats = field(default_factory=InputStats)


@dataclass
class MuxDecision:
    action: np.ndarray
    mode: Mode
    # Name of the winning input, None in hold and e-stop.
    source: str | None
    # Human-readable, without changing numbers (so a change of reason is a change of situation).
    reason: str

    @property
    def label(self) -> int:
        """Live label c_t: 2 when the human's action is executed, else 1 (hold/e-stop steps included)."""
        return 2 if self.mode == Mode.HUMAN else 1


class ActionMux:
    def __init__(self, inputs: list[MuxInput], validator: ActionValidator, gripper_index: int = -1,
                 hold_gripper: str = "keep_last", hold_gripper_value: float = 0.0):
        names = [i.name for i in inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate mux input names: {names}")
        prios = [i.priority for i in inputs]
        if len(set(prios)) != len(prios):
            raise ValueError(f"mux input priorities must be distinct: {dict(zip(names, prios, strict=True))}")
        if hold_gripper not in ("keep_last", "value"):
            raise ValueError(f"hold_gripper must be 'keep_last' or 'value', got {hold_gripper!r}")
        self.validator = validator
        self._inputs = {i.name: _InputState(i) for i in sorted(inputs, key=lambda i: -i.priority)}
        self.gripper_index = gripper_index
        self.hold_gripper = hold_gripper
        self.hold_gripper_value = float(hold_gripper_value)
        self._last_gripper: float | None = None
        self.estop_engaged = False
        self.estop_reason = ""
        self.output_guard_trips = 0
        self._gated: dict[str, str] = {}  # input -> why it may not drive now (its actions are still taken)

    # --- inputs -----------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    def stats(self, name: str) -> InputStats:
        return self._inputs[name].stats

    def submit(self, name: str, values, now: float) -> Checked:
        """Offer ``values`` from input ``name`` received at ``now``; returns what the validator said."""
        st = self._inputs[name]
        checked = self.validator.check(values)
        st.stats.received += 1
        if checked.verdict.accepted:
            st.action = checked.action
            st.received_at = now
            st.dropped = ""
            st.stats.accepted += 1
            if checked.verdict is Verdict.CLAMPED:
                st.stats.clamped += 1
                st.stats.last_problem = checked.detail
        elif checked.verdict is Verdict.RELEASE:
            st.stats.released += 1
            self._drop(st, "released")
        else:
            if checked.verdict is Verdict.REJECTED_NONFINITE:
                st.stats.rejected_nonfinite += 1
            else:
                st.stats.rejected_dimension += 1
            st.stats.last_problem = checked.detail
            self._drop(st, "rejected")
        return checked

    @staticmethod
    def _drop(st: _InputState, why: str) -> None:
        st.action = None
        st.received_at = None
        st.dropped = why

    def is_active(self, name: str, now: float) -> bool:
        st = self._inputs[name]
        return st.received_at is not None and (now - st.received_at) < st.spec.timeout

    def fresh_action(self, name: str, now: float) -> np.ndarray | None:
        """The input's newest valid action if the input is active, else None."""
        return self._inputs[name].action.copy() if self.is_active(name, now) else None

    def input_state(self, name: str, now: float) -> str:
        """One word: active / stale / released / rejected / never."""
        st = self._inputs[name]
        if self.is_active(name, now):
            return "active"
        if st.dropped:
            return st.dropped
        return "never" if st.stats.accepted == 0 else "stale"

    def age(self, name: str, now: float) -> float | None:
        st = self._inputs[name]
        return None if st.received_at is None else now - st.received_at

    def gate(self, name: str, reason: str) -> None:
        """Keep input ``name`` from driving (``reason`` says why; "" lets it drive again). Its actions are
        still validated and kept, so it drives as soon as the gate opens if they are fresh."""
        if name not in self._inputs:
            raise ValueError(f"unknown mux input {name!r}")
        if reason:
            self._gated[name] = reason
        else:
            self._gated.pop(name, None)

    # --- e-stop -----------------------------------------------------------------------------------
    def engage_estop(self, reason: str) -> bool:
        """Latch the e-stop; returns True if it was not engaged before."""
        changed = not self.estop_engaged
        if changed:
            self.estop_engaged = True
            self.estop_reason = reason
        return changed

    def release_estop(self) -> bool:
        """The only way out of e-stop; returns True if it was engaged."""
        changed = self.estop_engaged
        self.estop_engaged = False
        self.estop_reason = ""
        return changed

    # --- decision ---------------------------------------------------------------------------------
    def hold_action(self) -> np.ndarray:
        action = np.zeros(self.validator.dim)
        if self.gripper_index >= 0:
            keep = self.hold_gripper == "keep_last" and self._last_gripper is not None
            action[self.gripper_index] = self._last_gripper if keep else self.hold_gripper_value
        return np.clip(action, self.validator.low, self.validator.high)

    def winner(self, now: float) -> str | None:
        """The input that would drive the robot now (None in e-stop or when no input is active)."""
        if self.estop_engaged:
            return None
        return next((name for name in self._inputs  # priority order
                     if name not in self._gated and self.is_active(name, now)), None)

    def tick(self, now: float) -> MuxDecision:
        """What executes now; remembers the executed gripper value for later holds."""
        decision = self.decide(now)
        if self.gripper_index >= 0 and decision.mode in (Mode.AUTONOMOUS, Mode.HUMAN):
            self._last_gripper = float(decision.action[self.gripper_index])
        return decision

    def decide(self, now: float) -> MuxDecision:
        """What would execute now, without executing it (for mode reports: the only state it touches is
        the output guard's trip counter, which validated inputs never reach)."""
        if self.estop_engaged:
            decision = MuxDecision(self.hold_action(), Mode.ESTOP, None, f"e-stop: {self.estop_reason}")
        else:
            name = self.winner(now)
            if name is not None:
                st = self._inputs[name]
                mode = Mode.HUMAN if st.spec.human else Mode.AUTONOMOUS
                decision = MuxDecision(st.action.copy(), mode, name, f"{name} active")
            else:
                states = ", ".join(f"{n}: {self.input_state(n, now)}" for n in self._inputs)
                decision = MuxDecision(self.hold_action(), Mode.HOLD, None, f"all inputs inactive ({states})")
        if not self.validator.is_safe(decision.action):  # defence in depth; validated inputs never trip it
            self.output_guard_trips += 1
            decision = MuxDecision(np.zeros(self.validator.dim).clip(self.validator.low, self.validator.high),
                                Mode.HOLD, None, "output guard: unsafe action replaced by hold")
        return decision

    def masked_reasons(self, now: float, winner: str | None) -> dict[str, str]:
        """Why each input is (not) driving the robot, for diagnostics."""
        out = {}
        for name, st in self._inputs.items():
            state = self.input_state(name, now)
            if self.estop_engaged:
                out[name] = f"masked by e-stop ({state})"
            elif name in self._gated:
                out[name] = f"gated: {self._gated[name]} ({state})"
            elif name == winner:
                out[name] = "driving"
            elif state == "active":
                out[name] = f"masked by higher-priority input {winner}"
            elif state == "stale":
                out[name] = f"stale: last valid action {self.age(name, now) or 0.0:.2f} s old > timeout {st.spec.timeout} s"
            elif state == "rejected":
                out[name] = f"last action rejected: {st.stats.last_problem}"
            elif state == "released":
                out[name] = "released by its sender"
            else:
                out[name] = "no valid action received yet"
        return out
