"""A client of a running deploy graph: start episodes, follow them, retrain, watch the policy version.

What a person at the operator console does with ``ros2 service call``, as an API (``apo demo`` uses it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from apo_core import topics
from apo_interfaces.msg import ActionCommand, EpisodeEvent, RetrainStatus
from apo_interfaces.srv import EpisodeControl, Retrain
from apo_ros.graph import RosGraph
from apo_ros.qos import qos_profile, topic_qos

TERMINAL_EVENTS = {EpisodeEvent.EVENT_SUCCESS: "success", EpisodeEvent.EVENT_FAILURE: "failure",
                   EpisodeEvent.EVENT_ABORT: "abort"}
RETRAIN_DONE = {RetrainStatus.STATE_SUCCEEDED, RetrainStatus.STATE_FAILED, RetrainStatus.STATE_CANCELLED,
                RetrainStatus.STATE_REJECTED}


class SessionError(RuntimeError):
    pass


@dataclass
class LiveEpisodeResult:
    episode_id: str
    outcome: str
    seconds: float
    bag: Path | None


class DeploySession:
    """A console node in an :class:`apo_ros.graph.RosGraph` (own context, executor thread). An exception
    raised in one of its callbacks is printed and kept in ``errors``, and ends the waits below with a
    SessionError naming it, instead of being swallowed."""

    def __init__(self, bags_dir: str | Path | None = None, name: str = "apo_console"):
        self.bags_dir = Path(bags_dir) if bags_dir else None
        self.graph = RosGraph(num_threads=2)
        self.context = self.graph.context
        self._cond = threading.Condition()
        self._events: list[EpisodeEvent] = []
        self._retrain: RetrainStatus | None = None
        self.policy_version = ""  # the version of the last policy action seen (only while images flow)
        self.loaded_version = ""  # the version the policy node reports loaded on /diagnostics (every second)
        try:
            self.node = self.graph.add(rclpy.create_node(name, context=self.context))
            self.node.create_subscription(EpisodeEvent, topics.EPISODE, self._on_event, topic_qos(topics.EPISODE))
            self.node.create_subscription(RetrainStatus, topics.RETRAIN_STATUS_TOPIC, self._on_retrain,
                                          topic_qos(topics.RETRAIN_STATUS_TOPIC))
            self.node.create_subscription(ActionCommand, topics.POLICY_ACTION, self._on_policy,
                                          qos_profile("reliable", 10))
            self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics,
                                          topic_qos(topics.DIAGNOSTICS))
            self._episode_client = self.node.create_client(EpisodeControl, topics.EPISODE_CONTROL)
            self._retrain_client = self.node.create_client(Retrain, topics.RETRAIN)
        except BaseException:
            self.graph.close()
            raise

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised in this session's callbacks (each also printed when it happened)."""
        return self.graph.errors

    def _check_errors(self) -> None:
        if self.graph.errors:
            exc = self.graph.errors[0]
            raise SessionError(f"a console callback failed: {type(exc).__name__}: {exc}") from exc

    # --- subscriptions -----------------------------------------------------------------------
    def _on_event(self, msg):
        with self._cond:
            self._events.append(msg)
            self._cond.notify_all()

    def _on_retrain(self, msg):
        with self._cond:
            self._retrain = msg
            self._cond.notify_all()

    def _on_policy(self, msg):
        with self._cond:
            self.policy_version = msg.policy_version
            self._cond.notify_all()

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.hardware_id == topics.POLICY_DIAGNOSTICS_ID:
                version = next((kv.value for kv in status.values if kv.key == "version"), "")
                with self._cond:
                    self.loaded_version = version
                    self._cond.notify_all()

    def _wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                self._check_errors()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SessionError(f"timed out after {timeout:.0f} s waiting for {what}")
                self._cond.wait(min(left, 0.5))

    def _call(self, client, request, timeout: float):
        if not client.wait_for_service(timeout_sec=timeout):
            raise SessionError(f"service {client.srv_name} is not available (is the graph running?)")
        try:
            return self.graph.call(client, request, timeout)
        except TimeoutError:
            self._check_errors()
            raise SessionError(f"no answer from {client.srv_name} within {timeout:.0f} s") from None

    # --- episodes ----------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 120.0) -> None:
        """The arbiter's episode service, the camera and the policy's subscription are up."""
        if not self._episode_client.wait_for_service(timeout_sec=timeout):
            raise SessionError(f"{topics.EPISODE_CONTROL} did not appear within {timeout:.0f} s")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.node.count_publishers(topics.IMAGE) and self.node.count_subscribers(topics.IMAGE) and \
                    self.node.count_publishers(topics.POLICY_ACTION):
                return
            time.sleep(0.2)
        raise SessionError("the robot camera or the policy node did not come up")

    def run_episode(self, instruction: str, timeout: float) -> LiveEpisodeResult:
        """Start an episode, wait for its outcome and (when recording) for its bag to be closed."""
        t0 = time.monotonic()
        res = self._call(self._episode_client, EpisodeControl.Request(command=EpisodeControl.Request.START,
                                                                      instruction=instruction), 30.0)
        if not res.success:
            raise SessionError(f"episode start refused: {res.message}")
        ep = res.episode_id
        outcome = {}

        def ended():
            for e in self._events:
                if e.episode_id == ep and e.event in TERMINAL_EVENTS:
                    outcome["value"] = TERMINAL_EVENTS[e.event]
                    return True
            return False

        self._wait(ended, timeout, f"the end of episode {ep}")
        bag = None
        if self.bags_dir is not None:
            bag = self.bags_dir / ep
            deadline = time.monotonic() + 30.0
            while not (bag / "metadata.yaml").is_file():
                if time.monotonic() > deadline:
                    raise SessionError(f"the recorder did not close {bag} within 30 s")
                time.sleep(0.1)
        return LiveEpisodeResult(ep, outcome["value"], time.monotonic() - t0, bag)

    # --- retraining --------------------------------------------------------------------------
    def retrain(self, loss: str = "", steps: int = 0, k: int = -1, timeout: float = 1800.0,
                on_progress=None) -> RetrainStatus:
        res = self._call(self._retrain_client, Retrain.Request(loss=loss, steps=steps, k_window=k), 30.0)
        if not res.accepted:
            raise SessionError(f"retrain rejected: {res.reason}")
        job = res.job_id
        last = -1.0
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                self._cond.wait_for(lambda last=last: self._retrain is not None and self._retrain.job_id == job
                                    and (self._retrain.progress != last or self._retrain.state in RETRAIN_DONE), 1.0)
                status = self._retrain
            if status is not None and status.job_id == job:
                if on_progress and status.progress != last:
                    on_progress(status)
                last = status.progress
                if status.state in RETRAIN_DONE:
                    return status
            self._check_errors()
            if time.monotonic() > deadline:
                raise SessionError(f"retrain job {job} did not finish within {timeout:.0f} s")

    def wait_policy_loaded(self, version: str, timeout: float = 120.0) -> None:
        """The policy node has ``version`` loaded (its diagnostics say so). Unlike ``wait_policy_version`` this
        needs no episode: the node acts only on camera frames, which flow once an episode runs, so a first
        episode started before the model is loaded could run on HOLD alone."""
        self._wait(lambda: self.loaded_version == version, timeout, f"the policy node to load {version}")

    def wait_policy_version(self, version: str, timeout: float = 120.0) -> None:
        self._wait(lambda: self.policy_version == version, timeout, f"the policy node to run {version}")

    def close(self):
        self.graph.close()
