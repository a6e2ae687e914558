"""An adapter node's config: its section of config/adapters.yaml (or of ``config_file``) + ROS parameters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apo_core.config import find_shared_config, merge_overrides, read_yaml
from apo_core.errors import ConfigError
from apo_ros.params import load_parameters

CONFIG_NAME = "adapters.yaml"


def load_adapter_config(node, cls, section: str):
    """``cls`` from ``section`` of the node's ``config_file`` ("" = the workspace's config/adapters.yaml)
    with the node's parameters on top; ConfigError names the file, section and key at fault."""
    from rcl_interfaces.msg import ParameterDescriptor

    if not node.has_parameter("config_file"):
        node.declare_parameter("config_file", "", ParameterDescriptor(
            description=f"YAML with one section per adapter ('' = config/{CONFIG_NAME})"))
    config_file = node.get_parameter("config_file").value
    if not isinstance(config_file, str):
        raise ConfigError(f"config_file: expected a path string, got {config_file!r}")
    path = Path(config_file) if config_file else find_shared_config(CONFIG_NAME)
    data = read_yaml(path)
    if section not in data:
        raise ConfigError(f"{path}: no section {section!r} (sections: {', '.join(map(str, data)) or 'none'})")
    if not isinstance(data[section], dict):
        raise ConfigError(f"{path}: section {section!r} must be a mapping")
    base = merge_overrides(dataclasses.asdict(cls()), data[section])
    return load_parameters(node, cls, base, ignore=("config_file",), source=f"{path} [{section}]")
