"""MCAP record layout and parsing shared by every bag reader and scanner (ROS-free).

Opcodes, the fixed structs of the records used here, chunk header parsing with consistency checks
(:func:`parse_chunk_header`), strings, record iteration over a buffer, chunk decompression
(zstd / lz4), and the footer check of a complete file.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

MCAP_MAGIC = b"\x89MCAP0\r\n"
ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
# MCAP opcodes used here.
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_METADATA, OP_METADATA_INDEX, OP_DATA_END = 0x0C, 0x0D, 0x0F
KNOWN_OPS = frozenset(range(0x01, 0x10))
OP_MESSAGE_INDEX, OP_CHUNK_INDEX = 0x07, 0x08
# Records that may stand at the top level of a data section, and those that follow a data-end record.
DATA_SECTION_OPS = frozenset({OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_MESSAGE_INDEX, 0x09, OP_METADATA})
SUMMARY_OPS = frozenset({OP_FOOTER, OP_SCHEMA, OP_CHANNEL, 0x08, 0x0A, 0x0B, OP_METADATA_INDEX, 0x0E})
RESYNC_MARKERS = re.compile(b"[\\x05\\x06]")
FOOTER_SIZE = 1 + 8 + 20  # opcode, length, (summary_start, summary_offset_start, summary_crc)
CHUNK_FIXED = 8 + 8 + 8 + 4 + 4  # start, end, uncompressed size, crc, compression string length
COMPRESSIONS = ("", "zstd", "lz4")
RESYNC_BLOCK = 1 << 20

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
CHUNK_HEAD = struct.Struct("<QQQII")
MSG_HEAD = struct.Struct("<HIQQ")
FOOTER_FIELDS = struct.Struct("<QQI")  # summary_start, summary_offset_start, summary_crc


def zstd_decompress(data: bytes, size: int | None = None) -> bytes:
    import zstandard

    obj = zstandard.ZstdDecompressor().decompressobj()
    out = obj.decompress(data)
    if size is not None and len(out) != size:
        raise ValueError(f"zstd data gave {len(out)} bytes, expected {size}")
    return out


def lz4_decompress(data: bytes) -> bytes:
    import lz4.frame

    return lz4.frame.LZ4FrameDecompressor().decompress(data)



class ChunkInfo(NamedTuple):
    start: int
    end: int
    usize: int
    crc: int
    compression: str
    data_offset: int
    csize: int
    record_end: int


CHUNK_PROBE = 9 + CHUNK_FIXED + 4 + 8


def parse_chunk_header(buf: bytes, i: int, file_pos: int) -> ChunkInfo | None:
    """Chunk header at ``buf[i:]`` (found at ``file_pos``) if every field is consistent, else None.

    The checks (known compression, start <= end, the record length equal to the header plus the
    compressed size, equal sizes when uncompressed) make a false match in random bytes unlikely.
    """
    if len(buf) - i < 9 + CHUNK_FIXED or buf[i] != OP_CHUNK:
        return None
    length = U64.unpack_from(buf, i + 1)[0]
    start, end_t, usize, crc, clen = CHUNK_HEAD.unpack_from(buf, i + 9)
    if clen > 4 or len(buf) - i < 9 + CHUNK_FIXED + clen + 8:
        return None
    try:
        comp = bytes(buf[i + 9 + CHUNK_FIXED:i + 9 + CHUNK_FIXED + clen]).decode()
    except UnicodeDecodeError:
        return None
    csize = U64.unpack_from(buf, i + 9 + CHUNK_FIXED + clen)[0]
    if comp not in COMPRESSIONS or start > end_t or length != CHUNK_FIXED + clen + 8 + csize:
        return None
    if (comp == "" and usize != csize) or usize > (1 << 34):
        return None
    data_offset = file_pos + 9 + CHUNK_FIXED + clen + 8
    return ChunkInfo(start, end_t, usize, crc, comp, data_offset, csize, file_pos + 9 + length)


def read_string(buf, pos: int) -> tuple[str, int]:
    n = U32.unpack_from(buf, pos)[0]
    pos += 4
    if pos + n > len(buf):
        raise ValueError("string runs past its record")
    return bytes(buf[pos:pos + n]).decode(), pos + n


def iter_records(buf) -> Iterator[tuple[int, memoryview]]:
    for op, body, _ in iter_records_pos(memoryview(buf)):
        yield op, body


def iter_records_pos(view: memoryview) -> Iterator[tuple[int, memoryview, int]]:
    """Records of a buffer whose lengths tile it; stops at the first record that does not fit.

    Yields (opcode, body, offset after the record); a caller compares the last offset with the
    buffer length to know how much was left unread.
    """
    p = 0
    n = len(view)
    while p + 9 <= n:
        op = view[p]
        length = U64.unpack_from(view, p + 1)[0]
        if op not in KNOWN_OPS or p + 9 + length > n:
            return
        body = view[p + 9:p + 9 + length]
        p += 9 + length
        yield op, body, p


def footer_problem(files: list[Path]) -> str | None:
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



# --------------------------------------------------------------------------------------------
# Record bodies (the bytes after opcode and length); struct.error / ValueError / UnicodeDecodeError
# on a damaged body.
# --------------------------------------------------------------------------------------------
def parse_schema(body) -> tuple[int, str, str, str]:
    """(schema id, name, encoding, data) of a schema record."""
    sid = U16.unpack_from(body, 0)[0]
    name, pos = read_string(body, 2)
    encoding, pos = read_string(body, pos)
    text, pos = read_string(body, pos)
    return sid, name, encoding, text


def parse_channel(body, *, full: bool = True) -> tuple[int, int, str, str, dict[str, str]]:
    """(channel id, schema id, topic, message encoding, metadata) of a channel record.

    ``full=False`` reads only ids and topic (encoding "" and no metadata): what the resync scanner
    needs, so damage after the topic does not cost it the channel.
    """
    cid, sid = struct.unpack_from("<HH", body, 0)
    topic, pos = read_string(body, 4)
    if not full:
        return cid, sid, topic, "", {}
    encoding, pos = read_string(body, pos)
    meta_len = U32.unpack_from(body, pos)[0]
    pos += 4
    meta: dict[str, str] = {}
    end = pos + meta_len
    while pos < end:
        key, pos = read_string(body, pos)
        value, pos = read_string(body, pos)
        meta[key] = value
    return cid, sid, topic, encoding, meta


def parse_message_head(body) -> tuple[int, int, int]:
    """(channel id, sequence, log time) of a message record (ValueError if it is too short)."""
    if len(body) < MSG_HEAD.size:
        raise ValueError(f"message record of {len(body)} bytes")
    cid, seq, log_time, _ = MSG_HEAD.unpack_from(body, 0)
    return cid, seq, log_time


def decompress_chunk(data: bytes, compression: str, size: int | None) -> bytes:
    """A chunk's records from its stored bytes (``size``: the uncompressed size, None if torn)."""
    if compression == "":
        return data
    if compression == "zstd":
        return zstd_decompress(data, size)
    if compression == "lz4":
        return lz4_decompress(data)
    raise ValueError(f"unsupported chunk compression {compression!r}")


def find_chunks(buf: bytes, start: int = 8) -> list[tuple[int, ChunkInfo]]:
    """(offset, header) of every consistent chunk record in the bytes of an MCAP file, in file order
    (offsets in ``buf``; a chunk's ``record_end`` is where the next record starts)."""
    out = []
    marker = bytes([OP_CHUNK])
    i = buf.find(marker, start)
    while i != -1:
        info = parse_chunk_header(buf, i, i)
        if info is not None:
            out.append((i, info))
            i = buf.find(marker, info.record_end)
        else:
            i = buf.find(marker, i + 1)
    return out
