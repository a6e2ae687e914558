"""rclpy QoS profiles for the graph's topics, as apo_core.topics.QOS gives them (docs/ARCHITECTURE.md, "Topic graph")."""

from __future__ import annotations

from apo_core.topics import QOS


def qos_profile(kind: str, depth: int = 10):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if kind == "sensor":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
    if kind == "reliable":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    if kind == "latched":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    raise ValueError(f"unknown QoS kind {kind!r}")


def topic_qos(topic: str, depth: int | None = None):
    """The profile of ``topic`` (docs/ARCHITECTURE.md, "Topic graph"); ``depth`` overrides the history depth
    (e.g. a recorder)."""
    if topic not in QOS:
        raise KeyError(f"no QoS defined for topic {topic!r}")
    kind, default_depth = QOS[topic]
    return qos_profile(kind, default_depth if depth is None else depth)


def qos_for(topic: str):
    """:func:`topic_qos` of ``topic``; reliable depth 10 for a topic without an entry."""
    try:
        return topic_qos(topic)
    except KeyError:
        return qos_profile("reliable", 10)
