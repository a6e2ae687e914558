"""The arbiter: decides every control period what the robot executes, labels it, and runs episodes.

Inputs: POLICY_ACTION and TELEOP_ACTION (apo_interfaces/ActionCommand), ESTOP (std_msgs/Bool, true
latches), ROBOT_STATE (task_success may end the episode). Each tick at ``control_rate_hz`` publishes
COMMAND (always; the source is POLICY, TELEOP or HOLD) and, during an episode, STEP with the live
label (2 when the human's action was executed, else 1; hold and e-stop steps are 1 with their mode).
MODE is latched and republished on every change; EPISODE carries start/outcome/end events.
Services: EPISODE_CONTROL and ESTOP_SERVICE (SetBool: true engages, false is the only release).
A START's instruction must be at most MAX_INSTRUCTION_CHARS characters without control characters
(it goes into every episode event, the bag metadata and the policy's prompt).
Diagnostics on /diagnostics say which input is masked and why, and count rejected/clamped actions.
Every subscription and service callback goes through a CallbackGuard: a message or request that
makes it raise is dropped or answered with success=false, counted (``callback_errors``), and the
arbiter keeps ticking.

The decisions live in the ROS-free :mod:`apo_intervention.mux` and :mod:`apo_intervention.episodes`;
this node only moves messages. Freshness is judged on this process's monotonic clock at receipt.
"""

from __future__ import annotations

import threading
import time
import unicodedata

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_msgs.msg import Bool
from std_srvs.srv import SetBool

from apo_core import topics
from apo_core.ros_params import CallbackGuard
from apo_interfaces.msg import ActionCommand, EpisodeEvent, InterventionMode, LabelledStep, RobotState
from apo_interfaces.srv import EpisodeControl
from apo_intervention.config import ArbiterConfig
from apo_intervention.episodes import EpisodeManager, Event, make_id_factory
from apo_intervention.mux import ActionMux, Mode, MuxInput
from apo_intervention.ros_common import destroy_on_error, load_node_config, qos_for, run_node, send_last
from apo_intervention.validation import ActionValidator

POLICY, TELEOP = "policy", "teleop"
_SOURCE = {POLICY: ActionCommand.SOURCE_POLICY, TELEOP: ActionCommand.SOURCE_TELEOP, None: ActionCommand.SOURCE_HOLD}
_OUTCOME_OF_REQUEST = {EpisodeControl.Request.SUCCESS: Event.SUCCESS, EpisodeControl.Request.FAILURE: Event.FAILURE,
                       EpisodeControl.Request.ABORT: Event.ABORT}
_COMMANDS = "START=0, SUCCESS=1, FAILURE=2, ABORT=3"
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


