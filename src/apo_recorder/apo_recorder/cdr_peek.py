"""Read one string field out of raw CDR bytes without deserialising the message.

The recorder writes messages as the CDR bytes it received, but it must know which episode a
``LabelledStep`` belongs to (messages on different topics can arrive in any order, so a step of the
next episode can arrive before that episode's START event). ``episode_id`` is the first field after
the ``std_msgs/Header`` in ``LabelledStep`` (and ``EpisodeEvent``), so it sits at a computable
offset: stamp (int32 + uint32), frame_id (uint32 length + bytes incl. NUL), 4-byte alignment,
episode_id (uint32 length + bytes incl. NUL). Offsets are relative to the byte after the 4-byte
encapsulation header, as CDR alignment requires. Plain CDR (XCDR1) little/big endian only; anything
else returns None and the caller falls back to "belongs to the current episode".
"""

from __future__ import annotations

import struct


def _string_at(data: bytes | memoryview, pos: int, fmt: str) -> tuple[str, int] | None:
    pos = (pos + 3) & ~3
    if pos + 4 > len(data) - 4:
        return None
    (n,) = struct.unpack_from(fmt, data, 4 + pos)
    start = 4 + pos + 4
    if n == 0 or start + n > len(data):
        return None
    raw = bytes(data[start:start + n])
    return raw.rstrip(b"\x00").decode("utf-8", errors="replace"), pos + 4 + n


def peek_header_then_string(data: bytes | memoryview) -> str | None:
    """The first string field after a leading ``std_msgs/Header`` (e.g. ``episode_id``), or None."""
    if len(data) < 4 + 8 + 4 or data[0] != 0:
        return None
    kind = data[1]
    if kind == 1:
        fmt = "<I"
    elif kind == 0:
        fmt = ">I"
    else:
        return None
    frame = _string_at(data, 8, fmt)
    if frame is None:
        return None
    value = _string_at(data, frame[1], fmt)
    return None if value is None else value[0]
