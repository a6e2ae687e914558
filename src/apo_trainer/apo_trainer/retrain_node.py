"""ROS 2 node: the ``/apo/retrain`` service and friends, over :class:`RetrainManager`.

Services: /apo/retrain (Retrain: accepted with a job id or rejected with the reason, at once),
/apo/retrain/get_status, /apo/retrain/cancel, /apo/retrain/rollback. Topic: /apo/retrain/status
(latched RetrainStatus on every change). After a promotion or rollback the policy node is asked to
load the new current version (/apo/policy/load). Lifelong mode retrains every N finished episodes.
"""

from __future__ import annotations

import threading
import time

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from apo_core import topics
from apo_core.ros_qos import topic_qos
from apo_interfaces.msg import EpisodeEvent, RetrainStatus
from apo_interfaces.srv import CancelRetrain, GetRetrainStatus, LoadPolicy, Retrain, Rollback
from apo_trainer.retrain.job import JobStatus, RetrainManager, RetrainRequest
from apo_trainer.retrain.settings import load_retrain_settings

TERMINAL_EVENTS = (EpisodeEvent.EVENT_SUCCESS, EpisodeEvent.EVENT_FAILURE, EpisodeEvent.EVENT_ABORT,
                   EpisodeEvent.EVENT_END)


class RetrainNode(Node):
    def __init__(self, **kwargs):
        super().__init__("apo_retrain", **kwargs)
        d = lambda name, default, text: self.declare_parameter(name, default, ParameterDescriptor(description=text))  # noqa: E731
        d("config_file", "", "Retrain settings YAML (config/retrain.yaml); parameters below override it.")
        d("work_dir", "", "Datasets, job directories and the registry of used episodes.")
        d("bags_dir", "", "Where the recorder writes episode bags.")
        d("model_store", "", "Model store root (versions/ + current).")
        d("expert_data", "", "HDF5 of expert demonstrations trained on in every round.")
        d("lifelong_every_n_episodes", -1, "Retrain automatically every N finished episodes (0 off, -1 = file).")
        d("lifelong_delay_s", 3.0, "Wait after the N-th episode ends so the recorder can close its bag.")
        d("steps", 0, "Default optimiser steps (0 = file).")
        overrides = {}
        for key in ("work_dir", "bags_dir", "model_store", "expert_data"):
            if self.get_parameter(key).value:
                overrides[key] = self.get_parameter(key).value
        if self.get_parameter("lifelong_every_n_episodes").value >= 0:
            overrides["lifelong_every_n_episodes"] = self.get_parameter("lifelong_every_n_episodes").value
        if self.get_parameter("steps").value > 0:
            overrides["defaults"] = {"steps": self.get_parameter("steps").value}
        self.settings = load_retrain_settings(self.get_parameter("config_file").value or None, overrides)
        self._status_pub = self.create_publisher(RetrainStatus, topics.RETRAIN_STATUS_TOPIC,
                                                 topic_qos(topics.RETRAIN_STATUS_TOPIC))
        self.manager = RetrainManager(self.settings, on_update=self._publish_status, on_promoted=self._request_load)
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Retrain, topics.RETRAIN, self._on_retrain, callback_group=services)
        self.create_service(GetRetrainStatus, topics.RETRAIN_STATUS, self._on_status, callback_group=services)
        self.create_service(CancelRetrain, topics.RETRAIN_CANCEL, self._on_cancel, callback_group=services)
        self.create_service(Rollback, topics.RETRAIN_ROLLBACK, self._on_rollback, callback_group=services)
        self._load_client = self.create_client(LoadPolicy, topics.LOAD_POLICY, callback_group=ReentrantCallbackGroup())
        self.create_subscription(EpisodeEvent, topics.EPISODE, self._on_episode, topic_qos(topics.EPISODE))
        self._finished_since_job = 0
        self._seen_terminal: set[str] = set()
        self._publish_status(self.manager.status())
        self.get_logger().info(f"retrain service ready (store {self.settings.model_store}, bags {self.settings.bags_dir}"
                               f", lifelong every {self.settings.lifelong_every_n_episodes or 'off'})")

    # --- services ----------------------------------------------------------------------------
    def _on_retrain(self, request, response):
        req = RetrainRequest(episodes=list(request.episodes), loss=request.loss, steps=int(request.steps),
                             k=int(request.k_window), dry_run=bool(request.dry_run))
        accepted, job_id, reason = self.manager.submit(req)
        response.accepted, response.job_id, response.reason = accepted, job_id, reason
        response.base_version = self.manager.store.current_version() or ""
        # rclpy allows one severity per logging call site, hence two calls
        if accepted:
            self.get_logger().info(f"retrain accepted {job_id}: {reason}")
            self._finished_since_job = 0
        else:
            self.get_logger().warning(f"retrain rejected: {reason}")
        return response

    def _on_status(self, request, response):
        status = self.manager.status(request.job_id)
        if status is None:
            response.status = RetrainStatus(job_id=request.job_id, state=RetrainStatus.STATE_IDLE,
                                            message=f"unknown job {request.job_id!r}")
        else:
            response.status = self._to_msg(status)
        return response

    def _on_cancel(self, request, response):
        response.success, response.message = self.manager.cancel(request.job_id)
        return response

    def _on_rollback(self, request, response):
        response.success, response.message, response.current_version = self.manager.rollback(request.version)
        return response

    # --- lifelong mode -----------------------------------------------------------------------
    def _on_episode(self, msg: EpisodeEvent):
        n = self.settings.lifelong_every_n_episodes
        if n <= 0 or msg.event not in TERMINAL_EVENTS or msg.episode_id in self._seen_terminal:
            return
        self._seen_terminal.add(msg.episode_id)
        self._finished_since_job += 1
        if self._finished_since_job >= n and not self.manager.running:
            delay = float(self.get_parameter("lifelong_delay_s").value)
            threading.Timer(delay, self._lifelong_submit).start()

    def _lifelong_submit(self):
        accepted, job_id, reason = self.manager.submit(RetrainRequest())
        self.get_logger().info(f"lifelong retrain {'started ' + job_id if accepted else 'skipped'}: {reason}")
        if accepted:
            self._finished_since_job = 0

    # --- status / reload ---------------------------------------------------------------------
    def _to_msg(self, status: JobStatus) -> RetrainStatus:
        msg = RetrainStatus(job_id=status.job_id, state=status.state_code, progress=float(status.progress),
                            message=status.message, base_version=status.base_version,
                            candidate_version=status.candidate_version, deployed_version=status.deployed_version)
        numeric = {k: float(v) for k, v in status.metrics.items() if isinstance(v, (int, float))}
        msg.metric_names = list(numeric)
        msg.metric_values = list(numeric.values())
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    def _publish_status(self, status: JobStatus) -> None:
        self._status_pub.publish(self._to_msg(status))

    def _request_load(self, version: str) -> None:
        if not self._load_client.wait_for_service(timeout_sec=2.0):
            self.get_logger().warning(f"policy node not reachable on {topics.LOAD_POLICY}; it loads {version} at its "
                                      "next start")
            return
        future = self._load_client.call_async(LoadPolicy.Request(version=version))
        deadline = time.monotonic() + 120
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        result = future.result() if future.done() else None
        if result is None or not result.success:
            self.get_logger().error(f"policy node did not load {version}: {result.message if result else 'timeout'}")
            return
        self.get_logger().info(f"policy node now runs {result.loaded_version}")


def main(args=None):
    rclpy.init(args=args)
    try:
        node = RetrainNode()
    except Exception as exc:
        print(f"[apo_retrain] failed to start: {exc}", flush=True)
        rclpy.try_shutdown()
        raise SystemExit(2) from None
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.manager.cancel()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
