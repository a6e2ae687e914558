"""Test helper: a probe that plays the rest of the graph for the recorder (rclpy imported lazily).

``EpisodeProbe(graph)`` creates a node in an ``apo_ros.testing.RosGraph`` with publishers on
the recorded topics (the QoS of docs/ARCHITECTURE.md, "Topic graph") and publishes episode events, steps, images, states and actions.
Used by the recorder's tests and benchmark; usable by integration tests of other packages.
"""

from __future__ import annotations

from apo_core import topics as T


class EpisodeProbe:
    def __init__(self, graph, name: str = "recorder_probe", image_size: tuple[int, int] = (8, 8)):
        from sensor_msgs.msg import Image

        from apo_interfaces.msg import ActionCommand, EpisodeEvent, LabelledStep, RobotState
        from apo_ros.qos import topic_qos

        self.graph = graph
        self.node = graph.probe_node(name)
        self._versions: dict[str, str] = {}
        self.EpisodeEvent, self.LabelledStep = EpisodeEvent, LabelledStep
        self.ActionCommand, self.RobotState, self.Image = ActionCommand, RobotState, Image
        self.pubs = {
            T.EPISODE: self.node.create_publisher(EpisodeEvent, T.EPISODE, topic_qos(T.EPISODE)),
            T.STEP: self.node.create_publisher(LabelledStep, T.STEP, topic_qos(T.STEP)),
            T.IMAGE: self.node.create_publisher(Image, T.IMAGE, topic_qos(T.IMAGE)),
            T.ROBOT_STATE: self.node.create_publisher(RobotState, T.ROBOT_STATE, topic_qos(T.ROBOT_STATE)),
            T.COMMAND: self.node.create_publisher(ActionCommand, T.COMMAND, topic_qos(T.COMMAND)),
            T.POLICY_ACTION: self.node.create_publisher(ActionCommand, T.POLICY_ACTION, topic_qos(T.POLICY_ACTION)),
        }
        h, w = image_size
        self.image = Image(height=h, width=w, encoding="rgb8", step=w * 3,
                           data=bytes(i % 251 for i in range(h * w * 3)))

    def wait_for_recorder(self, count: int = 1, timeout: float = 20.0) -> None:
        for pub in self.pubs.values():
            self.graph.wait_for_subscribers(pub, count, timeout)

    def _stamp(self, msg):
        msg.header.stamp = self.node.get_clock().now().to_msg()
        return msg

    def event(self, episode_id: str, event: int, instruction: str = "lift the red cube", task: str = "Lift",
              policy_version: str = "v1", reason: str = "test") -> None:
        self.pubs[T.EPISODE].publish(self._stamp(self.EpisodeEvent(
            episode_id=episode_id, event=event, instruction=instruction, task=task, policy_version=policy_version,
            reason=reason)))

    def start(self, episode_id: str, **kw) -> None:
        self._versions[episode_id] = kw.get("policy_version", "v1")
        self.event(episode_id, self.EpisodeEvent.EVENT_START, **kw)

    def end(self, episode_id: str, event: int | None = None) -> None:
        # Like the arbiter: the outcome event states the episode's version (here the one START named).
        self.event(episode_id, self.EpisodeEvent.EVENT_SUCCESS if event is None else event,
                   policy_version=self._versions.get(episode_id, "v1"))

    def step(self, episode_id: str, index: int, label: int = 1, with_observation: bool = True) -> None:
        if with_observation:
            self.pubs[T.IMAGE].publish(self._stamp(self.image))
            self.pubs[T.ROBOT_STATE].publish(self._stamp(self.RobotState(proprio=[0.01 * index] * 9)))
            self.pubs[T.POLICY_ACTION].publish(self._stamp(self.ActionCommand(action=[0.1] * 7, source=0)))
            self.pubs[T.COMMAND].publish(self._stamp(self.ActionCommand(action=[0.1] * 7, source=0)))
        self.pubs[T.STEP].publish(self._stamp(self.LabelledStep(
            episode_id=episode_id, step_index=index, executed_action=[0.1] * 7, policy_action=[0.1] * 7,
            policy_version="v1", label=label)))
