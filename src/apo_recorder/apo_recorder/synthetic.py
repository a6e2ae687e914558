"""Synthetic CDR messages of the recorded types, built without ROS (rosbags' serializer).

For ROS-free tests, the kill-recovery test's writer process and the benchmark's offline baseline:
the bytes are what an rclpy publisher would put on the wire for the same field values.
"""

from __future__ import annotations

import numpy as np

from apo_recorder.msgdefs import build_typestore

STEP = "apo_interfaces/msg/LabelledStep"
EVENT = "apo_interfaces/msg/EpisodeEvent"
ACTION = "apo_interfaces/msg/ActionCommand"
STATE = "apo_interfaces/msg/RobotState"
IMAGE = "sensor_msgs/msg/Image"


class SyntheticMessages:
    def __init__(self):
        self.store = build_typestore([STEP, EVENT, ACTION, STATE, IMAGE])
        self._t = self.store.types

    def _header(self, stamp_ns: int = 0, frame_id: str = ""):
        time_cls = self._t["builtin_interfaces/msg/Time"]
        header_cls = self._t["std_msgs/msg/Header"]
        return header_cls(stamp=time_cls(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                          frame_id=frame_id)

    def _ser(self, msg, typename: str) -> bytes:
        return bytes(self.store.serialize_cdr(msg, typename))

    def step(self, episode_id: str, index: int, label: int = 1, mode: int = 0, stamp_ns: int = 0,
             action_dim: int = 7) -> bytes:
        action = np.full(action_dim, 0.01 * index, dtype=np.float64)
        return self._ser(self._t[STEP](header=self._header(stamp_ns), episode_id=episode_id, step_index=index,
                                       executed_action=action, policy_action=action.copy(), policy_version="v0",
                                       label=label, mode=mode), STEP)

    def event(self, episode_id: str, event: int, instruction: str = "", task: str = "", policy_version: str = "",
              stamp_ns: int = 0) -> bytes:
        return self._ser(self._t[EVENT](header=self._header(stamp_ns), episode_id=episode_id, event=event,
                                        instruction=instruction, task=task, policy_version=policy_version,
                                        reason="synthetic"), EVENT)

    def action(self, values, source: int = 0, stamp_ns: int = 0) -> bytes:
        return self._ser(self._t[ACTION](header=self._header(stamp_ns), action=np.asarray(values, dtype=np.float64),
                                         source=source, policy_version="v0"), ACTION)

    def robot_state(self, proprio, stamp_ns: int = 0) -> bytes:
        pose = self._t["geometry_msgs/msg/Pose"](
            position=self._t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            orientation=self._t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
        p = np.asarray(proprio, dtype=np.float64)
        return self._ser(self._t[STATE](header=self._header(stamp_ns), joint_positions=np.zeros(7), eef_pose=pose,
                                        gripper=np.zeros(2), proprio=p, task_success=False), STATE)

    def image(self, height: int, width: int, seed: int = 0, stamp_ns: int = 0) -> bytes:
        data = np.random.default_rng(seed).integers(0, 256, size=height * width * 3, dtype=np.uint8)
        return self._ser(self._t[IMAGE](header=self._header(stamp_ns, "camera"), height=height, width=width,
                                        encoding="rgb8", is_bigendian=0, step=width * 3, data=data), IMAGE)


def write_recorded_episode(root, episode_id: str, labels, *, instruction: str = "lift the red cube",
                           task: str = "Lift", policy_version: str = "v0001", outcome: str = "success",
                           image_size: tuple[int, int] = (32, 32), state_step: float = 1.0,
                           start_ns: int = 1_700_000_000 * 1_000_000_000):
    """One episode bag written by the recorder's own writer from the CDR bytes its node would receive:
    START, then per step a camera frame and a state (2 ms before the step, received 1 ms before) and the
    labelled step (``mode = label - 1``), 100 ms apart, then the outcome's event. Returns the bag path."""
    from pathlib import Path

    from apo_core import topics
    from apo_recorder import bag_writer, contract

    ms = 1_000_000
    end_event = {"success": contract.EVENT_SUCCESS, "failure": contract.EVENT_FAILURE}[outcome]
    syn = SyntheticMessages()
    h, w = image_size
    msgs = [(topics.EPISODE, start_ns - 10 * ms, syn.event(episode_id, contract.EVENT_START, instruction, task,
                                                           policy_version, stamp_ns=start_ns - 10 * ms))]
    for i, label in enumerate(labels):
        t = start_ns + i * 100 * ms
        msgs.append((topics.IMAGE, t - ms, syn.image(h, w, seed=i, stamp_ns=t - 2 * ms)))
        msgs.append((topics.ROBOT_STATE, t - ms, syn.robot_state(np.full(9, state_step * i), stamp_ns=t - 2 * ms)))
        msgs.append((topics.STEP, t + ms, syn.step(episode_id, i, label=label, mode=label - 1, stamp_ns=t)))
    end = start_ns + len(labels) * 100 * ms
    msgs.append((topics.EPISODE, end, syn.event(episode_id, end_event, stamp_ns=end)))
    specs = [bag_writer.TopicSpec(topic, type_name) for topic, type_name in contract.DEFAULT_TOPICS.items()]
    custom = contract.default_custom_data(episode_id, instruction, task, policy_version, outcome)
    path = Path(root) / contract.safe_episode_dir_name(episode_id)
    bag_writer.write_bag(path, specs, custom, msgs)
    return path
