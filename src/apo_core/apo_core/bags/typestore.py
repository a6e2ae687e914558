"""Type stores built from message definitions (the bag's own schema records, or installed ones).

One parse path (:func:`parse_definition`) for every builder: :class:`TypeRegistry` (the readers'
store, filled as definitions are found, shared between bags with :func:`registry_for`) and
:func:`typestore_from_definitions` (a store from full ros2msg definitions: the recorder's hashes
and recovery). ROS-free: needs only ``rosbags``.
"""

from __future__ import annotations

from collections.abc import Iterable

from apo_core.bags.mcap_records import ZSTD_FRAME_MAGIC, zstd_decompress
from apo_core.bags.report import BagReadError


class TypeRegistry:
    """A rosbags type store filled from message definitions found in the bag.

    Registering a definition generates and executes Python code, and the first decode of a type
    compiles its deserialiser: about 0.1 s per bag. Bags with the same set of definitions (every
    bag of one recorder version) therefore share one registry, see :func:`registry_for`.
    """

    def __init__(self):
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.EMPTY)
        self._seen: set[tuple[str, str]] = set()
        self._failed: dict[str, str] = {}

    def add(self, msgtype: str, encoding: str, text: str) -> None:
        """Register ``msgtype`` (and the dependencies its definition embeds)."""
        key = (msgtype, text)
        if key in self._seen:
            return
        self._seen.add(key)
        try:
            if text.strip():
                self.store.register(parse_definition(msgtype, encoding, text))
            elif msgtype not in self.store.fielddefs:
                self._register_builtin(msgtype)
            self._failed.pop(msgtype, None)
        except Exception as exc:  # any parser/typesys failure makes the type unusable
            self._failed[msgtype] = f"{type(exc).__name__}: {exc}"

    def _register_builtin(self, msgtype: str) -> None:
        from rosbags.typesys import Stores, get_typestore

        builtin = get_typestore(Stores.LATEST)
        if msgtype not in builtin.fielddefs:
            raise BagReadError(f"type {msgtype!r} has no definition in the bag and is not a standard ROS 2 type")
        self.store.register({k: v for k, v in builtin.fielddefs.items() if k not in self.store.fielddefs})

    def decode(self, data, msgtype: str):
        if msgtype in self._failed:
            raise BagReadError(f"cannot decode {msgtype}: its definition failed to load ({self._failed[msgtype]})")
        if msgtype not in self.store.fielddefs:
            self._register_builtin(msgtype)
        if bytes(data[:4]) == ZSTD_FRAME_MAGIC:  # rosbag2 per-message compression
            data = zstd_decompress(bytes(data))
        return self.store.deserialize_cdr(data, msgtype)


_REGISTRIES: dict[frozenset, TypeRegistry] = {}
_MAX_REGISTRIES = 8


def registry_for(definitions: Iterable[tuple[str, str, str]]) -> TypeRegistry:
    """A registry holding exactly these (msgtype, encoding, text) definitions, shared between bags."""
    key = frozenset(definitions)
    registry = _REGISTRIES.get(key)
    if registry is None:
        registry = TypeRegistry()
        for msgtype, encoding, text in sorted(key):
            registry.add(msgtype, encoding, text)
        if len(_REGISTRIES) >= _MAX_REGISTRIES:
            _REGISTRIES.pop(next(iter(_REGISTRIES)))
        _REGISTRIES[key] = registry
    return registry


def parse_definition(msgtype: str, encoding: str, text: str) -> dict:
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    if encoding in ("ros2idl", "omgidl", "idl"):
        sep = "=" * 80 + "\n"
        typs: dict = {}
        if text.startswith(f"{sep}IDL: "):
            for part in text.split(sep)[1:]:
                _, idl = part.split("\n", 1)
                typs.update(get_types_from_idl(idl))
        else:
            typs.update(get_types_from_idl(text))
        return typs
    return get_types_from_msg(text, msgtype)


def normalize_msgtype(msgtype: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type`` (ValueError for anything else)."""
    parts = msgtype.split("/")
    if len(parts) == 3 and parts[1] == "msg":
        return msgtype
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    raise ValueError(f"message type {msgtype!r} is not of the form pkg/msg/Type")


def typestore_from_definitions(definitions: dict[str, str], encoding: str = "ros2msg"):
    """A rosbags Typestore holding the given full definitions (and the dependencies they embed)."""
    from rosbags.typesys import Stores, get_typestore

    typs: dict = {}
    for msgtype, text in definitions.items():
        typs.update(parse_definition(normalize_msgtype(msgtype), encoding, text))
    store = get_typestore(Stores.EMPTY)
    store.register(typs)
    return store
