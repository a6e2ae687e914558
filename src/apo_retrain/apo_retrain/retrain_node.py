"""ROS 2 node: the ``/apo/retrain`` service and friends, over :class:`RetrainManager`.

Services: /apo/retrain (Retrain: accepted with a job id or rejected with the reason, at once),
/apo/retrain/get_status, /apo/retrain/cancel, /apo/retrain/rollback. Topic: /apo/retrain/status
(latched RetrainStatus on every change). After a promotion or rollback the policy node is asked to
load the new current version (/apo/policy/load). Lifelong mode retrains every N finished episodes.

Anyone on the ROS domain can call these services, so no request may stop the node: every callback
goes through a CallbackGuard (an unexpected error answers success/accepted false and is logged), and
every field is checked first (apo_trainer/retrain/requests.py, apo_core.names). Parameters are strict
(node_config.py): a misspelt one fails the start with exit code 2. The simulated promotion gate rolls
candidates out through sim_gate.py, handed to the ROS-free job manager.
"""

from __future__ import annotations

import sys
import threading
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from apo_core import topics
from apo_core.names import InvalidNameError
from apo_interfaces.msg import EpisodeEvent, RetrainStatus
from apo_interfaces.srv import CancelRetrain, GetRetrainStatus, LoadPolicy, Retrain, Rollback
from apo_retrain.node_config import RetrainNodeConfig
from apo_retrain.sim_gate import sim_success_rate
from apo_ros.node import build_or_destroy, run_node
from apo_ros.params import CallbackGuard, load_parameters
from apo_ros.qos import topic_qos
from apo_trainer.retrain.job import JobStatus, RetrainManager, RetrainRequest
from apo_trainer.retrain.settings import load_retrain_settings

TERMINAL_EVENTS = (EpisodeEvent.EVENT_SUCCESS, EpisodeEvent.EVENT_FAILURE, EpisodeEvent.EVENT_ABORT,
                   EpisodeEvent.EVENT_END)
# Terminal episode ids remembered for lifelong counting; bounded so a flood of made-up ids cannot grow memory.
MAX_SEEN_EPISODES = 10_000


class RetrainNode(Node):
    def __init__(self, **kwargs):
        # every parameter given at start becomes visible, so a misspelt one is refused instead of ignored
        kwargs.setdefault("automatically_declare_parameters_from_overrides", True)
        super().__init__("apo_retrain", **kwargs)
        build_or_destroy(self, self._build)

    def _build(self):
        self.config = load_parameters(self, RetrainNodeConfig)
        self.settings = load_retrain_settings(self.config.config_file or None, self.config.settings_overrides())
        self._status_pub = self.create_publisher(RetrainStatus, topics.RETRAIN_STATUS_TOPIC,
                                                 topic_qos(topics.RETRAIN_STATUS_TOPIC))
        self.manager = RetrainManager(self.settings, on_update=self._publish_status, on_promoted=self._request_load,
                                      sim_evaluator=sim_success_rate)
        self.guard = guard = CallbackGuard(self)
        services = MutuallyExclusiveCallbackGroup()
        for srv_type, name, callback in ((Retrain, topics.RETRAIN, self._on_retrain),
                                         (GetRetrainStatus, topics.RETRAIN_STATUS, self._on_status),
                                         (CancelRetrain, topics.RETRAIN_CANCEL, self._on_cancel),
                                         (Rollback, topics.RETRAIN_ROLLBACK, self._on_rollback)):
            self.create_service(srv_type, name, guard.service(name, callback), callback_group=services)
        self._load_client = self.create_client(LoadPolicy, topics.LOAD_POLICY, callback_group=ReentrantCallbackGroup())
        self.create_subscription(EpisodeEvent, topics.EPISODE, guard.subscription(topics.EPISODE, self._on_episode),
                                 topic_qos(topics.EPISODE))
        self._finished_since_job = 0
        self._seen_terminal: dict[str, None] = {}  # insertion-ordered: the oldest is forgotten first
        self._lifelong_timer: threading.Timer | None = None
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
        try:
            status = self.manager.status(request.job_id)
        except InvalidNameError as exc:  # not echoed back: it may be huge
            response.status = RetrainStatus(state=RetrainStatus.STATE_IDLE, message=f"invalid job id: {exc}")
            return response
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
        self._seen_terminal[msg.episode_id] = None
        if len(self._seen_terminal) > MAX_SEEN_EPISODES:
            del self._seen_terminal[next(iter(self._seen_terminal))]
        self._finished_since_job += 1
        pending = self._lifelong_timer is not None and self._lifelong_timer.is_alive()
        if self._finished_since_job >= n and not self.manager.running and not pending:
            # daemon: a pending submission must not keep a stopping process alive
            self._lifelong_timer = threading.Timer(self.config.lifelong_delay_s, self._lifelong_submit)
            self._lifelong_timer.daemon = True
            self._lifelong_timer.start()

    def _lifelong_submit(self):
        try:
            accepted, job_id, reason = self.manager.submit(RetrainRequest())
        except Exception as exc:  # a timer thread: report, the next episodes try again
            self.get_logger().error(f"lifelong retrain failed to start: {type(exc).__name__}: {exc}")
            return
        self.get_logger().info(f"lifelong retrain {'started ' + job_id if accepted else 'skipped'}: {reason}")
        if accepted:
            self._finished_since_job = 0

    def on_shutdown(self) -> None:
        """Stop a pending lifelong submission and the running job (its status file records the cancel)."""
        if self._lifelong_timer is not None:
            self._lifelong_timer.cancel()
        self.manager.cancel()
        self.manager.wait(10.0)

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


def main(args=None) -> int:
    """Entry point: a configuration error exits with code 2 and its message; Ctrl-C / SIGTERM stop cleanly
    (``RetrainNode.on_shutdown`` cancels the job first)."""
    # several threads: a rollback waits for the policy node's answer while other services keep answering
    return run_node(RetrainNode, "apo_retrain", args, num_threads=4)


if __name__ == "__main__":
    sys.exit(main())
