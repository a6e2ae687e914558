"""Fixtures for the intervention package's ROS tests: a graph, node factories, a recording probe."""

from __future__ import annotations

import threading

import pytest


@pytest.fixture
def graph():
    """apo_core's RosGraph, but a callback exception that kills the executor fails the test loudly
    (the base class swallows it, which turns a node bug into a mysterious wait timeout)."""
    import traceback

    from apo_ros.testing import RosGraph

    class CheckedGraph(RosGraph):
        error = None

        def _spin(self):
            try:
                self.executor.spin()
            except Exception as exc:
                if self.context.ok():
                    self.error = "".join(traceback.format_exception(exc))

        def wait_until(self, predicate, timeout=10.0, interval=0.01, what="condition"):
            def checked():
                if self.error:
                    raise AssertionError(f"executor died while waiting for {what}:\n{self.error}")
                return predicate()

            return RosGraph.wait_until(checked, timeout, interval, what)

    with CheckedGraph() as g:
        yield g
        if g.error:
            pytest.fail(f"executor died during the test:\n{g.error}")


def params(**values):
    """``teleop__timeout=0.3`` -> [Parameter("teleop.timeout", 0.3)] (double underscore = dot)."""
    from rclpy.parameter import Parameter

    return [Parameter(k.replace("__", "."), value=v) for k, v in values.items()]


@pytest.fixture
def make_node(graph):
    """``make_node(ArbiterNode, control_rate_hz=20.0)`` builds the node in the graph with overrides."""

    def make(cls, **values):
        return graph.add(cls(context=graph.context, parameter_overrides=params(**values)))

    return make


class Recorder:
    """Thread-safe list of received messages per topic (callbacks run on the executor's threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._msgs: dict[str, list] = {}

    def callback(self, topic):
        self._msgs.setdefault(topic, [])

        def cb(msg):
            with self._lock:
                self._msgs[topic].append(msg)

        return cb

    def get(self, topic) -> list:
        with self._lock:
            return list(self._msgs.get(topic, []))

    def count(self, topic) -> int:
        with self._lock:
            return len(self._msgs.get(topic, []))


@pytest.fixture
def probe(graph):
    """A probe node subscribed to every arbiter output; ``probe.rec.get(topic)`` lists what arrived."""
    from diagnostic_msgs.msg import DiagnosticArray

    from apo_core import topics
    from apo_interfaces.msg import ActionCommand, EpisodeEvent, InterventionMode, LabelledStep
    from apo_ros.qos import qos_profile, topic_qos

    node = graph.probe_node("apo_test_probe")
    node.rec = Recorder()
    for msg_type, topic in ((ActionCommand, topics.COMMAND), (LabelledStep, topics.STEP),
                            (InterventionMode, topics.MODE), (EpisodeEvent, topics.EPISODE)):
        node.create_subscription(msg_type, topic, node.rec.callback(topic), topic_qos(topic, depth=1000))
    node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, node.rec.callback(topics.DIAGNOSTICS),
                             qos_profile("reliable", 10))
    return node
