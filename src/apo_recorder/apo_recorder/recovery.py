"""Repair an episode bag left by a killed recorder (no metadata.yaml, MCAP without summary/footer).

An MCAP file is written front to back: header, then chunks (each a self-contained record holding
schema, channel and message records), and only at close the summary and footer. A killed writer
therefore leaves a data section that is valid up to its last complete record. ``recover_bag``
scans that data section as far as it reads (stopping at the first truncated or corrupt record; a
complete chunk whose CRC does not match is left out and the scan goes on after it, so no damaged
message reaches the rebuilt bag), rebuilds a complete rosbag2 bag (with CRCs, see
``apo_recorder.mcap_storage``) from the schemas, channels and messages found, and writes its
``metadata.yaml`` -- with the episode's custom_data from the recorder's journal
(``contract.JOURNAL_NAME``), plus ``apo.recovered`` = number of messages recovered.

The rebuilt bag replaces the damaged one in place (same directory and file names); the damaged
original is deleted, or kept as ``<parent>/.<name>.partial/`` with ``keep_original=True``. The
swap is done with renames so an interrupted recovery can simply be run again.

The scan is the bag library's (:func:`apo_core.bags.scan.scan_mcap`, stop-at-first-error mode);
``scan_mcap`` and ``ScanState`` are re-exported here.

ROS-free: needs only ``rosbags`` (and ``zstandard``/``lz4`` for compressed chunks).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from apo_core.bags.layout import process_alive, read_journal
from apo_core.bags.scan import ScanError, ScanState, scan_mcap
from apo_core.bags.typestore import typestore_from_definitions
from apo_recorder import contract


class RecoveryError(ScanError):
    """The bag cannot be recovered (not an MCAP bag, held by a live recorder, ...); says why."""


@dataclass
class RecoveryReport:
    """What ``recover_bag`` did. ``status``: ``intact`` (nothing to do) or ``recovered``."""

    path: Path
    status: str
    messages_recovered: int
    per_topic: dict[str, int] = field(default_factory=dict)
    bytes_total: int = 0  # size of the damaged MCAP file
    bytes_used: int = 0  # prefix of it that was readable
    first_ns: int | None = None
    last_ns: int | None = None
    custom_data: dict[str, str] = field(default_factory=dict)
    stop_reason: str = ""  # why the scan stopped (end of data, truncated record, corrupt chunk, ...)
    chunks_dropped: list[str] = field(default_factory=list)  # complete chunks left out (CRC mismatch, ...)

    @property
    def bytes_discarded(self) -> int:
        return max(0, self.bytes_total - self.bytes_used)


# ---------------------------------------------------------------------------------------- recovery
def _scan(mcap: Path, scan: ScanState) -> Iterator[tuple[int, int, bytes]]:
    """The bag library's scan in stop-at-first-error mode; a file that is not MCAP is a RecoveryError."""
    try:
        yield from scan_mcap(mcap, scan, mode="stop")
    except RecoveryError:
        raise
    except ScanError as exc:
        raise RecoveryError(str(exc)) from exc


def bag_is_readable(path: str | os.PathLike) -> bool:
    """True if rosbags can open the bag directory (metadata.yaml + complete storage files)."""
    from rosbags.rosbag2 import Reader

    try:
        with Reader(Path(path)):
            return True
    except Exception:
        return False


def _find_mcap(path: Path, journal: dict | None) -> Path:
    if journal and isinstance(journal.get("bag_file"), str) and (path / journal["bag_file"]).is_file():
        return path / journal["bag_file"]
    candidates = sorted(p for p in path.glob("*.mcap") if p.is_file())
    if not candidates:
        raise RecoveryError(f"no .mcap file in {path}: nothing to recover")
    preferred = path / contract.bag_file_name(path.name)
    return preferred if preferred in candidates else candidates[0]


def _hidden(parent: Path, name: str, what: str) -> Path:
    return parent / f".{name}.{what}"


