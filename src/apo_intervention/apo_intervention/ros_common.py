"""What the intervention nodes share on the ROS side: config from parameters, QoS, entry points.

Node parameters: ``config_file`` (path of the node's YAML; "" = the shipped default) and, on top of
it, any config key as a ROS parameter with its dotted name (``teleop.timeout``). Nodes are created
with ``automatically_declare_parameters_from_overrides`` so that a misspelt parameter reaches the
strict loader and fails the start with its name, instead of being silently ignored by rclpy. After
loading, every scalar/list config value is declared read-only so ``ros2 param get`` shows what runs.
"""

from __future__ import annotations

import sys

from apo_core.errors import ApoError
from apo_core.ros_params import ROS_PARAMETERS, declare_effective
from apo_core.ros_qos import qos_profile, topic_qos
from apo_intervention.config import assemble_config

# Parameters rclpy itself declares or understands, and the config file's path; never config keys.
_NOT_CONFIG_KEYS = ROS_PARAMETERS | {"config_file"}


def qos_for(topic: str):
    """apo_core's profile for ``topic``; reliable depth 10 for a topic it has no entry for."""
    try:
        return topic_qos(topic)
    except KeyError:
        return qos_profile("reliable", 10)


def load_node_config(node, cls):
    """Config of ``node`` as ``cls`` from its ``config_file`` parameter and parameter overrides."""
    from rcl_interfaces.msg import ParameterDescriptor

    if not node.has_parameter("config_file"):
        node.declare_parameter("config_file", "", ParameterDescriptor(
            description="YAML config of this node ('' = the shipped default in share/apo_intervention/config)"))
    config_file = node.get_parameter("config_file").value
    if not isinstance(config_file, str):
        from apo_core.errors import ConfigError

        raise ConfigError(f"config_file: expected a path string, got {config_file!r}")
    overrides = {name: p.value for name, p in node.get_parameters_by_prefix("").items()
                 if name not in _NOT_CONFIG_KEYS and not name.startswith("qos_overrides.")}
    cfg = assemble_config(cls, config_file or None, overrides)
    declare_effective(node, cfg)
    return cfg


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


def run_node(make_node, program: str, args=None, should_stop=None) -> int:
    """Entry point body: init, build the node (config errors -> message + exit 2), spin, clean up.

    ``should_stop(node)``, if given, is polled between callbacks and ends the spin when true.
    """
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    # Our own signal handling: rclpy's would shut the context down before on_shutdown() could send
    # its last message (the arbiter's final hold, a teleop's release). SIGTERM behaves like Ctrl-C.
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    try:
        node = make_node()
    except ApoError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 0
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        # spin_once with a timeout, never a blocking spin(): with rclpy's signal handlers off, a node with
        # no timer (the joystick teleop) would otherwise sit in rcl_wait and never see SIGINT/SIGTERM.
        while rclpy.ok() and not (should_stop is not None and should_stop(node)):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close = getattr(node, "on_shutdown", None)
        if callable(close):
            try:
                close()
            except Exception:
                pass
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
