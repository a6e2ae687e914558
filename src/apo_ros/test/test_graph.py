"""The in-process test graph keeps spinning after a callback raises, and reports the exception."""

import pytest

from apo_ros.graph import RosGraph

pytestmark = pytest.mark.ros


def test_callback_exception_is_reported_and_graph_keeps_running():
    from std_msgs.msg import Int32

    from apo_ros.qos import qos_profile

    got = []

    def handler(msg):
        if msg.data == 1:
            raise ValueError("bad message 1")
        got.append(msg.data)

    with RosGraph() as g:
        node = g.probe_node("n")
        node.create_subscription(Int32, "/t", handler, qos_profile("reliable", 10))
        pub = node.create_publisher(Int32, "/t", qos_profile("reliable", 10))
        g.wait_for_subscribers(pub)
        for i in range(3):
            pub.publish(Int32(data=i))
        g.wait_until(lambda: got == [0, 2], what="messages around the failing one")
        assert len(g.errors) == 1 and "bad message 1" in str(g.errors[0])
