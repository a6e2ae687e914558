"""The arbiter: decides what the robot executes, labels it, and runs episodes.

Inputs: POLICY_ACTION and TELEOP_ACTION (apo_interfaces/ActionCommand), ESTOP (std_msgs/Bool, true
latches), ROBOT_STATE (task_success may end the episode). Every executed command is published on
COMMAND (the source is POLICY, TELEOP or HOLD) and, during an episode, with one STEP carrying the live
label (2 when the human's action was executed, else 1; hold and e-stop steps are 1 with their mode).
When commands are executed (``publish_mode``): ``event`` (default) as soon as a new action of the
winning input arrives, at most ``max_rate_hz`` (a sooner one waits on a one-shot timer, newest wins),
with the ``control_rate_hz`` timer as watchdog publishing hold / e-stop commands; ``tick``: every
``control_rate_hz`` period, the newest action re-executed until it goes stale.
MODE is latched and republished on every change; EPISODE carries start/outcome/end events.
Services: EPISODE_CONTROL and ESTOP_SERVICE (SetBool: true engages, false is the only release).
A START's instruction must be at most MAX_INSTRUCTION_CHARS characters without control characters
(it goes into every episode event, the bag metadata and the policy's prompt).
Diagnostics on /diagnostics say which input is masked and why, and count rejected/clamped actions.
Every subscription and service callback goes through a CallbackGuard: a message or request that
makes it raise is dropped or answered with success=false, counted (``callback_errors``), and the
arbiter keeps ticking.

The decisions live in the ROS-free :class:`apo_intervention.arbiter_core.ArbiterCore` (mux, episodes,
labelled steps, the instruction check), which the benchmark's lockstep deployment runs too; this node
only moves messages. Freshness is judged on this process's monotonic clock at receipt.
"""

from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_msgs.msg import Bool
from std_srvs.srv import SetBool

from apo_core import topics
from apo_interfaces.msg import ActionCommand, EpisodeEvent, InterventionMode, LabelledStep, RobotState
from apo_interfaces.srv import EpisodeControl
from apo_intervention.arbiter_core import POLICY, TELEOP, ArbiterCore
from apo_intervention.config import ArbiterConfig
from apo_intervention.episodes import Event
from apo_intervention.mux import Mode
from apo_intervention.ros_common import destroy_on_error, load_node_config, send_last
from apo_ros.node import run_node
from apo_ros.params import CallbackGuard
from apo_ros.qos import qos_for, qos_profile

_SOURCE = {POLICY: ActionCommand.SOURCE_POLICY, TELEOP: ActionCommand.SOURCE_TELEOP, None: ActionCommand.SOURCE_HOLD}
_OUTCOME_OF_REQUEST = {EpisodeControl.Request.SUCCESS: Event.SUCCESS, EpisodeControl.Request.FAILURE: Event.FAILURE,
                       EpisodeControl.Request.ABORT: Event.ABORT}
_COMMANDS = "START=0, SUCCESS=1, FAILURE=2, ABORT=3"


