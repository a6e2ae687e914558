"""EpisodeBagWriter: one episode bag (rosbag2, MCAP) written on its own thread, crash-tolerant.

Why a thread and a bounded queue: the recorder's subscription callbacks must never wait on a disk.
``write()`` only appends the received CDR bytes to an in-memory queue (bounded in messages and in
bytes) and returns; when the queue is full the message is dropped and counted, never blocking.
All file I/O (open, write, flush, close) happens on the writer thread; the periodic fsync on a helper
thread, so a slow disk (SD card, eMMC) does not stall the writing.

Why small chunks and periodic fsync: an MCAP chunk lives in memory until it is closed, and the
summary/footer is only written at close, so a SIGKILL loses the open chunk. Every
``flush_period_s`` (and whenever the open chunk reaches ``chunk_bytes``) the chunk is closed,
flushed to the OS and fsynced, so a killed recorder loses about the last ``flush_period_s`` plus
what is still queued. ``recover_bag`` turns such a footer-less bag into a valid one.

While the bag is open its directory holds a journal (``contract.JOURNAL_NAME``) with the episode's
custom_data, the topic types/hashes and the writer's pid: recovery needs them, and a directory
with a journal and no ``metadata.yaml`` is recognisably unfinished. The journal is removed once the
bag is closed and ``metadata.yaml`` is on disk.

Why CRCs: every chunk carries the CRC-32 of its records, the data section and the summary theirs
(``apo_recorder.mcap_storage``), so a reader can tell a damaged chunk from a good one instead of
passing flipped bytes on as an image.

ROS-free: usable by the trainer, tests and benchmarks with no ROS install. The file layout follows
``apo_recorder.contract``; rosbag2 metadata is written with the ``rosbags`` library (rosbag2_py is not
available here) and put in rosbag2's own form by ``apo_recorder.bag_metadata`` (real ``ros_distro``,
offered QoS), the MCAP file by ``apo_recorder.mcap_storage``.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from apo_core.files import atomic_write_text, fsync_path
from apo_recorder import contract
from apo_recorder.bag_metadata import QosProfileError, complete_offered_qos
from apo_recorder.mcap_storage import open_writer
from apo_recorder.msgdefs import message_definition

DEFAULT_MAX_QUEUE_MESSAGES = 2000
DEFAULT_MAX_QUEUE_BYTES = 256 * 1024 * 1024
DEFAULT_CHUNK_BYTES = 1024 * 1024
DEFAULT_FLUSH_PERIOD_S = 0.5

_CLOSE = object()
_DISCARD = object()


class _Syncer:
    """fsync of the bag file on a helper thread: writing goes on while a slow disk catches up.

    Requests coalesce (only the latest matters); ``on_synced(count)`` reports how many messages are
    now durable; an fsync error is kept in ``error`` for the writer thread to raise.
    """

    def __init__(self, name: str, on_synced: Callable[[int], None]):
        self._cond = threading.Condition()
        self._request: tuple[int, int] | None = None
        self._stopping = False
        self._on_synced = on_synced
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self, fd: int, count: int) -> None:
        with self._cond:
            self._request = (fd, count)
            self._cond.notify()

    def stop(self) -> None:
        """Finish a pending fsync, then end the thread (idempotent)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._request is None and not self._stopping:
                    self._cond.wait()
                if self._request is None:
                    return
                (fd, count), self._request = self._request, None
            try:
                os.fsync(fd)
            except OSError as exc:
                self.error = exc
                return
            self._on_synced(count)


@dataclass(frozen=True)
class TopicSpec:
    """One connection of the bag: topic, ROS 2 type, and the offered QoS profiles (rosbag2 v9 dicts).

    ``offered_qos`` entries use the keys of rosbag2 metadata version 9 (``history``, ``depth``,
    ``reliability``, ``durability``, ``deadline``, ``lifespan``, ``liveliness``,
    ``liveliness_lease_duration``, ``avoid_ros_namespace_conventions``); see ``qos_dict``. They are
    checked when the bag opens; a history that discovery reports as ``unknown`` is filled in from
    the topic's designed profile (``bag_metadata.complete_offered_qos``).
    """

    topic: str
    msgtype: str
    offered_qos: tuple[dict, ...] = ()


