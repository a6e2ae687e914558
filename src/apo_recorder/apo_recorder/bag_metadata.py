"""rosbag2 metadata the way rosbag2 (Jazzy/Kilted) writes it: distro, offered QoS profiles, key order.

rosbags writes a valid version 9 ``metadata.yaml`` but states ``ros_distro: rosbags``, sorts every
mapping's keys and wraps long values. rosbag2 itself (``rosbag2_storage``'s YAML encoders):

- ``ros_distro`` is the ``ROS_DISTRO`` environment variable of the recording process;
- each topic's ``offered_qos_profiles`` is a YAML sequence (version 9: policies as lower-case rmw
  names, ``unknown`` for an unknown policy; durations as ``{sec, nsec}``), keys in the order of
  ``rmw_qos_profile_t``: history, depth, reliability, durability, deadline, lifespan, liveliness,
  liveliness_lease_duration, avoid_ros_namespace_conventions;
- the MCAP storage repeats the same sequence as text in each channel's metadata
  (``offered_qos_profiles``), next to ``topic_type_hash`` (the RIHS01 hash).

What DDS discovery reports of a remote publisher has history ``unknown`` and depth 0 (the history
is local to the publisher); :func:`complete_offered_qos` fills those in from the profile our graph's
publishers are built with (``apo_core.topics.QOS``, the table ``apo_ros.qos`` builds them from).

ROS-free: no rclpy import.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import metadata as _dist

import yaml

from apo_core.topics import QOS as _GRAPH_QOS

QOS_KEYS = ("history", "depth", "reliability", "durability", "deadline", "lifespan", "liveliness",
            "liveliness_lease_duration", "avoid_ros_namespace_conventions")
_DURATION_KEYS = ("deadline", "lifespan", "liveliness_lease_duration")
# The values rmw's *_policy_to_str / rosbag2 write (plus "unknown"), per policy.
POLICY_VALUES = {
    "history": ("system_default", "keep_last", "keep_all", "unknown"),
    "reliability": ("system_default", "reliable", "best_effort", "unknown", "best_available"),
    "durability": ("system_default", "transient_local", "volatile", "unknown", "best_available"),
    "liveliness": ("system_default", "automatic", "manual_by_node", "manual_by_topic", "unknown",
                   "best_available"),
}
_DURATION_MAX_SEC = 9_223_372_036  # RMW_DURATION_INFINITE is {9223372036, 854775807}

# rclpy's major version -> the ROS 2 distribution it was released for (each distro branches rclpy
# with its own major: humble 3.3.x, iron 4.1.x, jazzy 7.1.x, kilted 9.1.x; the majors between are
# rolling snapshots, which name no distro). The PyPI wheels (``ros-rclpy``) keep the upstream version.
RCLPY_MAJOR_TO_DISTRO = {3: "humble", 4: "iron", 7: "jazzy", 9: "kilted"}

_TOP_KEYS = ("version", "storage_identifier", "duration", "starting_time", "message_count",
             "topics_with_message_count", "compression_format", "compression_mode", "relative_file_paths",
             "files", "custom_data", "ros_distro")
_TOPIC_KEYS = ("name", "type", "serialization_format", "offered_qos_profiles", "type_description_hash")
_FILE_KEYS = ("path", "starting_time", "duration", "message_count")


class QosProfileError(ValueError):
    """An offered QoS profile that rosbag2 could not read back (names the key and the value)."""


# ------------------------------------------------------------------------------------------ distro
def distro_for_rclpy_version(rclpy_version: str) -> str:
    """The ROS 2 distribution of an rclpy version (``"9.1.2"`` -> ``"kilted"``); ``""`` if it names none."""
    head = str(rclpy_version).strip().split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"not an rclpy version: {rclpy_version!r} (expected e.g. '9.1.2')")
    return RCLPY_MAJOR_TO_DISTRO.get(int(head), "")


@cache
def _installed_distro() -> str:
    # The PyPI wheels install no ros_environment (which sets ROS_DISTRO in a sourced install), so
    # the distro is read from the rclpy they provide: dist "ros-rclpy" for the wheels, "rclpy" for a
    # colcon/apt install (its egg-info carries the same upstream version).
    for dist in ("ros-rclpy", "rclpy"):
        try:
            return distro_for_rclpy_version(_dist.version(dist))
        except (_dist.PackageNotFoundError, ValueError):
            continue
    return ""


def ros_distro(environ: Mapping[str, str] | None = None) -> str:
    """The distro to write as ``ros_distro``: ``ROS_DISTRO`` when set (what rosbag2 writes), else the
    distro of the installed rclpy, else ``""`` (rosbag2's value when ``ROS_DISTRO`` is unset)."""
    env = os.environ if environ is None else environ
    return env.get("ROS_DISTRO", "").strip() or _installed_distro()


# ------------------------------------------------------------------------------------------- QoS
def rosbag2_qos_profile(profile: Mapping) -> dict:
    """``profile`` checked and in rosbag2's version 9 form and key order (a new dict)."""
    if not isinstance(profile, Mapping):
        raise QosProfileError(f"a QoS profile must be a mapping, got {type(profile).__name__}")
    missing = [k for k in QOS_KEYS if k not in profile]
    if missing:
        raise QosProfileError(f"QoS profile lacks {', '.join(missing)}: {dict(profile)!r}")
    out: dict = {}
    for key in QOS_KEYS:
        value = profile[key]
        if key in POLICY_VALUES:
            name = value.lower() if isinstance(value, str) else value
            if name not in POLICY_VALUES[key]:
                raise QosProfileError(f"QoS {key} {value!r} is not one of {', '.join(POLICY_VALUES[key])}")
            out[key] = name
        elif key == "depth":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise QosProfileError(f"QoS depth must be an integer >= 0, got {value!r}")
            out[key] = value
        elif key in _DURATION_KEYS:
            out[key] = _duration(key, value)
        else:
            if not isinstance(value, bool):
                raise QosProfileError(f"QoS avoid_ros_namespace_conventions must be true/false, got {value!r}")
            out[key] = value
    return out


def _duration(key: str, value) -> dict:
    if not isinstance(value, Mapping) or set(value) != {"sec", "nsec"}:
        raise QosProfileError(f"QoS {key} must be {{sec, nsec}}, got {value!r}")
    sec, nsec = value["sec"], value["nsec"]
    for part in (sec, nsec):
        if isinstance(part, bool) or not isinstance(part, int) or part < 0:
            raise QosProfileError(f"QoS {key} must hold integers >= 0, got {dict(value)!r}")
    if nsec >= 1_000_000_000 or sec > _DURATION_MAX_SEC:
        raise QosProfileError(f"QoS {key} is out of range: {dict(value)!r}")
    return {"sec": sec, "nsec": nsec}


def designed_history(topic: str) -> tuple[str, int] | None:
    """(history, depth) our publishers of ``topic`` are built with, None for a topic not in the table."""
    if topic not in _GRAPH_QOS:
        return None
    _kind, depth = _GRAPH_QOS[topic]
    return "keep_last", int(depth)  # apo_ros.qos builds every kind as keep_last


def complete_offered_qos(topic: str, profiles: Iterable[Mapping]) -> tuple[dict, ...]:
    """The offered profiles in rosbag2 form, with the history/depth discovery cannot see filled in.

    A profile with history ``unknown`` (or ``keep_last`` with depth 0) gets the history and depth
    of our graph's publishers of ``topic``; for a topic outside the table it stays as discovered
    (``ros2 bag play`` then uses its default history, keep_last 10, as it does for every topic).
    Reliability, durability, deadline, lifespan and liveliness are kept as offered.
    """
    designed = designed_history(topic)
    out = []
    for profile in profiles:
        qos = rosbag2_qos_profile(profile)
        unknown = qos["history"] == "unknown" or (qos["history"] == "keep_last" and qos["depth"] == 0)
        if unknown and designed is not None:
            qos["history"], qos["depth"] = designed
        out.append(qos)
    return tuple(out)


def qos_profiles_yaml(profiles: Iterable[Mapping]) -> str:
    """The text rosbag2's MCAP storage puts in a channel's ``offered_qos_profiles`` metadata."""
    items = [rosbag2_qos_profile(p) for p in profiles]
    if not items:
        return "[]"
    return yaml.safe_dump(items, sort_keys=False, default_flow_style=False).rstrip("\n")


# ------------------------------------------------------------------------------------ metadata.yaml
def _ordered(mapping: Mapping, keys: Iterable[str]) -> dict:
    """``mapping`` with ``keys`` first, in that order; any other key after them, unchanged."""
    keys = list(keys)
    out = {k: mapping[k] for k in keys if k in mapping}
    out.update({k: v for k, v in mapping.items() if k not in out})
    return out


def rosbag2_bag_info(info: Mapping, distro: str) -> dict:
    """A ``rosbag2_bagfile_information`` mapping in rosbag2's key order, with ``ros_distro`` = ``distro``."""
    if not isinstance(info, Mapping) or "topics_with_message_count" not in info:
        raise ValueError("not rosbag2 bag information: no topics_with_message_count")
    topics = []
    for entry in info["topics_with_message_count"] or []:
        tm = dict(entry["topic_metadata"])
        qos = tm.get("offered_qos_profiles") or []
        if isinstance(qos, str):  # version <= 8 stored it as a YAML string
            qos = yaml.safe_load(qos) or []
        tm["offered_qos_profiles"] = [rosbag2_qos_profile(q) for q in qos]
        topics.append(_ordered({"topic_metadata": _ordered(tm, _TOPIC_KEYS), "message_count": entry["message_count"]},
                               ("topic_metadata", "message_count")))
    out = dict(info)
    out["topics_with_message_count"] = topics
    out["files"] = [_ordered(f, _FILE_KEYS) for f in info.get("files") or []]
    out["ros_distro"] = distro
    return _ordered(out, _TOP_KEYS)


def dump_yaml(data) -> str:
    """YAML as rosbag2 lays it out: keys in the given order, block style, no line wrapping."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 30)


def metadata_yaml(info: Mapping) -> str:
    """The text of ``metadata.yaml`` for the bag information ``info`` (as :func:`rosbag2_bag_info` gives)."""
    return dump_yaml({"rosbag2_bagfile_information": dict(info)})
