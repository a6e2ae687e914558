"""The simulator node over real DDS: lockstep stepping, resets, command rejection, parameters, shutdown."""

import math
import signal

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray

from apo_core import topics
from apo_core.errors import ConfigError
from apo_interfaces.msg import ActionCommand, EpisodeEvent, RobotState
from apo_ros.qos import topic_qos
from apo_ros.testing import RosGraph, start_node_process, stop_process
from apo_sim.env import SimConfigError
from apo_sim.sim_node import SimNode

pytestmark = [pytest.mark.ros, pytest.mark.sim]
SIZE = 64


def _params(**values):
    base = {"image_size": SIZE, "mode": "lockstep", "seed": 7}
    base.update(values)
    return [Parameter(k, value=v) for k, v in base.items()]


class Probe:
    """Subscribes to everything the simulator publishes and publishes commands / episode events."""

    def __init__(self, graph, node):
        self.g = graph
        self.node = graph.probe_node("sim_probe")
        self.states, self.images, self.experts, self.progress = [], [], [], []
        for msg_type, topic, sink in ((RobotState, topics.ROBOT_STATE, self.states),
                                      (Image, topics.IMAGE, self.images),
                                      (ActionCommand, topics.SIM_EXPERT_ACTION, self.experts),
                                      (Float64MultiArray, topics.SIM_TASK_PROGRESS, self.progress)):
            self.node.create_subscription(msg_type, topic, sink.append, topic_qos(topic))
        self.cmd = self.node.create_publisher(ActionCommand, topics.COMMAND, topic_qos(topics.COMMAND))
        self.episode = self.node.create_publisher(EpisodeEvent, topics.EPISODE, topic_qos(topics.EPISODE))
        # Discovery both ways before anything is published (messages sent before a match are lost).
        graph.wait_for_subscribers(self.cmd)
        graph.wait_for_subscribers(self.episode)
        # ...and from the node's side too: a reader that has not matched our writer yet drops samples.
        graph.wait_until(lambda: node.count_publishers(topics.COMMAND) >= 1, what="node sees our command publisher")
        for pub in (node._pub_state, node._pub_image, node._pub_expert, node._pub_progress):
            if pub is not None:
                graph.wait_for_subscribers(pub)

    def send(self, action):
        self.cmd.publish(ActionCommand(action=[float(a) for a in action], source=ActionCommand.SOURCE_TELEOP))

    def start_episode(self, episode_id):
        msg = EpisodeEvent(episode_id=episode_id, event=EpisodeEvent.EVENT_START, task="Lift")
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.episode.publish(msg)


def test_lockstep_one_observation_per_command_and_reset():
    with RosGraph() as g:
        node = g.add(SimNode(context=g.context, parameter_overrides=_params()))
        probe = Probe(g, node)
        assert node.resets == 1 and node.steps_taken == 0

        probe.start_episode("ep-1")
        g.wait_until(lambda: len(probe.states) >= 1, what="first observation after reset")
        assert node.resets == 2
        z_reset = probe.states[0].eef_pose.position.z

        n = 6
        for _ in range(n):
            probe.send([0, 0, 1, 0, 0, 0, -1])
        g.wait_until(lambda: node.steps_taken == n and len(probe.states) == 1 + n, what=f"{n} observations")
        g.wait_until(lambda: node._queue.empty() and node.observations_published == 2 + n)  # 2: start + ep-1 resets
        assert node.steps_taken == n and len(probe.states) == 1 + n  # exactly one per command
        assert probe.states[-1].eef_pose.position.z > z_reset + 0.05
        g.wait_until(lambda: len(probe.experts) == 1 + n and len(probe.progress) == 1 + n)

        state = probe.states[-1]
        assert len(state.proprio) == 9 and len(state.joint_positions) == 7 and len(state.gripper) == 2
        assert state.header.frame_id == "apo_sim_base" and not state.task_success
        assert probe.experts[-1].source == ActionCommand.SOURCE_EXPERT and len(probe.experts[-1].action) == 7
        assert all(math.isfinite(a) and abs(a) <= 1.0 for a in probe.experts[-1].action)
        progress, height, grasped = probe.progress[-1].data
        assert 0.0 <= progress <= 1.0 and grasped in (0.0, 1.0) and abs(height) < 0.01
        g.wait_until(lambda: len(probe.images) >= 1, what="an image")  # best effort: some may drop
        image = probe.images[-1]
        assert (image.height, image.width, image.encoding, image.step) == (SIZE, SIZE, "rgb8", 3 * SIZE)
        assert len(image.data) == SIZE * SIZE * 3
        assert image.header.stamp in [s.header.stamp for s in probe.states]  # one stamp per observation

        # A new episode resets the arm and publishes its first observation.
        probe.start_episode("ep-2")
        g.wait_until(lambda: len(probe.states) == 2 + n, what="observation after the second reset")
        assert node.resets == 3 and node.steps_taken == n
        assert abs(probe.states[-1].eef_pose.position.z - z_reset) < 0.02


