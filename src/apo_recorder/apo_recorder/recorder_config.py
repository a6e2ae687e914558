"""Parameters of the recorder node as a strict config dataclass (ROS-free).

``recorder_node`` loads its ROS parameters into :class:`RecorderConfig` with
:func:`apo_ros.params.load_parameters`: an unknown parameter (a typo in a launch file or
``-p``), a wrong type or a value out of range stops the node at start with the parameter named,
instead of being ignored. It lives outside the node module so that the deploy graph loader and
tests can check parameter names without rclpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from apo_core.errors import ConfigError
from apo_recorder import contract

# Inclusive ranges of the numeric parameters (also in their help texts).
RANGES = {
    "grace_period_s": (0.0, 60.0),
    "preroll_s": (0.0, 10.0),
    "chunk_size_bytes": (4096, 64 * 1024 * 1024),
    "flush_period_s": (0.05, 10.0),
    "queue_max_messages": (10, 1_000_000),
    "queue_max_mb": (1, 65536),
    "image_queue_depth": (1, 1000),
    "reliable_queue_depth": (1, 10000),
    "diagnostics_period_s": (0.1, 60.0),
}


def _range(name: str) -> str:
    lo, hi = RANGES[name]
    return f"{lo}..{hi}"


@dataclass
class RecorderConfig:
    output_dir: str = field(default="~/.apo/bags", metadata={
        "help": "Directory that receives one rosbag2 directory per episode (<output_dir>/<episode_id>/)."})
    topics: list[str] = field(default_factory=lambda: list(contract.DEFAULT_TOPICS), metadata={
        "help": "Topics to record: names of the deploy graph, or 'topic:pkg/msg/Type' for others."})
    storage: str = field(default=contract.STORAGE_ID, metadata={"help": "Storage plugin; only 'mcap'."})
    grace_period_s: float = field(default=1.0, metadata={
        "help": "Seconds a bag stays open after the episode's end event, so the last steps land in it "
                f"({_range('grace_period_s')}; may be changed at run time)."})
    preroll_s: float = field(default=0.5, metadata={
        "help": f"Messages received this long before a START are put at the start of the episode's bag "
                f"({_range('preroll_s')} s)."})
    chunk_size_bytes: int = field(default=1024 * 1024, metadata={
        "help": f"Close an MCAP chunk (CRC-protected) once it holds this many bytes ({_range('chunk_size_bytes')})."})
    flush_period_s: float = field(default=0.5, metadata={
        "help": f"Close the open chunk, flush and fsync this often: a killed recorder loses about this much "
                f"({_range('flush_period_s')} s)."})
    fsync: bool = field(default=True, metadata={"help": "fsync the bag at every flush and at close."})
    queue_max_messages: int = field(default=2000, metadata={
        "help": f"Writer queue bound (messages, {_range('queue_max_messages')}); beyond it messages are "
                "dropped and counted."})
    queue_max_mb: int = field(default=256, metadata={
        "help": f"Writer queue bound (MiB, {_range('queue_max_mb')}); beyond it messages are dropped and counted."})
    image_queue_depth: int = field(default=10, metadata={
        "help": f"History depth of the best-effort image subscription ({_range('image_queue_depth')})."})
    reliable_queue_depth: int = field(default=50, metadata={
        "help": f"Minimum history depth of the reliable subscriptions ({_range('reliable_queue_depth')})."})
    record_between_episodes: bool = field(default=False, metadata={
        "help": "Also record messages outside episodes, into between_<time> bags."})
    diagnostics_period_s: float = field(default=1.0, metadata={
        "help": f"Period of the status published on /diagnostics ({_range('diagnostics_period_s')} s)."})

    def validate(self) -> None:
        if self.storage != contract.STORAGE_ID:
            raise ConfigError(f"storage: only {contract.STORAGE_ID!r} is supported, got {self.storage!r}")
        if not self.output_dir.strip():
            raise ConfigError("output_dir: must name a directory, got an empty string")
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ConfigError(f"{name}: {value!r} is outside {lo}..{hi}")
        parse_topics(self.topics)

    def topic_types(self) -> dict[str, str]:
        return parse_topics(self.topics)


def parse_topics(entries: list[str]) -> dict[str, str]:
    """``["/apo/step", "/extra:std_msgs/msg/String"]`` -> {topic: type}; known topics need no type."""
    out: dict[str, str] = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if ":" in entry:
            topic, msgtype = (s.strip() for s in entry.split(":", 1))
        elif entry in contract.DEFAULT_TOPICS:
            topic, msgtype = entry, contract.DEFAULT_TOPICS[entry]
        else:
            raise ConfigError(f"topics: no known type for {entry!r}; write it as 'topic:pkg/msg/Type'")
        if msgtype.count("/") == 1:
            pkg, name = msgtype.split("/")
            msgtype = f"{pkg}/msg/{name}"
        if not topic or msgtype.count("/") != 2 or not all(msgtype.split("/")):
            raise ConfigError(f"topics: {entry!r} is not 'topic' or 'topic:pkg/msg/Type'")
        out[topic] = msgtype
    if not out:
        raise ConfigError("topics: the list is empty, nothing to record")
    return out
