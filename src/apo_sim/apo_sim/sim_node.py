"""ROS 2 driver node for the simulated arm: the same topics a real robot driver would offer.

Publishes (names from :mod:`apo_core.topics`, QoS from :func:`apo_ros.qos.topic_qos`):
  IMAGE               sensor_msgs/Image, rgb8, upright (sensor-data QoS: newest frame wins)
  ROBOT_STATE         apo_interfaces/RobotState (joint positions, eef pose, fingers, 9-D proprio,
                      task_success)
  SIM_EXPERT_ACTION   apo_interfaces/ActionCommand, SOURCE_EXPERT: the scripted expert's action for
                      the state just published (privileged; for the simulated operator)
  SIM_TASK_PROGRESS   std_msgs/Float64MultiArray [progress 0..1, object height (m), grasped 0/1]
All four messages of one observation carry the same header stamp; the image is published first.

Subscribes:
  COMMAND   apo_interfaces/ActionCommand: 7-D raw OSC_POSE input (see apo_sim.env). Commands with
            NaN/inf or the wrong length are rejected (warning logged, ``rejected_commands`` counted)
            and never reach the simulator.
  EPISODE   apo_interfaces/EpisodeEvent: EVENT_START resets the simulator (and the expert) and
            publishes the first observation of the new episode. Events replayed from the latched
            history that were stamped before this node started are ignored.

Modes (parameter ``mode``):
  realtime  a timer at ``control_rate_hz`` steps the simulator with the newest command, held until
            it is older than ``command_timeout_s``; then zero motion (all zeros: the arm holds its
            pose and the fingers stay where they are). Ticks never queue up behind a slow step.
  lockstep  exactly one simulator step per valid command received, then the new observation is
            published (deterministic tests and benchmarks).

All simulator work (construction, reset, step, render, expert) runs in one worker thread that owns
the robosuite environment and its GL context, so callbacks only enqueue and the executor never
waits for the simulator.

Parameters: :class:`apo_sim.node_config.SimNodeConfig` (names, defaults, ranges, help texts). An unknown
parameter, a wrong type or value (unknown task, mode, ...) makes the constructor raise
:class:`apo_core.errors.ConfigError` naming it (a camera the scene lacks: :class:`apo_sim.env.SimConfigError`);
``main`` prints it and exits 2. Both subscriptions go through a :class:`~apo_ros.params.CallbackGuard`:
a message that makes a callback raise is dropped and logged, and the simulator keeps running.
"""

from __future__ import annotations

import queue
import sys
import threading
import time

import numpy as np
from geometry_msgs.msg import Pose
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, Header

from apo_core import topics
from apo_core.errors import ApoError, InvalidActionError
from apo_interfaces.msg import ActionCommand, EpisodeEvent, RobotState
from apo_ros.node import run_node
from apo_ros.params import CallbackGuard, load_parameters
from apo_ros.qos import topic_qos
from apo_sim.env import ACTION_DIM, SimEnv, SimObservation, validate_action
from apo_sim.expert import ScriptedExpert
from apo_sim.node_config import SimNodeConfig

NODE_NAME = "apo_sim"
_STOP = object()


