"""Read one episode bag (rosbag2 directory, MCAP storage) without ROS, including damaged ones.

Why this exists: the trainer runs where no ROS is installed, and the bags it reads come from a
recorder that can be killed at any moment. Two read paths share one interface (:class:`EpisodeBag`):

- **indexed** (the normal case): ``metadata.yaml`` is present and every MCAP file ends with its
  footer. Messages are read through ``rosbags.rosbag2.Reader``, which uses the chunk indexes and
  merges the chunks lazily, so only the chunks that overlap in time are in memory at once. The
  messages read per topic are checked against ``metadata.yaml`` (rosbags stops parsing a chunk
  at an overwritten record without an error; the shortfall is how that shows).
- **recovered** (a checked scan): ``metadata.yaml`` is missing or unreadable, an MCAP file has no
  footer/summary, or the indexed read failed part-way (then the scan resumes after the last
  message already delivered). The data section is walked record by record with every record
  checked for plausibility; a torn chunk gives up the complete records it still holds; a damaged
  stretch is skipped to the next record that parses as a chunk or as a message of a known
  channel (also inside an uncompressed chunk); chunks failing their CRC are dropped; schemas and
  channels come from the summary when the footer survived. What could not be read is counted in
  :class:`ReadReport` (bytes unreadable or cut off, torn/dropped chunks, undecodable messages,
  messages that metadata.yaml lists but were not read).

Integrity (why CRCs matter here: a flipped bit in a chunk's payload parses fine and would become a
wrong image in the training set). Every chunk that carries a CRC is checked before any of its
messages is used, in both paths; a chunk that fails is dropped whole and reported in
``ReadReport.damage`` with its offset, log-time range and what it held (from its message index).
A file whose chunks carry CRCs (the recorder writes them, see ``apo_recorder.mcap_storage``) is held
to it: a chunk without a CRC there, or message records salvaged after a damaged stretch, are dropped
as unverifiable; the summary CRC is checked too (a damaged index means scanning). Bags without CRCs
(written by older recorders) are read as before and reported ``unverified``
(``ReadReport.integrity``).

Messages come out in log-time order (ties in file order) in both paths, never more than the
chunks overlapping in time in memory, decoded with a type store built from the message
definitions embedded in the bag itself (the MCAP schema records), so ``apo_interfaces/msg/*``
decode without that package installed. Standard types without an embedded definition fall back
to rosbags' built-in ROS 2 store. ``custom_data`` comes from ``metadata.yaml``, else from the
recorder's journal (``apo_recording.yaml``, left by a killed recorder), else from the MCAP's
rosbag2 metadata record.
"""

from __future__ import annotations

import heapq
import os
import re
import socket
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import yaml

from apo_core.bag_contract import JOURNAL_NAME
from apo_core.errors import ApoError, MissingPathError

MCAP_MAGIC = b"\x89MCAP0\r\n"
ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
# MCAP opcodes used here.
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_METADATA, OP_METADATA_INDEX, OP_DATA_END = 0x0C, 0x0D, 0x0F
KNOWN_OPS = frozenset(range(0x01, 0x10))
OP_MESSAGE_INDEX, OP_CHUNK_INDEX = 0x07, 0x08
# Records that may stand at the top level of a data section, and those that follow a data-end record.
_DATA_SECTION_OPS = frozenset({OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_MESSAGE_INDEX, 0x09, OP_METADATA})
_SUMMARY_OPS = frozenset({OP_FOOTER, OP_SCHEMA, OP_CHANNEL, 0x08, 0x0A, 0x0B, OP_METADATA_INDEX, 0x0E})
_RESYNC_MARKERS = re.compile(b"[\\x05\\x06]")
FOOTER_SIZE = 1 + 8 + 20  # opcode, length, (summary_start, summary_offset_start, summary_crc)
CHUNK_FIXED = 8 + 8 + 8 + 4 + 4  # start, end, uncompressed size, crc, compression string length
COMPRESSIONS = ("", "zstd", "lz4")
RESYNC_BLOCK = 1 << 20
_FOREVER = 2**63 - 1
MAX_PROBLEMS = 50  # detailed problem lines kept per bag; the counters stay exact

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CHUNK_HEAD = struct.Struct("<QQQII")
_MSG_HEAD = struct.Struct("<HIQQ")
_FOOTER_FIELDS = struct.Struct("<QQI")  # summary_start, summary_offset_start, summary_crc


class BagReadError(ApoError, OSError):
    """A bag cannot be read (or, in strict mode, not read completely); the message names the path."""


class BagMessage(NamedTuple):
    topic: str
    msgtype: str
    log_time: int  # ns, recorder receive time
    msg: object  # decoded message (rosbags dataclass)
    size: int  # serialised bytes


