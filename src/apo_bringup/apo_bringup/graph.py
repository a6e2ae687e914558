"""The deploy graph file (config/deploy.yaml): arguments, nodes and their parameters, declared once.

Both ``launch/deploy.launch.py`` (ros2 launch) and the ``apo`` command (no ROS 2 CLI needed) build
the graph from this file through :func:`resolve_graph`, so the two cannot drift apart.

File format::

    arguments:
      task: {default: Lift, choices: [Lift, Stack], description: "..."}
    nodes:
      - name: sim                       # ROS node name
        package: apo_sim                # ROS package (ros2 launch)
        executable: apo_sim_node        # console script (ros2 launch / colcon)
        module: apo_sim.sim_node        # python -m entry point (apo command)
        when: {robot: sim}              # every listed argument must have this value (or one of a list's)
        required: true                  # if it exits, the whole graph shuts down
        parameters: {task: "${task}"}   # "${arg}" is replaced by the argument's value
        remappings: {/from: /to}
        config: apo_sim.node_config:SimNodeConfig   # the node's parameter schema (optional)
        extra_parameters: [config_file]  # parameters it takes besides the schema's fields (optional)

``${config_dir}`` is always defined: the directory of the graph file (for sibling config files).
A value that is exactly ``"${arg}"`` takes the argument's YAML type (``"true"`` -> bool, ``"10"`` ->
int); inside a longer string it is substituted as text.

``config`` names the ROS-free dataclass (``module:Class``) the node loads its parameters into. When
it is given, every parameter name of the node (nested mappings as dotted names) must be a field of
that class or listed in ``extra_parameters``, checked when the file is loaded: a misspelt parameter
fails ``apo graph``/``apo deploy``/``ros2 launch`` at once, naming the node, the parameter, a close
match and the known ones, instead of failing one node at start (or, for a node that is not strict,
being ignored). A node without ``config`` (a third-party driver) is not checked.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from apo_core.config import find_shared_config, read_yaml
from apo_core.errors import ConfigError
from apo_ros.params import check_parameter_names, parameter_names

_SUB = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ARGUMENT_KEYS = {"default", "choices", "description"}
BUILTIN_ARGUMENTS = ("config_dir",)
NODE_KEYS = {"name", "package", "executable", "module", "when", "unless", "required", "parameters",
             "remappings", "description", "config", "extra_parameters"}
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Argument:
    name: str
    default: Any
    choices: list | None = None
    description: str = ""


@dataclass
class NodeSpec:
    name: str
    package: str
    executable: str
    module: str
    parameters: dict = field(default_factory=dict)
    remappings: dict = field(default_factory=dict)
    required: bool = False
    when: dict = field(default_factory=dict)
    unless: dict = field(default_factory=dict)
    description: str = ""
    config: str = ""  # "module:Class" of the node's parameter dataclass ("" = not checked)
    extra_parameters: list = field(default_factory=list)


@dataclass
class GraphFile:
    path: Path
    arguments: dict[str, Argument]
    nodes: list[NodeSpec]


def load_graph_file(path) -> GraphFile:
    path = Path(path)
    data = read_yaml(path)
    unknown = set(data) - {"arguments", "nodes"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)} (expected 'arguments', 'nodes')")
    arguments = {}
    for name, spec in (data.get("arguments") or {}).items():
        if not isinstance(spec, dict):
            spec = {"default": spec}
        bad = set(spec) - ARGUMENT_KEYS
        if bad:
            raise ConfigError(f"{path}: argument {name!r} has unknown key(s) {sorted(bad)} "
                              f"(valid: {sorted(ARGUMENT_KEYS)})")
        if "default" not in spec:
            raise ConfigError(f"{path}: argument {name!r} has no default")
        if name in BUILTIN_ARGUMENTS:
            raise ConfigError(f"{path}: argument name {name!r} is reserved (always the graph file's directory)")
        arguments[name] = Argument(name, spec["default"], spec.get("choices"), spec.get("description", ""))
    nodes = []
    names = set()
    for i, spec in enumerate(data.get("nodes") or []):
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: nodes[{i}] must be a mapping")
        bad = set(spec) - NODE_KEYS
        if bad:
            raise ConfigError(f"{path}: nodes[{i}] ({spec.get('name', '?')}) has unknown key(s) {sorted(bad)} "
                              f"(valid: {sorted(NODE_KEYS)})")
        for key in ("name", "package", "executable", "module"):
            if not isinstance(spec.get(key), str) or not spec.get(key):
                raise ConfigError(f"{path}: nodes[{i}] needs a string {key!r}")
        if spec["name"] in names:
            raise ConfigError(f"{path}: node name {spec['name']!r} is used twice")
        names.add(spec["name"])
        for cond in ("when", "unless"):
            for arg in (spec.get(cond) or {}):
                if arg not in arguments:
                    raise ConfigError(f"{path}: node {spec['name']!r} {cond} refers to unknown argument {arg!r}")
        nodes.append(NodeSpec(**{k: v for k, v in spec.items() if v is not None}))
    graph = GraphFile(path, arguments, nodes)
    _check_references(graph)
    for node in graph.nodes:
        check_node_parameters(node, f"{path}: node {node.name!r}")
    return graph


def load_schema(spec: str, where: str) -> type:
    """The dataclass named by a node's ``config`` (``module:Class``); ConfigError if it cannot be had."""
    if not isinstance(spec, str) or not _SCHEMA.fullmatch(spec):
        raise ConfigError(f"{where}: config must look like 'package.module:Class', got {spec!r}")
    module_name, class_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # not installed, or broken: either way the schema cannot be checked
        raise ConfigError(f"{where}: cannot import {module_name!r} for config {spec!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ConfigError(f"{where}: config {spec!r} is not a dataclass in {module_name}")
    return cls


def check_node_parameters(node: NodeSpec, where: str) -> None:
    """Every parameter name of ``node`` is a field of its ``config`` class or an extra parameter."""
    if not node.config:
        return
    extras = node.extra_parameters
    if not isinstance(extras, list) or not all(isinstance(e, str) and e for e in extras):
        raise ConfigError(f"{where}: extra_parameters must be a list of parameter names, got {extras!r}")
    if not isinstance(node.parameters, dict):
        raise ConfigError(f"{where}: parameters must be a mapping, got {type(node.parameters).__name__}")
    cls = load_schema(node.config, where)
    known = set(parameter_names(cls))
    names = [n for n in _dotted_names(node.parameters, known) if n not in extras]
    try:
        check_parameter_names(cls, names, f"{where} ({node.config})")
    except ConfigError as exc:
        if extras:
            raise ConfigError(f"{exc}; also accepted: {', '.join(extras)}") from None
        raise


def _dotted_names(params: dict, known: set, prefix: str = "") -> list[str]:
    """Parameter names as ROS sees them: nested mappings flattened to dotted names, except where the
    mapping is itself the value of a known (dict-typed) field."""
    out = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name not in known:
            out += _dotted_names(value, known, name + ".")
        else:
            out.append(name)
    return out


def _check_references(graph: GraphFile) -> None:
    def walk(value, where):
        if isinstance(value, str):
            for name in _SUB.findall(value):
                if name not in graph.arguments and name not in BUILTIN_ARGUMENTS:
                    raise ConfigError(f"{graph.path}: {where} uses unknown argument ${{{name}}}")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for j, v in enumerate(value):
                walk(v, f"{where}[{j}]")

    for node in graph.nodes:
        walk(node.parameters, f"node {node.name} parameters")
        walk(node.remappings, f"node {node.name} remappings")


def resolve_arguments(graph: GraphFile, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    values = {name: arg.default for name, arg in graph.arguments.items()}
    for name, value in (overrides or {}).items():
        if name not in graph.arguments:
            raise ConfigError(f"unknown launch argument {name!r} (valid: {', '.join(sorted(graph.arguments))})")
        if isinstance(value, str):
            value = _yaml_scalar(value)
        values[name] = value
    for name, value in values.items():
        choices = graph.arguments[name].choices
        if choices is not None and str(value) not in {str(c) for c in choices}:
            raise ConfigError(f"launch argument {name}={value!r} is not one of {choices}")
    return values


def resolve_graph(graph: GraphFile, overrides: dict[str, Any] | None = None) -> list[NodeSpec]:
    """The nodes to start for these argument values, with substitutions applied."""
    values = resolve_arguments(graph, overrides)
    builtins = {"config_dir": str(Path(graph.path).resolve().parent)}
    # argument values may use the built-ins (e.g. a default of "${config_dir}/retrain.yaml")
    values = {k: _SUB.sub(lambda m: builtins.get(m.group(1), m.group(0)), v) if isinstance(v, str) else v
              for k, v in values.items()}
    values.update(builtins)
    out = []
    for node in graph.nodes:
        if not all(_matches(values[k], v) for k, v in node.when.items()):
            continue
        if node.unless and all(_same(values[k], v) for k, v in node.unless.items()):
            continue
        out.append(NodeSpec(
            name=node.name, package=node.package, executable=node.executable, module=node.module,
            parameters=_substitute(node.parameters, values), remappings=_substitute(node.remappings, values),
            required=node.required, description=node.description, config=node.config,
            extra_parameters=list(node.extra_parameters),
        ))
    return out


def parse_launch_arguments(items: list[str]) -> dict[str, Any]:
    """``["task:=Stack", "record:=false"]`` (ros2 launch syntax) -> dict."""
    out = {}
    for item in items:
        if ":=" not in item:
            raise ConfigError(f"launch argument {item!r} must look like name:=value")
        name, value = item.split(":=", 1)
        out[name.strip()] = value
    return out


def _matches(value, wanted) -> bool:
    """``when: {robot: [servo, ros2_control]}``: a list accepts any of its values."""
    return any(_same(value, w) for w in wanted) if isinstance(wanted, list) else _same(value, wanted)


def _same(a, b) -> bool:
    return str(a).lower() == str(b).lower()


def _yaml_scalar(text: str):
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, (dict, list)) or value is None else value


def _substitute(value, values: dict):
    if isinstance(value, str):
        whole = _SUB.fullmatch(value)
        if whole:
            return values[whole.group(1)]
        return _SUB.sub(lambda m: str(values[m.group(1)]), value)
    if isinstance(value, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    return value


def default_graph_path() -> Path:
    """config/deploy.yaml: from $APO_CONFIG_DIR, the source tree, or the installed share directory."""
    return find_shared_config("deploy.yaml")