class ArbiterNode(Node):
    def __init__(self, **kwargs):
        super().__init__("apo_arbiter", automatically_declare_parameters_from_overrides=True, **kwargs)
        self.cfg = cfg = destroy_on_error(self, lambda: load_node_config(self, ArbiterConfig))
        self._lock = threading.Lock()
        self.core = ArbiterCore(cfg)
        self.mux, self.episodes = self.core.mux, self.core.episodes
        self._last_mode_key = None
        self._last_decision = None
        self._reported = {}

        self.command_pub = self.create_publisher(ActionCommand, topics.COMMAND, qos_for(topics.COMMAND))
        # Steps are kept for late joiners (transient local, same depth): a recorder whose subscription
        # matches after an episode started still gets its first steps (volatile subscribers are unaffected).
        self.step_pub = self.create_publisher(LabelledStep, topics.STEP,
                                              qos_profile(*topics.STEP_OFFERED))
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
        # event mode: fires once when a command held back by max_rate_hz is due (re-armed each time)
        self._flush_timer = self.create_timer(self.core.min_interval, self._flush)
        self._flush_timer.cancel()
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)
        with self._lock:
            self._publish_mode(self.mux.decide(time.monotonic()), force=True)
        self.get_logger().info(
            f"arbiter up: {cfg.publish_mode} mode, control tick {cfg.control_rate_hz} Hz, at most "
            f"{cfg.effective_max_rate_hz()} commands/s, policy prio {cfg.policy.priority} timeout {cfg.policy.timeout} s, "
            f"teleop prio {cfg.teleop.priority} timeout {cfg.teleop.timeout} s, hold gripper {cfg.hold_gripper}; "
            f"task {cfg.task}, instruction {self.episodes.default_instruction!r}, "
            f"max episode steps {self.episodes.max_steps or 'unlimited'}")

    # --- inputs -----------------------------------------------------------------------------------
    @property
    def policy_version(self) -> str:
        return self.core.policy_version

    @property
    def ticks(self) -> int:
        return self.core.ticks

    def _on_policy(self, msg: ActionCommand) -> None:
        with self._lock:
            now = time.monotonic()
            checked = self.core.submit_policy(msg.action, now, msg.policy_version)
            self._report(POLICY, checked)
            self._after_input(self.core.on_input(POLICY, checked, now), now)

    def _on_teleop(self, msg: ActionCommand) -> None:
        with self._lock:
            now = time.monotonic()
            checked = self.core.submit_teleop(msg.action, now)
            self._report(TELEOP, checked)
            self._after_input(self.core.on_input(TELEOP, checked, now), now)

    def _after_input(self, tick, now: float) -> None:
        """Event mode: publish the command an input caused, or arm the timer for one held back."""
        if tick is not None:
            self._publish_tick(tick)
            return
        due = self.core.pending_due()
        if due is not None and self._flush_timer.is_canceled():
            self._flush_timer.timer_period_ns = max(int((due - now) * 1e9), 100_000)
            self._flush_timer.reset()

    def _flush(self) -> None:
        self._flush_timer.cancel()
        with self._lock:
            now = time.monotonic()
            tick = self.core.flush(now)
            if tick is not None:
                self._publish_tick(tick)
            elif self.core.pending_due() is not None:  # woke up early: wait for the rest
                self._after_input(None, now)

    def _report(self, name: str, checked) -> None:
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
                self._publish_mode(self.mux.decide(time.monotonic()))

    def _on_robot_state(self, msg: RobotState) -> None:
        with self._lock:
            self._publish_events(self.core.on_task_success(bool(msg.task_success)))

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
            self._publish_mode(self.mux.decide(time.monotonic()))
        return response

    def _on_episode_control(self, request, response):
        with self._lock:
            if request.command == EpisodeControl.Request.START:
                ok, message, events = self.core.start_episode(request.instruction, reason="operator request")
            elif request.command in _OUTCOME_OF_REQUEST:
                ok, message, events = self.core.finish_episode(_OUTCOME_OF_REQUEST[request.command],
                                                               "operator request")
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

    # --- the control tick (tick mode: every command; event mode: the watchdog) ---------------------
    def _tick(self) -> None:
        with self._lock:
            now = time.monotonic()
            tick = self.core.control_tick(now)
            if tick is not None:
                self._publish_tick(tick)
            else:  # event mode, an input drives: its commands come with its actions
                self._last_decision = decision = self.mux.decide(now)
                self._publish_mode(decision)

    def _publish_tick(self, tick) -> None:
        """One executed command: COMMAND, the mode if it changed, and inside an episode its STEP."""
        decision = self._last_decision = tick.decision
        stamp = self.get_clock().now().to_msg()
        action = [float(v) for v in decision.action]
        cmd = ActionCommand()
        cmd.header.stamp = stamp
        cmd.action = action
        cmd.source = _SOURCE[decision.source]
        cmd.policy_version = self.policy_version if decision.source == POLICY else ""
        self.command_pub.publish(cmd)
        self._publish_mode(decision)
        if tick.step is not None:
            s = tick.step
            step = LabelledStep()
            step.header.stamp = stamp
            step.episode_id = s.episode_id
            step.step_index = s.step_index
            step.executed_action = action
            step.policy_action = [] if s.policy_action is None else [float(v) for v in s.policy_action]
            step.policy_version = s.policy_version
            step.label = s.label
            step.mode = s.mode
            self.step_pub.publish(step)
            self._publish_events(tick.events)

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
            decision = self._last_decision or self.mux.decide(now)
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
