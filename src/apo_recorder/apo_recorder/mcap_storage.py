"""MCAP storage for the rosbags rosbag2 ``Writer`` that fills in the format's CRCs.

Why our own storage: rosbags' MCAP writer leaves every CRC at 0, so a flipped bit in a recorded
image would reach the training set unnoticed. This one writes, following the MCAP specification
(https://mcap.dev/spec):

- each chunk's ``uncompressed_crc``: CRC-32 of the chunk's records before compression;
- the DataEnd record's ``data_section_crc``: CRC-32 of every byte from the start of the file (magic
  included) up to the DataEnd record;
- the Footer's ``summary_crc``: CRC-32 of the summary section plus the footer's first two fields.

It also gives the episode writer direct control of chunking and flushing (``close_chunk``,
``chunk_bytes``, ``flush``), which crash tolerance depends on: a chunk is on disk only once closed.
The rest of rosbag2 (connections, ``metadata.yaml``, custom data, QoS) stays with rosbags' ``Writer``;
:func:`open_writer` returns one that uses this storage. The file layout is what rosbag2's MCAP storage
writes: profile ``ros2``, schemas and channels at the start of the first chunk and in the summary,
channel metadata ``offered_qos_profiles`` and ``topic_type_hash``, a ``rosbag2`` metadata record,
message indexes after each chunk, chunk indexes, statistics and summary offsets. The header's
``library`` names the recorder (``apo_recorder <version>; rosbags <version>``: rosbags lays out the
rosbag2 side, this module the MCAP file).

The rosbag2 metadata (the MCAP record and ``metadata.yaml``) is rosbags' with the fixes of
:mod:`apo_recorder.bag_metadata`: the real ``ros_distro`` instead of ``rosbags``, and rosbag2's key
order and QoS layout. ROS-free.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import yaml

from apo_recorder import bag_metadata

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_STATISTICS, OP_METADATA, OP_METADATA_INDEX = 0x07, 0x08, 0x0B, 0x0C, 0x0D
OP_SUMMARY_OFFSET, OP_DATA_END = 0x0E, 0x0F
DEFAULT_CHUNK_BYTES = 1024 * 1024
PROFILE = "ros2"  # the MCAP profile of rosbag2 bags (https://mcap.dev/spec/registry#ros2)

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_RECORD_HEAD = struct.Struct("<BQ")
_MESSAGE_HEAD = struct.Struct("<BQHIQQ")  # opcode, length, channel id, sequence, log time, publish time
_INDEX_ENTRY = struct.Struct("<QQ")


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return _U32.pack(len(data)) + data


def _string_map(pairs: dict[str, str]) -> bytes:
    body = b"".join(_string(k) + _string(v) for k, v in pairs.items())
    return _U32.pack(len(body)) + body


def _record(op: int, body: bytes) -> bytes:
    return _RECORD_HEAD.pack(op, len(body)) + body


class _CrcFile:
    """A write-only file that keeps a running CRC-32 of what went through it since the last reset."""

    def __init__(self, path: Path):
        self._fh = path.open("xb")
        self.pos = 0
        self.crc = 0

    def write(self, data) -> None:
        self._fh.write(data)
        self.crc = zlib.crc32(data, self.crc)
        self.pos += len(data)

    def flush(self) -> None:
        self._fh.flush()

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        self._fh.close()


def _zstd_compressor() -> Callable[[bytes], bytes]:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
    except ImportError:
        from backports import zstd
    return zstd.compress


class CrcMcapStorage:
    """A rosbags storage plugin (``STORAGE_PLUGINS`` entry) writing one MCAP file with CRCs.

    Messages go into an in-memory chunk; the chunk is written when it reaches ``chunk_bytes`` or
    when :meth:`close_chunk` is called, followed by its message indexes.
    """

    def __init__(self, path: Path, compression) -> None:
        from rosbags.rosbag2.enums import CompressionMode

        self.path = path / f"{path.name}.mcap"
        self.chunk_bytes = DEFAULT_CHUNK_BYTES
        if compression == CompressionMode.STORAGE:
            self.compression, self._compress = "zstd", _zstd_compressor()
        else:
            self.compression, self._compress = "", None
        self._schemas: dict[str, bytes] = {}  # msgtype -> schema record
        self._schema_ids: dict[str, int] = {}
        self._channels: list[bytes] = []
        self._counts: dict[int, int] = {}  # channel id -> messages
        self._start = self._end = None  # log time range of the file
        self._chunk_indexes: list[bytes] = []
        self._new_chunk()
        self.bio = _CrcFile(self.path)
        self.bio.write(MAGIC)
        self.bio.write(_record(OP_HEADER, _string(PROFILE) + _string(library_name())))
        self.bag_info: dict | None = None  # the rosbag2 metadata written at close

    # -- rosbags StorageWriter protocol ----------------------------------------------------------
    def add_msgtype(self, connection) -> None:
        from rosbags.interfaces import MessageDefinitionFormat

        sid = len(self._schemas) + 1
        encoding = "ros2msg" if connection.msgdef.format == MessageDefinitionFormat.MSG else "ros2idl"
        record = _record(OP_SCHEMA, _U16.pack(sid) + _string(connection.msgtype) + _string(encoding)
                         + _string(connection.msgdef.data))
        self._schemas[connection.msgtype] = record
        self._schema_ids[connection.msgtype] = sid
        self._chunk += record

    def add_connection(self, connection, offered_qos_profiles: str) -> None:
        from rosbags.rosbag2.metadata import dump_qos_v9

        del offered_qos_profiles  # rosbags' text: re-rendered below in rosbag2's key order
        qos_text = bag_metadata.qos_profiles_yaml(dump_qos_v9(list(connection.ext.offered_qos_profiles)))
        record = _record(OP_CHANNEL, _U16.pack(connection.id) + _U16.pack(self._schema_ids[connection.msgtype])
                         + _string(connection.topic) + _string(connection.ext.serialization_format)
                         + _string_map({"offered_qos_profiles": qos_text, "topic_type_hash": connection.digest}))
        self._channels.append(record)
        self._counts[connection.id] = 0
        self._chunk += record

    def write(self, connection, timestamp: int, data) -> None:
        cid = connection.id
        chunk = self._chunk
        self._index.setdefault(cid, []).append((timestamp, len(chunk)))
        chunk += _MESSAGE_HEAD.pack(OP_MESSAGE, 22 + len(data), cid, 0, timestamp, timestamp)
        chunk += data
        self._counts[cid] += 1
        if self._chunk_start is None or timestamp < self._chunk_start:
            self._chunk_start = timestamp
        if self._chunk_end is None or timestamp > self._chunk_end:
            self._chunk_end = timestamp
        if len(chunk) >= self.chunk_bytes:
            self.close_chunk()

    def close(self, version: int, metadata: str) -> None:
        """Last chunk, the rosbag2 metadata record, DataEnd (with the data CRC), summary and footer."""
        del version  # the rosbag2 version is in ``metadata``
        self.bag_info = bag_metadata.rosbag2_bag_info(yaml.safe_load(metadata), bag_metadata.ros_distro())
        metadata = bag_metadata.dump_yaml(self.bag_info).rstrip("\n")
        self.close_chunk()
        bio = self.bio
        meta_offset = bio.pos
        bio.write(_record(OP_METADATA, _string("rosbag2") + _string_map({"serialized_metadata": metadata})))
        meta_length = bio.pos - meta_offset
        bio.write(_record(OP_DATA_END, _U32.pack(bio.crc)))

        summary_start = bio.pos
        bio.crc = 0  # the summary CRC starts here
        groups = []
        for op, records in ((OP_SCHEMA, list(self._schemas.values())), (OP_CHANNEL, self._channels),
                            (OP_CHUNK_INDEX, self._chunk_indexes)):
            start = bio.pos
            for rec in records:
                bio.write(rec)
            if bio.pos > start:
                groups.append((op, start, bio.pos - start))
        start = bio.pos
        bio.write(_record(OP_METADATA_INDEX, _U64.pack(meta_offset) + _U64.pack(meta_length) + _string("rosbag2")))
        groups.append((OP_METADATA_INDEX, start, bio.pos - start))
        start = bio.pos
        counts = b"".join(_U16.pack(cid) + _U64.pack(n) for cid, n in sorted(self._counts.items()))
        bio.write(_record(OP_STATISTICS, _U64.pack(sum(self._counts.values())) + _U16.pack(len(self._schemas))
                          + _U32.pack(len(self._channels)) + _U32.pack(0) + _U32.pack(1)
                          + _U32.pack(len(self._chunk_indexes)) + _U64.pack(self._start or 0)
                          + _U64.pack(self._end or 0) + _U32.pack(len(counts)) + counts))
        groups.append((OP_STATISTICS, start, bio.pos - start))
        offsets_start = bio.pos
        for op, start, length in groups:
            bio.write(_record(OP_SUMMARY_OFFSET, bytes([op]) + _U64.pack(start) + _U64.pack(length)))
        bio.write(_RECORD_HEAD.pack(OP_FOOTER, 20) + _U64.pack(summary_start) + _U64.pack(offsets_start))
        bio.write(_U32.pack(bio.crc))
        bio.write(MAGIC)
        bio.close()

    def abort(self) -> None:
        """Close the file as it is (no summary): what a killed writer leaves, recoverable."""
        self.bio.close()

    # -- chunking and flushing (used by EpisodeBagWriter) -------------------------------------------
    @property
    def pending_bytes(self) -> int:
        """Bytes in the open chunk (lost by a crash until :meth:`close_chunk`)."""
        return len(self._chunk)

    def close_chunk(self) -> None:
        """Write the open chunk (if it holds any record) and its message indexes."""
        raw = self._chunk
        if not raw:
            return
        start, end = (self._chunk_start, self._chunk_end) if self._index else (0, 0)  # spec: 0 when no message
        data = self._compress(bytes(raw)) if self._compress is not None else raw
        head = (_U64.pack(start) + _U64.pack(end) + _U64.pack(len(raw)) + _U32.pack(zlib.crc32(raw))
                + _string(self.compression) + _U64.pack(len(data)))
        bio = self.bio
        chunk_offset = bio.pos
        bio.write(_RECORD_HEAD.pack(OP_CHUNK, len(head) + len(data)) + head)
        bio.write(data)
        chunk_length = bio.pos - chunk_offset
        index_offsets = []
        for cid, entries in self._index.items():
            index_offsets.append(_U16.pack(cid) + _U64.pack(bio.pos))
            body = b"".join(_INDEX_ENTRY.pack(ts, off) for ts, off in entries)
            bio.write(_record(OP_MESSAGE_INDEX, _U16.pack(cid) + _U32.pack(len(body)) + body))
        offsets = b"".join(index_offsets)
        self._chunk_indexes.append(_record(
            OP_CHUNK_INDEX, _U64.pack(start) + _U64.pack(end) + _U64.pack(chunk_offset) + _U64.pack(chunk_length)
            + _U32.pack(len(offsets)) + offsets + _U64.pack(bio.pos - chunk_offset - chunk_length)
            + _string(self.compression) + _U64.pack(len(data)) + _U64.pack(len(raw))))
        if self._index:
            self._start = start if self._start is None else min(self._start, start)
            self._end = end if self._end is None else max(self._end, end)
        self._new_chunk()

    def flush(self) -> None:
        """Hand what was written to the OS (a SIGKILL keeps it from here on; fsync is the caller's)."""
        self.bio.flush()

    def fileno(self) -> int:
        return self.bio.fileno()

    def _new_chunk(self) -> None:
        self._chunk = bytearray()
        self._index: dict[int, list[tuple[int, int]]] = {}
        self._chunk_start: int | None = None
        self._chunk_end: int | None = None


def library_name() -> str:
    """The MCAP header's ``library``: the recorder that wrote the file, and the rosbag2 layer it uses."""
    from apo_recorder import __version__  # here: the package imports this module while it loads

    return f"apo_recorder {__version__}; rosbags {version('rosbags')}"


@lru_cache(maxsize=1)
def _writer_class():
    from rosbags.rosbag2 import StoragePlugin, Writer

    class CrcWriter(Writer):
        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: CrcMcapStorage}

        def close(self) -> None:
            """rosbags' close, then ``metadata.yaml`` again with what the storage put in the MCAP
            file (real ros_distro, rosbag2 layout): the two copies of the metadata agree."""
            storage = self.storage
            super().close()
            info = getattr(storage, "bag_info", None)
            if info is not None:
                tmp = self.metapath.with_suffix(".yaml.tmp")
                tmp.write_text(bag_metadata.metadata_yaml(info), encoding="utf-8")
                tmp.replace(self.metapath)

    return CrcWriter


def open_writer(path, version: int = 9):
    """A rosbags rosbag2 ``Writer`` (MCAP, not yet opened) whose ``.storage`` will be a CrcMcapStorage."""
    from rosbags.rosbag2 import StoragePlugin

    return _writer_class()(Path(path), version=version, storage_plugin=StoragePlugin.MCAP)
