"""Scanning the data section of MCAP files record by record (ROS-free): the one scanner, two modes.

:func:`scan_mcap` yields (channel id, log time, data) of the messages readable in one MCAP file and
fills a :class:`ScanState` (schemas, channels, readable prefix, why it stopped, chunks dropped):

- ``mode="stop"`` (recovery of a bag left by a killed recorder): walks the data section front to
  back and stops at the first truncated or corrupt record; a complete chunk that fails its CRC (or
  does not decompress) is left out and the walk goes on after it. Messages in file order.
- ``mode="resync"`` (reading damaged bags): :class:`ResyncScanner`; every record is checked for
  plausibility, a damaged stretch is skipped to the next record that parses as a chunk or a message
  of a known channel (also inside an uncompressed chunk), chunks failing their CRC are dropped and
  reported in a :class:`~apo_core.bags.report.ReadReport`. Messages in log-time order.

Both modes parse records with :mod:`apo_core.bags.mcap_records`.
"""

from __future__ import annotations

import heapq
import os
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import yaml

from apo_core.bags.layout import yaml_load
from apo_core.bags.mcap_records import (
    CHUNK_PROBE,
    DATA_SECTION_OPS,
    FOOTER_FIELDS,
    FOOTER_SIZE,
    KNOWN_OPS,
    MCAP_MAGIC,
    MSG_HEAD,
    OP_CHANNEL,
    OP_CHUNK,
    OP_DATA_END,
    OP_FOOTER,
    OP_HEADER,
    OP_MESSAGE,
    OP_MESSAGE_INDEX,
    OP_METADATA,
    OP_METADATA_INDEX,
    OP_SCHEMA,
    RESYNC_BLOCK,
    RESYNC_MARKERS,
    SUMMARY_OPS,
    U16,
    U32,
    U64,
    ChunkInfo,
    decompress_chunk,
    footer_problem,
    iter_records,
    parse_channel,
    parse_chunk_header,
    parse_message_head,
    parse_schema,
    read_string,
)
from apo_core.bags.report import BagReadError, ReadReport, damage_text
from apo_core.bags.typestore import TypeRegistry

Raw = tuple[str, str, int, object]  # topic, msgtype, log_time, serialised data


@dataclass
class _Unit:
    """A piece of the data section that yields messages: a chunk or one top-level message."""

    start_time: int
    load: Callable[[], list]