class ArbiterNode(Node):
    def __init__(self, **kwargs):
        super().__init__("apo_arbiter", automatically_declare_parameters_from_overrides=True, **kwargs)
        self.cfg = cfg = destroy_on_error(self, lambda: load_node_config(self, ArbiterConfig))
        self._lock = threading.Lock()
        self.mux = ActionMux(
            [MuxInput(POLICY, cfg.policy.priority, cfg.policy.timeout, human=False),
             MuxInput(TELEOP, cfg.teleop.priority, cfg.teleop.timeout, human=True)],
            ActionValidator(cfg.action_low, cfg.action_high), gripper_index=cfg.gripper_index,
            hold_gripper=cfg.hold_gripper, hold_gripper_value=cfg.hold_gripper_value)
        self.episodes = EpisodeManager(
            task=cfg.task, instruction=cfg.instruction, max_steps=cfg.max_episode_steps,
            end_on_success=cfg.end_on_success, timeout_outcome=Event[cfg.timeout_outcome.upper()],
            id_factory=make_id_factory(cfg.episode_id_prefix))
        self.policy_version = ""
        self._last_mode_key = None
        self._last_decision = None
        self._reported = {}
        self.ticks = 0

        self.command_pub = self.create_publisher(ActionCommand, topics.COMMAND, qos_for(topics.COMMAND))
        self.step_pub = self.create_publisher(LabelledStep, topics.STEP, qos_for(topics.STEP))
        self.mode_pub = self.create_publisher(InterventionMode, topics.MODE, qos_for(topics.MODE))
        self.episode_pub = self.create_publisher(EpisodeEvent, topics.EPISODE, qos_for(topics.EPISODE))
        self.diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, qos_for(topics.DIAGNOSTICS))
        self.guard = guard = CallbackGuard(self)
        for msg_type, topic, callback in ((ActionCommand, topics.POLICY_ACTION, self._on_policy),
                                          (ActionCommand, topics.TELEOP_ACTION, self._on_teleop),
                                          (Bool, topics.ESTOP, self._on_estop),
                                          (RobotState, topics.ROBOT_STATE, self._on_robot_state)):
            self.create_subscription(msg_type, topic, guard.subscription(topic, callback), qos_for(topic))
        self.create_service(EpisodeControl, topics.EPISODE_CONTROL,
                            guard.service(topics.EPISODE_CONTROL, self._on_episode_control))
        self.create_service(SetBool, topics.ESTOP_SERVICE, guard.service(topics.ESTOP_SERVICE, self._on_estop_service))
        self.create_timer(1.0 / cfg.control_rate_hz, self._tick)
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)
        with self._lock:
            self._publish_mode(self.mux.tick(time.monotonic()), force=True)
        self.get_logger().info(
            f"arbiter up: {cfg.control_rate_hz} Hz, policy prio {cfg.policy.priority} timeout {cfg.policy.timeout} s, "
            f"teleop prio {cfg.teleop.priority} timeout {cfg.teleop.timeout} s, hold gripper {cfg.hold_gripper}")

    # --- inputs -----------------------------------------------------------------------------------
    def _on_policy(self, msg: ActionCommand) -> None:
        with self._lock:
            if msg.policy_version:
                self.policy_version = msg.policy_version
                self.episodes.set_policy_version(msg.policy_version)
            self._submit(POLICY, msg)

    def _on_teleop(self, msg: ActionCommand) -> None:
        with self._lock:
            self._submit(TELEOP, msg)

    def _submit(self, name: str, msg: ActionCommand) -> None:
        checked = self.mux.submit(name, msg.action, time.monotonic())
        if checked.verdict.rejected:
            self.get_logger().warning(f"{name} action rejected: {checked.detail}", throttle_duration_sec=2.0)
        elif checked.verdict.name == "CLAMPED":
            self.get_logger().warning(f"{name} action {checked.detail}", throttle_duration_sec=2.0)

    def _on_estop(self, msg: Bool) -> None:
        if not msg.data:
            self.get_logger().info(f"false on {topics.ESTOP} ignored: release the e-stop with {topics.ESTOP_SERVICE}",
                                   throttle_duration_sec=5.0)
            return
        with self._lock:
            if self.mux.engage_estop(f"engaged on {topics.ESTOP}"):
                self.get_logger().error(f"E-STOP engaged on {topics.ESTOP}")
                self._publish_mode(self.mux.tick(time.monotonic()))

    def _on_robot_state(self, msg: RobotState) -> None:
        with self._lock:
            self._publish_events(self.episodes.on_task_success(bool(msg.task_success)))

    # --- services ---------------------------------------------------------------------------------
    def _on_estop_service(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            if request.data:
                changed = self.mux.engage_estop(f"engaged through {topics.ESTOP_SERVICE}")
                response.message = "e-stop engaged" if changed else "e-stop was already engaged"
                if changed:
                    self.get_logger().error(f"E-STOP engaged through {topics.ESTOP_SERVICE}")
            else:
                changed = self.mux.release_estop()
                response.message = "e-stop released" if changed else "e-stop was not engaged"
                if changed:
                    self.get_logger().warning("e-stop released")
            response.success = True
            self._publish_mode(self.mux.tick(time.monotonic()))
        return response

    def _on_episode_control(self, request, response):
        with self._lock:
            problem = instruction_problem(request.instruction) if request.command == EpisodeControl.Request.START else ""
            if problem:
                ok, message, events = False, f"START refused: {problem}", []
            elif request.command == EpisodeControl.Request.START:
                ok, message, events = self.episodes.start(request.instruction, self.policy_version,
                                                          reason="operator request")
            elif request.command in _OUTCOME_OF_REQUEST:
                ok, message, events = self.episodes.finish(_OUTCOME_OF_REQUEST[request.command], "operator request")
            else:
                ok, message, events = False, f"unknown command {request.command} (known: {_COMMANDS})", []
            response.episode_id = events[0].episode_id if events else self.episodes.episode_id
            self._publish_events(events)
        response.success, response.message = ok, message
        if ok:
            self.get_logger().info(f"episode control: {message}")
        else:
            self.get_logger().warning(f"episode control refused: {message}")
        return response

    # --- the control tick -------------------------------------------------------------------------
    def _tick(self) -> None:
        with self._lock:
            now = time.monotonic()
            decision = self.mux.tick(now)
            self._last_decision = decision
            self.ticks += 1
            stamp = self.get_clock().now().to_msg()
            action = [float(v) for v in decision.action]
            cmd = ActionCommand()
            cmd.header.stamp = stamp
            cmd.action = action
            cmd.source = _SOURCE[decision.source]
            cmd.policy_version = self.policy_version if decision.source == POLICY else ""
            self.command_pub.publish(cmd)
            self._publish_mode(decision)
            index = self.episodes.step()
            if index is not None:
                proposal = self.mux.fresh_action(POLICY, now)
                step = LabelledStep()
                step.header.stamp = stamp
                step.episode_id = self.episodes.episode_id
                step.step_index = index
                step.executed_action = action
                step.policy_action = [] if proposal is None else [float(v) for v in proposal]
                step.policy_version = self.policy_version
                step.label = decision.label
                step.mode = int(decision.mode)
                self.step_pub.publish(step)
                self._publish_events(self.episodes.check_limit())

    def _publish_mode(self, decision, force: bool = False) -> None:
        key = (decision.mode, decision.source, decision.reason)
        if not force and key == self._last_mode_key:
            return
        self._last_mode_key = key
        msg = InterventionMode()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.mode = int(decision.mode)
        msg.active_input = decision.source or ""
        msg.reason = decision.reason
        self.mode_pub.publish(msg)
        # (rclpy refuses one call site logging at two severities: two call sites)
        if decision.mode in (Mode.HOLD, Mode.ESTOP):
            self.get_logger().warning(f"mode {decision.mode.name}: {decision.reason}")
        else:
            self.get_logger().info(f"mode {decision.mode.name}: {decision.reason}")

    def _publish_events(self, events) -> None:
        for ev in events:
            msg = EpisodeEvent()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.episode_id = ev.episode_id
            msg.event = int(ev.event)
            msg.instruction = ev.instruction
            msg.task = ev.task
            msg.policy_version = ev.policy_version
            msg.reason = ev.reason
            self.episode_pub.publish(msg)
            self.get_logger().info(f"episode {ev.episode_id}: {ev.event.name} ({ev.reason})")

    # --- diagnostics ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        with self._lock:
            now = time.monotonic()
            decision = self._last_decision or self.mux.tick(now)
            masked = self.mux.masked_reasons(now, decision.source)
            status = DiagnosticStatus()
            status.name = "apo_arbiter: mux"
            status.hardware_id = "apo_arbiter"
            values = [("mode", decision.mode.name), ("active_input", decision.source or ""),
                      ("reason", decision.reason), ("estop", str(self.mux.estop_engaged)),
                      ("estop_reason", self.mux.estop_reason), ("episode_id", self.episodes.episode_id),
                      ("episode_steps", str(self.episodes.steps)), ("ticks", str(self.ticks)),
                      ("output_guard_trips", str(self.mux.output_guard_trips)),
                      ("callback_errors", str(self.guard.errors))]
            problems = []
            for name in self.mux.input_names:
                st = self.mux.stats(name)
                values += [(f"{name}.state", self.mux.input_state(name, now)), (f"{name}.why", masked[name]),
                           (f"{name}.received", str(st.received)), (f"{name}.clamped", str(st.clamped)),
                           (f"{name}.rejected_nonfinite", str(st.rejected_nonfinite)),
                           (f"{name}.rejected_dimension", str(st.rejected_dimension)),
                           (f"{name}.released", str(st.released)), (f"{name}.last_problem", st.last_problem)]
                counts = (st.clamped, st.rejected)
                if counts != self._reported.get(name, (0, 0)):
                    problems.append(f"{name}: {st.clamped} clamped, {st.rejected} rejected in total")
                self._reported[name] = counts
            if self.guard.errors != self._reported.get("callback_errors", 0):
                problems.append(f"{self.guard.errors} messages/requests made a callback fail in total")
            self._reported["callback_errors"] = self.guard.errors
        status.values = [KeyValue(key=k, value=v) for k, v in values]
        if decision.mode == Mode.ESTOP:
            status.level, status.message = DiagnosticStatus.ERROR, decision.reason
        elif decision.mode == Mode.HOLD or problems or self.mux.output_guard_trips:
            parts = ([decision.reason] if decision.mode == Mode.HOLD else []) + problems
            if self.mux.output_guard_trips:
                parts.append(f"output guard tripped {self.mux.output_guard_trips} times")
            status.level, status.message = DiagnosticStatus.WARN, "; ".join(parts)
        else:
            status.level, status.message = DiagnosticStatus.OK, decision.reason
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.diag_pub.publish(msg)

    def on_shutdown(self) -> None:
        """Leave the robot holding still: one last hold command."""
        with self._lock:
            cmd = ActionCommand()
            cmd.header.stamp = self.get_clock().now().to_msg()
            cmd.action = [float(v) for v in self.mux.hold_action()]
            cmd.source = ActionCommand.SOURCE_HOLD
            send_last(self.command_pub, cmd)


def main(args=None) -> None:
    raise SystemExit(run_node(ArbiterNode, "apo_arbiter", args))


if __name__ == "__main__":
    main()
