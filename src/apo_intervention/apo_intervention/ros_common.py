"""What the intervention nodes share on the ROS side: config from a file and parameters, last messages.

Node parameters: ``config_file`` (path of the node's YAML; "" = the shipped default) and, on top of
it, any config key as a ROS parameter with its dotted name (``teleop.timeout``). Nodes are created
with ``automatically_declare_parameters_from_overrides`` so that a misspelt parameter reaches the
strict loader (:func:`apo_ros.params.load_parameters`, with the file as its base) and fails the start
with its name, instead of being silently ignored by rclpy. After loading, every scalar/list config
value is declared read-only so ``ros2 param get`` shows what runs. Entry points use
:func:`apo_ros.node.run_node`; QoS comes from :mod:`apo_ros.qos`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apo_core.config import merge_overrides
from apo_core.errors import ConfigError
from apo_intervention.config import default_config_path, read_config_file
from apo_ros.params import load_parameters


def load_node_config(node, cls):
    """Config of ``node`` as ``cls`` from its ``config_file`` parameter and parameter overrides."""
    from rcl_interfaces.msg import ParameterDescriptor

    if not node.has_parameter("config_file"):
        node.declare_parameter("config_file", "", ParameterDescriptor(
            description="YAML config of this node ('' = the shipped default in share/apo_intervention/config)"))
    config_file = node.get_parameter("config_file").value
    if not isinstance(config_file, str):
        raise ConfigError(f"config_file: expected a path string, got {config_file!r}")
    path = Path(config_file) if config_file else default_config_path(cls)
    # Start from the defaults so a partly given section keeps the defaults of its other keys
    # (``teleop: {timeout: 0.3}`` keeps teleop's priority 100, not InputConfig's plain default).
    base = merge_overrides(dataclasses.asdict(cls()), read_config_file(path))
    return load_parameters(node, cls, base, ignore=("config_file",), source=str(path))


def destroy_on_error(node, build):
    """Run ``build()`` (a node's set-up); if it raises, destroy the half-built node and re-raise."""
    try:
        return build()
    except BaseException:
        node.destroy_node()
        raise


def send_last(publisher, msg, timeout: float = 0.5) -> None:
    """Publish a final message at shutdown and give it a moment to be acknowledged."""
    from rclpy.duration import Duration

    publisher.publish(msg)
    try:
        publisher.wait_for_all_acked(Duration(seconds=timeout))
    except Exception:
        pass


def publish_teleop_action(node, publisher, action: list[float], last: bool = False) -> None:
    """A human input's action (empty = release) on TELEOP_ACTION; ``last`` waits for it to be acked."""
    from apo_interfaces.msg import ActionCommand

    cmd = ActionCommand()
    cmd.header.stamp = node.get_clock().now().to_msg()
    cmd.action = action
    cmd.source = ActionCommand.SOURCE_TELEOP
    if last:
        send_last(publisher, cmd)
    else:
        publisher.publish(cmd)
