"""The scripted operator: a simulated human supervisor that drives the robot through the joystick path.

It watches SIM_TASK_PROGRESS ([progress, object_height, grasped], one message per simulator step),
POLICY_ACTION, MODE and EPISODE, and decides with :class:`~apo_intervention.operator_logic.SupervisorLogic`
when the policy has gone wrong. To correct, it does what a person would: it publishes sensor_msgs/Joy
on JOY with the deadman held and the sticks placed where the joystick mapping (the same YAML the
joystick teleop uses, inverted) turns them into the simulator's expert action (SIM_EXPERT_ACTION).
While correcting it re-sends Joy at ``joy_rate_hz`` like the joy driver's auto-repeat.
Handing back = letting the deadman go. It presses the start button to begin episodes, ``num_episodes``
of them, ``pause_between_episodes`` apart, so that deploy-and-record runs unattended.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Float64MultiArray

from apo_core import topics
from apo_interfaces.msg import ActionCommand, EpisodeEvent, InterventionMode
from apo_intervention.config import JoyMappingConfig, OperatorConfig, assemble_config
from apo_intervention.joy_mapping import JoyMapping
from apo_intervention.operator_logic import EpisodeScheduler, OperatorObservation, SupervisorLogic
from apo_intervention.ros_common import destroy_on_error, load_node_config, send_last
from apo_ros.node import run_node
from apo_ros.params import CallbackGuard
from apo_ros.qos import qos_for


class ScriptedOperatorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("apo_scripted_operator", automatically_declare_parameters_from_overrides=True, **kwargs)
        self.cfg = cfg = destroy_on_error(self, lambda: load_node_config(self, OperatorConfig))
        self.joy_cfg = destroy_on_error(self, lambda: assemble_config(JoyMappingConfig, cfg.joy_config_file or None))
        self.mapping = JoyMapping(self.joy_cfg)
        self.logic = SupervisorLogic(cfg)
        self.scheduler = EpisodeScheduler(cfg.num_episodes, cfg.pause_between_episodes, cfg.start_retry_timeout,
                                          cfg.autostart)
        self._lock = threading.Lock()
        self._expert: np.ndarray | None = None
        self._expert_at = -np.inf
        self._policy: np.ndarray | None = None
        self._mode = InterventionMode.MODE_HOLD
        self._said_done = False
        self.saturated_dims = 0

        self.joy_pub = self.create_publisher(Joy, topics.JOY, qos_for(topics.JOY))
        # A message that makes a callback raise is dropped and logged; the operator keeps supervising.
        self.guard = guard = CallbackGuard(self)
        for msg_type, topic, callback in ((Float64MultiArray, topics.SIM_TASK_PROGRESS, self._on_progress),
                                          (ActionCommand, topics.SIM_EXPERT_ACTION, self._on_expert),
                                          (ActionCommand, topics.POLICY_ACTION, self._on_policy),
                                          (InterventionMode, topics.MODE, self._on_mode),
                                          (EpisodeEvent, topics.EPISODE, self._on_episode)):
            self.create_subscription(msg_type, topic, guard.subscription(topic, callback), qos_for(topic))
        self.create_timer(0.1, self._schedule)
        self.create_timer(1.0 / cfg.joy_rate_hz, self._repeat)
        self.get_logger().info(f"scripted operator up: episodes to run {cfg.num_episodes or 'unlimited'}, stall "
                               f"{cfg.stall_steps} steps, regress {cfg.regress_threshold}, drop {cfg.detect_drop}")

    # --- observations -----------------------------------------------------------------------------
    def _on_progress(self, msg: Float64MultiArray) -> None:
        data = list(msg.data[:3]) + [0.0] * (3 - len(msg.data))
        if not np.all(np.isfinite(data)):
            self.get_logger().warning(f"ignoring non-finite task progress {data}", throttle_duration_sec=2.0)
            return
        with self._lock:
            obs = OperatorObservation(progress=float(data[0]), object_height=float(data[1]), grasped=data[2] >= 0.5,
                              policy_action=self._policy, expert_action=self._fresh_expert(),
                              other_human_driving=(self._mode == InterventionMode.MODE_HUMAN
                                                   and not self.logic.correcting))
            decision = self.logic.observe(obs)
            if decision.changed:
                verb = "TAKEOVER" if decision.correcting else "handback"
                self.get_logger().info(f"{verb} at step {self.logic.episode_steps}: {decision.reason}")
                if not decision.correcting:
                    self._send_joy(None)
            if decision.changed and self.logic.correcting:
                self._send_joy(obs.expert_action if obs.expert_action is not None else self._still())

    def _on_expert(self, msg: ActionCommand) -> None:
        with self._lock:
            if len(msg.action) != len(self.mapping.axis) or not np.all(np.isfinite(msg.action)):
                self.get_logger().warning(f"ignoring malformed expert action {list(msg.action)}",
                                          throttle_duration_sec=2.0)
                return
            self._expert = np.asarray(msg.action, dtype=np.float64)
            self._expert_at = time.monotonic()
            if self.logic.correcting:
                self._send_joy(self._expert)

    def _on_policy(self, msg: ActionCommand) -> None:
        with self._lock:
            self._policy = np.asarray(msg.action, dtype=np.float64) if len(msg.action) else None

    def _on_mode(self, msg: InterventionMode) -> None:
        with self._lock:
            self._mode = msg.mode
            if msg.mode == InterventionMode.MODE_ESTOP and self.logic.stand_down("e-stop engaged").changed:
                self.get_logger().warning("e-stop: standing down")
                self._send_joy(None)

    def _on_episode(self, msg: EpisodeEvent) -> None:
        now = time.monotonic()
        with self._lock:
            if msg.event == EpisodeEvent.EVENT_START:
                self.scheduler.on_start(now)
                self.logic.episode_started()
                self.get_logger().info(f"watching episode {msg.episode_id}")
            elif msg.event == EpisodeEvent.EVENT_END:
                self.scheduler.on_end(now)
                if self.logic.episode_ended().changed:
                    self._send_joy(None)

    # --- acting -----------------------------------------------------------------------------------
    def _fresh_expert(self) -> np.ndarray | None:
        if self._expert is None or time.monotonic() - self._expert_at > self.cfg.expert_timeout:
            return None
        return self._expert

    def _still(self) -> np.ndarray:
        """Zero motion, gripper as the expert last had it (the stick centred, the trigger kept)."""
        still = np.zeros(len(self.mapping.axis))
        g = len(still) - 1
        if self._expert is not None:
            still[g] = self._expert[g]
        return still

    def _send_joy(self, action, press: str | None = None, last: bool = False) -> None:
        """Publish one Joy message: deadman held with sticks for ``action``, or released when None."""
        msg = Joy()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "scripted_operator"
        if action is None:
            msg.axes = [0.0] * self.mapping.num_axes
        else:
            axes, saturated = self.mapping.action_to_axes(action)
            self.saturated_dims += len(saturated)
            msg.axes = [float(v) for v in axes]
        msg.buttons = self.mapping.buttons({"deadman_button": action is not None, **({press: True} if press else {})})
        if last:
            send_last(self.joy_pub, msg)
        else:
            self.joy_pub.publish(msg)

    def _press(self, key: str) -> None:
        held = self._fresh_expert() if self.logic.correcting else None
        self._send_joy(held, press=key)
        self._send_joy(held)

    def _repeat(self) -> None:
        """Auto-repeat: keep the deadman held (and the sticks where they are) while correcting."""
        with self._lock:
            if self.logic.correcting:
                expert = self._fresh_expert()
                self._send_joy(expert if expert is not None else self._still())

    def _schedule(self) -> None:
        with self._lock:
            if self.joy_pub.get_subscription_count() == 0:
                return  # nobody maps /joy yet: a press now would be lost
            if self.scheduler.should_press_start(time.monotonic()):
                self.get_logger().info(f"pressing start (episode {self.scheduler.started + 1})")
                self._press("start_button")
            if self.scheduler.done and not self._said_done:
                self._said_done = True
                self.get_logger().info(f"all {self.cfg.num_episodes} episodes done")

    def on_shutdown(self) -> None:
        with self._lock:
            if self.logic.correcting:
                self._send_joy(None, last=True)


def main(args=None) -> None:
    raise SystemExit(run_node(ScriptedOperatorNode, "apo_scripted_operator", args))


if __name__ == "__main__":
    main()
