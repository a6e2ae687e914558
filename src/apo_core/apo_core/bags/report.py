"""What reading a bag found (:class:`ReadReport`), its errors and the phrases reports use (ROS-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from apo_core.errors import ApoError

_FOREVER = 2**63 - 1
MAX_PROBLEMS = 50  # detailed problem lines kept per bag; the counters stay exact


class BagReadError(ApoError, OSError):
    """A bag cannot be read (or, in strict mode, not read completely); the message names the path."""


class BagMessage(NamedTuple):
    topic: str
    msgtype: str
    log_time: int  # ns, recorder receive time
    msg: object  # decoded message (rosbags dataclass)
    size: int  # serialised bytes


# The summary's phrase for each nonzero counter, in the order it lists them.
_COUNTER_PHRASES = (
    ("bytes_missing", "bytes cut off"),
    ("chunks_torn", "torn chunk(s) salvaged"),
    ("chunks_dropped", "chunk(s) dropped"),
    ("messages_undecodable", "undecodable message(s)"),
    ("messages_unknown_channel", "message(s) on unknown channels"),
    ("messages_missing", "message(s) listed in metadata.yaml not read"),
)


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
        parts.extend(f"{getattr(self, name)} {text}" for name, text in _COUNTER_PHRASES if getattr(self, name))
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
