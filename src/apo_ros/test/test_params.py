"""Strict node parameters and callback guards on real rclpy nodes."""

from dataclasses import dataclass, field

import pytest

from apo_core.errors import ConfigError
from apo_ros.params import (
    CallbackGuard,
    check_parameter_names,
    fill_failure,
    load_parameters,
    parameter_names,
)

pytestmark = pytest.mark.ros


@dataclass
class Inner:
    timeout: float = 0.5


@dataclass
class Cfg:
    rate_hz: float = field(default=10.0, metadata={"help": "control rate"})
    name: str = "x"
    inner: Inner = field(default_factory=Inner)

    def validate(self):
        if self.rate_hz <= 0:
            raise ConfigError(f"rate_hz: must be > 0, got {self.rate_hz}")


def _node(context, overrides):
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    params = [Parameter(k, value=v) for k, v in overrides.items()]
    return Node("strict_probe", context=context, parameter_overrides=params,
                automatically_declare_parameters_from_overrides=True)


@pytest.fixture
def context():
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def test_parameter_names_flatten_sections():
    assert parameter_names(Cfg) == ["rate_hz", "name", "inner.timeout"]


def test_given_values_typed_and_declared(context):
    node = _node(context, {"rate_hz": 20, "inner.timeout": 0.3})
    try:
        cfg = load_parameters(node, Cfg)
        assert cfg.rate_hz == 20.0 and isinstance(cfg.rate_hz, float)
        assert cfg.inner.timeout == 0.3
        assert node.get_parameter("name").value == "x"  # defaults declared for ros2 param get
        assert node.describe_parameter("name").read_only
    finally:
        node.destroy_node()


def test_unknown_parameter_is_named_with_suggestion(context):
    node = _node(context, {"rate_hx": 5.0})
    try:
        with pytest.raises(ConfigError, match=r"unknown parameter 'rate_hx'; did you mean 'rate_hz'.*known: rate_hz"):
            load_parameters(node, Cfg)
    finally:
        node.destroy_node()


def test_wrong_type_and_bad_value_are_named(context):
    for overrides, pattern in (({"rate_hz": "fast"}, "rate_hz"), ({"rate_hz": -1.0}, "must be > 0")):
        node = _node(context, overrides)
        try:
            with pytest.raises(ConfigError, match=pattern):
                load_parameters(node, Cfg)
        finally:
            node.destroy_node()


def test_check_parameter_names_ignores_ros_builtins():
    check_parameter_names(Cfg, ["use_sim_time", "qos_overrides./x.depth", "inner.timeout"], "graph")
    with pytest.raises(ConfigError, match="inner.timeot"):
        check_parameter_names(Cfg, ["inner.timeot"], "graph")


def test_service_guard_answers_and_keeps_serving(context):
    """A service whose callback raises answers success=false; the next good request is served."""
    import threading

    from rclpy.executors import SingleThreadedExecutor

    from apo_interfaces.srv import Rollback

    server = _node(context, {})
    client_node = _node(context, {})
    guard = CallbackGuard(server)

    def handler(request, response):
        if request.version != "good":
            raise ValueError(f"bad version {request.version!r}")
        response.success, response.current_version = True, "good"
        return response

    server.create_service(Rollback, "/probe/rollback", guard.service("rollback", handler))
    client = client_node.create_client(Rollback, "/probe/rollback")
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(server)
    executor.add_node(client_node)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)])
    thread.start()
    try:
        assert client.wait_for_service(timeout_sec=10)
        for version in ("../../evil", "x" * 300, ""):
            res = client.call(Rollback.Request(version=version), timeout_sec=10)
            assert res is not None and res.success is False and "bad version" in res.message
        res = client.call(Rollback.Request(version="good"), timeout_sec=10)
        assert res.success and res.current_version == "good"
        assert guard.errors == 3
    finally:
        stop.set()
        thread.join()
        executor.shutdown()
        server.destroy_node()
        client_node.destroy_node()


def test_subscription_guard_drops_message():
    class FakeLogger:
        def __init__(self):
            self.lines = []

        def error(self, text, **kwargs):
            self.lines.append(text)

    class Holder:
        logger = FakeLogger()

        def get_logger(self):
            return self.logger

    holder = Holder()
    guard = CallbackGuard(holder)
    seen = []
    cb = guard.subscription("state", lambda msg: seen.append(1 / msg))
    cb(0)
    cb(2)
    assert seen == [0.5] and guard.errors == 1 and "ZeroDivisionError" in holder.logger.lines[0]


def test_fill_failure_on_status_response():
    from apo_interfaces.srv import GetRetrainStatus, Retrain

    r = Retrain.Response(accepted=True)
    fill_failure(r, "nope")
    assert r.accepted is False and r.reason == "nope"
    s = GetRetrainStatus.Response()
    fill_failure(s, "nope")
    assert s.status.message == "nope"
