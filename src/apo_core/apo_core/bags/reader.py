"""The episode-bag reader: indexed read with CRC verification, falling back to the resync scan.

See :mod:`apo_core.bags` for the two read paths and the integrity rules.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from apo_core.bags.layout import load_metadata, mcap_files, read_journal, strings_of
from apo_core.bags.mcap_records import (
    CHUNK_FIXED,
    FOOTER_FIELDS,
    FOOTER_SIZE,
    MCAP_MAGIC,
    OP_CHUNK,
    OP_CHUNK_INDEX,
    U32,
    U64,
    footer_problem,
    iter_records,
)
from apo_core.bags.report import BagMessage, BagReadError, ReadReport
from apo_core.bags.scan import Raw, ResyncScanner
from apo_core.bags.typestore import TypeRegistry, registry_for
from apo_core.errors import MissingPathError


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
        self._source: _IndexedSource | ResyncScanner | None = None
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
            problem = footer_problem(files)
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
            self._source = ResyncScanner(files, self.report, self.types)
        # custom_data: metadata.yaml, else the recorder's journal, else the MCAP's rosbag2 metadata record.
        self.custom_data = strings_of(metadata.get("custom_data")) if metadata is not None else {}
        if not self.custom_data and not self.path.is_file():
            self.custom_data = strings_of((read_journal(self.path) or {}).get("custom_data"))
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
        self._source = ResyncScanner([Path(p) for p in self.report.files], self.report, self.types)
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
            summary_start, _, summary_crc = FOOTER_FIELDS.unpack_from(footer, 9)
            if not summary_start:
                continue  # no summary: rosbags reports it
            if not len(MCAP_MAGIC) < summary_start <= end:
                return f"{path.name}: its footer points outside the file", 0, 0
            f.seek(summary_start)
            summary = f.read(end - summary_start)
            if summary_crc and zlib.crc32(footer[:FOOTER_SIZE - 4], zlib.crc32(summary)) != summary_crc:
                return f"{path.name}: summary CRC mismatch (its index of schemas, channels, chunks is damaged)", 0, 0
            file_with = file_without = 0
            for op, body in iter_records(summary):
                if op != OP_CHUNK_INDEX or len(body) < 24:
                    continue
                offset = U64.unpack_from(body, 16)[0]
                f.seek(offset)
                head = f.read(9 + CHUNK_FIXED)
                if len(head) < 9 + CHUNK_FIXED or head[0] != OP_CHUNK:
                    return f"{path.name}: the chunk index points at byte {offset}, which holds no chunk", 0, 0
                if U32.unpack_from(head, 9 + 24)[0]:
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
