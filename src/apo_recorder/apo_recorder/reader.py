"""Read episode bags back (tests, conversion, analysis) with rosbags only: no ROS, no apo_interfaces.

Messages are decoded with a typestore built from the message definitions stored in the bag
itself (rosbags ``AnyReader``), which is exactly what a trainer without ROS does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from apo_recorder import contract


@dataclass
class TopicInfo:
    msgtype: str
    message_count: int
    type_description_hash: str = ""
    offered_qos_profiles: list[dict] = field(default_factory=list)
    message_definition: str = ""


@dataclass
class BagInfo:
    """Summary of one episode bag, from metadata.yaml and the MCAP summary (both must be readable)."""

    path: Path
    version: int
    storage_identifier: str
    message_count: int
    start_ns: int | None  # log time of the first message (None when empty)
    end_ns: int | None  # log time of the last message
    topics: dict[str, TopicInfo]
    custom_data: dict[str, str]
    ros_distro: str = ""

    @property
    def episode_id(self) -> str:
        return self.custom_data.get(contract.KEY_EPISODE_ID, "")

    @property
    def outcome(self) -> str:
        return self.custom_data.get(contract.KEY_OUTCOME, contract.OUTCOME_UNKNOWN)

    @property
    def instruction(self) -> str:
        return self.custom_data.get(contract.KEY_INSTRUCTION, "")

    @property
    def task(self) -> str:
        return self.custom_data.get(contract.KEY_TASK, "")

    @property
    def policy_version(self) -> str:
        return self.custom_data.get(contract.KEY_POLICY_VERSION, "")

    @property
    def duration_ns(self) -> int:
        return 0 if self.start_ns is None or self.end_ns is None else self.end_ns - self.start_ns


@dataclass
class RecordedMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes  # the CDR bytes as recorded
    msg: object | None = None  # decoded message (rosbags dataclass) when decode=True


def read_bag_info(path: str | os.PathLike) -> BagInfo:
    """Open the bag directory at ``path`` (raises if it is not a complete, readable bag)."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    meta = yaml.safe_load((path / "metadata.yaml").read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
    with Reader(path) as reader:
        conns = {c.topic: c for c in reader.connections}
        start = reader.start_time if reader.message_count else None
        end = reader.end_time - 1 if reader.message_count else None
        count = reader.message_count
    topics: dict[str, TopicInfo] = {}
    for entry in meta.get("topics_with_message_count", []):
        tm = entry["topic_metadata"]
        conn = conns.get(tm["name"])
        topics[tm["name"]] = TopicInfo(
            msgtype=tm["type"], message_count=int(entry["message_count"]),
            type_description_hash=tm.get("type_description_hash", ""),
            offered_qos_profiles=list(tm.get("offered_qos_profiles") or []),
            message_definition=conn.msgdef.data if conn is not None else "")
    return BagInfo(path=path, version=int(meta["version"]), storage_identifier=meta["storage_identifier"],
                   message_count=count, start_ns=start, end_ns=end, topics=topics,
                   custom_data={str(k): str(v) for k, v in (meta.get("custom_data") or {}).items()},
                   ros_distro=str(meta.get("ros_distro", "")))


def iter_messages(path: str | os.PathLike, topics: Iterable[str] | None = None, *,
                  decode: bool = True) -> Iterator[RecordedMessage]:
    """Messages of the bag in log-time order, optionally only ``topics``, decoded from the bag's own
    message definitions when ``decode`` (``msg`` is then a rosbags message dataclass)."""
    from rosbags.highlevel import AnyReader

    wanted = set(topics) if topics is not None else None
    with AnyReader([Path(path)]) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        for conn, ts, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype) if decode else None
            yield RecordedMessage(conn.topic, conn.msgtype, ts, bytes(raw), msg)


def list_episode_bags(output_dir: str | os.PathLike) -> list[Path]:
    """Complete episode bags under ``output_dir`` (directories with metadata.yaml), sorted by name."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "metadata.yaml").is_file())


def list_unfinished_bags(output_dir: str | os.PathLike) -> list[Path]:
    """Directories under ``output_dir`` with an MCAP file but no metadata.yaml: being written right now,
    or left by a killed recorder (``recover_bag`` tells which and repairs the latter)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and not (p / "metadata.yaml").is_file()
                  and any(p.glob("*.mcap")))
