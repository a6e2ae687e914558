"""Hostile messages to the simulator node over real DDS: none may reach the simulator, none may stop it.

Commands with NaN/inf or a wrong length are rejected before the simulator; an episode event whose
callback raises (a negative header stamp cannot be converted to a ROS time) is dropped by the
callback guard. Afterwards the node still steps exactly once per valid command.
"""

import math
import signal

import pytest
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.parameter import Parameter

from apo_core import topics
from apo_interfaces.msg import ActionCommand, EpisodeEvent, RobotState
from apo_ros.qos import topic_qos
from apo_ros.testing import RosGraph, start_node_process, stop_process
from apo_sim.sim_node import SimNode

pytestmark = [pytest.mark.ros, pytest.mark.sim]
SIZE = 32
NAN, INF = float("nan"), float("inf")
BAD_COMMANDS = [
    [0, 0, NAN, 0, 0, 0, 0],
    [INF, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, -INF],
    [NAN] * 7,
    [],
    [0.1, 0.2],
    [0.0] * 8,
    [0.5] * 10_000,
]


def _hostile_events(node):
    """Episode events that are malformed in every way the message type allows."""
    now = node.get_clock().now().to_msg()
    negative = EpisodeEvent(episode_id="ep-negative-stamp", event=EpisodeEvent.EVENT_START, task="Lift")
    negative.header.stamp = TimeMsg(sec=-5, nanosec=0)
    unknown = EpisodeEvent(episode_id="x" * 100_000, event=200, task="\x00\x1b[2J" * 1000)
    unknown.header.stamp = now
    return [negative, unknown]


class Probe:
    def __init__(self, graph, name="sim_hostile_probe"):
        self.g = graph
        self.node = graph.probe_node(name)
        self.states = []
        self.node.create_subscription(RobotState, topics.ROBOT_STATE, self.states.append,
                                      topic_qos(topics.ROBOT_STATE, depth=1000))
        self.cmd = self.node.create_publisher(ActionCommand, topics.COMMAND, topic_qos(topics.COMMAND, depth=1000))
        self.episode = self.node.create_publisher(EpisodeEvent, topics.EPISODE, topic_qos(topics.EPISODE))
        graph.wait_for_subscribers(self.cmd, timeout=120)
        graph.wait_for_subscribers(self.episode, timeout=120)
        graph.wait_for_publishers(self.node, topics.ROBOT_STATE, timeout=120)

    def send(self, action):
        self.cmd.publish(ActionCommand(action=[float(a) for a in action], source=ActionCommand.SOURCE_TELEOP))


def test_hostile_commands_and_events_never_reach_or_stop_the_simulator():
    with RosGraph() as g:
        node = g.add(SimNode(context=g.context, parameter_overrides=[
            Parameter("image_size", value=SIZE), Parameter("mode", value="lockstep"), Parameter("seed", value=1),
            Parameter("publish_expert", value=False)]))
        probe = Probe(g)
        # The node's reader must have matched our writer too, or the first samples are lost.
        g.wait_until(lambda: node.count_publishers(topics.COMMAND) >= 1, what="node sees the command publisher")
        # Prime: resend a zero command until one has been stepped, then let the queue drain.
        g.wait_until(lambda: node.steps_taken >= 1 or probe.send([0] * 7), timeout=30, interval=0.5,
                     what="a first command to get through")
        g.wait_until(lambda: node._queue.empty() and len(probe.states) == node.observations_published - 1)
        steps, resets, rejected = node.steps_taken, node.resets, node.rejected_commands

        for event in _hostile_events(probe.node):
            probe.episode.publish(event)
        for action in BAD_COMMANDS:
            probe.send(action)
        probe.send([0, 0, 0.5, 0, 0, 0, 0])  # valid, sent after every bad one on the same reliable stream
        g.wait_until(lambda: node.steps_taken == steps + 1, what="the valid command's step")
        g.wait_until(lambda: node.rejected_commands == rejected + len(BAD_COMMANDS), what="every bad command counted")
        g.wait_until(lambda: node.guard.errors >= 1, what="the raising episode event to be dropped")
        g.wait_until(node._queue.empty)

        assert node.steps_taken == steps + 1  # only the valid command reached the simulator
        assert node.resets == resets  # neither malformed event reset it
        assert g.errors == []  # no exception escaped a callback into the executor
        # ...and the node keeps stepping once per valid command, with finite observations.
        probe.send([0, 0, -0.5, 0, 0, 0, 0])
        g.wait_until(lambda: node.steps_taken == steps + 2, what="a second valid step")
        g.wait_until(lambda: len(probe.states) == node.observations_published - 1)
        assert all(math.isfinite(v) for v in probe.states[-1].proprio)


def test_simulator_process_survives_a_raising_episode_event(tmp_path):
    log = tmp_path / "sim.log"
    proc = start_node_process("apo_sim.sim_node", ["--ros-args", "-p", "mode:=lockstep", "-p", f"image_size:={SIZE}"],
                              log_path=str(log))
    try:
        with RosGraph() as g:
            probe = Probe(g, "sim_process_probe")
            for event in _hostile_events(probe.node):
                probe.episode.publish(event)
            for action in BAD_COMMANDS:
                probe.send(action)
            dropped = f"{topics.EPISODE}: message dropped: ValueError"
            g.wait_until(lambda: dropped in log.read_text() or proc.poll() is not None, timeout=60,
                         interval=0.2, what="the node to drop the raising episode event")
            # Still alive and stepping: a valid command sent now yields a new observation.
            g.wait_until(lambda: len(probe.states) >= 1 or probe.send([0] * 7) or proc.poll() is not None,
                         timeout=60, interval=0.5, what="an observation after the hostile messages")
            assert proc.poll() is None, log.read_text()
    finally:
        rc = stop_process(proc, sig=signal.SIGTERM, timeout=30)
    text = log.read_text()
    assert rc == 0, text
    assert f"{topics.EPISODE}: message dropped: ValueError: Seconds value must not be negative" in text
    assert "Traceback" not in text
