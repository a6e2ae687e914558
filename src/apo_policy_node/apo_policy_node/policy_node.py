"""ROS 2 node: newest image + robot state + instruction -> VLA action on /apo/policy_action.

- Inference runs on a worker thread, never on the executor: callbacks only drop the newest frame in
  a one-slot mailbox (stale frames are replaced and counted, never queued).
- ``/apo/policy/load`` loads another version (from the model store or a directory) while the old one
  keeps driving, then swaps atomically under a lock.
- The instruction comes from the ``instruction`` parameter or, when empty, from the latest episode
  START event.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image

from apo_core import topics
from apo_core.errors import ApoError
from apo_core.image_codec import ImageEncodingError, image_to_rgb
from apo_core.model_store import resolve_policy_dir
from apo_core.policy import Observation, load_policy
from apo_core.ros_qos import topic_qos
from apo_interfaces.msg import ActionCommand, EpisodeEvent, RobotState
from apo_interfaces.srv import LoadPolicy
from apo_policy_node.latest import LatestSlot


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("apo_policy", **kwargs)
        self._declare("model_path", "", "Model store root (with versions/) or a single policy directory.")
        self._declare("model_version", "", "Version to load at start from a model store ('' = current).")
        self._declare("instruction", "", "Task instruction; '' = take it from the latest episode START event.")
        self._declare("device", "cpu", "torch device for inference (cpu, cuda, cuda:1).")
        self._declare("num_threads", 2, "torch CPU threads for inference.")
        self._declare("image_topic", topics.IMAGE, "Camera topic (sensor_msgs/Image).")
        self._declare("state_topic", topics.ROBOT_STATE, "Robot state topic (apo_interfaces/RobotState).")
        self._declare("max_state_age_s", 1.0, "A robot state older than this (vs. the image) is not used.")
        model_path = self.get_parameter("model_path").value
        if not model_path:
            raise ApoError("parameter model_path is empty: give a model store root or a policy directory")
        self._model_path = Path(model_path)
        self._device = self.get_parameter("device").value
        import torch

        torch.set_num_threads(int(self.get_parameter("num_threads").value))

        self._policy_lock = threading.Lock()
        self._policy = self._load(self.get_parameter("model_version").value)
        self._instruction = self.get_parameter("instruction").value
        self._state: RobotState | None = None
        self._state_lock = threading.Lock()
        self._frames = LatestSlot()
        self._stats = {"published": 0, "rejected_nonfinite": 0, "bad_images": 0, "no_instruction": 0,
                       "no_state": 0, "last_inference_ms": 0.0, "last_wait_ms": 0.0}

        self._pub = self.create_publisher(ActionCommand, topics.POLICY_ACTION, topic_qos(topics.POLICY_ACTION))
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, topic_qos(topics.DIAGNOSTICS))
        self.create_subscription(Image, self.get_parameter("image_topic").value, self._on_image,
                                 topic_qos(topics.IMAGE))
        self.create_subscription(RobotState, self.get_parameter("state_topic").value, self._on_state,
                                 topic_qos(topics.ROBOT_STATE))
        self.create_subscription(EpisodeEvent, topics.EPISODE, self._on_episode, topic_qos(topics.EPISODE))
        # Loading a version takes from a second (small VLA) to minutes (7B): the service lives on a
        # companion node with its own executor thread, so frames keep flowing meanwhile.
        self.loader_node = rclpy.create_node(f"{self.get_name()}_loader", context=self.context)
        self.loader_node.create_service(LoadPolicy, topics.LOAD_POLICY, self._on_load)
        self.create_timer(1.0, self._publish_diagnostics)
        self._running = True
        self._worker = threading.Thread(target=self._inference_loop, name="policy-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(f"policy {self._policy.version!r} from {self._model_path} ready on {self._device}")

    # --- parameters / loading ----------------------------------------------------------------
    def _declare(self, name, default, description):
        self.declare_parameter(name, default, ParameterDescriptor(description=description))

    def _load(self, version: str):
        """Load a policy: a version of the store ('' = current) or an explicit directory path."""
        if version and ("/" in version or Path(version).is_dir()):
            directory, label = resolve_policy_dir(version)
        else:
            directory, label = resolve_policy_dir(self._model_path, version or None)
        policy = load_policy(directory, device=self._device)
        policy.version = label
        policy.model.eval()
        return policy

    @property
    def policy_version(self) -> str:
        with self._policy_lock:
            return self._policy.version

    def _on_load(self, request, response):
        try:
            new_policy = self._load(request.version)  # the old policy keeps running meanwhile
        except Exception as exc:  # report any load failure to the caller, keep the running version
            response.success = False
            response.message = f"load failed, still running {self.policy_version!r}: {exc}"
            response.loaded_version = self.policy_version
            self.get_logger().error(response.message)
            return response
        with self._policy_lock:
            old, self._policy = self._policy.version, new_policy
        response.success = True
        response.loaded_version = new_policy.version
        response.message = f"switched from {old!r} to {new_policy.version!r}"
        self.get_logger().info(response.message)
        return response

    # --- inputs ------------------------------------------------------------------------------
    def _on_image(self, msg: Image):
        self._frames.put((msg, time.perf_counter()))

    def _on_state(self, msg: RobotState):
        with self._state_lock:
            self._state = msg

    def _on_episode(self, msg: EpisodeEvent):
        if msg.event == EpisodeEvent.EVENT_START and msg.instruction and not self.get_parameter("instruction").value:
            self._instruction = msg.instruction

    # --- inference ---------------------------------------------------------------------------
    def _inference_loop(self):
        while self._running:
            item = self._frames.take(timeout=0.2)
            if item is None:
                continue
            msg, arrived = item
            self._stats["last_wait_ms"] = (time.perf_counter() - arrived) * 1000
            try:
                self._infer_and_publish(msg)
            except Exception as exc:  # keep the loop alive; the arbiter holds when proposals stop
                if not self._running or not self.context.ok():
                    break  # shutting down: the publisher's context is gone
                self.get_logger().error(f"inference failed: {exc}", throttle_duration_sec=5.0)

    def _infer_and_publish(self, msg: Image):
        if not self._instruction:
            self._stats["no_instruction"] += 1
            self.get_logger().warning("no instruction yet (parameter or episode START)", throttle_duration_sec=5.0)
            return
        try:
            image = image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data)
        except ImageEncodingError as exc:
            self._stats["bad_images"] += 1
            self.get_logger().error(f"dropping image: {exc}", throttle_duration_sec=5.0)
            return
        with self._policy_lock:
            policy = self._policy
        state = None
        if getattr(getattr(policy, "config", None), "state_dim", 0):
            state = self._current_state(msg)
            if state is None:
                self._stats["no_state"] += 1
                return
        t0 = time.perf_counter()
        action = policy.predict(Observation(image, self._instruction, state))
        self._stats["last_inference_ms"] = (time.perf_counter() - t0) * 1000
        if not np.all(np.isfinite(action)):
            self._stats["rejected_nonfinite"] += 1
            self.get_logger().error("policy produced a non-finite action; not published", throttle_duration_sec=5.0)
            return
        out = ActionCommand()
        out.header.stamp = msg.header.stamp  # the frame this action answers (latency measurements)
        out.header.frame_id = msg.header.frame_id
        out.action = [float(x) for x in action]
        out.source = ActionCommand.SOURCE_POLICY
        out.policy_version = policy.version
        self._pub.publish(out)
        self._stats["published"] += 1

    def _current_state(self, image_msg: Image):
        with self._state_lock:
            st = self._state
        if st is None or not len(st.proprio):
            return None
        age = _stamp_s(image_msg.header.stamp) - _stamp_s(st.header.stamp)
        if abs(age) > float(self.get_parameter("max_state_age_s").value):
            return None
        return np.asarray(st.proprio, dtype=np.float64)

    # --- diagnostics / shutdown -------------------------------------------------------------
    def _publish_diagnostics(self):
        status = DiagnosticStatus(name="apo_policy", hardware_id="policy")
        status.level = DiagnosticStatus.OK
        status.message = f"version {self.policy_version}"
        values = {**self.stats, "version": self.policy_version, "instruction": self._instruction}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._diag_pub.publish(arr)

    @property
    def stats(self) -> dict:
        return {**self._stats, "frames_received": self._frames.received, "frames_dropped_stale": self._frames.dropped}

    def destroy_node(self):
        self._running = False
        self._frames.close()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        self.loader_node.destroy_node()
        return super().destroy_node()


def _stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def main(args=None):
    rclpy.init(args=args)
    try:
        node = PolicyNode()
    except Exception as exc:
        print(f"[apo_policy] failed to start: {exc}", flush=True)
        rclpy.try_shutdown()
        raise SystemExit(2) from None
    # One single-threaded executor per node: measured lower and steadier frame-to-action latency than
    # a multi-threaded executor sharing the GIL with the inference thread (bench/bench_control_loop.py).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    loader = SingleThreadedExecutor()
    loader.add_node(node.loader_node)
    loader_thread = threading.Thread(target=_spin_quietly, args=(loader,), name="policy-loader", daemon=True)
    loader_thread.start()
    try:
        executor.spin()  # rclpy's signal handlers turn SIGINT/SIGTERM into a context shutdown
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=2.0)
        loader.shutdown(timeout_sec=2.0)
        loader_thread.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()


def _spin_quietly(executor) -> None:
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main()