def qos_dict(history: str = "keep_last", depth: int = 10, reliability: str = "reliable",
             durability: str = "volatile", liveliness: str = "automatic",
             deadline_ns: int = 0, lifespan_ns: int = 0, liveliness_lease_ns: int = 0,
             avoid_ros_namespace_conventions: bool = False) -> dict:
    """A QoS profile in rosbag2 v9 metadata form (durations split into sec/nsec; 0 = default)."""

    def split(ns: int) -> dict:
        sec, nsec = divmod(int(ns), 1_000_000_000)
        return {"sec": sec, "nsec": nsec}

    return {
        "history": history.lower(), "depth": int(depth), "reliability": reliability.lower(),
        "durability": durability.lower(), "deadline": split(deadline_ns), "lifespan": split(lifespan_ns),
        "liveliness": liveliness.lower(), "liveliness_lease_duration": split(liveliness_lease_ns),
        "avoid_ros_namespace_conventions": bool(avoid_ros_namespace_conventions),
    }


@dataclass
class WriterStats:
    """A snapshot of one writer's counters (what the node publishes on /diagnostics)."""

    path: str
    state: str  # opening | recording | closing | closed | failed | discarded
    messages_written: int = 0
    messages_on_disk: int = 0  # written and flushed+fsynced at the last flush (what a SIGKILL keeps)
    bytes_written: int = 0
    messages_dropped: int = 0  # queue overflow
    messages_rejected: int = 0  # offered after the writer failed or was closed
    queue_depth: int = 0
    queue_bytes: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    first_ns: int | None = None
    last_ns: int | None = None
    error: str | None = None


class BagWriteError(OSError):
    """Writing the bag failed; the message names the bag and the underlying OS error."""


