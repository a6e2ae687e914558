"""ROS 2 node: newest image + robot state + instruction -> VLA action on /apo/policy_action.

- Inference runs on a worker thread, never on the executor: callbacks only drop the newest frame in
  a one-slot mailbox (stale frames are replaced and counted, never queued); the camera subscription
  is best effort with depth 1, so DDS keeps no backlog either. The frame's bytes are read in place
  (an rgb8 image is a view of the message buffer; the policy converts it once into its reused float
  input). After each model load the heap is frozen for the garbage collector (see _settle_heap).
- /diagnostics carries where a frame's time goes (arrival, mailbox wait,
  decode, predict, publish and garbage-collector pauses: median/p95/max ms over the last 1000
  frames, stage_times.py).
- Policies come only from the ``model_path`` parameter set at start (a model store or one policy
  directory, see policy_source.py). A store that is missing, empty or has no current version is
  waited for: the node runs without a policy, publishes no action (the arbiter holds), reports
  "no policy loaded" (WARN) on /diagnostics, and loads the store's current version as soon as there
  is one (``apo models import``), checking the pointer every ``store_poll_s``. ``/apo/policy/load`` names a version inside it, never a path; the
  new version loads on a loader thread while the old one keeps driving, then swaps under a lock.
- The instruction comes from the ``instruction`` parameter or, when empty, from the latest episode
  START event.
- Parameters are strict (config.py): an unknown or mistyped one stops the start with exit code 2.
"""

from __future__ import annotations

import gc
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import Image

from apo_core import topics
from apo_core.image_codec import ImageEncodingError, image_to_rgb
from apo_core.policy import Observation
from apo_interfaces.msg import ActionCommand, EpisodeEvent, RobotState
from apo_interfaces.srv import LoadPolicy
from apo_policy_node.config import PolicyNodeConfig
from apo_policy_node.latest import LatestSlot
from apo_policy_node.policy_source import PolicySource
from apo_policy_node.stage_times import StageTimes
from apo_ros.node import build_or_destroy, run_node
from apo_ros.params import CallbackGuard, fill_failure, load_parameters, parameter_names
from apo_ros.qos import topic_qos

PROGRAM = "apo_policy_node"
CONFIG_PARAMETERS = frozenset(parameter_names(PolicyNodeConfig))


