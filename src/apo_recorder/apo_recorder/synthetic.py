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