class SimNode(Node):
    """The simulated robot driver. ``SimNode(context=...)`` for in-process use (tests)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        # Every parameter given at start is declared, so a misspelt one reaches the strict check.
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self._started = self.get_clock().now()
        try:
            self.cfg = load_parameters(self, SimNodeConfig)
        except ApoError:
            super().destroy_node()
            raise
        # A bad message is dropped and counted, never allowed to stop the executor (and the simulator).
        self.guard = CallbackGuard(self)
        self.rejected_commands = 0
        self.steps_taken = 0
        self.resets = 0
        self.observations_published = 0
        self._latest_cmd: tuple[np.ndarray, float] | None = None  # (action, monotonic receive time)
        self._cmd_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._tick_pending = threading.Event()
        self.episode_id = ""
        self._env: SimEnv | None = None
        self._expert: ScriptedExpert | None = None

        self._pub_image = self.create_publisher(Image, topics.IMAGE, topic_qos(topics.IMAGE))
        self._pub_state = self.create_publisher(RobotState, topics.ROBOT_STATE, topic_qos(topics.ROBOT_STATE))
        self._pub_expert = (self.create_publisher(ActionCommand, topics.SIM_EXPERT_ACTION,
                                                  topic_qos(topics.SIM_EXPERT_ACTION))
                            if self.cfg.publish_expert else None)
        self._pub_progress = self.create_publisher(Float64MultiArray, topics.SIM_TASK_PROGRESS,
                                                   topic_qos(topics.SIM_TASK_PROGRESS))

        # The worker builds the environment (its GL context then belongs to that thread); wait for it
        # so that a bad camera or a broken install fails the constructor, not a later callback.
        ready = threading.Event()
        self._init_error: BaseException | None = None
        self._worker = threading.Thread(target=self._run_worker, args=(ready,), name="apo_sim_worker", daemon=True)
        self._worker.start()
        ready.wait()
        if self._init_error is not None:
            self._worker.join(timeout=5.0)
            self.destroy_node()
            raise self._init_error

        # Lockstep must not lose a burst of commands: a deeper history than the graph default.
        cmd_qos = topic_qos(topics.COMMAND, depth=1000 if self.cfg.mode == "lockstep" else None)
        self.create_subscription(ActionCommand, topics.COMMAND, self.guard.subscription(topics.COMMAND, self._on_command),
                                 cmd_qos)
        self.create_subscription(EpisodeEvent, topics.EPISODE, self.guard.subscription(topics.EPISODE, self._on_episode),
                                 topic_qos(topics.EPISODE))
        self._timer = (self.create_timer(1.0 / self.cfg.control_rate_hz, self._on_tick)
                       if self.cfg.mode == "realtime" else None)
        cfg = self.cfg
        self.get_logger().info(
            f"simulating {cfg.task} ({cfg.instruction!r}) in {cfg.mode} mode, {cfg.image_size}px "
            f"'{cfg.camera}' images, {cfg.control_rate_hz:g} Hz ticks, sim control {cfg.sim_control_freq:g} Hz"
        )

    # --- callbacks (executor threads: only enqueue) ---------------------------------------------
    def _on_command(self, msg: ActionCommand):
        try:
            action = validate_action(msg.action)
        except InvalidActionError as exc:
            self.rejected_commands += 1
            self.get_logger().warning(f"rejected command #{self.rejected_commands}: {exc}", throttle_duration_sec=1.0)
            return
        if self.cfg.mode == "lockstep":
            self._queue.put(("step", action))
        else:
            with self._cmd_lock:
                self._latest_cmd = (action, time.monotonic())

    def _on_episode(self, msg: EpisodeEvent):
        if msg.event != EpisodeEvent.EVENT_START:
            return
        stamp = Time.from_msg(msg.header.stamp)
        if stamp.nanoseconds and stamp < self._started:
            self.episode_id = msg.episode_id  # latched history from before we started
            return
        if msg.task and msg.task != self.cfg.task:
            self.get_logger().warning(f"episode {msg.episode_id[:80]!r} is for task {msg.task[:80]!r} but this "
                                      f"simulator runs {self.cfg.task!r}; resetting {self.cfg.task!r}")
        self._queue.put(("reset", msg.episode_id))

    def _on_tick(self):
        if not self._tick_pending.is_set():  # never queue ticks behind a slow step
            self._tick_pending.set()
            self._queue.put(("tick", None))

    # --- worker thread: owns the simulator ------------------------------------------------------
    def _run_worker(self, ready: threading.Event):
        try:
            seed = self.cfg.seed if self.cfg.seed >= 0 else None
            self._env = SimEnv(self.cfg.task, camera=self.cfg.camera, image_size=self.cfg.image_size,
                               control_freq=self.cfg.sim_control_freq, seed=seed)
            self._expert = ScriptedExpert(self.cfg.task)
            self._publish(self._reset())  # before the constructor returns: deterministic for tests
        except BaseException as exc:  # reported by the constructor
            self._init_error = exc
            if self._env is not None:
                self._env.close()
            ready.set()
            return
        ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                kind, payload = item
                try:
                    self._handle(kind, payload)
                except Exception as exc:  # keep driving the robot; say what went wrong
                    self.get_logger().error(f"simulator {kind} failed: {exc!r}")
        finally:
            self._env.close()

    def _handle(self, kind: str, payload):
        if kind == "reset":
            with self._cmd_lock:
                self._latest_cmd = None  # a command from the last episode must not leak into this one
            self.episode_id = payload
            self._publish(self._reset())
        elif kind == "step":
            self._publish(self._step(payload))
        elif kind == "tick":
            self._tick_pending.clear()
            with self._cmd_lock:
                latest = self._latest_cmd
            fresh = latest is not None and time.monotonic() - latest[1] <= self.cfg.command_timeout_s
            self._publish(self._step(latest[0] if fresh else np.zeros(ACTION_DIM)))

    def _reset(self) -> SimObservation:
        seed = None if self.cfg.seed < 0 else self.cfg.seed + self.resets
        obs = self._env.reset(seed=seed)
        self._expert.reset()
        self.resets += 1
        return obs

    def _step(self, action: np.ndarray) -> SimObservation:
        obs = self._env.step(action)
        self.steps_taken += 1
        return obs

    # --- publishing (worker thread) -------------------------------------------------------------
    def _publish(self, obs: SimObservation):
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.cfg.frame_id)
        state = self._env.task_state()
        image = Image(header=header, height=obs.image.shape[0], width=obs.image.shape[1], encoding="rgb8",
                      is_bigendian=0, step=obs.image.shape[1] * 3, data=obs.image.tobytes())
        self._pub_image.publish(image)
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in obs.eef_pos)
        q = obs.eef_quat
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
        self._pub_state.publish(RobotState(
            header=header, joint_positions=obs.joint_positions.tolist(), eef_pose=pose,
            gripper=obs.gripper_qpos.tolist(), proprio=obs.proprio.tolist(), task_success=bool(obs.success)))
        if self._pub_expert is not None:
            action = self._expert.act(state)
            self._pub_expert.publish(ActionCommand(header=header, action=action.tolist(),
                                                   source=ActionCommand.SOURCE_EXPERT, policy_version=""))
        status = self._expert.status(state)
        self._pub_progress.publish(Float64MultiArray(data=status.as_list()))
        self.observations_published += 1

    # --- lifecycle ------------------------------------------------------------------------------
    def destroy_node(self):
        worker = getattr(self, "_worker", None)
        if worker is not None and worker.is_alive():
            self._queue.put(_STOP)
            worker.join(timeout=10.0)
        return super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point: a bad parameter -> its message and exit code 2; SIGINT/SIGTERM -> 0.

    A signal during the (slow) simulator start lets it finish, then shuts down: stop spinning, stop the
    simulator worker (``destroy_node``), then the context.
    """
    return run_node(SimNode, "apo_sim_node", args, num_threads=2, interrupt_build=False)



if __name__ == "__main__":
    sys.exit(main())