class ResyncScanner:
    def __init__(self, files: list[Path], report: ReadReport, types: TypeRegistry):
        self.files = files
        self.report = report
        self.types = types
        self.report.footer_present = footer_problem(files) is None
        self.schemas: dict[tuple[int, int], tuple[str, str, str]] = {}  # (file, id) -> name, encoding, text
        self.channels: dict[tuple[int, int], tuple[str, int]] = {}  # (file, id) -> topic, schema id
        # (file, id) -> schema id, topic, message encoding, metadata (encoding "" when unreadable)
        self.channel_info: dict[tuple[int, int], tuple[int, str, str, dict[str, str]]] = {}
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
        summary_start, _, summary_crc = FOOTER_FIELDS.unpack_from(tail, 9)
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
            for op, body in iter_records(blob):
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
        f.seek(len(MCAP_MAGIC) + 9 + U64.unpack_from(head, 1)[0])
        info = parse_chunk_header(f.read(CHUNK_PROBE), 0, 0)
        return info is not None and info.crc != 0

    def _add_schema(self, fidx: int, body) -> None:
        sid, name, encoding, text = parse_schema(body)
        self.schemas[(fidx, sid)] = (name, encoding, text)

    def _add_channel(self, fidx: int, body) -> None:
        cid, sid, topic, _, _ = parse_channel(body, full=False)
        self.channels[(fidx, cid)] = (topic, sid)
        try:  # encoding and metadata (QoS) when the record holds them intact
            self.channel_info[(fidx, cid)] = parse_channel(body)[1:]
        except (ValueError, struct.error, UnicodeDecodeError):
            self.channel_info[(fidx, cid)] = (sid, topic, "", {})

    def _add_metadata(self, body) -> None:
        name, pos = read_string(body, 0)
        if name != "rosbag2":
            return
        nbytes = U32.unpack_from(body, pos)[0]
        pos += 4
        end = pos + nbytes
        while pos < end:
            key, pos = read_string(body, pos)
            value, pos = read_string(body, pos)
            if key == "serialized_metadata":
                try:
                    meta = yaml_load(value)
                except yaml.YAMLError:
                    return
                meta = meta.get("rosbag2_bagfile_information", meta) if isinstance(meta, dict) else None
                custom = (meta or {}).get("custom_data") or {}
                if isinstance(custom, dict) and not self.custom_data:
                    self.custom_data = {str(k): "" if v is None else str(v) for k, v in custom.items()}

    # -- messages --------------------------------------------------------------------------
    def raw_messages(self, wanted: set[str] | None) -> Iterator[Raw]:
        """(topic, msgtype, log time, data) of every message read, in log-time order (ties in file order)."""
        for topic, msgtype, log_time, data, _cid in self.channel_messages(wanted):
            yield topic, msgtype, log_time, data

    def channel_messages(self, wanted: set[str] | None) -> Iterator[tuple[str, str, int, object, int]]:
        """As :meth:`raw_messages`, plus the channel id. Merges units lazily: a unit is loaded only
        when its start time is due (bounded memory)."""
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
            log_time, _, (topic, msgtype, data, cid) = heapq.heappop(heap)
            yield topic, msgtype, log_time, data, cid

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
            head = f.read(CHUNK_PROBE)
            if len(head) < 9:
                self._lost(fidx, pos, size, "torn record header at the end of the file")
                break
            op = head[0]
            length = U64.unpack_from(head, 1)[0]
            end = pos + 9 + length
            if op == OP_CHUNK:
                info = parse_chunk_header(head, 0, pos)
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
            elif op in DATA_SECTION_OPS and end <= size and self._plausible(fidx, head, op, length, end, size):
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
            if length < MSG_HEAD.size or len(head) < 9 + 2:
                return False
            return (fidx, U16.unpack_from(head, 9)[0]) in self.channels
        if op == OP_MESSAGE_INDEX:
            if length < 6 or len(head) < 9 + 6:
                return False
            return length == 6 + U32.unpack_from(head, 11)[0] and (length - 6) % 16 == 0
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
        return not nxt or nxt[0] in SUMMARY_OPS

    def _chunk_loader(self, fidx: int, pos: int, info: ChunkInfo, size: int, wanted):
        def load() -> list:
            f = self._handles[fidx]
            name = self.files[fidx].name
            f.seek(info.data_offset)
            data = f.read(min(info.csize, max(0, size - info.data_offset)))
            torn = len(data) < info.csize
            try:
                raw = decompress_chunk(data, info.compression, None if torn else info.usize)
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

    def _chunk_records(self, fidx: int, pos: int, info: ChunkInfo, raw: bytes, torn: bool,
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
            length = U64.unpack_from(raw, p + 1)[0] if p + 9 <= n else -1
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
                        last_intact = MSG_HEAD.unpack_from(body, 0)[2]
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

    def _resync_in_chunk(self, raw: bytes, start: int, fidx: int, info: ChunkInfo) -> int | None:
        """Next offset in a chunk that holds a message record of a known channel, timed inside the
        chunk's time range, and followed by a record that fits (or by the chunk's end)."""
        n = len(raw)
        marker = bytes([OP_MESSAGE])
        i = raw.find(marker, start)
        while i != -1 and i + 9 + MSG_HEAD.size <= n:
            length = U64.unpack_from(raw, i + 1)[0]
            end = i + 9 + length
            if MSG_HEAD.size <= length and end <= n:
                cid, _, log_time, _ = MSG_HEAD.unpack_from(raw, i + 9)
                if (fidx, cid) in self.channels and info.start <= log_time <= info.end:
                    if end == n or (end + 9 <= n and raw[end] in KNOWN_OPS
                                    and end + 9 + U64.unpack_from(raw, end + 1)[0] <= n):
                        return i
            i = raw.find(marker, i + 1)
        return None

    def _drop_chunk(self, fidx: int, pos: int, info: ChunkInfo, why: str) -> list:
        """Use nothing of a chunk; report where it was, its log-time range and what its index says it held."""
        self.report.chunks_dropped += 1
        end = min(info.record_end, self.files[fidx].stat().st_size)
        self.report.bytes_lost += end - pos
        self.report.corrupt_regions.append((self.files[fidx].name, pos, end))
        entry = self._damage("chunk", fidx, pos, info.start, info.end, why, self._indexed_counts(fidx, info))
        self.report.problem(f"dropped {damage_text(entry)}")
        return []

    def _indexed_counts(self, fidx: int, info: ChunkInfo) -> dict[str, int] | None:
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
            length = U64.unpack_from(head, 1)[0]
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
        if len(body) < MSG_HEAD.size:
            raise ValueError(f"message record of {len(body)} bytes")
        cid, _, log_time, _ = MSG_HEAD.unpack_from(body, 0)
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
        return log_time, (topic, name, body[MSG_HEAD.size:], cid)

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
            block = f.read(RESYNC_BLOCK + CHUNK_PROBE)
            if not block:
                return None
            for match in RESYNC_MARKERS.finditer(block, 0, RESYNC_BLOCK):
                i = match.start()
                if block[i] == OP_CHUNK:
                    if parse_chunk_header(block, i, pos + i) is not None:
                        return pos + i
                elif self._plausible_message_at(f, block, i, pos + i, size, fidx):
                    return pos + i
            pos += RESYNC_BLOCK
        return None

    def _plausible_message_at(self, f, block: bytes, i: int, at: int, size: int, fidx: int) -> bool:
        if len(block) - i < 9 + MSG_HEAD.size:
            return False
        length = U64.unpack_from(block, i + 1)[0]
        end = at + 9 + length
        if length < MSG_HEAD.size or end > size or (fidx, U16.unpack_from(block, i + 9)[0]) not in self.channels:
            return False
        if end == size:
            return True
        f.seek(end)
        nxt = f.read(9)
        return len(nxt) == 9 and nxt[0] in KNOWN_OPS and end + 9 + U64.unpack_from(nxt, 1)[0] <= size


# --------------------------------------------------------------------------------------------
# scan_mcap: both modes behind one interface
# --------------------------------------------------------------------------------------------
SCAN_MODES = ("stop", "resync")


class ScanError(RuntimeError):
    """The file cannot be scanned at all (not an MCAP file); says why."""


@dataclass
class ScanState:
    """What :func:`scan_mcap` found besides messages: schemas, channels, readable prefix, why it stopped."""

    schemas: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # id -> name, encoding, data
    channels: dict[int, tuple[int, str, str, dict[str, str]]] = field(default_factory=dict)  # id -> sid, topic, ...
    bytes_used: int = 0  # stop mode: the readable prefix; resync mode: the bytes not lost
    stop_reason: str = ""
    chunks_dropped: list[str] = field(default_factory=list)
    report: ReadReport | None = None  # resync mode: the scanner's full account of the damage


class _BadChunk(ValueError):
    """A complete chunk record whose content is damaged: skip it, the next record is still in place."""


def _chunk_records(body: memoryview, scan: ScanState) -> Iterator[tuple[int, int, int, bytes]]:
    """Schema/channel/message records of one buffer (stop mode: any damage raises);
    yields messages (channel, seq, log_time, data)."""
    for op, rec, _end in _strict_records(body):
        if op == OP_SCHEMA:
            sid, name, encoding, text = parse_schema(rec)
            scan.schemas[sid] = (name, encoding, text)
        elif op == OP_CHANNEL:
            cid, sid, topic, encoding, meta = parse_channel(rec)
            scan.channels[cid] = (sid, topic, encoding, meta)
        elif op == OP_MESSAGE:
            cid, seq, log_time = parse_message_head(rec)
            yield cid, seq, log_time, bytes(rec[MSG_HEAD.size:])


def _strict_records(view: memoryview) -> Iterator[tuple[int, memoryview, int]]:
    """Records of a buffer whose lengths must tile it exactly (ValueError otherwise)."""
    off, end = 0, len(view)
    while off < end:
        if end - off < 9:
            raise ValueError("record header past end of chunk")
        op = view[off]
        length = U64.unpack_from(view, off + 1)[0]
        start = off + 9
        if length > end - start:
            raise ValueError("record past end of chunk")
        off = start + length
        yield op, view[start:off], off


_MAX_RECORD = 1 << 40  # anything larger is garbage, not a record


def scan_mcap(path: str | os.PathLike, scan: ScanState | None = None, *,
              mode: str = "stop") -> Iterator[tuple[int, int, bytes]]:
    """Yield (channel id, log time ns, data) of every message readable in an MCAP file's data section.

    ``mode``: ``"stop"`` stops quietly at the first truncated or corrupt record (a killed writer's
    last chunk), messages in file order; ``"resync"`` skips damaged stretches and reads on, messages
    in log-time order. ``scan`` (if given) receives the schemas, channels, readable byte count, the
    stop reason and the chunks left out. Raises :class:`ScanError` if the file is not MCAP at all.
    """
    if mode not in SCAN_MODES:
        raise ValueError(f"mode must be one of {SCAN_MODES}, got {mode!r}")
    scan = scan if scan is not None else ScanState()
    if mode == "resync":
        return _scan_resync(Path(path), scan)
    return _scan_stop(Path(path), scan)


def _scan_resync(path: Path, scan: ScanState) -> Iterator[tuple[int, int, bytes]]:
    report = ReadReport(path=str(path), mode="recovered", files=[str(path)], bytes_total=path.stat().st_size)
    scan.report = report
    try:
        scanner = ResyncScanner([path], report, TypeRegistry())
    except BagReadError as exc:
        raise ScanError(f"{path} is not an MCAP file (bad magic)") from exc
    try:
        for _topic, _msgtype, log_time, data, cid in scanner.channel_messages(None):
            yield cid, log_time, bytes(data)
    finally:
        scanner.close()
        for (_, sid), schema in scanner.schemas.items():
            scan.schemas[sid] = schema
        for (_, cid), info in scanner.channel_info.items():
            scan.channels[cid] = info
        scan.bytes_used = report.bytes_total - report.bytes_lost
        scan.chunks_dropped = [damage_text(d) for d in report.damage]
        scan.stop_reason = ("end of data section" if report.footer_present
                            else "end of file (no summary/footer)")


def _scan_stop(path: Path, scan: ScanState) -> Iterator[tuple[int, int, bytes]]:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        magic = fh.read(8)
        if magic != MCAP_MAGIC:
            if MCAP_MAGIC.startswith(magic):  # killed right after creating the file
                scan.stop_reason = "file ends before the end of the MCAP magic"
                return
            raise ScanError(f"{path} is not an MCAP file (bad magic)")
        scan.bytes_used = 8
        while True:
            pos = fh.tell()
            head = fh.read(9)
            if len(head) == 0:
                scan.stop_reason = "end of file (no summary/footer)"
                return
            if len(head) < 9:
                scan.stop_reason = f"truncated record header at byte {pos}"
                return
            op = head[0]
            length = U64.unpack_from(head, 1)[0]
            if op == 0 or length > _MAX_RECORD or pos + 9 + length > size:
                scan.stop_reason = (f"truncated record at byte {pos} (opcode 0x{op:02x}, {length} bytes, "
                                    f"file has {size})")
                return
            if op in (OP_FOOTER, OP_DATA_END):
                scan.bytes_used = pos + 9 + length
                scan.stop_reason = "end of data section"
                return
            body = fh.read(length)
            if len(body) < length:
                scan.stop_reason = f"short read at byte {pos}"
                return
            try:
                if op == OP_CHUNK:
                    messages = list(_chunk_messages(head + body, pos, scan))
                elif op in (OP_SCHEMA, OP_CHANNEL, OP_MESSAGE):
                    messages = list(_chunk_records(memoryview(head + body), scan))
                else:  # header, message index, chunk index, metadata, attachments, ...: nothing to keep
                    messages = []
            except _BadChunk as exc:
                scan.chunks_dropped.append(f"chunk at byte {pos} left out: {exc}")
                messages = []
            except (ValueError, struct.error, UnicodeDecodeError) as exc:
                scan.stop_reason = f"corrupt record at byte {pos}: {exc}"
                return
            scan.bytes_used = pos + 9 + length
            for cid, _seq, log_time, data in messages:
                yield cid, log_time, data


def _chunk_messages(record: bytes, pos: int, scan: ScanState) -> list[tuple[int, int, int, bytes]]:
    """Messages of one complete chunk record (stop mode): _BadChunk if its content is damaged,
    ValueError if its header is."""
    info = parse_chunk_header(record, 0, 0)
    if info is None:
        raise ValueError("inconsistent chunk header")
    try:
        raw = decompress_chunk(record[info.data_offset:info.data_offset + info.csize], info.compression, info.usize)
    except Exception as exc:  # zstd/lz4 have their own error types
        raise _BadChunk(f"does not decompress ({exc})") from exc
    if len(raw) != info.usize:
        raise ValueError("chunk size mismatch")
    if info.crc and zlib.crc32(raw) != info.crc:
        raise _BadChunk(f"CRC mismatch (log time {info.start}..{info.end})")
    return list(_chunk_records(memoryview(raw), scan))
