"""The recorder node: one labelled rosbag2 (MCAP) bag per episode. See README.md for the bag contract.

Thin shell over the ROS-free parts: ``episode.EpisodeTracker`` decides when an episode starts and
ends, ``bag_writer.EpisodeBagWriter`` writes each bag on its own thread. The node subscribes to
the recorded topics with ``raw=True`` (the CDR bytes are written as received, stamped with the
receive time), and never does disk I/O in a callback: a callback only appends to the writer's
bounded queue, so a slow or failing disk costs dropped (counted) messages, never a stalled graph.

Routing: ``/apo/step`` messages carry their episode id (read from the CDR bytes, no
deserialisation), so a step of the next episode that arrives before that episode's START event is
held back and written into the right bag. Other topics go to the bag that is open; messages received
up to ``preroll_s`` before a START are put at the beginning of the new bag (the image the policy saw
for the first step is usually older than the START event).

Hardened against its inputs: parameters are strict (``recorder_config.RecorderConfig`` via
``apo_ros.params.load_parameters``: an unknown or out-of-range parameter ends the start with
exit code 2 and a message naming it); every subscription, service and timer callback is guarded (a
malformed message or request is dropped and logged, never ends the spin). ``/diagnostics`` says ERROR,
naming the path, whenever the recorder cannot write: output_dir missing or unwritable (re-checked
each diagnostics period with a cheap look, and with a write probe once a problem is known), or the
last bag failed on a disk error (until a later bag completes).

Run: ``ros2 run apo_recorder apo_recorder_node --ros-args -p output_dir:=/data/bags`` or
``python -m apo_recorder.recorder_node``. SIGINT/SIGTERM close the open bag (outcome ``unknown``
unless its end event had already arrived) before exiting.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

from rclpy.node import Node
from rclpy.serialization import deserialize_message

from apo_core import topics as T
from apo_recorder import __version__, contract
from apo_recorder.bag_writer import EpisodeBagWriter, TopicSpec, qos_dict
from apo_recorder.cdr_peek import peek_header_then_string
from apo_recorder.episode import EpisodeInfo, EpisodeTracker, RecordingDecision
from apo_recorder.msgdefs import MessageDefinitionError, message_definition
from apo_recorder.recorder_config import RANGES, RecorderConfig, parse_topics
from apo_ros.node import run_node
from apo_ros.params import CallbackGuard, load_parameters
from apo_ros.qos import qos_profile, topic_qos

__all__ = ["NODE_NAME", "RecorderNode", "main", "parse_topics"]

NODE_NAME = "apo_recorder"
_MAX_PREROLL_MESSAGES = 5000
_STEP_HOLD_S = 5.0  # how long a step of a not-yet-started episode is held back
_REMEMBER_RECORDED = 4096  # episode ids whose late steps count as late (not as history)


def _import_msg(msgtype: str):
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _qos_to_dict(q) -> dict:
    return qos_dict(history=q.history.name, depth=q.depth, reliability=q.reliability.name,
                    durability=q.durability.name, liveliness=q.liveliness.name,
                    deadline_ns=q.deadline.nanoseconds, lifespan_ns=q.lifespan.nanoseconds,
                    liveliness_lease_ns=q.liveliness_lease_duration.nanoseconds,
                    avoid_ros_namespace_conventions=q.avoid_ros_namespace_conventions)


class RecorderNode(Node):
    def __init__(self, *, context=None, parameter_overrides=None, node_name: str = NODE_NAME):
        # Every parameter given at start is declared, so a misspelt one reaches the strict loader.
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides,
                         automatically_declare_parameters_from_overrides=True)
        try:
            self._setup()
        except BaseException:
            Node.destroy_node(self)  # not ours: close_all() needs a node that was set up
            raise

    def _setup(self) -> None:
        from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor

        defaults = RecorderConfig()
        if not self.has_parameter("grace_period_s"):  # the one parameter that may change at run time
            lo, hi = RANGES["grace_period_s"]
            self.declare_parameter("grace_period_s", defaults.grace_period_s, ParameterDescriptor(
                description=RecorderConfig.__dataclass_fields__["grace_period_s"].metadata["help"],
                floating_point_range=[FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]))
        cfg = self._cfg = load_parameters(self, RecorderConfig)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._guard = CallbackGuard(self)
        self._topics = cfg.topic_types()
        self._output_dir = Path(os.path.expanduser(cfg.output_dir)).absolute()
        self._preroll_ns = int(cfg.preroll_s * 1e9)
        self._writer_kwargs = dict(
            chunk_bytes=cfg.chunk_size_bytes, flush_period_s=cfg.flush_period_s, fsync=cfg.fsync,
            max_queue_messages=cfg.queue_max_messages, max_queue_bytes=cfg.queue_max_mb * 1024 * 1024)
        self._record_between = cfg.record_between_episodes

        self._lock = threading.RLock()
        self._tracker = EpisodeTracker(start_ns=self.get_clock().now().nanoseconds)
        self._writers: dict[str, EpisodeBagWriter] = {}  # open episode bags: the current one + those in grace
        self._deadlines: dict[str, float] = {}  # episode id -> monotonic time its grace period ends
        self._last_ending: str | None = None  # most recent episode in its grace period
        self._between: EpisodeBagWriter | None = None  # bag of messages between episodes (optional)
        self._last_writer: EpisodeBagWriter | None = None  # next bag opens only once this one is closed
        self._active: set[EpisodeBagWriter] = set()
        self._preroll: deque = deque()  # (topic, t_ns, data, step_episode_id)
        self._enabled = True
        self._paused = False
        self._closed_totals = {"written": 0, "dropped": 0, "rejected": 0, "bytes": 0}
        self._bags_completed = 0
        self._bags_failed = 0
        self._skipped_paused = 0
        self._not_recorded = 0
        self._late_steps = 0
        self._recorded: OrderedDict[str, None] = OrderedDict()  # episodes this recorder opened a bag for (recent)
        self._received = dict.fromkeys(self._topics, 0)
        self._last_error: str | None = None
        # Why the recorder cannot write right now (diagnostics say ERROR while either is set):
        self._dir_problem: str | None = None  # output_dir missing/unwritable; re-checked periodically
        self._write_failure: str | None = None  # the last bag failed; cleared once a bag completes
        self._last_reported_drops = 0
        self._drops_at_last_status = 0
        self._last_bag = ""

        self._check_output_dir()
        for topic, msgtype in list(self._topics.items()):  # fail early, and keep it off the first episode
            try:
                message_definition(msgtype)
            except MessageDefinitionError as exc:
                self.get_logger().error(f"cannot record {topic}: {exc}")
                del self._topics[topic]
        self._subs = []
        self._step_durability = ""  # of the /apo/step subscription once made ("" = waiting for a publisher)
        ordered = sorted(self._topics, key=lambda t: t != T.EPISODE)  # episode events first
        for topic in ordered:
            if topic != T.STEP:  # steps: once their publisher is seen (_subscribe_steps_when_published)
                self._subscribe(topic, self._topics[topic])
        self._subscribe_steps_when_published()

        from diagnostic_msgs.msg import DiagnosticArray
        from std_srvs.srv import SetBool, Trigger

        self._diag_pub = self.create_publisher(DiagnosticArray, T.DIAGNOSTICS, 10)
        guard = self._guard
        self.create_service(Trigger, T.RECORDER_START, guard.service(T.RECORDER_START, self._srv_start))
        self.create_service(Trigger, T.RECORDER_STOP, guard.service(T.RECORDER_STOP, self._srv_stop))
        self.create_service(SetBool, T.RECORDER_PAUSE, guard.service(T.RECORDER_PAUSE, self._srv_pause))
        self.create_timer(0.05, self._guarded_timer("housekeeping", self._housekeeping))
        self.create_timer(cfg.diagnostics_period_s, self._guarded_timer("diagnostics", self._publish_diagnostics))
        self.get_logger().info(
            f"apo_recorder {__version__}: recording {len(self._topics)} topics into {self._output_dir} "
            f"(one MCAP bag per episode, grace {self._grace_s():.2f} s, flush every "
            f"{self._writer_kwargs['flush_period_s']:.2f} s)")

    # ------------------------------------------------------------------ set-up
    def _grace_s(self) -> float:
        return float(self.get_parameter("grace_period_s").value)

    def _on_set_parameters(self, params):
        """Only grace_period_s changes at run time (in range); the rest is fixed at start."""
        from rcl_interfaces.msg import SetParametersResult

        lo, hi = RANGES["grace_period_s"]
        for param in params:
            value = param.value
            if param.name != "grace_period_s":
                return SetParametersResult(successful=False,
                                           reason=f"{param.name}: set at start only (restart the recorder)")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                return SetParametersResult(successful=False,
                                           reason=f"grace_period_s: {value!r} is not a number in {lo}..{hi}")
        return SetParametersResult(successful=True)

    def _guarded_timer(self, name: str, callback):
        """A timer callback that logs (throttled) and counts a failure instead of ending the spin."""
        def guarded():
            try:
                callback()
            except Exception as exc:
                self._guard.errors += 1
                self.get_logger().error(f"{name}: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

        return guarded

    def _check_output_dir(self) -> bool:
        """Create output_dir and write a probe file into it; remembers why that failed (for diagnostics)."""
        try:
            self._output_dir.mkdir(parents=True, exist_ok=True)
            probe = self._output_dir / f".apo_recorder_write_test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            msg = (f"output_dir {self._output_dir} is not writable ({exc.strerror or exc}); episodes cannot be "
                   f"recorded until it is (checked again at each episode start)")
            if msg != self._dir_problem:
                self.get_logger().error(msg)
            self._last_error = self._dir_problem = msg
            return False
        if self._dir_problem is not None:
            self.get_logger().info(f"output_dir {self._output_dir} is writable again")
        self._dir_problem = None
        return True

    def _recheck_output_dir(self) -> None:
        """Cheap look (no write) while all seems well; the full probe only once a problem is known."""
        d = self._output_dir
        if self._dir_problem is not None or not (d.is_dir() and os.access(d, os.W_OK | os.X_OK)):
            self._check_output_dir()

    def _subscribe_steps_when_published(self) -> None:
        """Subscribe to /apo/step once a publisher of it is known, transient local if it offers that.

        The arbiter keeps its last steps for late joiners (transient local): a recorder whose step
        subscription matches after an episode started (DDS discovery takes up to seconds, or the recorder
        started late) still gets that episode's first steps. A volatile request would not get them; a
        transient-local request to a volatile publisher (an older arbiter, a test publisher) would match
        nothing at all, so the durability is chosen from what the publishers offer, as rosbag2 does."""
        if self._step_durability or T.STEP not in self._topics:
            return
        from rclpy.qos import DurabilityPolicy

        offered = self.get_publishers_info_by_topic(T.STEP)
        if not offered:
            return
        latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in offered)
        depth = max(T.QOS[T.STEP][1], self._cfg.reliable_queue_depth)
        self._subscribe(T.STEP, self._topics[T.STEP], qos_profile("latched" if latched else "reliable", depth))
        self._step_durability = "transient_local" if latched else "volatile"
        self.get_logger().info(f"subscribed to {T.STEP} ({self._step_durability}, depth {depth})")

    def _default_qos(self, topic: str):
        if topic not in T.QOS:
            return qos_profile("reliable", self._cfg.reliable_queue_depth)
        kind, depth = T.QOS[topic]
        if kind == "sensor":
            return qos_profile("sensor", self._cfg.image_queue_depth)
        if kind == "reliable":
            return topic_qos(topic, max(depth, self._cfg.reliable_queue_depth))
        return topic_qos(topic)

    def _subscribe(self, topic: str, msgtype: str, qos=None) -> None:
        try:
            cls = _import_msg(msgtype)
        except (ImportError, AttributeError, ValueError) as exc:
            self.get_logger().error(f"cannot record {topic}: message type {msgtype!r} is not importable ({exc})")
            self._topics.pop(topic, None)
            return
        if qos is None:
            qos = self._default_qos(topic)
        if topic == T.EPISODE:
            callback = self._on_episode
        else:
            def callback(data, _topic=topic):
                self._on_message(_topic, data)
        # Guarded: a malformed message is dropped and logged, it never ends the recorder's spin.
        self._subs.append(self.create_subscription(cls, topic, self._guard.subscription(topic, callback), qos,
                                                   raw=True))

    def _topic_specs(self) -> list[TopicSpec]:
        specs = []
        for topic, msgtype in self._topics.items():
            try:
                offered = tuple(_qos_to_dict(i.qos_profile) for i in self.get_publishers_info_by_topic(topic))
            except Exception:
                offered = ()
            if not offered and topic in T.QOS:
                offered = (_qos_to_dict(topic_qos(topic)),)
            specs.append(TopicSpec(topic, msgtype, offered))
        return specs

    # ------------------------------------------------------------------ hot path
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _target(self, topic: str, step_id: str | None) -> EpisodeBagWriter | None:
        """The open episode bag a message belongs to (None: no episode bag takes it)."""
        if step_id is not None:  # steps carry their episode id
            return self._writers.get(step_id)
        cur = self._tracker.current
        if cur is not None:
            return self._writers.get(cur.episode_id)
        if self._last_ending is not None:  # after an end event, until the next START: the ending episode
            return self._writers.get(self._last_ending)
        return None

    def _on_message(self, topic: str, data) -> None:
        now = self._now_ns()
        step_id = peek_header_then_string(data) if topic == T.STEP else None
        with self._lock:
            self._received[topic] += 1
            w = self._target(topic, step_id)
            if w is not None:
                if self._paused:
                    self._skipped_paused += 1
                else:
                    w.write(topic, now, data)
                return
            if step_id is not None and self._tracker.finished(step_id):
                if step_id in self._recorded:
                    self._late_steps += 1  # its bag is closed already
                else:  # the publisher's history of an episode that was over before we joined
                    self._not_recorded += 1
                return
            self._hold(topic, now, data, step_id)
            if self._paused or not self._enabled:
                return
            if self._record_between and self._tracker.current is None and not self._writers:
                if self._between is None:
                    self._between = self._open_between(now)
                self._between.write(topic, now, data)

    def _hold(self, topic, now, data, step_id) -> None:
        """Keep recent messages: the pre-roll of the next episode, and steps that precede their START.

        A held message that leaves the buffer without being written counts as not recorded."""
        self._preroll.append((topic, now, data, step_id))
        if len(self._preroll) > _MAX_PREROLL_MESSAGES:
            self._preroll.popleft()
            self._not_recorded += 1

    def _on_episode(self, data) -> None:
        now = self._now_ns()
        from apo_interfaces.msg import EpisodeEvent

        try:
            ev = deserialize_message(data, EpisodeEvent)
        except Exception as exc:
            self.get_logger().error(f"undecodable message on {T.EPISODE}: {exc}")
            return
        stamp = ev.header.stamp.sec * 1_000_000_000 + ev.header.stamp.nanosec
        with self._lock:
            self._received[T.EPISODE] += 1
            for decision in self._tracker.on_event(ev.episode_id, ev.event, ev.instruction, ev.task,
                                                   ev.policy_version, stamp):
                self._apply(decision, now)
            w = self._writers.get(ev.episode_id)
            if w is not None:
                w.write(T.EPISODE, now, data)  # episode events are recorded even while paused
                # START states the version the arbiter saw last, which is empty before the policy's first
                # proposal and stale right after a model swap; the outcome and END events state the
                # version the episode's policy steps ran, so they win.
                if ev.event != EpisodeEvent.EVENT_START and ev.policy_version and \
                        w.custom_data.get(contract.KEY_POLICY_VERSION) != ev.policy_version:
                    w.update_custom_data({contract.KEY_POLICY_VERSION: ev.policy_version})

    # ------------------------------------------------------------------ decisions
    def _apply(self, d: RecordingDecision, now: int) -> None:
        log = self.get_logger()
        eid = d.episode.episode_id if d.episode is not None else ""
        if d.kind == "open":
            self._open_episode(d.episode, now)
        elif d.kind == "end":
            w = self._writers.get(eid)
            if w is not None:
                grace = self._grace_s()  # may be changed at run time
                w.update_custom_data({contract.KEY_OUTCOME: d.outcome})
                self._deadlines.setdefault(eid, time.monotonic() + grace)
                self._last_ending = eid
                log.info(f"episode {eid!r} ended ({d.outcome}{'; ' + d.reason if d.reason else ''}); "
                         f"closing its bag in {grace:.2f} s")
        elif d.kind == "close":
            self._close_episode(eid, d.outcome)
        elif d.kind == "discard":
            self._deadlines.pop(eid, None)
            w = self._writers.pop(eid, None)
            if w is not None:
                w.discard(wait=False)
            log.info(f"episode {eid!r}: {d.reason}; its bag was discarded")
        elif d.reason:
            log.debug(f"episode event ignored: {d.reason}")

    def _new_writer(self, path: Path, custom: dict[str, str]) -> EpisodeBagWriter:
        w = EpisodeBagWriter(path, self._topic_specs(), custom, after=self._last_writer,
                             on_error=self._on_writer_error, on_closed=self._on_writer_closed,
                             **self._writer_kwargs)
        self._last_writer = w
        self._active.add(w)
        self._last_bag = str(path)
        return w.start()

    def _open_episode(self, info: EpisodeInfo, now: int) -> None:
        log = self.get_logger()
        if self._between is not None:
            self._between, between = None, self._between
            between.close(wait=False)
        if not self._enabled:
            log.info(f"episode {info.episode_id!r} started; not recorded (recorder stopped)")
            return
        dir_name = contract.safe_episode_dir_name(info.episode_id) if info.episode_id else \
            time.strftime("episode_%Y%m%d_%H%M%S", time.gmtime(now / 1e9))
        path = self._output_dir / dir_name
        if path.exists():
            log.warning(f"episode {info.episode_id!r}: {path} exists already (recorder restarted?); "
                        f"this episode is not recorded again")
            return
        self._recheck_output_dir()
        if self._dir_problem is not None:
            self._bags_failed += 1
            log.error(f"episode {info.episode_id!r} is not recorded: output_dir {self._output_dir} unusable")
            return
        custom = info.custom_data(__version__, episode_id=info.episode_id or dir_name)
        w = self._writers[info.episode_id] = self._new_writer(path, custom)
        self._recorded[info.episode_id] = None
        while len(self._recorded) > _REMEMBER_RECORDED:
            self._recorded.popitem(last=False)
        self._last_ending = None
        # Pre-roll: recent messages of other topics, and steps already received for this episode.
        held, self._preroll = self._preroll, deque()
        for topic, t, data, step_id in held:
            if topic == T.STEP and step_id is not None:
                if step_id == info.episode_id:
                    w.write(topic, t, data)
                elif not self._tracker.finished(step_id) and now - t < _STEP_HOLD_S * 1e9:
                    self._preroll.append((topic, t, data, step_id))
                else:
                    self._not_recorded += 1
            elif topic != T.EPISODE and now - t <= self._preroll_ns and not self._paused:
                w.write(topic, t, data)
            else:
                self._not_recorded += 1
        log.info(f"recording episode {info.episode_id!r} ({info.task}: {info.instruction!r}) into {path}"
                 + (" -- joined while running" if info.joined_late else ""))

    def _open_between(self, now: int) -> EpisodeBagWriter:
        base = time.strftime("between_%Y%m%d_%H%M%S", time.gmtime(now / 1e9))
        path, n = self._output_dir / base, 1
        while path.exists():
            path, n = self._output_dir / f"{base}-{n}", n + 1
        return self._new_writer(path, contract.default_custom_data(recorder_version=__version__))

    def _close_episode(self, episode_id: str, outcome: str) -> None:
        self._deadlines.pop(episode_id, None)
        if self._last_ending == episode_id:
            self._last_ending = None
        w = self._writers.pop(episode_id, None)
        if w is not None:
            w.close({contract.KEY_OUTCOME: outcome}, wait=False)

    def _close_everything(self) -> list[str]:
        """Close every open bag now (stop service, shutdown), each with the outcome known so far."""
        closed = []
        for eid in list(self._writers):
            closed.append(str(self._writers[eid].path))
            known = self._tracker.ending.get(eid)
            self._close_episode(eid, known[1] if known else contract.OUTCOME_UNKNOWN)
        if self._between is not None:
            self._between, between = None, self._between
            closed.append(str(between.path))
            between.close(wait=False)
        self._not_recorded += len(self._preroll)
        self._preroll.clear()
        return closed

    def _on_writer_error(self, writer: EpisodeBagWriter, message: str) -> None:
        with self._lock:
            self._last_error = self._write_failure = message
        self.get_logger().error(f"{message}. Recording of this episode stopped; the recorder keeps running "
                                f"and tries again at the next episode start")

    def _on_writer_closed(self, writer: EpisodeBagWriter) -> None:
        s = writer.stats()
        with self._lock:
            self._active.discard(writer)
            self._closed_totals["written"] += s.messages_written
            self._closed_totals["dropped"] += s.messages_dropped
            self._closed_totals["rejected"] += s.messages_rejected
            self._closed_totals["bytes"] += s.bytes_written
            if s.state == "closed":
                self._bags_completed += 1
                self._write_failure = None  # writing works again
            elif s.state == "failed":
                self._bags_failed += 1
        if s.state == "closed":
            self.get_logger().info(
                f"bag {s.path} closed ({writer.custom_data.get(contract.KEY_OUTCOME)}): {s.messages_written} "
                f"messages, {s.bytes_written / 1e6:.1f} MB, {s.messages_dropped} dropped")

    def _housekeeping(self) -> None:
        self._subscribe_steps_when_published()
        with self._lock:
            now = time.monotonic()
            for eid, deadline in list(self._deadlines.items()):
                if now >= deadline:
                    decision = self._tracker.grace_expired(eid)
                    if decision is not None:
                        self._apply(decision, self._now_ns())
                    else:
                        self._close_episode(eid, contract.OUTCOME_UNKNOWN)
            if self._preroll:  # other topics are kept for preroll_s, steps awaiting their START longer
                now_ns = self._now_ns()
                keep_other, keep_step = now_ns - self._preroll_ns, now_ns - int(_STEP_HOLD_S * 1e9)
                if self._preroll[0][1] < keep_other:
                    before = len(self._preroll)
                    self._preroll = deque(m for m in self._preroll
                                          if m[1] >= (keep_step if m[3] is not None else keep_other))
                    self._not_recorded += before - len(self._preroll)

    # ------------------------------------------------------------------ services
    def _srv_start(self, request, response):
        with self._lock:
            self._enabled = True
            self._paused = False
            cur = self._tracker.current
            msg = "recording enabled"
            if cur is not None and cur.episode_id not in self._writers:
                self._open_episode(EpisodeInfo(cur.episode_id, cur.instruction, cur.task, cur.policy_version,
                                               cur.stamp_ns, joined_late=True), self._now_ns())
                if cur.episode_id in self._writers:
                    msg += f"; recording the running episode {cur.episode_id!r} from now on"
            elif cur is None:
                msg += "; waiting for the next episode start"
        response.success, response.message = True, msg
        self.get_logger().info(msg)
        return response

    def _srv_stop(self, request, response):
        with self._lock:
            self._enabled = False
            closed = self._close_everything()
        response.success = True
        response.message = "recording stopped" + (f"; closed {', '.join(closed)}" if closed else "")
        self.get_logger().info(response.message)
        return response

    def _srv_pause(self, request, response):
        with self._lock:
            self._paused = bool(request.data)
        response.success = True
        response.message = "paused (messages are not written; the bag stays open)" if request.data else "resumed"
        self.get_logger().info(f"recorder {response.message}")
        return response

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """Counters (also published on /diagnostics); for tests and tools."""
        with self._lock:
            cur_info = self._tracker.current
            cur_w = self._writers.get(cur_info.episode_id) if cur_info is not None else None
            open_writers = list(self._writers.values()) + ([self._between] if self._between is not None else [])
            stats = [w.stats() for w in open_writers]
            cur = cur_w.stats() if cur_w is not None else None
            if any(st.state == "failed" for st in stats) or self._dir_problem or self._write_failure:
                state = "error"
            elif not self._enabled:
                state = "stopped"
            elif self._paused:
                state = "paused"
            elif cur is not None:
                state = "recording"
            elif self._writers:
                state = "ending"
            elif self._between is not None:
                state = "recording_between_episodes"
            else:
                state = "idle"
            return {
                "state": state,
                "episode_id": cur_info.episode_id if cur_w is not None else "",
                "bag": str(cur_w.path) if cur_w is not None else "",
                "ending_episodes": ",".join(eid for eid in self._writers if cur_info is None
                                            or eid != cur_info.episode_id),
                "last_bag": self._last_bag,
                "messages_written": self._closed_totals["written"] + sum(st.messages_written for st in stats),
                "messages_dropped": self._closed_totals["dropped"] + sum(st.messages_dropped for st in stats),
                "messages_rejected": self._closed_totals["rejected"] + sum(st.messages_rejected for st in stats),
                "bytes_written": self._closed_totals["bytes"] + sum(st.bytes_written for st in stats),
                "episode_messages_written": cur.messages_written if cur else 0,
                "episode_messages_dropped": cur.messages_dropped if cur else 0,
                "episode_messages_on_disk": cur.messages_on_disk if cur else 0,
                "queue_depth": sum(st.queue_depth for st in stats),
                "messages_skipped_paused": self._skipped_paused,
                "messages_not_recorded": self._not_recorded,  # outside episodes (and no between bag)
                "late_steps": self._late_steps,
                "step_subscription": self._step_durability or "waiting for a publisher",
                "bags_completed": self._bags_completed,
                "bags_failed": self._bags_failed,
                "bags_open": len(self._active),
                "last_error": self._last_error or "",
                "cannot_write": self._dir_problem or self._write_failure or "",
                "callback_errors": self._guard.errors,
                **{f"received {topic}": n for topic, n in self._received.items()},
            }

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        with self._lock:
            self._recheck_output_dir()
        st = self.status()
        if st["messages_dropped"] > self._last_reported_drops:
            self.get_logger().warning(
                f"{st['messages_dropped'] - self._last_reported_drops} message(s) dropped: the bag writer's "
                f"queue was full (disk too slow?); {st['messages_dropped']} dropped in total")
            self._last_reported_drops = st["messages_dropped"]
        status = DiagnosticStatus()
        status.name = f"apo_recorder: {self.get_fully_qualified_name()}"
        status.hardware_id = socket.gethostname()
        if st["state"] == "error":
            status.level = DiagnosticStatus.ERROR
            status.message = f"cannot write: {st['cannot_write'] or st['last_error']}"
        elif st["messages_dropped"] > self._drops_at_last_status:
            status.level, status.message = DiagnosticStatus.WARN, f"{st['state']}; dropping messages"
        else:
            status.level = DiagnosticStatus.OK
            status.message = st["state"] + (f" {st['episode_id']}" if st["episode_id"] else "")
        status.values = [KeyValue(key=k, value=str(v)) for k, v in st.items()]
        self._drops_at_last_status = st["messages_dropped"]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self._diag_pub.publish(msg)

    # ------------------------------------------------------------------ shutdown
    def close_all(self, timeout: float = 30.0) -> bool:
        """Close the open bag (outcome unknown unless its end event arrived) and wait for every writer."""
        with self._lock:
            self._enabled = False
            self._close_everything()
            active = list(self._active)
        deadline = time.monotonic() + timeout
        ok = True
        for w in active:
            ok = w.wait(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def destroy_node(self):
        self.close_all()
        return super().destroy_node()


def _close_bags(node) -> None:
    node.get_logger().info("shutting down: closing the open bag")
    node.close_all()


def main(args: list[str] | None = None) -> int:
    """Entry point: a bad parameter -> its message and exit code 2; a signal closes the open bag, exit 0.

    A signal while the node starts lets the start finish, then shuts down (the bag is closed).
    """
    return run_node(RecorderNode, "apo_recorder", args, shutdown=_close_bags, interrupt_build=False)



if __name__ == "__main__":
    sys.exit(main())