def recover_bag(path: str | os.PathLike, *, keep_original: bool = False, force: bool = False) -> RecoveryReport:
    """Make the episode bag at ``path`` readable again; return what was recovered.

    - A bag that already opens (metadata.yaml and a complete MCAP) is left alone: status ``intact``.
    - Otherwise the MCAP data section is scanned as far as it reads and a valid bag with those
      messages (same topics, types, full message definitions and offered QoS) replaces it:
      status ``recovered``. custom_data come from the journal (episode id, instruction, task,
      policy version, outcome if the end event had arrived) or default to the directory name and
      outcome ``unknown``; ``apo.recovered`` is set to the number of messages recovered.
    - Refuses (RecoveryError) when the journal names a process on this host that is still alive
      (the bag is being written), unless ``force``.
    """
    import socket

    from rosbags.rosbag2.metadata import parse_qos

    from apo_recorder.mcap_storage import open_writer

    path = Path(path)
    parent, name = path.parent, path.name
    work = _hidden(parent, name, "recovering")
    # Resume a recovery interrupted between its two renames.
    if not path.exists() and (work / name / "metadata.yaml").is_file():
        os.replace(work / name, path)
        shutil.rmtree(work, ignore_errors=True)
    if not path.is_dir():
        raise RecoveryError(f"bag directory {path} does not exist")

    journal = read_journal(path)  # the recorder's journal (contract.JOURNAL_NAME), None if absent/unreadable
    if (path / "metadata.yaml").is_file() and bag_is_readable(path):
        from apo_recorder.reader import read_bag_info

        info = read_bag_info(path)
        return RecoveryReport(path=path, status="intact", messages_recovered=info.message_count,
                              per_topic={t: i.message_count for t, i in info.topics.items()},
                              first_ns=info.start_ns, last_ns=info.end_ns, custom_data=info.custom_data,
                              stop_reason="bag is complete")
    if journal and not force:
        pid, host = journal.get("pid"), journal.get("hostname")
        if isinstance(pid, int) and host == socket.gethostname() and pid != os.getpid() and process_alive(pid):
            raise RecoveryError(f"bag {path} is still being written by process {pid}; "
                                f"stop that recorder first (or pass force=True)")

    mcap = _find_mcap(path, journal)
    custom = contract.default_custom_data(episode_id=name)
    if journal and isinstance(journal.get("custom_data"), dict):
        custom.update({str(k): str(v) for k, v in journal["custom_data"].items()})
    journal_hashes = {}
    if journal and isinstance(journal.get("topics"), list):
        for t in journal["topics"]:
            if isinstance(t, dict) and t.get("type") and t.get("type_description_hash"):
                journal_hashes[t["type"]] = t["type_description_hash"]

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    scan = ScanState()
    report = RecoveryReport(path=path, status="recovered", messages_recovered=0, bytes_total=mcap.stat().st_size)
    conns: dict[int, object] = {}
    topic_of: dict[int, str] = {}
    writer = open_writer(work / name, version=contract.METADATA_VERSION)
    writer.open()
    try:
        def connection(cid: int):
            if cid in conns:
                return conns[cid]
            if cid not in scan.channels:
                return None  # a message whose channel record was lost: cannot be typed
            sid, topic, encoding, meta = scan.channels[cid]
            if sid not in scan.schemas:
                return None
            msgtype, _schema_encoding, msgdef = scan.schemas[sid]
            digest = journal_hashes.get(msgtype)
            if not digest:
                digest = typestore_from_definitions({msgtype: msgdef}).hash_rihs01(msgtype)
            qos = parse_qos(meta.get("offered_qos_profiles", "")) if meta.get("offered_qos_profiles") else []
            conns[cid] = writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest,
                                               serialization_format=encoding or "cdr", offered_qos_profiles=qos)
            topic_of[cid] = topic
            return conns[cid]

        for cid, log_time, data in _scan(mcap, scan):
            conn = connection(cid)
            if conn is None:
                continue
            writer.write(conn, log_time, data)
            report.messages_recovered += 1
            report.per_topic[topic_of[cid]] = report.per_topic.get(topic_of[cid], 0) + 1
            report.first_ns = log_time if report.first_ns is None else min(report.first_ns, log_time)
            report.last_ns = log_time if report.last_ns is None else max(report.last_ns, log_time)
        for cid in sorted(scan.channels):  # topics that got no message keep their connection
            connection(cid)
        custom[contract.KEY_RECOVERED] = str(report.messages_recovered)
        for key, value in custom.items():
            writer.set_custom_data(key, value)
        writer.close()
    except BaseException:
        try:
            writer.abort()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        raise
    for f in (work / name).iterdir():
        _fsync(f)
    _fsync(work / name)

    report.bytes_used = scan.bytes_used
    report.stop_reason = scan.stop_reason
    report.chunks_dropped = list(scan.chunks_dropped)
    report.custom_data = custom
    # Swap: damaged original out, rebuilt bag in (each step a rename; rerunnable if interrupted).
    partial = _hidden(parent, name, "partial")
    shutil.rmtree(partial, ignore_errors=True)
    os.replace(path, work / "original")
    os.replace(work / name, path)
    if keep_original:
        os.replace(work / "original", partial)
    shutil.rmtree(work, ignore_errors=True)
    _fsync(parent)
    return report


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def count_messages_on_disk(mcap_path: str | os.PathLike) -> dict[str, int]:
    """Messages per topic readable in an MCAP file right now -- also one still being written."""
    scan = ScanState()
    counts: dict[int, int] = {}
    for cid, _t, _d in _scan(Path(mcap_path), scan):
        counts[cid] = counts.get(cid, 0) + 1
    return {scan.channels[cid][1]: n for cid, n in counts.items() if cid in scan.channels}
