"""Strict config loading: YAML/dicts -> typed dataclasses, failing on any unknown or mistyped key.

Every config section of APO-ROS is a dataclass whose field defaults are the documented defaults.
``load_config(Cls, data)`` walks nested dataclasses and reports errors with the full dotted key path
and, for a mistyped key, the closest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from apo_core.errors import ConfigError, MissingPathError

T = TypeVar("T")


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def read_json_object(path) -> dict:
    """A JSON file holding an object (a checkpoint's config.json, apo_policy.json); ConfigError otherwise."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_config(cls: type[T], data: dict | None = None, *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(key, list(fields), where, cls.__name__))
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], _join(where, name))
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def merge_overrides(base: dict, overrides: dict) -> dict:
    """Deep-merge ``overrides`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out


def nest_dotted(flat: dict) -> dict:
    """``{"teleop.timeout": 0.3}`` -> ``{"teleop": {"timeout": 0.3}}``."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{key}: {part!r} is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def flatten_dotted(mapping: dict, keep_whole=frozenset(), prefix: str = "") -> dict:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}`` (the inverse of :func:`nest_dotted`); a mapping
    under a key named in ``keep_whole`` stays one value."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in keep_whole:
            out.update(flatten_dotted(value, keep_whole, name + "."))
        else:
            out[name] = value
    return out


def parse_dotted_overrides(items: list[str]) -> dict:
    """``["train.lr=1e-4", "loss=apo"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def _unknown_key_message(key, valid: list[str], where: str, section: str) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"unknown config key {_join(where, str(key))!r} in {section}{hint} "
            f"(valid keys: {', '.join(sorted(valid))})")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(value: Any, hint, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(hint):
        return load_config(hint, value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            value = _float_text(value, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{where}: NaN/inf is not allowed")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _float_text(text: str, where: str) -> float:
    """A number written as text: YAML 1.1 (PyYAML) reads ``3e-4`` (no dot) as a string, not a float."""
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {text!r}") from None


def find_shared_config(name: str) -> Path:
    """A file of the workspace's top-level ``config/``: from $APO_CONFIG_DIR, the source tree, or the
    share directory apo_bringup installs it into (colcon)."""
    import os

    candidates = []
    if os.environ.get("APO_CONFIG_DIR"):
        candidates.append(Path(os.environ["APO_CONFIG_DIR"]) / name)
    candidates.append(Path(__file__).resolve().parents[3] / "config" / name)
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("apo_bringup")) / "config" / name)
    except Exception:  # ament index absent or apo_bringup not installed through colcon
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise MissingPathError(f"config file {name} not found; looked in: {', '.join(str(c) for c in candidates)}")