class EpisodeBagWriter:
    """Write one episode bag on a background thread. See the module docstring for the why.

    Usage::

        w = EpisodeBagWriter(path, [TopicSpec("/apo/step", "apo_interfaces/msg/LabelledStep")],
                             contract.default_custom_data("ep_1", ...)).start()
        w.write("/apo/step", time.time_ns(), raw_cdr_bytes)   # from any thread, never blocks
        w.close({contract.KEY_OUTCOME: "success"})            # drain, close, fsync, metadata.yaml

    ``after``: another writer that must be completely closed (and fsynced) before this one opens
    its bag; messages written meanwhile wait in this writer's queue. ``on_error(writer, message)``
    is called once, from the writer thread, when writing fails; ``on_closed(writer)`` when the
    thread has finished (closed, failed or discarded).
    """

    def __init__(self, path: str | os.PathLike, topics: Sequence[TopicSpec], custom_data: Mapping[str, str],
                 *, max_queue_messages: int = DEFAULT_MAX_QUEUE_MESSAGES,
                 max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 flush_period_s: float = DEFAULT_FLUSH_PERIOD_S, fsync: bool = True,
                 after: EpisodeBagWriter | None = None,
                 on_error: Callable[[EpisodeBagWriter, str], None] | None = None,
                 on_closed: Callable[[EpisodeBagWriter], None] | None = None):
        if not topics:
            raise ValueError("an episode bag needs at least one topic")
        names = [t.topic for t in topics]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate topics in {names}")
        for key, value in custom_data.items():
            if not isinstance(value, str):
                raise TypeError(f"custom_data[{key!r}] must be a string, got {type(value).__name__}")
        self._offered: dict[str, tuple[dict, ...]] = {}  # topic -> offered QoS, checked and completed
        for t in topics:
            try:
                self._offered[t.topic] = complete_offered_qos(t.topic, t.offered_qos)
            except QosProfileError as exc:
                raise QosProfileError(f"offered QoS of {t.topic}: {exc}") from None
        self.path = Path(path)
        self.topics = list(topics)
        self._index = {t.topic: i for i, t in enumerate(self.topics)}
        self._custom = dict(custom_data)
        self._custom_dirty = False
        self.max_queue_messages = max(1, int(max_queue_messages))
        self.max_queue_bytes = max(1, int(max_queue_bytes))
        self.chunk_bytes = max(1024, int(chunk_bytes))
        self.flush_period_s = max(0.01, float(flush_period_s))
        self.fsync = fsync
        self._after = after
        self._on_error = on_error
        self._on_closed = on_closed

        self._cond = threading.Condition()
        self._queue: deque = deque()
        self._queue_bytes = 0
        self._accepting = True
        self._state = "opening"
        self._error: str | None = None
        self._written = 0
        self._on_disk = 0
        self._bytes = 0
        self._dropped = 0
        self._rejected = 0
        self._per_topic = [0] * len(self.topics)
        self._first_ns: int | None = None
        self._last_ns: int | None = None
        self._thread = threading.Thread(target=self._run, name=f"bag-writer:{self.path.name}", daemon=True)
        self._done = threading.Event()
        self._started = False

    # ------------------------------------------------------------------ caller side (any thread)
    def start(self) -> EpisodeBagWriter:
        with self._cond:
            if self._started:
                return self
            self._started = True
        self._thread.start()
        return self

    def write(self, topic: str, timestamp_ns: int, data: bytes | bytearray | memoryview) -> bool:
        """Queue one message (raw CDR). Never blocks; returns False if it was dropped or rejected."""
        idx = self._index[topic]
        size = len(data)
        with self._cond:
            if not self._accepting:
                self._rejected += 1
                return False
            if len(self._queue) >= self.max_queue_messages or self._queue_bytes + size > self.max_queue_bytes:
                self._dropped += 1
                return False
            self._queue.append((idx, int(timestamp_ns), data))
            self._queue_bytes += size
            if len(self._queue) == 1:  # the writer thread only ever waits on an empty queue
                self._cond.notify()
        return True

    def update_custom_data(self, values: Mapping[str, str]) -> None:
        """Change custom_data (e.g. the outcome once known); also rewritten into the journal."""
        for key, value in values.items():
            if not isinstance(value, str):
                raise TypeError(f"custom_data[{key!r}] must be a string, got {type(value).__name__}")
        with self._cond:
            self._custom.update(values)
            self._custom_dirty = True
            self._cond.notify()

    @property
    def custom_data(self) -> dict[str, str]:
        with self._cond:
            return dict(self._custom)

    def close(self, custom_data: Mapping[str, str] | None = None, *, wait: bool = True,
              timeout: float | None = None) -> WriterStats:
        """Stop accepting messages, write what is queued, finish the bag (footer, metadata.yaml, fsync)."""
        if custom_data:
            self.update_custom_data(custom_data)
        self._request(_CLOSE)
        if wait:
            self.wait(timeout)
        return self.stats()

    def discard(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Abandon the bag and delete its directory (used for an episode that was over before we joined)."""
        self._request(_DISCARD)
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the writer thread has finished; True if it has."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def failed(self) -> bool:
        return self._state == "failed"

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def state(self) -> str:
        return self._state

    def stats(self) -> WriterStats:
        with self._cond:
            return WriterStats(
                path=str(self.path), state=self._state, messages_written=self._written,
                messages_on_disk=self._on_disk, bytes_written=self._bytes, messages_dropped=self._dropped, messages_rejected=self._rejected,
                queue_depth=len(self._queue), queue_bytes=self._queue_bytes,
                per_topic={t.topic: n for t, n in zip(self.topics, self._per_topic, strict=True)},
                first_ns=self._first_ns, last_ns=self._last_ns, error=self._error)

    def __enter__(self) -> EpisodeBagWriter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, what) -> None:
        with self._cond:
            if self._accepting:
                self._accepting = False
                self._queue.append((what, 0, b""))
                self._cond.notify()
            elif what is _DISCARD and self._state not in ("closed", "failed", "discarded"):
                # a discard after a close request: turn the pending close into a discard
                for i, item in enumerate(self._queue):
                    if item[0] is _CLOSE:
                        self._queue[i] = (_DISCARD, 0, b"")
        self.start()  # a writer closed before it was started still produces its (empty) bag

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        bag = None
        conns: list = []
        self._syncer = _Syncer(f"bag-fsync:{self.path.name}", self._synced) if self.fsync else None
        try:
            if self._after is not None:
                self._after.wait()
            bag, conns = self._open()
            self._set_state("recording")
            self._loop(bag, conns)
        except BaseException as exc:  # report, close what we can, never propagate into the process
            self._fail(bag, exc)
        finally:
            self._stop_syncer(raise_error=False)
            self._done.set()
            if self._on_closed is not None:
                try:
                    self._on_closed(self)
                except Exception:
                    pass

    def _set_state(self, state: str) -> None:
        with self._cond:
            self._state = state

    def _open(self):
        from rosbags.rosbag2.metadata import parse_qos

        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            raise FileExistsError(f"bag directory {self.path} exists already, not overwriting it")
        bag = open_writer(self.path, version=contract.METADATA_VERSION)
        bag.open()
        bag.storage.chunk_bytes = self.chunk_bytes
        journal_topics = []
        conns = []
        try:
            for spec in self.topics:
                msgdef, digest = message_definition(spec.msgtype)
                offered = self._offered[spec.topic]
                conns.append(bag.add_connection(spec.topic, spec.msgtype, msgdef=msgdef, rihs01=digest,
                                                offered_qos_profiles=parse_qos(list(offered))))
                journal_topics.append({"topic": spec.topic, "type": spec.msgtype,
                                       "type_description_hash": digest,
                                       "offered_qos_profiles": list(offered)})
            self._journal_topics = journal_topics
            # The schemas and channels sit in the first chunk: put them on disk now, so even a bag
            # killed before its first flush can be recovered with all its connections.
            self._flush(bag)
            self._write_journal()
        except BaseException:
            try:
                bag.abort()
            except Exception:
                pass
            raise
        return bag, conns

    def _loop(self, bag, conns) -> None:
        next_flush = time.monotonic() + self.flush_period_s
        while True:
            with self._cond:
                while not self._queue and not self._custom_dirty:
                    remaining = next_flush - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = list(self._queue)
                self._queue.clear()
                self._queue_bytes = 0
                dirty, self._custom_dirty = self._custom_dirty, False
            if dirty:
                self._write_journal()
            end = None
            n = nbytes = 0
            first = last = None
            try:
                for idx, ts, data in batch:
                    if idx is _CLOSE or idx is _DISCARD:
                        end = idx
                        break
                    bag.write(conns[idx], ts, data)
                    n += 1
                    nbytes += len(data)
                    self._per_topic[idx] += 1
                    if first is None or ts < first:
                        first = ts
                    if last is None or ts > last:
                        last = ts
            finally:  # counters once per batch, also when a write fails half-way
                if n:
                    with self._cond:
                        self._written += n
                        self._bytes += nbytes
                        if self._first_ns is None or first < self._first_ns:
                            self._first_ns = first
                        if self._last_ns is None or last > self._last_ns:
                            self._last_ns = last
            if self._syncer is not None and self._syncer.error is not None:
                raise self._syncer.error
            if end is _DISCARD:
                self._discard(bag)
                return
            if end is _CLOSE:
                self._finish(bag)
                return
            if time.monotonic() >= next_flush:
                self._flush(bag)
                next_flush = time.monotonic() + self.flush_period_s

    def _flush(self, bag) -> None:
        """Close the open chunk (if it holds anything) and push the file to disk."""
        storage = bag.storage
        storage.close_chunk()
        storage.flush()  # from here on a SIGKILL keeps it; the fsync (power loss) runs on the helper thread
        if self._syncer is not None:
            self._syncer.request(storage.fileno(), self._written)
        else:
            self._synced(self._written)

    def _synced(self, count: int) -> None:
        with self._cond:
            self._on_disk = max(self._on_disk, count)

    def _stop_syncer(self, raise_error: bool = True) -> None:
        syncer = getattr(self, "_syncer", None)
        if syncer is not None:
            syncer.stop()
            if raise_error and syncer.error is not None:
                raise syncer.error

    def _finish(self, bag) -> None:
        self._set_state("closing")
        self._stop_syncer()
        with self._cond:
            custom = dict(self._custom)
        for key, value in custom.items():
            bag.set_custom_data(key, value)
        bag.close()
        if self.fsync:
            fsync_path(self.path / contract.bag_file_name(self.path.name))
            fsync_path(self.path / "metadata.yaml")
        _remove(self.path / contract.JOURNAL_NAME)
        if self.fsync:
            fsync_path(self.path)
        with self._cond:
            self._on_disk = self._written
            self._state = "closed"

    def _discard(self, bag) -> None:
        self._set_state("discarded")
        if self._syncer is not None:
            self._syncer.stop()
        try:
            bag.abort()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
            self._set_state("discarded")

    def _fail(self, bag, exc: BaseException) -> None:
        if isinstance(exc, OSError):
            what = f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
            if exc.errno is not None:
                import errno as _errno

                what += f" [{_errno.errorcode.get(exc.errno, exc.errno)}]"
        else:
            what = f"{type(exc).__name__}: {exc}"
        message = f"writing bag {self.path} failed: {what}"
        if getattr(self, "_syncer", None) is not None:
            self._syncer.stop()
        with self._cond:
            self._accepting = False
            self._error = message
            self._state = "failed"
            self._rejected += sum(1 for item in self._queue if item[0] is not _CLOSE and item[0] is not _DISCARD)
            self._queue.clear()
            self._queue_bytes = 0
        if bag is not None and getattr(bag, "storage", None) is not None:
            closed = False
            try:  # a valid bag with what was written, if the disk lets us
                with self._cond:
                    custom = dict(self._custom)
                for key, value in custom.items():
                    bag.set_custom_data(key, value)
                bag.close()
                closed = True
            except BaseException:
                try:
                    bag.abort()
                except BaseException:
                    pass
            if closed:
                _remove(self.path / contract.JOURNAL_NAME)
        if self._on_error is not None:
            try:
                self._on_error(self, message)
            except Exception:
                pass

    def _write_journal(self) -> None:
        with self._cond:
            custom = dict(self._custom)
        journal = {
            "apo_recording_journal": 1,
            "note": "Present while this bag is being written; removed when the bag is closed. "
                    "A directory with this file and no metadata.yaml was left by a killed recorder: "
                    "repair it with apo_recorder.recover_bag().",
            "bag_file": contract.bag_file_name(self.path.name),
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "custom_data": custom,
            "topics": getattr(self, "_journal_topics", []),
        }
        atomic_write_text(self.path / contract.JOURNAL_NAME, yaml.safe_dump(journal, sort_keys=False),
                           fsync=self.fsync)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def write_bag(path: str | os.PathLike, topics: Sequence[TopicSpec], custom_data: Mapping[str, str],
              messages: Iterable[tuple[str, int, bytes]], **kwargs) -> WriterStats:
    """Write a whole bag synchronously (tests, tools): ``messages`` = (topic, log time ns, CDR bytes)."""
    kwargs.setdefault("max_queue_messages", 1 << 30)
    kwargs.setdefault("max_queue_bytes", 1 << 62)
    writer = EpisodeBagWriter(path, topics, custom_data, **kwargs).start()
    for topic, ts, data in messages:
        writer.write(topic, ts, data)
    stats = writer.close()
    if stats.error:
        raise BagWriteError(stats.error)
    return stats