class PolicyNode(Node):
    def __init__(self, **kwargs):
        # Every parameter given at start becomes visible, so a misspelt one is refused, not ignored.
        kwargs.setdefault("automatically_declare_parameters_from_overrides", True)
        # Set before anything can fail: destroy_node() must work on a half-built node (rclpy calls it
        # for every node of a context at shutdown).
        self._running = False
        self._worker: threading.Thread | None = None
        self._frames = LatestSlot()
        self._times = StageTimes()
        super().__init__("apo_policy", **kwargs)
        build_or_destroy(self, self._build)

    def _build(self) -> None:
        self.config = cfg = load_parameters(self, PolicyNodeConfig)
        self.add_on_set_parameters_callback(_read_only_parameters)
        self._source = PolicySource(cfg.model_path, device=cfg.device, trust_remote_code=cfg.trust_remote_code,
                                    camera=cfg.camera)
        import torch

        torch.set_num_threads(cfg.num_threads)

        self._policy_lock = threading.Lock()
        self._policy = None
        self._waiting_reason = ""  # why no policy is loaded (diagnostics), "" once one is
        self._background_load: threading.Thread | None = None
        self._failed_version: str | None = None  # not retried until the store's pointer changes
        if cfg.model_version or self._source.current_version() is not None:
            self._policy = self._source.load(cfg.model_version)  # a bad model still stops the start (exit 2)
            _settle_heap()
        else:
            self._waiting_reason = (f"model store {self._source.root} has no current version yet; import one with "
                                    f"`apo models import DIR --store {self._source.root}`")
        self._instruction = cfg.instruction
        self._state: RobotState | None = None
        self._state_lock = threading.Lock()
        self._stats = {"published": 0, "rejected_nonfinite": 0, "bad_images": 0, "no_instruction": 0,
                       "no_state": 0, "no_policy": 0, "episode_resets": 0, "last_inference_ms": 0.0,
                       "last_wait_ms": 0.0}
        self._episode_started = False
        self._guard = CallbackGuard(self)

        self._pub = self.create_publisher(ActionCommand, topics.POLICY_ACTION, topic_qos(topics.POLICY_ACTION))
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, topic_qos(topics.DIAGNOSTICS))
        self.create_subscription(Image, cfg.image_topic, self._guard.subscription("image", self._on_image),
                                 topic_qos(topics.IMAGE))
        self.create_subscription(RobotState, cfg.state_topic, self._guard.subscription("robot state", self._on_state),
                                 topic_qos(topics.ROBOT_STATE))
        self.create_subscription(EpisodeEvent, topics.EPISODE, self._guard.subscription("episode", self._on_episode),
                                 topic_qos(topics.EPISODE))
        # Loading takes from a second (small VLA) to minutes (7B). The service callback is a coroutine
        # in its own callback group: it hands the load to a thread and awaits it, so the one executor
        # keeps delivering frames meanwhile, and load requests are served one at a time.
        self._load_done = self.create_guard_condition(lambda: None)  # wakes the executor when a load ends
        self.create_service(LoadPolicy, topics.LOAD_POLICY, self._on_load,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(cfg.store_poll_s, self._load_when_store_filled)
        self._running = True
        self._times.watch_gc()
        self._worker = threading.Thread(target=self._inference_loop, name="policy-inference", daemon=True)
        self._worker.start()
        if self._policy is None:
            self.get_logger().warning(f"no policy loaded: {self._waiting_reason}; holding (no actions) until then")
        else:
            self.get_logger().info(f"policy {self._policy.version!r} from {self._source.root} ready on {cfg.device}"
                                   + (" (trust_remote_code on)" if cfg.trust_remote_code else ""))

    # --- loading -----------------------------------------------------------------------------
    @property
    def policy_version(self) -> str:
        """The running version, "" while no policy is loaded."""
        with self._policy_lock:
            return self._policy.version if self._policy is not None else ""

    def _running_text(self) -> str:
        version = self.policy_version
        return f"still running {version!r}" if version else "still no policy loaded"

    def _load_when_store_filled(self):
        """Timer: while no policy is loaded, load the store's current version once there is one."""
        if self._policy is not None or (self._background_load is not None and self._background_load.is_alive()):
            return
        try:
            version = self._source.current_version()
        except Exception as exc:  # e.g. a broken `current` link: reported, checked again next tick
            self._waiting_reason = _short(f"model store {self._source.root} unusable: {exc}")
            return
        if version is None or version == self._failed_version:
            return
        self._waiting_reason = f"loading {version!r} from {self._source.root}"
        self._background_load = threading.Thread(target=self._load_first, args=(version,), name="policy-first-load",
                                                 daemon=True)
        self._background_load.start()

    def _load_first(self, version: str) -> None:
        try:
            policy = self._source.load(version)
        except Exception as exc:
            self._failed_version = version
            self._waiting_reason = _short(f"{version!r} failed to load ({type(exc).__name__}: {exc}); waiting for "
                                          "another current version")
            self.get_logger().error(f"no policy loaded: {self._waiting_reason}")
            return
        with self._policy_lock:
            if self._policy is None:  # a LoadPolicy request may have been faster
                self._policy = policy
                self._waiting_reason = ""
        _settle_heap()
        self.get_logger().info(f"policy {self.policy_version!r} from {self._source.root} loaded; proposing actions")

    async def _on_load(self, request, response):
        # CallbackGuard wraps plain functions only; this coroutine keeps the same contract itself:
        # any failure -> success false with the reason, one log line, the node keeps serving.
        try:
            return await self._load_and_swap(request, response)
        except Exception as exc:
            self._guard.errors += 1
            fill_failure(response, _short(f"load refused, {self._running_text()}: {type(exc).__name__}: {exc}"))
            response.loaded_version = self.policy_version
            self.get_logger().error(response.message)
            return response

    async def _load_and_swap(self, request, response):
        version = request.version
        done = Future()

        def load():
            try:
                done.set_result(self._source.load(version))  # the old policy keeps running meanwhile
            except BaseException as exc:  # handed back to the service callback, which answers
                done.set_exception(exc)
            try:
                self._load_done.trigger()
            except Exception:  # the node was destroyed meanwhile: nobody is waiting
                pass

        threading.Thread(target=load, name="policy-loader", daemon=True).start()
        try:
            new_policy = await done
        except Exception as exc:  # a load error: refused explicitly, the running version stays
            response.success = False
            response.message = _short(f"load failed, {self._running_text()}: {exc}")
            response.loaded_version = self.policy_version
            self.get_logger().error(response.message)
            return response
        with self._policy_lock:
            old, self._policy = self._policy, new_policy
            self._waiting_reason = ""
        response.success = True
        response.loaded_version = new_policy.version
        response.message = (f"switched from {old.version!r} to {new_policy.version!r}" if old is not None
                            else f"loaded {new_policy.version!r} (no policy before)")
        del old
        _settle_heap()  # the old model is freed here (it was frozen), the new one frozen
        self.get_logger().info(response.message)
        return response

    # --- inputs ------------------------------------------------------------------------------
    def _on_image(self, msg: Image):
        stamp = msg.header.stamp
        if stamp.sec or stamp.nanosec:  # how old the frame is when it reaches us (driver, DDS, executor)
            self._times.record(arrival=(self.get_clock().now().nanoseconds - _stamp_s(stamp) * 1e9) / 1e6)
        self._frames.put((msg, time.perf_counter()))

    def _on_state(self, msg: RobotState):
        with self._state_lock:
            self._state = msg

    def _on_episode(self, msg: EpisodeEvent):
        if msg.event != EpisodeEvent.EVENT_START:
            return
        # A policy with episode state (a chunked VLA's planned chunks) starts each episode fresh; the
        # inference thread resets it before its next predict, so predict and reset never overlap.
        self._episode_started = True
        if msg.instruction and not self.config.instruction:
            self._instruction = msg.instruction

    # --- inference ---------------------------------------------------------------------------
    def _inference_loop(self):
        while self._running:
            item = self._frames.take(timeout=0.2)
            if item is None:
                continue
            msg, arrived = item
            self._stats["last_wait_ms"] = wait_ms = (time.perf_counter() - arrived) * 1000
            self._times.record(wait=wait_ms)
            try:
                self._infer_and_publish(msg)
            except Exception as exc:  # keep the loop alive; the arbiter holds when proposals stop
                if not self._running or not self.context.ok():
                    break  # shutting down: the publisher's context is gone
                self.get_logger().error(f"inference failed: {exc}", throttle_duration_sec=5.0)

    def _infer_and_publish(self, msg: Image):
        with self._policy_lock:
            policy = self._policy
        if policy is None:  # waiting for a model: no proposal, so the arbiter holds
            self._stats["no_policy"] += 1
            return
        if not self._instruction:
            self._stats["no_instruction"] += 1
            self.get_logger().warning("no instruction yet (parameter or episode START)", throttle_duration_sec=5.0)
            return
        t0 = time.perf_counter()
        try:
            # rgb8 (the camera topic's encoding): a view of the message's own buffer, no copy; the policy's
            # preprocessing reads it once into its float input
            image = image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data, copy=False)
        except ImageEncodingError as exc:
            self._stats["bad_images"] += 1
            self.get_logger().error(f"dropping image: {exc}", throttle_duration_sec=5.0)
            return
        state = None
        if getattr(getattr(policy, "config", None), "state_dim", 0):
            state = self._current_state(msg)
            if state is None:
                self._stats["no_state"] += 1
                return
        if self._episode_started:
            self._episode_started = False
            policy.reset()
            self._stats["episode_resets"] += 1
        t1 = time.perf_counter()
        action = policy.predict(Observation(image, self._instruction, state))
        t2 = time.perf_counter()
        self._stats["last_inference_ms"] = (t2 - t1) * 1000
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
        self._times.record(decode=(t1 - t0) * 1000, predict=(t2 - t1) * 1000,
                           publish=(time.perf_counter() - t2) * 1000)

    def _current_state(self, image_msg: Image):
        with self._state_lock:
            st = self._state
        if st is None or not len(st.proprio):
            return None
        age = _stamp_s(image_msg.header.stamp) - _stamp_s(st.header.stamp)
        if abs(age) > self.config.max_state_age_s:
            return None
        return np.asarray(st.proprio, dtype=np.float64)

    # --- diagnostics / shutdown -------------------------------------------------------------
    def _publish_diagnostics(self):
        status = DiagnosticStatus(name=self.get_name(), hardware_id=topics.POLICY_DIAGNOSTICS_ID)
        version = self.policy_version
        if version:
            status.level, status.message = DiagnosticStatus.OK, f"version {version}"
        else:
            status.level, status.message = DiagnosticStatus.WARN, f"no policy loaded: {self._waiting_reason}"
        values = {**self.stats, **self._times.summary(), "version": version, "instruction": self._instruction,
                  "model_path": str(self._source.root)}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._diag_pub.publish(arr)

    @property
    def stats(self) -> dict:
        return {**self._stats, "frames_received": self._frames.received, "frames_dropped_stale": self._frames.dropped,
                "callback_errors": self._guard.errors}

    def destroy_node(self):
        self._running = False
        self._times.unwatch_gc()
        self._frames.close()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def _read_only_parameters(params) -> SetParametersResult:
    # Parameters are read once at start (where policies come from must not change under a running node).
    names = [p.name for p in params if p.name in CONFIG_PARAMETERS]
    if not names:
        return SetParametersResult(successful=True)
    return SetParametersResult(successful=False, reason=f"{', '.join(names)}: parameters of {PROGRAM} are read "
                                                        "at start only; restart the node to change them")


def _settle_heap() -> None:
    """After a model load: collect once, then move every surviving object (torch, transformers, rclpy and
    the model: about 380,000 objects for the small VLA) out of the garbage collector's view. A full
    collection of that heap holds the GIL for about 140 ms (measured on the 2-core machine), stalling
    inference and the executor alike; frozen, the collections the loop triggers walk only what was
    allocated since."""
    gc.unfreeze()  # a replaced model was frozen with the rest: only a collection after this frees it
    gc.collect()
    gc.freeze()


def _short(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def main(args=None) -> int:
    """Entry point: a bad parameter or model -> one line on stderr and exit code 2; SIGINT/SIGTERM -> 0."""
    # One single-threaded executor: measured lower and steadier frame-to-action latency than a
    # multi-threaded executor sharing the GIL with the inference thread (bench/bench_control_loop.py).
    # A signal while the model loads interrupts the load.
    return run_node(PolicyNode, PROGRAM, args)



if __name__ == "__main__":
    sys.exit(main())
