"""Node parameters -> a strict config dataclass, and guards that keep a node serving after a bad request.

rclpy is imported lazily; the functions take a node and use only its public API.

Strict parameters: a node is created with ``automatically_declare_parameters_from_overrides=True``
so that every parameter given at start (``-p``, ``--params-file``, launch) is visible, including a
misspelt one that a plain ``declare_parameter`` would silently ignore. :func:`load_parameters` then
checks every given name against the dataclass (dotted names address nested sections), builds the
config with :func:`apo_core.config.load_config` (types, ranges, ``validate()``), and declares the
effective values read-only with the fields' help texts so ``ros2 param get/describe`` shows what runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing

from apo_core.config import load_config, merge_overrides, nest_dotted
from apo_core.errors import ConfigError

# Parameters rclpy declares itself; never config keys.
ROS_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})


def parameter_names(cls, prefix: str = "") -> list[str]:
    """Dotted parameter names of a config dataclass (nested dataclasses flattened)."""
    names = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints.get(f.name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            names += parameter_names(hint, prefix + f.name + ".")
        else:
            names.append(prefix + f.name)
    return names


def check_parameter_names(cls, names, where: str) -> None:
    """Raise ConfigError naming the first of ``names`` that is not a parameter of ``cls``."""
    known = parameter_names(cls)
    for name in names:
        if name in ROS_PARAMETERS or name.startswith("qos_overrides."):
            continue
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown parameter {name!r}{hint} (known: {', '.join(known)})")


def load_parameters(node, cls, base: dict | None = None, *, ignore=(), source: str | None = None):
    """The node's parameters as a validated ``cls``; an unknown or mistyped parameter raises ConfigError.

    The one parameter loader of every node. ``base`` (e.g. read from a config file, named by ``source``
    in error messages) is applied first, parameters on top; names in ``ignore`` (e.g. ``config_file``)
    are node parameters that are not config keys. The effective values are declared read-only.
    """
    skip = set(ignore)
    given = {name: p.value for name, p in node.get_parameters_by_prefix("").items()
             if name not in ROS_PARAMETERS and name not in skip and not name.startswith("qos_overrides.")}
    check_parameter_names(cls, given, f"node {node.get_name()}")
    data = merge_overrides(base or {}, nest_dotted(given))
    try:
        cfg = load_config(cls, data)
    except ConfigError as exc:
        if source is None:
            raise ConfigError(f"node {node.get_name()}: parameter {exc}") from exc
        with_params = f" with parameter overrides {sorted(given)}" if given else ""
        raise ConfigError(f"node {node.get_name()}: {source}{with_params}: {exc}") from exc
    declare_effective(node, cfg)
    return cfg


def declare_effective(node, cfg, prefix: str = "") -> None:
    """Declare every scalar/list value of ``cfg`` read-only (values given at start are already declared)."""
    from rcl_interfaces.msg import ParameterDescriptor

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            declare_effective(node, value, name + ".")
            continue
        if node.has_parameter(name) or value is None or isinstance(value, dict) or (
                isinstance(value, list) and not value):
            continue
        try:
            node.declare_parameter(name, value, ParameterDescriptor(
                description=f.metadata.get("help", ""), read_only=True))
        except Exception:  # a value rclpy cannot type (a mixed list): it stays visible in the config only
            pass


class CallbackGuard:
    """Wraps a node's service and subscription callbacks so that no request or message can kill it.

    A service callback that raises answers with ``success``/``accepted`` false and the error in
    ``message``/``reason`` (or ``status.message``), and logs one line; a subscription callback that
    raises drops that message and logs (throttled). ``errors`` counts both, for diagnostics.
    """

    def __init__(self, node):
        self._node = node
        self.errors = 0

    def service(self, name: str, callback):
        def guarded(request, response):
            try:
                return callback(request, response)
            except Exception as exc:  # any failure: answer the caller, keep serving
                self.errors += 1
                message = _short(f"{name}: request refused: {type(exc).__name__}: {exc}")
                self._node.get_logger().error(message)
                fill_failure(response, message)
                return response

        return guarded

    def subscription(self, name: str, callback):
        def guarded(msg):
            try:
                callback(msg)
            except Exception as exc:  # drop this message, keep the subscription alive
                self.errors += 1
                self._node.get_logger().error(_short(f"{name}: message dropped: {type(exc).__name__}: {exc}"),
                                              throttle_duration_sec=1.0)

        return guarded


def fill_failure(response, message: str) -> None:
    """Mark a service response as failed with ``message`` in whichever fields its type has."""
    for flag in ("success", "accepted"):
        if hasattr(response, flag):
            setattr(response, flag, False)
    for text in ("message", "reason"):
        if hasattr(response, text):
            setattr(response, text, message)
    status = getattr(response, "status", None)
    if status is not None and hasattr(status, "message"):
        status.message = message


def _short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