def test_nan_and_malformed_commands_are_rejected():
    with RosGraph() as g:
        node = g.add(SimNode(context=g.context, parameter_overrides=_params(publish_expert=False)))
        assert node._pub_expert is None
        probe = Probe(g, node)
        # Prime the command path: resend a zero command until one has been stepped, then settle.
        g.wait_until(lambda: node.steps_taken >= 1 or probe.send([0] * 7), timeout=30, interval=0.5,
                     what="a first command to get through")
        g.wait_until(lambda: node._queue.empty() and len(probe.states) == node.observations_published - 1)
        steps, published = node.steps_taken, node.observations_published

        probe.send([0, 0, float("nan"), 0, 0, 0, 0])
        probe.send([0, float("inf"), 0, 0, 0, 0, 0])
        probe.send([0.1, 0.2])  # wrong length
        probe.send([0, 0, 0.5, 0, 0, 0, 0])  # valid: processed after the three bad ones
        g.wait_until(lambda: node.observations_published == published + 1, what="the valid command's step")
        g.wait_until(node._queue.empty)
        assert node.rejected_commands == 3
        assert node.steps_taken == steps + 1  # only the valid command was stepped
        assert node.observations_published == published + 1
        g.wait_until(lambda: len(probe.states) == node.observations_published - 1)
        assert all(math.isfinite(v) for v in probe.states[-1].proprio)


def test_realtime_mode_holds_then_follows_commands():
    with RosGraph() as g:
        node = g.add(SimNode(context=g.context, parameter_overrides=_params(
            mode="realtime", control_rate_hz=50, command_timeout_s=0.2)))  # an int works for a rate
        probe = Probe(g, node)
        g.wait_until(lambda: len(probe.states) >= 3, what="timer-driven observations without commands")
        z0 = probe.states[-1].eef_pose.position.z

        def rising():
            probe.send([0, 0, 1, 0, 0, 0, 0])
            return probe.states[-1].eef_pose.position.z > z0 + 0.03

        g.wait_until(rising, timeout=20, interval=0.05, what="the arm to follow +z commands")
        # Without fresh commands the arm holds: consecutive observations stop moving.
        g.wait_until(lambda: len(probe.states) > 2 and abs(
            probe.states[-1].eef_pose.position.z - probe.states[-2].eef_pose.position.z) < 5e-4,
            timeout=20, what="zero motion after the command timeout")
        assert node.rejected_commands == 0


def test_unknown_task_fails_at_start():
    with RosGraph() as g:
        with pytest.raises(ConfigError, match=r"parameter task: unknown task 'Push'.*'Lift'"):
            SimNode(context=g.context, parameter_overrides=_params(task="Push"))
        with pytest.raises(ConfigError, match="parameter mode: 'fast' is not one of"):
            SimNode(context=g.context, parameter_overrides=_params(mode="fast"))
        with pytest.raises(ConfigError, match="parameter control_rate_hz: expected a number, got 'fast'"):
            SimNode(context=g.context, parameter_overrides=_params(control_rate_hz="fast"))
        with pytest.raises(ConfigError, match="parameter image_size: expected an integer, got 'abc'"):
            SimNode(context=g.context, parameter_overrides=_params(image_size="abc"))
        with pytest.raises(SimConfigError, match="unknown camera 'nope'"):
            SimNode(context=g.context, parameter_overrides=_params(camera="nope"))


def test_process_bad_parameter_exits_with_message_and_sigterm_shuts_down(tmp_path):
    log = tmp_path / "bad.log"
    proc = start_node_process("apo_sim.sim_node", ["--ros-args", "-p", "task:=Push"], log_path=str(log))
    assert proc.wait(timeout=120) == 2
    assert "parameter task: unknown task 'Push'" in log.read_text()

    log = tmp_path / "good.log"
    proc = start_node_process("apo_sim.sim_node", ["--ros-args", "-p", "mode:=lockstep", "-p", f"image_size:={SIZE}"],
                              log_path=str(log))
    try:
        with RosGraph() as g:
            probe = g.probe_node("sim_probe")
            g.wait_for_publishers(probe, topics.ROBOT_STATE, timeout=120)
    finally:
        rc = stop_process(proc, sig=signal.SIGTERM, timeout=30)
    assert rc == 0, log.read_text()
    assert "shutting down" in log.read_text()


def test_expert_action_drives_the_task_to_success():
    """The published expert action, fed back as the command, solves Lift through the node."""
    with RosGraph() as g:
        node = g.add(SimNode(context=g.context, parameter_overrides=_params(seed=3)))
        probe = Probe(g, node)
        probe.start_episode("ep-expert")
        g.wait_until(lambda: len(probe.experts) >= 1 and len(probe.states) >= 1)
        for step in range(120):
            if probe.states[-1].task_success:
                break
            probe.send(np.asarray(probe.experts[-1].action))
            g.wait_until(lambda s=step: len(probe.experts) >= s + 2 and len(probe.states) >= s + 2,
                         what="the next observation")
        assert probe.states[-1].task_success
        assert probe.progress[-1].data[0] == 1.0