@dataclass
class ReadReport:
    """What reading a bag found: which path was used and what could not be read."""

    path: str
    mode: str = "indexed"  # "indexed" or "recovered"
    metadata_present: bool = True
    footer_present: bool = True
    files: list[str] = field(default_factory=list)
    bytes_total: int = 0
    bytes_lost: int = 0  # bytes in the files that could not be used
    bytes_missing: int = 0  # bytes a torn chunk's header promised but the file does not hold
    messages_read: int = 0
    messages_undecodable: int = 0
    messages_unknown_channel: int = 0
    messages_missing: int = 0  # fewer messages than metadata.yaml counts for the topics read
    chunks_read: int = 0
    chunks_torn: int = 0
    chunks_dropped: int = 0
    chunks_verified: int = 0  # chunks whose CRC matched (indexed path: chunks with a CRC, checked as read)
    chunks_unverified: int = 0  # chunks used with no CRC to check (CRC 0: older recorder; torn chunks)
    messages_unverified: int = 0  # messages used from outside any chunk (no chunk CRC covers them)
    corrupt_regions: list[tuple[str, int, int]] = field(default_factory=list)  # (file, start, end)
    # One entry per damaged chunk or stretch: kind, file, offset (bytes), start_ns/end_ns (log-time range
    # its messages may have had; None when unknown), reason, lost ({topic: messages}; None when unknown).
    damage: list[dict] = field(default_factory=list)
    expected_counts: dict[str, int] = field(default_factory=dict)  # from metadata.yaml, per topic
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("(further problems not listed)")

    @property
    def integrity(self) -> str:
        """``verified`` (every chunk used passed its CRC), ``unverified`` (none carried one: an older
        bag) or ``partly verified``."""
        if not self.chunks_verified:
            return "unverified"
        return "partly verified" if self.chunks_unverified or self.messages_unverified else "verified"

    def lost_time_ranges(self) -> list[tuple[int, int]]:
        """Log-time ranges in which messages were lost to damage (open ends: 0 / 2**63 - 1)."""
        return [(d["start_ns"] if d["start_ns"] is not None else 0,
                 d["end_ns"] if d["end_ns"] is not None else _FOREVER) for d in self.damage]

    @property
    def lossy(self) -> bool:
        """True when something was definitely not read (bytes or messages lost)."""
        return bool(self.bytes_lost or self.bytes_missing or self.messages_undecodable or self.messages_missing
                    or self.messages_unknown_channel or self.chunks_dropped or self.chunks_torn)

    def summary(self) -> str:
        parts = [f"{self.mode}"]
        if not self.metadata_present:
            parts.append("no metadata.yaml")
        if not self.footer_present:
            parts.append("no MCAP footer")
        parts.append(f"{self.messages_read} messages read")
        if self.bytes_lost:
            parts.append(f"{self.bytes_lost} of {self.bytes_total} bytes unreadable")
        if self.bytes_missing:
            parts.append(f"{self.bytes_missing} bytes cut off")
        if self.chunks_torn:
            parts.append(f"{self.chunks_torn} torn chunk(s) salvaged")
        if self.chunks_dropped:
            parts.append(f"{self.chunks_dropped} chunk(s) dropped")
        if self.messages_undecodable:
            parts.append(f"{self.messages_undecodable} undecodable message(s)")
        if self.messages_unknown_channel:
            parts.append(f"{self.messages_unknown_channel} message(s) on unknown channels")
        if self.messages_missing:
            parts.append(f"{self.messages_missing} message(s) listed in metadata.yaml not read")
        if self.integrity != "verified":
            parts.append(integrity_text(self.to_dict()))
        return ", ".join(parts)

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["corrupt_regions"] = [list(r) for r in self.corrupt_regions]
        out["damage"] = [dict(d) for d in self.damage]
        out["lossy"] = self.lossy
        out["integrity"] = self.integrity
        return out


def integrity_text(read: dict) -> str:
    """One phrase about the CRC coverage of a read (``ReadReport.to_dict()``), for reports."""
    integrity = read.get("integrity", "unverified")
    if integrity == "verified":
        return f"verified ({read.get('chunks_verified', 0)} chunk CRC(s))"
    if integrity == "unverified":
        return "unverified (the bag carries no chunk CRCs: written by an older recorder?)"
    parts = []
    if read.get("chunks_unverified"):
        parts.append(f"{read['chunks_unverified']} chunk(s) without a usable CRC")
    if read.get("messages_unverified"):
        parts.append(f"{read['messages_unverified']} message(s) outside chunks")
    return f"partly verified ({', '.join(parts)})"


def damage_text(d: dict) -> str:
    """One line about one ``ReadReport.damage`` entry: where, which log times, why, what was lost."""
    times = ""
    if d.get("start_ns") is not None or d.get("end_ns") is not None:
        lo = "?" if d.get("start_ns") is None else f"{d['start_ns'] / 1e9:.3f}"
        hi = "?" if d.get("end_ns") is None else f"{d['end_ns'] / 1e9:.3f}"
        times = f" (log time {lo}..{hi} s)"
    lost = d.get("lost")
    if lost is None:
        what = "an unknown number of messages lost"
    elif lost:
        what = f"lost {sum(lost.values())} message(s): " + ", ".join(f"{t} {n}" for t, n in sorted(lost.items()))
    else:
        what = "no message lost"
    return f"{d['kind']} at byte {d['offset']} of {d['file']}{times}: {d['reason']}; {what}"


# --------------------------------------------------------------------------------------------
# Locating bags and their metadata
# --------------------------------------------------------------------------------------------
def mcap_files(bag_dir) -> list[Path]:
    """The MCAP files of a bag directory in split order (``x_0.mcap``, ``x_1.mcap``, ...)."""

    def key(p: Path):
        stem = p.stem
        tail = stem.rsplit("_", 1)[-1]
        return (int(tail) if tail.isdigit() else -1, stem)

    return sorted(Path(bag_dir).glob("*.mcap"), key=key)


def is_bag_dir(path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "metadata.yaml").is_file() or bool(mcap_files(path)))


def find_bags(bags_dir) -> list[Path]:
    """Episode bag directories directly under ``bags_dir`` (sorted by name)."""
    bags_dir = Path(bags_dir)
    if not bags_dir.is_dir():
        raise MissingPathError(f"bags directory not found: {bags_dir}")
    return sorted(p for p in bags_dir.iterdir() if is_bag_dir(p))


def bag_bytes(bag_dir) -> int:
    """Size of a bag's storage files in bytes."""
    return sum(p.stat().st_size for p in mcap_files(bag_dir))


def load_metadata(bag_dir) -> dict | None:
    """The ``rosbag2_bagfile_information`` mapping of ``metadata.yaml``, or None if absent/unreadable."""
    path = Path(bag_dir) / "metadata.yaml"
    try:
        data = _yaml_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
    return info if isinstance(info, dict) else None


def read_custom_data(bag_dir) -> dict[str, str]:
    """``custom_data`` of ``metadata.yaml`` as strings (empty when the file is missing)."""
    info = load_metadata(bag_dir) or {}
    return _strings(info.get("custom_data"))


# The recorder's journal (apo_core.bag_contract.JOURNAL_NAME, imported at the top): present while a bag
# is being written, left behind by a killed recorder. Read as plain YAML.


