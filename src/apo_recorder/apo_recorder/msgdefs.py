"""Full ROS 2 message definitions (``ros2msg`` text with dependencies) and their RIHS01 hashes.

A bag is only self-describing if every connection carries the definition of its type *and* of every
type that type uses, so that a reader without apo_interfaces installed (the trainer, Foxglove,
``ros2 bag``) can decode it. Definitions come from the installed ``share/<pkg>/msg/<Type>.msg``
files, found through the ament index (or ``AMENT_PREFIX_PATH`` / this interpreter's prefix when
``ament_index_python`` is missing); types not installed there fall back to the definitions that
ship with ``rosbags`` (ROS 2 Kilted). The text layout is the one rosbag2 and rosbags use:

    <main type text>
    ================================================================================
    MSG: pkg/Dep
    <dep text>
    ...

ROS-free: no rclpy import. Type stores come from :mod:`apo_core.bags.typestore`.
"""

from __future__ import annotations

import os
import sys
import threading
from functools import cache
from pathlib import Path

from apo_core.bags.typestore import typestore_from_definitions as _typestore_from_definitions

SEPARATOR = "=" * 80

_PRIMITIVES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
    "uint32", "int64", "uint64", "string", "wstring", "time", "duration",
}

_lock = threading.Lock()
_definitions: dict[str, tuple[str, str]] = {}  # pkg/msg/Type -> (full definition, RIHS01)


class MessageDefinitionError(LookupError):
    """A message type (or one of its dependencies) has no definition anywhere we can look."""


def _share_dirs(package: str) -> list[Path]:
    dirs: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            dirs.append(Path(get_package_share_directory(package)))
        except (PackageNotFoundError, KeyError, ValueError, OSError):
            pass  # OSError: AMENT_PREFIX_PATH unset or empty; the prefixes below are tried next
    except ImportError:
        pass
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    for prefix in prefixes:
        candidate = Path(prefix) / "share" / package
        if candidate not in dirs:
            dirs.append(candidate)
    return dirs


def _split(msgtype: str) -> tuple[str, str]:
    parts = msgtype.split("/")
    if len(parts) == 3 and parts[1] == "msg":
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise MessageDefinitionError(f"message type {msgtype!r} is not of the form pkg/msg/Type")


def normalize_msgtype(msgtype: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type``."""
    pkg, name = _split(msgtype)
    return f"{pkg}/msg/{name}"


@cache
def _rosbags_store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def own_definition(msgtype: str) -> tuple[str, str]:
    """(text of this type alone, where it came from) -- installed .msg file first, rosbags second."""
    pkg, name = _split(msgtype)
    for share in _share_dirs(pkg):
        path = share / "msg" / f"{name}.msg"
        if path.is_file():
            return path.read_text(encoding="utf-8"), str(path)
    store = _rosbags_store()
    full = normalize_msgtype(msgtype)
    if full in store.fielddefs:
        text, _ = store.gendefhash(full, {}, ros_version=2)
        return text, "rosbags:ros2_kilted"
    raise MessageDefinitionError(
        f"no definition of {full!r}: not in share/{pkg}/msg/{name}.msg under the ament index "
        f"(AMENT_PREFIX_PATH={os.environ.get('AMENT_PREFIX_PATH', '')!r}) nor in rosbags' ROS 2 types")


def _field_types(text: str, msgtype: str) -> list[str]:
    """Complex (non-primitive) field types referenced by one .msg text, as pkg/msg/Type.

    Constants always have primitive types, so looking at the first token of each line is enough.
    """
    pkg, _ = _split(msgtype)
    found: list[str] = []
    for raw in text.splitlines():
        tokens = raw.split("#", 1)[0].split()
        if len(tokens) < 2:
            continue
        base = tokens[0].split("[", 1)[0].split("<=", 1)[0]
        if base in _PRIMITIVES:
            continue
        if base == "Header":
            dep = "std_msgs/msg/Header"
        elif "/" in base:
            dep = normalize_msgtype(base)
        else:
            dep = f"{pkg}/msg/{base}"
        if dep not in found:
            found.append(dep)
    return found


@cache
def _full_definition(msgtype: str) -> str:
    msgtype = normalize_msgtype(msgtype)
    order: list[str] = []
    texts: dict[str, str] = {}

    def visit(typ: str) -> None:
        if typ in texts:
            return
        texts[typ] = own_definition(typ)[0]
        order.append(typ)
        for dep in _field_types(texts[typ], typ):
            visit(dep)

    visit(msgtype)
    parts = [texts[msgtype].rstrip("\n") + "\n"]
    for dep in order[1:]:
        pkg, name = _split(dep)
        parts.append(f"{SEPARATOR}\nMSG: {pkg}/{name}\n{texts[dep].rstrip(chr(10))}\n")
    return "".join(parts)


def message_definition(msgtype: str) -> tuple[str, str]:
    """(full ros2msg definition with dependencies, RIHS01 type hash) of ``msgtype``.

    The hash is computed by rosbags from the same text a reader will parse, and matches the hash
    rosidl generates (checked in the tests against share/<pkg>/msg/<Type>.json).
    """
    full = normalize_msgtype(msgtype)
    with _lock:
        if full not in _definitions:
            text = _full_definition(full)
            _definitions[full] = (text, typestore_from_definitions({full: text}).hash_rihs01(full))
        return _definitions[full]


def typestore_from_definitions(definitions: dict[str, str]):
    """A rosbags Typestore holding the given full ros2msg definitions (and their dependencies).

    Built by the bag library's one type store builder (:mod:`apo_core.bags.typestore`), the same
    parse the readers use.
    """
    return _typestore_from_definitions({normalize_msgtype(t): text for t, text in definitions.items()})


def build_typestore(msgtypes):
    """A rosbags Typestore with ``msgtypes`` and their dependencies, from the installed definitions."""
    return typestore_from_definitions({t: message_definition(t)[0] for t in msgtypes})
