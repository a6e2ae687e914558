"""ROS 2 driver node for the simulated arm: the same topics a real robot driver would offer.

Publishes (names from :mod:`apo_core.topics`, QoS from :func:`apo_core.ros_qos.topic_qos`):
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
waits for the simulator. A wrong parameter (unknown task, mode, camera, ...) makes the constructor
raise :class:`apo_sim.env.SimConfigError` naming the parameter; ``main`` prints it and exits 2.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Pose
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, Header

from apo_core import topics
from apo_core.errors import InvalidActionError
from apo_core.ros_qos import topic_qos
from apo_interfaces.msg import ActionCommand, EpisodeEvent, RobotState
from apo_sim.env import (
    ACTION_DIM,
    DEFAULT_CAMERA,
    DEFAULT_CONTROL_FREQ,
    TASKS,
    Observation,
    SimConfigError,
    SimEnv,
    validate_action,
)
from apo_sim.expert import ScriptedExpert

MODES = ("realtime", "lockstep")
NODE_NAME = "apo_sim"
_STOP = object()


def _descriptor(ptype, description: str, constraints: str = "") -> ParameterDescriptor:
    return ParameterDescriptor(type=ptype, description=description, additional_constraints=constraints,
                               read_only=True)


def _number_descriptor(description: str, constraints: str = "") -> ParameterDescriptor:
    # Dynamically typed so that "control_rate_hz:=20" (parsed as an integer) works like 20.0.
    return ParameterDescriptor(description=description, additional_constraints=constraints, read_only=True,
                               dynamic_typing=True)


def _as_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SimConfigError(f"parameter '{name}': expected a number, got {value!r}")
    return float(value)


class SimNode(Node):
    """The simulated robot driver. ``SimNode(context=...)`` for in-process use (tests)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._started = self.get_clock().now()
        try:
            self._declare_and_validate()
        except (SimConfigError, ParameterException):
            super().destroy_node()
            raise
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
                            if self.publish_expert else None)
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
        cmd_qos = topic_qos(topics.COMMAND, depth=1000 if self.mode == "lockstep" else None)
        self.create_subscription(ActionCommand, topics.COMMAND, self._on_command, cmd_qos)
        self.create_subscription(EpisodeEvent, topics.EPISODE, self._on_episode, topic_qos(topics.EPISODE))
        self._timer = (self.create_timer(1.0 / self.control_rate_hz, self._on_tick)
                       if self.mode == "realtime" else None)
        self.get_logger().info(
            f"simulating {self.task} ({self.instruction!r}) in {self.mode} mode, {self.image_size}px "
            f"'{self.camera}' images, {self.control_rate_hz:g} Hz ticks, sim control {self.sim_control_freq:g} Hz"
        )

    # --- parameters ------------------------------------------------------------------------------
    def _declare_and_validate(self):
        P = ParameterType
        task = self.declare_parameter("task", "Lift", _descriptor(
            P.PARAMETER_STRING, "robosuite task", f"one of {sorted(TASKS)}")).value
        if task not in TASKS:
            raise SimConfigError(f"parameter 'task': unknown task {task!r}; apo_sim supports {sorted(TASKS)}")
        self.task = task
        self.image_size = int(self.declare_parameter("image_size", 128, _descriptor(
            P.PARAMETER_INTEGER, "camera image width and height (pixels)", "16..1024")).value)
        self.camera = self.declare_parameter("camera", DEFAULT_CAMERA, _descriptor(
            P.PARAMETER_STRING, "robosuite camera name", "a camera of the task's scene")).value
        self.control_rate_hz = _as_float("control_rate_hz", self.declare_parameter(
            "control_rate_hz", 10.0, _number_descriptor("realtime mode: wall-clock control ticks per second",
                                                        "> 0")).value)
        self.sim_control_freq = _as_float("sim_control_freq", self.declare_parameter(
            "sim_control_freq", DEFAULT_CONTROL_FREQ, _number_descriptor(
                "robosuite control_freq: simulated control steps per simulated second (keep equal to the "
                "demonstrations' --control-freq so actions mean the same)", "1..500")).value)
        self.mode = self.declare_parameter("mode", "realtime", _descriptor(
            P.PARAMETER_STRING, "realtime: timer-driven steps; lockstep: one step per command",
            f"one of {list(MODES)}")).value
        self.seed = int(self.declare_parameter("seed", -1, _descriptor(
            P.PARAMETER_INTEGER, "seed of the first episode (episode i uses seed+i); -1 = unseeded")).value)
        self.instruction = self.declare_parameter("instruction", TASKS[task].instruction, ParameterDescriptor(
            type=P.PARAMETER_STRING, description="task instruction (defaults to the task's own)")).value
        self.publish_expert = bool(self.declare_parameter("publish_expert", True, _descriptor(
            P.PARAMETER_BOOL, "publish the scripted expert's action on the SIM_EXPERT_ACTION topic")).value)
        self.frame_id = self.declare_parameter("frame_id", "apo_sim_base", _descriptor(
            P.PARAMETER_STRING, "header frame_id of every published message")).value
        self.command_timeout_s = _as_float("command_timeout_s", self.declare_parameter(
            "command_timeout_s", 0.5, _number_descriptor(
                "realtime mode: a command older than this is replaced by zero motion", "> 0")).value)
        if self.mode not in MODES:
            raise SimConfigError(f"parameter 'mode': {self.mode!r} is not one of {list(MODES)}")
        if not 16 <= self.image_size <= 1024:
            raise SimConfigError(f"parameter 'image_size': {self.image_size} is outside 16..1024 pixels")
        if not 1.0 <= self.sim_control_freq <= 500.0:
            raise SimConfigError(f"parameter 'sim_control_freq': {self.sim_control_freq} is outside 1..500 Hz")
        for name in ("control_rate_hz", "command_timeout_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise SimConfigError(f"parameter '{name}': must be a positive number, got {value!r}")
        if not self.instruction.strip():
            raise SimConfigError("parameter 'instruction': must not be empty")

    # --- callbacks (executor threads: only enqueue) ---------------------------------------------
    def _on_command(self, msg: ActionCommand):
        try:
            action = validate_action(msg.action)
        except InvalidActionError as exc:
            self.rejected_commands += 1
            self.get_logger().warning(f"rejected command #{self.rejected_commands}: {exc}")
            return
        if self.mode == "lockstep":
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
        if msg.task and msg.task != self.task:
            self.get_logger().warning(f"episode {msg.episode_id!r} is for task {msg.task!r} but this simulator "
                                      f"runs {self.task!r}; resetting {self.task!r}")
        self._queue.put(("reset", msg.episode_id))

    def _on_tick(self):
        if not self._tick_pending.is_set():  # never queue ticks behind a slow step
            self._tick_pending.set()
            self._queue.put(("tick", None))

    # --- worker thread: owns the simulator ------------------------------------------------------
    def _run_worker(self, ready: threading.Event):
        try:
            seed = self.seed if self.seed >= 0 else None
            self._env = SimEnv(self.task, camera=self.camera, image_size=self.image_size,
                               control_freq=self.sim_control_freq, seed=seed)
            self._expert = ScriptedExpert(self.task)
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
            fresh = latest is not None and time.monotonic() - latest[1] <= self.command_timeout_s
            self._publish(self._step(latest[0] if fresh else np.zeros(ACTION_DIM)))

    def _reset(self) -> Observation:
        seed = None if self.seed < 0 else self.seed + self.resets
        obs = self._env.reset(seed=seed)
        self._expert.reset()
        self.resets += 1
        return obs

    def _step(self, action: np.ndarray) -> Observation:
        obs = self._env.step(action)
        self.steps_taken += 1
        return obs

    # --- publishing (worker thread) -------------------------------------------------------------
    def _publish(self, obs: Observation):
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
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
    # Our own SIGINT/SIGTERM handling: stop spinning, stop the simulator worker, then shut down
    # (rclpy's handlers would shut the context down underneath a publishing worker).
    stop = threading.Event()

    def _on_signal(signum, _frame):
        stop.set()

    # Installed before the (slow) simulator start so an early signal still ends in a clean exit.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = SimNode()
    except (SimConfigError, ParameterException) as exc:  # a wrong parameter value or type
        print(f"apo_sim_node: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        node.get_logger().info("shutting down")
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