def read_journal(bag_dir) -> dict | None:
    """The recorder's journal of an unfinished bag (custom_data, pid, hostname), or None."""
    try:
        data = _yaml_load((Path(bag_dir) / JOURNAL_NAME).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def recording_in_progress(bag_dir) -> bool | None:
    """True if the recorder that writes this bag is alive (journal, no metadata.yaml, its pid runs on
    this host); False if it is finished or its writer is gone; None when it cannot be told (no
    journal, or another host) - the caller then judges by the files' age."""
    bag_dir = Path(bag_dir)
    if (bag_dir / "metadata.yaml").is_file():
        return False
    journal = read_journal(bag_dir)
    if journal is None or journal.get("hostname") not in (None, socket.gethostname()):
        return None
    try:
        pid = int(journal.get("pid"))
    except (TypeError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _yaml_load(text: str):
    """Safe YAML load, with libyaml when available (metadata.yaml is read for every bag)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _strings(custom) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}


# --------------------------------------------------------------------------------------------
# Types from the bag's own definitions
# --------------------------------------------------------------------------------------------
class TypeRegistry:
    """A rosbags type store filled from message definitions found in the bag.

    Registering a definition generates and executes Python code, and the first decode of a type
    compiles its deserialiser: about 0.1 s per bag. Bags with the same set of definitions (every
    bag of one recorder version) therefore share one registry, see :func:`registry_for`.
    """

    def __init__(self):
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.EMPTY)
        self._seen: set[tuple[str, str]] = set()
        self._failed: dict[str, str] = {}

    def add(self, msgtype: str, encoding: str, text: str) -> None:
        """Register ``msgtype`` (and the dependencies its definition embeds)."""
        key = (msgtype, text)
        if key in self._seen:
            return
        self._seen.add(key)
        try:
            if text.strip():
                self.store.register(_parse_definition(msgtype, encoding, text))
            elif msgtype not in self.store.fielddefs:
                self._register_builtin(msgtype)
            self._failed.pop(msgtype, None)
        except Exception as exc:  # any parser/typesys failure makes the type unusable
            self._failed[msgtype] = f"{type(exc).__name__}: {exc}"

    def _register_builtin(self, msgtype: str) -> None:
        from rosbags.typesys import Stores, get_typestore

        builtin = get_typestore(Stores.LATEST)
        if msgtype not in builtin.fielddefs:
            raise BagReadError(f"type {msgtype!r} has no definition in the bag and is not a standard ROS 2 type")
        self.store.register({k: v for k, v in builtin.fielddefs.items() if k not in self.store.fielddefs})

    def decode(self, data, msgtype: str):
        if msgtype in self._failed:
            raise BagReadError(f"cannot decode {msgtype}: its definition failed to load ({self._failed[msgtype]})")
        if msgtype not in self.store.fielddefs:
            self._register_builtin(msgtype)
        if bytes(data[:4]) == ZSTD_FRAME_MAGIC:  # rosbag2 per-message compression
            data = _zstd_decompress(bytes(data))
        return self.store.deserialize_cdr(data, msgtype)


_REGISTRIES: dict[frozenset, TypeRegistry] = {}
_MAX_REGISTRIES = 8


def registry_for(definitions: Iterable[tuple[str, str, str]]) -> TypeRegistry:
    """A registry holding exactly these (msgtype, encoding, text) definitions, shared between bags."""
    key = frozenset(definitions)
    registry = _REGISTRIES.get(key)
    if registry is None:
        registry = TypeRegistry()
        for msgtype, encoding, text in sorted(key):
            registry.add(msgtype, encoding, text)
        if len(_REGISTRIES) >= _MAX_REGISTRIES:
            _REGISTRIES.pop(next(iter(_REGISTRIES)))
        _REGISTRIES[key] = registry
    return registry


def _parse_definition(msgtype: str, encoding: str, text: str) -> dict:
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    if encoding in ("ros2idl", "omgidl", "idl"):
        sep = "=" * 80 + "\n"
        typs: dict = {}
        if text.startswith(f"{sep}IDL: "):
            for part in text.split(sep)[1:]:
                _, idl = part.split("\n", 1)
                typs.update(get_types_from_idl(idl))
        else:
            typs.update(get_types_from_idl(text))
        return typs
    return get_types_from_msg(text, msgtype)


def _zstd_decompress(data: bytes, size: int | None = None) -> bytes:
    import zstandard

    obj = zstandard.ZstdDecompressor().decompressobj()
    out = obj.decompress(data)
    if size is not None and len(out) != size:
        raise ValueError(f"zstd data gave {len(out)} bytes, expected {size}")
    return out


def _lz4_decompress(data: bytes) -> bytes:
    import lz4.frame

    return lz4.frame.LZ4FrameDecompressor().decompress(data)


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------
Raw = tuple[str, str, int, object]  # topic, msgtype, log_time, serialised data


class EpisodeBag:
    """One episode bag, opened for streaming.

    ``recover``: ``"auto"`` reads indexed when the bag is intact and scans otherwise; ``"never"``
    raises :class:`BagReadError` on any damage; ``"always"`` scans even an intact bag.
    Use as a context manager; :meth:`messages` can be called several times.
    """

    def __init__(self, path, recover: str = "auto"):
        if recover not in ("auto", "never", "always"):
            raise ValueError(f"recover must be 'auto', 'never' or 'always', got {recover!r}")
        self.path = Path(path)
        if not self.path.exists():
            raise MissingPathError(f"bag not found: {self.path}")
        self.recover = recover
        self.report = ReadReport(path=str(self.path))
        self.custom_data: dict[str, str] = {}
        self._source: _IndexedSource | _ScanSource | None = None
        self._open_problems: list[str] = []
        self.types = TypeRegistry()

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> EpisodeBag:
        files = [self.path] if self.path.is_file() else mcap_files(self.path)
        self.report.files = [str(p) for p in files]
        self.report.bytes_total = sum(p.stat().st_size for p in files)
        metadata = None if self.path.is_file() else load_metadata(self.path)
        self.report.metadata_present = metadata is not None
        if metadata is not None:
            self.report.expected_counts = _expected_counts(metadata)
        problem = None if metadata is not None else "metadata.yaml missing or unreadable"
        if problem is None:
            problem = _first_footer_problem(files)
        if problem is None:
            problem, self.report.chunks_verified, self.report.chunks_unverified = _crc_census(files)
        if problem is None and self.recover != "always":
            try:
                self._source = _IndexedSource(self.path, self.report)
                self.types = self._source.types
            except Exception as exc:  # rosbags raises several types on damage
                problem = f"indexed read failed: {type(exc).__name__}: {exc}"
        if self._source is None:
            if self.recover == "never":
                raise BagReadError(f"bag {self.path} is damaged ({problem}); recovery is disabled")
            if problem:
                self.report.problem(problem)
            self.report.mode = "recovered"
            self._source = _ScanSource(files, self.report, self.types)
        # custom_data: metadata.yaml, else the recorder's journal, else the MCAP's rosbag2 metadata record.
        self.custom_data = _strings(metadata.get("custom_data")) if metadata is not None else {}
        if not self.custom_data and not self.path.is_file():
            self.custom_data = _strings((read_journal(self.path) or {}).get("custom_data"))
        if not self.custom_data:
            self.custom_data = dict(self._source.custom_data)
        self._open_problems = list(self.report.problems)
        return self

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def __enter__(self) -> EpisodeBag:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def mode(self) -> str:
        return self.report.mode

    @property
    def topics(self) -> dict[str, str]:
        """Topic -> message type, as far as known (a scanned bag learns channels while reading)."""
        assert self._source is not None, "bag is not open"
        return self._source.topics()

    # -- messages ----------------------------------------------------------------------------
    def messages(self, topics: Iterable[str] | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> Iterator[BagMessage]:
        """Decoded messages of ``topics`` (all when None) in log-time order.

        ``on_bytes(n)`` is called with the serialised size of each message read (progress).
        When an indexed read fails part-way (a chunk the index points at is damaged), ``"auto"``
        switches to scanning and resumes after the last message already yielded (both paths
        order messages by log time, then file position, so the scan repeats the same prefix;
        the resume point is checked). ``"never"`` raises BagReadError instead. A scanned bag
        skips undecodable messages and counts them in :attr:`report`.

        At the end the number of messages read per topic is compared with ``metadata.yaml``'s
        counts: rosbags silently stops parsing a chunk at overwritten record headers, so a
        shortfall is the only sign of such damage in the indexed path. It is reported as
        ``report.messages_missing`` (``"never"`` raises; a caller wanting the most data re-reads
        with ``recover="always"``, whose scan resynchronises inside damaged chunks).
        """
        assert self._source is not None, "bag is not open"
        wanted = None if topics is None else set(topics)
        self.report.messages_read = 0
        self.report.messages_undecodable = 0
        self.report.problems = list(self._open_problems)
        raw_iter = self._source.raw_messages(wanted)
        yielded = 0
        last: tuple | None = None
        skip = 0
        counts: Counter = Counter()
        self.report.messages_missing = 0
        while True:
            try:
                item = next(raw_iter)
            except StopIteration:
                self._check_counts(counts, wanted)
                return
            except Exception as exc:  # storage errors of any type mean a damaged bag
                raw_iter = self._fall_back(exc, wanted, yielded)
                skip = yielded
                continue
            topic, msgtype, log_time, data = item
            counts[topic] += 1
            if skip:
                skip -= 1
                counts[topic] -= 1
                if skip == 0 and (topic, log_time) != last:
                    raise BagReadError(f"{self.path}: the scan does not repeat the indexed read up to message "
                                       f"{yielded}; cannot resume (re-read with recover='always')")
                continue
            size = len(data)
            if on_bytes is not None:
                on_bytes(size)
            try:
                msg = self.types.decode(data, msgtype)
            except Exception as exc:  # SerdeError, ValueError, struct.error, ...
                if self.report.mode == "indexed":
                    raw_iter = self._fall_back(exc, wanted, yielded, f"{msgtype} on {topic} at log time {log_time}")
                    skip = yielded
                    counts[topic] -= 1  # the scan reads it again
                    continue
                self.report.messages_undecodable += 1
                self.report.problem(f"undecodable {msgtype} on {topic} at log time {log_time}: {exc}")
                continue
            self.report.messages_read += 1
            yielded += 1
            last = (topic, log_time)
            yield BagMessage(topic, msgtype, log_time, msg, size)

    def _check_counts(self, counts: Counter, wanted) -> None:
        expected = self.report.expected_counts
        short = {t: n - counts.get(t, 0) for t, n in expected.items()
                 if (wanted is None or t in wanted) and counts.get(t, 0) < n}
        if not short:
            return
        self.report.messages_missing = sum(short.values())
        text = (f"{self.report.messages_missing} message(s) that metadata.yaml lists were not read "
                f"({', '.join(f'{t}: {n}' for t, n in sorted(short.items()))})")
        if self.report.mode == "indexed" and self.recover == "never":
            raise BagReadError(f"{self.path}: {text}; the bag is damaged")
        self.report.problem(text)

    def _fall_back(self, exc: Exception, wanted, yielded: int, what: str = "") -> Iterator[Raw]:
        """Switch a failing indexed read to the scan (``recover="auto"``), or raise."""
        where = f" decoding {what}" if what else ""
        text = f"indexed read of {self.path} failed after {yielded} message(s){where}: {type(exc).__name__}: {exc}"
        if isinstance(exc, BagReadError) or self.report.mode != "indexed" or self.recover != "auto":
            if isinstance(exc, BagReadError):
                raise exc
            raise BagReadError(text) from exc
        self._source.close()
        self.report.mode = "recovered"
        self.report.problem(text + "; continued by scanning")
        self._open_problems.append(self.report.problems[-1])
        # A private registry: definitions read from a damaged file must not reach the shared one.
        self.types = TypeRegistry()
        self._source = _ScanSource([Path(p) for p in self.report.files], self.report, self.types)
        return self._source.raw_messages(wanted)


def open_episode_bag(path, recover: str = "auto") -> EpisodeBag:
    """Open a bag for reading (close it, or use it as a context manager)."""
    return EpisodeBag(path, recover=recover).open()


def _expected_counts(metadata: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for entry in metadata.get("topics_with_message_count") or []:
        try:
            name = entry["topic_metadata"]["name"]
            out[name] = out.get(name, 0) + int(entry["message_count"])
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _first_footer_problem(files: list[Path]) -> str | None:
    if not files:
        return "no .mcap storage file"
    for path in files:
        size = path.stat().st_size
        if size < len(MCAP_MAGIC) * 2 + FOOTER_SIZE:
            return f"{path.name} is too short to be a complete MCAP file ({size} bytes)"
        with path.open("rb") as f:
            head = f.read(len(MCAP_MAGIC))
            f.seek(size - len(MCAP_MAGIC) - FOOTER_SIZE)
            tail = f.read()
        if head != MCAP_MAGIC:
            return f"{path.name} does not start with the MCAP magic"
        if tail[-8:] != MCAP_MAGIC or tail[0] != OP_FOOTER:
            return f"{path.name} has no footer (recording was probably interrupted)"
    return None


def _crc_census(files: list[Path]) -> tuple[str | None, int, int]:
    """(problem, chunks with a CRC, chunks without) of complete MCAP files, from their summaries.

    Checks each summary's CRC (when the file has one), then reads each chunk's CRC field (one small
    read per chunk). A problem (the summary is damaged, an index points at no chunk, a chunk lacks a
    CRC in a file whose summary has one) sends the read to the scan, which deals with it.
    """
    with_crc = without_crc = 0
    for path in files:
        size = path.stat().st_size
        end = size - len(MCAP_MAGIC) - FOOTER_SIZE
        with path.open("rb") as f:
            f.seek(end)
            footer = f.read(FOOTER_SIZE)
            summary_start, _, summary_crc = _FOOTER_FIELDS.unpack_from(footer, 9)
            if not summary_start:
                continue  # no summary: rosbags reports it
            if not len(MCAP_MAGIC) < summary_start <= end:
                return f"{path.name}: its footer points outside the file", 0, 0
            f.seek(summary_start)
            summary = f.read(end - summary_start)
            if summary_crc and zlib.crc32(footer[:FOOTER_SIZE - 4], zlib.crc32(summary)) != summary_crc:
                return f"{path.name}: summary CRC mismatch (its index of schemas, channels, chunks is damaged)", 0, 0
            file_with = file_without = 0
            for op, body in _iter_records(summary):
                if op != OP_CHUNK_INDEX or len(body) < 24:
                    continue
                offset = _U64.unpack_from(body, 16)[0]
                f.seek(offset)
                head = f.read(9 + CHUNK_FIXED)
                if len(head) < 9 + CHUNK_FIXED or head[0] != OP_CHUNK:
                    return f"{path.name}: the chunk index points at byte {offset}, which holds no chunk", 0, 0
                if _U32.unpack_from(head, 9 + 24)[0]:
                    file_with += 1
                else:
                    file_without += 1
        if file_without and summary_crc:  # written with CRCs: a chunk without one is damaged
            return (f"{path.name}: {file_without} chunk(s) without a CRC in a file written with CRCs", 0, 0)
        with_crc += file_with
        without_crc += file_without
    return None, with_crc, without_crc


# --------------------------------------------------------------------------------------------
# Indexed path: rosbags
# --------------------------------------------------------------------------------------------
class _IndexedSource:
    def __init__(self, path: Path, report: ReadReport):
        from rosbags.rosbag2 import Reader

        self.reader = Reader(path)
        self.reader.open()
        self.report = report
        self.types = registry_for((c.msgtype, _msgdef_encoding(c.msgdef), c.msgdef.data)
                                  for c in self.reader.connections)
        meta = getattr(self.reader.storage, "metadata", None)
        custom = getattr(meta, "custom", None) or {}
        self.custom_data = {str(k): "" if v is None else str(v) for k, v in custom.items()}

    def topics(self) -> dict[str, str]:
        return {c.topic: c.msgtype for c in self.reader.connections}

    def raw_messages(self, wanted: set[str] | None) -> Iterator[Raw]:
        conns = [c for c in self.reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, log_time, data in self.reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, log_time, data

    def close(self) -> None:
        if self.reader.is_open:
            self.reader.close()


def _msgdef_encoding(msgdef) -> str:
    name = getattr(msgdef.format, "name", str(msgdef.format)).upper()
    return "ros2idl" if name == "IDL" else "ros2msg"


# --------------------------------------------------------------------------------------------
# Recovered path: a checked record-by-record scan of the MCAP data section
# --------------------------------------------------------------------------------------------
@dataclass
class _Unit:
    """A piece of the data section that yields messages: a chunk or one top-level message."""

    start_time: int
    load: Callable[[], list]


class _ScanSource:
    def __init__(self, files: list[Path], report: ReadReport, types: TypeRegistry):
        self.files = files
        self.report = report
        self.types = types
        self.report.footer_present = _first_footer_problem(files) is None
        self.schemas: dict[tuple[int, int], tuple[str, str, str]] = {}  # (file, id) -> name, encoding, text
        self.channels: dict[tuple[int, int], tuple[str, int]] = {}  # (file, id) -> topic, schema id
        self.custom_data: dict[str, str] = {}
        self._handles: list[BinaryIO] = []
        self._valid_files: list[int] = []
        self._crc_files: set[int] = set()  # files whose chunks carry CRCs: everything used must pass one
        for idx, path in enumerate(files):
            f = path.open("rb")
            self._handles.append(f)
            if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
                report.problem(f"{path.name}: not an MCAP file (bad magic), skipped")
                continue
            self._valid_files.append(idx)
            self._read_summary(idx)
            if idx not in self._crc_files and self._first_chunk_has_crc(idx):
                self._crc_files.add(idx)
        if not self._valid_files:
            self.close()
            raise BagReadError(f"no readable MCAP data in {[str(p) for p in files]} (not an MCAP file)")

    def close(self) -> None:
        for f in self._handles:
            f.close()
        self._handles = []

    def topics(self) -> dict[str, str]:
        out = {}
        for (fidx, _), (topic, sid) in self.channels.items():
            out[topic] = self.schemas.get((fidx, sid), ("", "", ""))[0]
        return out

    # -- summary (when the footer survived) ------------------------------------------------
    def _read_summary(self, fidx: int) -> None:
        """Pre-load schemas, channels and the rosbag2 metadata record from an intact summary.

        Makes channels defined in a damaged chunk still usable for later chunks.
        """
        f = self._handles[fidx]
        size = self.files[fidx].stat().st_size
        if size < 2 * len(MCAP_MAGIC) + FOOTER_SIZE:
            return
        f.seek(size - len(MCAP_MAGIC) - FOOTER_SIZE)
        tail = f.read()
        if tail[-8:] != MCAP_MAGIC or tail[0] != OP_FOOTER:
            return
        summary_start, _, summary_crc = _FOOTER_FIELDS.unpack_from(tail, 9)
        end = size - len(MCAP_MAGIC) - FOOTER_SIZE
        if not summary_start or not len(MCAP_MAGIC) < summary_start < end:
            return
        if summary_crc:
            self._crc_files.add(fidx)
        try:
            f.seek(summary_start)
            blob = f.read(end - summary_start)
            if summary_crc and zlib.crc32(tail[:FOOTER_SIZE - 4], zlib.crc32(blob)) != summary_crc:
                self.report.problem(f"{self.files[fidx].name}: summary CRC mismatch; not used, scanning only")
                return
            for op, body in _iter_records(blob):
                if op == OP_SCHEMA:
                    self._add_schema(fidx, body)
                elif op == OP_CHANNEL:
                    self._add_channel(fidx, body)
                elif op == OP_METADATA_INDEX:
                    offset, length = struct.unpack_from("<QQ", body, 0)
                    if 0 < offset < size and offset + length <= size:
                        f.seek(offset)
                        rec = f.read(length)
                        if rec and rec[0] == OP_METADATA:
                            self._add_metadata(memoryview(rec)[9:])
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            self.report.problem(f"{self.files[fidx].name}: summary unreadable ({exc}); scanning only")

    def _first_chunk_has_crc(self, fidx: int) -> bool:
        """Whether the file's first record after its header is a chunk with a CRC (a footer-less file
        written with CRCs: the recorder's first chunk, with its schemas, is on disk from the start)."""
        f = self._handles[fidx]
        f.seek(len(MCAP_MAGIC))
        head = f.read(9)
        if len(head) < 9 or head[0] != OP_HEADER:
            return False
        f.seek(len(MCAP_MAGIC) + 9 + _U64.unpack_from(head, 1)[0])
        info = _parse_chunk_header(f.read(_CHUNK_PROBE), 0, 0)
        return info is not None and info.crc != 0

    def _add_schema(self, fidx: int, body) -> None:
        sid = _U16.unpack_from(body, 0)[0]
        pos = 2
        name, pos = _string(body, pos)
        encoding, pos = _string(body, pos)
        text, pos = _string(body, pos)
        self.schemas[(fidx, sid)] = (name, encoding, text)

    def _add_channel(self, fidx: int, body) -> None:
        cid, sid = struct.unpack_from("<HH", body, 0)
        topic, _ = _string(body, 4)
        self.channels[(fidx, cid)] = (topic, sid)

    def _add_metadata(self, body) -> None:
        name, pos = _string(body, 0)
        if name != "rosbag2":
            return
        nbytes = _U32.unpack_from(body, pos)[0]
        pos += 4
        end = pos + nbytes
        while pos < end:
            key, pos = _string(body, pos)
            value, pos = _string(body, pos)
            if key == "serialized_metadata":
                try:
                    meta = _yaml_load(value)
                except yaml.YAMLError:
                    return
                meta = meta.get("rosbag2_bagfile_information", meta) if isinstance(meta, dict) else None
                custom = (meta or {}).get("custom_data") or {}
                if isinstance(custom, dict) and not self.custom_data:
                    self.custom_data = {str(k): "" if v is None else str(v) for k, v in custom.items()}

    # -- messages --------------------------------------------------------------------------
    def raw_messages(self, wanted: set[str] | None) -> Iterator[Raw]:
        """Merge units lazily: a unit is loaded only when its start time is due (bounded memory)."""
        for key in ("bytes_lost", "bytes_missing", "chunks_read", "chunks_torn", "chunks_dropped",
                    "chunks_verified", "chunks_unverified", "messages_unverified", "messages_unknown_channel"):
            setattr(self.report, key, 0)
        self.report.corrupt_regions = []
        self.report.damage = []
        for idx in range(len(self.files)):
            if idx not in self._valid_files:
                self.report.bytes_lost += self.files[idx].stat().st_size
        units = (u for fidx in self._valid_files for u in self._units(fidx, wanted))
        heap: list = []
        seq = 0
        nxt = next(units, None)
        while True:
            while nxt is not None and (not heap or nxt.start_time <= heap[0][0]):
                for log_time, item in nxt.load():
                    heapq.heappush(heap, (log_time, seq, item))
                    seq += 1
                nxt = next(units, None)
            if not heap:
                return
            log_time, _, (topic, msgtype, data) = heapq.heappop(heap)
            yield topic, msgtype, log_time, data

    def _units(self, fidx: int, wanted: set[str] | None) -> Iterator[_Unit]:
        """Walk the data section record by record, checking every record against the file.

        A record that is not plausible where it stands (unknown opcode, running past the end of
        the file, a summary-section record, a message of an unknown channel, an inconsistent
        chunk header) starts a damaged stretch that is skipped up to the next plausible chunk or
        message record.
        """
        f = self._handles[fidx]
        name = self.files[fidx].name
        size = self.files[fidx].stat().st_size
        strict = fidx in self._crc_files
        pos = len(MCAP_MAGIC)
        ended = False
        last_time: int | None = None  # latest log time of the units so far (start of a damaged stretch)
        gap: dict | None = None  # the damage entry of the stretch being skipped; its end is the next unit
        while pos < size:
            f.seek(pos)
            head = f.read(_CHUNK_PROBE)
            if len(head) < 9:
                self._lost(fidx, pos, size, "torn record header at the end of the file")
                break
            op = head[0]
            length = _U64.unpack_from(head, 1)[0]
            end = pos + 9 + length
            if op == OP_CHUNK:
                info = _parse_chunk_header(head, 0, pos)
                if info is not None:
                    if gap is not None:
                        gap["end_ns"], gap = info.start, None
                    last_time = info.end if last_time is None else max(last_time, info.end)
                    yield _Unit(info.start, self._chunk_loader(fidx, pos, info, size, wanted))
                    pos = min(info.record_end, size)
                    continue
            elif op == OP_HEADER and pos == len(MCAP_MAGIC) and end <= size:
                pos = end
                continue
            elif op in (OP_DATA_END, OP_FOOTER) and self._is_data_end(f, pos, op, length, size):
                ended = True
                break
            elif op in _DATA_SECTION_OPS and end <= size and self._plausible(fidx, head, op, length, end, size):
                if op in (OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_METADATA):
                    f.seek(pos + 9)
                    body = memoryview(f.read(length))
                    try:
                        if op == OP_SCHEMA:
                            self._add_schema(fidx, body)
                        elif op == OP_CHANNEL:
                            self._add_channel(fidx, body)
                        elif op == OP_METADATA:
                            self._add_metadata(body)
                        elif gap is not None and strict:
                            # After damage in a file with CRCs: nothing vouches for these bytes.
                            self._lost(fidx, pos, end, "message record after a damaged stretch (no CRC covers it)")
                        else:
                            item = self._message(fidx, body, wanted)
                            if item is not None:
                                self.report.messages_unverified += 1
                                last_time = item[0] if last_time is None else max(last_time, item[0])
                                if gap is not None:
                                    gap["end_ns"], gap = item[0], None
                                yield _Unit(item[0], lambda item=item: [item])
                    except (ValueError, struct.error, UnicodeDecodeError) as exc:
                        self._lost(fidx, pos, end, f"unreadable record (opcode 0x{op:02x}): {exc}")
                pos = end
                continue
            nxt = self._resync(f, pos + 1, size, fidx)
            if op in KNOWN_OPS and end > size and nxt is None:
                why = f"torn record (opcode 0x{op:02x}) at the end of the file"
            else:
                why = f"corrupt bytes (opcode 0x{op:02x}, length {length})"
            self._lost(fidx, pos, size if nxt is None else nxt, why)
            if gap is None:
                gap = self._damage("stretch", fidx, pos, last_time, None, why, None)
            if nxt is None:
                break
            pos = nxt
        self.report.footer_present = self.report.footer_present and ended
        if not ended:
            self.report.problem(f"{name}: data section ends without a data-end record or footer")

    def _plausible(self, fidx: int, head: bytes, op: int, length: int, end: int, size: int) -> bool:
        """Cheap structural checks of a data-section record (its bytes may be garbage)."""
        if op == OP_MESSAGE:
            if length < _MSG_HEAD.size or len(head) < 9 + 2:
                return False
            return (fidx, _U16.unpack_from(head, 9)[0]) in self.channels
        if op == OP_MESSAGE_INDEX:
            if length < 6 or len(head) < 9 + 6:
                return False
            return length == 6 + _U32.unpack_from(head, 11)[0] and (length - 6) % 16 == 0
        return True

    def _is_data_end(self, f, pos: int, op: int, length: int, size: int) -> bool:
        """A data-end record (4-byte CRC) or a footer (20 bytes) followed by what must follow it."""
        if op == OP_FOOTER:
            if length != 20 or pos + 9 + 20 + len(MCAP_MAGIC) > size:
                return False
            f.seek(pos + 9 + 20)
            return f.read(len(MCAP_MAGIC)) == MCAP_MAGIC
        if length != 4:
            return False
        f.seek(pos + 13)
        nxt = f.read(1)
        return not nxt or nxt[0] in _SUMMARY_OPS

    def _chunk_loader(self, fidx: int, pos: int, info: _ChunkInfo, size: int, wanted):
        def load() -> list:
            f = self._handles[fidx]
            name = self.files[fidx].name
            f.seek(info.data_offset)
            data = f.read(min(info.csize, max(0, size - info.data_offset)))
            torn = len(data) < info.csize
            try:
                if info.compression == "":
                    raw = data
                elif info.compression == "zstd":
                    raw = _zstd_decompress(data, None if torn else info.usize)
                else:
                    raw = _lz4_decompress(data)
            except Exception as exc:  # zstd/lz4 raise their own error types
                return self._drop_chunk(fidx, pos, info, f"does not decompress ({exc})")
            if not torn and len(raw) != info.usize:
                return self._drop_chunk(fidx, pos, info, f"decompressed to {len(raw)} bytes, its header says {info.usize}")
            if not torn and info.crc and zlib.crc32(raw) != info.crc:
                return self._drop_chunk(fidx, pos, info, "CRC mismatch: its content is damaged")
            if not torn and not info.crc and fidx in self._crc_files:
                return self._drop_chunk(fidx, pos, info, "no CRC, in a file whose chunks carry CRCs")
            out, last_intact = self._chunk_records(fidx, pos, info, raw, torn, wanted)
            if torn:
                self.report.chunks_torn += 1
                self.report.chunks_unverified += 1
                self.report.bytes_missing += info.csize - len(data)
                self.report.problem(
                    f"{name}: chunk at offset {pos} is torn ({len(data)} of {info.csize} bytes in the file); "
                    f"kept {len(out)} message(s) from its complete records")
                self._damage("chunk", fidx, pos, info.start if last_intact is None else last_intact, info.end,
                             "torn: the file ends inside it", None)
            else:
                self.report.chunks_read += 1
                if info.crc:
                    self.report.chunks_verified += 1
                else:
                    self.report.chunks_unverified += 1
            return out

        return load

    def _chunk_records(self, fidx: int, pos: int, info: _ChunkInfo, raw: bytes, torn: bool,
                       wanted) -> tuple[list, int | None]:
        """Messages of a chunk's records; damaged stretches are skipped to the next plausible record."""
        name = self.files[fidx].name
        view = memoryview(raw)
        n = len(raw)
        out: list = []
        last_intact = None  # log time of the last message record that parsed (a torn chunk lost the later ones)
        damaged = False
        p = 0
        while p < n:
            op = raw[p]
            length = _U64.unpack_from(raw, p + 1)[0] if p + 9 <= n else -1
            end = p + 9 + length
            ok = op in KNOWN_OPS and length >= 0 and end <= n
            if ok:
                body = view[p + 9:end]
                try:
                    if op == OP_SCHEMA:
                        self._add_schema(fidx, body)
                    elif op == OP_CHANNEL:
                        self._add_channel(fidx, body)
                    elif op == OP_MESSAGE:
                        item = self._message(fidx, body, wanted)
                        last_intact = _MSG_HEAD.unpack_from(body, 0)[2]
                        if item is not None:
                            out.append(item)
                except (ValueError, struct.error, UnicodeDecodeError):
                    ok = False
            if ok:
                p = end
                continue
            nxt = self._resync_in_chunk(raw, p + 1, fidx, info)
            stop = n if nxt is None else nxt
            # Uncompressed chunks: the skipped bytes are file bytes at a known place.
            where = info.data_offset + p if info.compression == "" else pos
            self.report.bytes_lost += stop - p
            self.report.corrupt_regions.append((name, where, where + stop - p))
            if not (torn and nxt is None):
                self.report.problem(f"{name}: chunk at offset {pos}: {stop - p} bytes of records unreadable")
                if not damaged:
                    damaged = True
                    self._damage("chunk", fidx, pos, info.start, info.end,
                                 "records unreadable (no CRC to tell what else is wrong)", None)
            if nxt is None:
                break
            p = nxt
        out.sort(key=lambda x: x[0])
        return out, last_intact

    def _resync_in_chunk(self, raw: bytes, start: int, fidx: int, info: _ChunkInfo) -> int | None:
        """Next offset in a chunk that holds a message record of a known channel, timed inside the
        chunk's time range, and followed by a record that fits (or by the chunk's end)."""
        n = len(raw)
        marker = bytes([OP_MESSAGE])
        i = raw.find(marker, start)
        while i != -1 and i + 9 + _MSG_HEAD.size <= n:
            length = _U64.unpack_from(raw, i + 1)[0]
            end = i + 9 + length
            if _MSG_HEAD.size <= length and end <= n:
                cid, _, log_time, _ = _MSG_HEAD.unpack_from(raw, i + 9)
                if (fidx, cid) in self.channels and info.start <= log_time <= info.end:
                    if end == n or (end + 9 <= n and raw[end] in KNOWN_OPS
                                    and end + 9 + _U64.unpack_from(raw, end + 1)[0] <= n):
                        return i
            i = raw.find(marker, i + 1)
        return None

    def _drop_chunk(self, fidx: int, pos: int, info: _ChunkInfo, why: str) -> list:
        """Use nothing of a chunk; report where it was, its log-time range and what its index says it held."""
        self.report.chunks_dropped += 1
        end = min(info.record_end, self.files[fidx].stat().st_size)
        self.report.bytes_lost += end - pos
        self.report.corrupt_regions.append((self.files[fidx].name, pos, end))
        entry = self._damage("chunk", fidx, pos, info.start, info.end, why, self._indexed_counts(fidx, info))
        self.report.problem(f"dropped {damage_text(entry)}")
        return []

    def _indexed_counts(self, fidx: int, info: _ChunkInfo) -> dict[str, int] | None:
        """Messages per topic of a chunk, from the message index records that follow it (None if absent)."""
        f = self._handles[fidx]
        pos = info.record_end
        counts: Counter = Counter()
        found = False
        for _ in range(1 + len(self.channels)):
            f.seek(pos)
            head = f.read(9 + 6)
            if len(head) < 15 or head[0] != OP_MESSAGE_INDEX:
                break
            length = _U64.unpack_from(head, 1)[0]
            cid, nbytes = struct.unpack_from("<HI", head, 9)
            if length != 6 + nbytes or nbytes % 16:
                break
            topic = self.channels.get((fidx, cid), (f"channel {cid}", 0))[0]
            counts[topic] += nbytes // 16
            found = True
            pos += 9 + length
        return dict(counts) if found else None

    def _damage(self, kind: str, fidx: int, offset: int, start_ns, end_ns, reason: str, lost) -> dict:
        entry = {"kind": kind, "file": self.files[fidx].name, "offset": offset, "start_ns": start_ns,
                 "end_ns": end_ns, "reason": reason, "lost": lost}
        self.report.damage.append(entry)
        return entry

    def _message(self, fidx: int, body, wanted):
        if len(body) < _MSG_HEAD.size:
            raise ValueError(f"message record of {len(body)} bytes")
        cid, _, log_time, _ = _MSG_HEAD.unpack_from(body, 0)
        chan = self.channels.get((fidx, cid))
        if chan is None:
            self.report.messages_unknown_channel += 1
            self.report.problem(f"{self.files[fidx].name}: message on unknown channel {cid} dropped")
            return None
        topic, sid = chan
        if wanted is not None and topic not in wanted:
            return None
        name, encoding, text = self.schemas.get((fidx, sid), ("", "", ""))
        if not name:
            self.report.messages_unknown_channel += 1
            self.report.problem(f"{self.files[fidx].name}: channel {topic} has no schema; message dropped")
            return None
        self.types.add(name, encoding, text)
        return log_time, (topic, name, body[_MSG_HEAD.size:])

    # -- damage bookkeeping ------------------------------------------------------------------
    def _lost(self, fidx: int, start: int, end: int, why: str) -> None:
        name = self.files[fidx].name
        self.report.bytes_lost += max(0, end - start)
        self.report.corrupt_regions.append((name, start, end))
        self.report.problem(f"{name}: bytes {start}..{end} lost: {why}")

    def _resync(self, f, start: int, size: int, fidx: int) -> int | None:
        """Offset of the next plausible chunk or top-level message record at or after ``start``.

        A chunk must have a consistent header; a message must belong to a known channel, fit in
        the file and be followed by a record with a known opcode (or the end of the file).
        """
        pos = start
        while pos < size:
            f.seek(pos)
            block = f.read(RESYNC_BLOCK + _CHUNK_PROBE)
            if not block:
                return None
            for match in _RESYNC_MARKERS.finditer(block, 0, RESYNC_BLOCK):
                i = match.start()
                if block[i] == OP_CHUNK:
                    if _parse_chunk_header(block, i, pos + i) is not None:
                        return pos + i
                elif self._plausible_message_at(f, block, i, pos + i, size, fidx):
                    return pos + i
            pos += RESYNC_BLOCK
        return None

    def _plausible_message_at(self, f, block: bytes, i: int, at: int, size: int, fidx: int) -> bool:
        if len(block) - i < 9 + _MSG_HEAD.size:
            return False
        length = _U64.unpack_from(block, i + 1)[0]
        end = at + 9 + length
        if length < _MSG_HEAD.size or end > size or (fidx, _U16.unpack_from(block, i + 9)[0]) not in self.channels:
            return False
        if end == size:
            return True
        f.seek(end)
        nxt = f.read(9)
        return len(nxt) == 9 and nxt[0] in KNOWN_OPS and end + 9 + _U64.unpack_from(nxt, 1)[0] <= size


class _ChunkInfo(NamedTuple):
    start: int
    end: int
    usize: int
    crc: int
    compression: str
    data_offset: int
    csize: int
    record_end: int


_CHUNK_PROBE = 9 + CHUNK_FIXED + 4 + 8


def _parse_chunk_header(buf: bytes, i: int, file_pos: int) -> _ChunkInfo | None:
    """Chunk header at ``buf[i:]`` (found at ``file_pos``) if every field is consistent, else None.

    The checks (known compression, start <= end, the record length equal to the header plus the
    compressed size, equal sizes when uncompressed) make a false match in random bytes unlikely.
    """
    if len(buf) - i < 9 + CHUNK_FIXED or buf[i] != OP_CHUNK:
        return None
    length = _U64.unpack_from(buf, i + 1)[0]
    start, end_t, usize, crc, clen = _CHUNK_HEAD.unpack_from(buf, i + 9)
    if clen > 4 or len(buf) - i < 9 + CHUNK_FIXED + clen + 8:
        return None
    try:
        comp = bytes(buf[i + 9 + CHUNK_FIXED:i + 9 + CHUNK_FIXED + clen]).decode()
    except UnicodeDecodeError:
        return None
    csize = _U64.unpack_from(buf, i + 9 + CHUNK_FIXED + clen)[0]
    if comp not in COMPRESSIONS or start > end_t or length != CHUNK_FIXED + clen + 8 + csize:
        return None
    if (comp == "" and usize != csize) or usize > (1 << 34):
        return None
    data_offset = file_pos + 9 + CHUNK_FIXED + clen + 8
    return _ChunkInfo(start, end_t, usize, crc, comp, data_offset, csize, file_pos + 9 + length)


def _string(buf, pos: int) -> tuple[str, int]:
    n = _U32.unpack_from(buf, pos)[0]
    pos += 4
    if pos + n > len(buf):
        raise ValueError("string runs past its record")
    return bytes(buf[pos:pos + n]).decode(), pos + n


def _iter_records(buf) -> Iterator[tuple[int, memoryview]]:
    for op, body, _ in _iter_records_pos(memoryview(buf)):
        yield op, body


def _iter_records_pos(view: memoryview) -> Iterator[tuple[int, memoryview, int]]:
    """Records of a buffer whose lengths tile it; stops at the first record that does not fit.

    Yields (opcode, body, offset after the record); a caller compares the last offset with the
    buffer length to know how much was left unread.
    """
    p = 0
    n = len(view)
    while p + 9 <= n:
        op = view[p]
        length = _U64.unpack_from(view, p + 1)[0]
        if op not in KNOWN_OPS or p + 9 + length > n:
            return
        body = view[p + 9:p + 9 + length]
        p += 9 + length
        yield op, body, p
