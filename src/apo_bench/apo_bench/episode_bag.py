"""Episode bags written from an in-process deployment, in the recorder's contract.

The lockstep deployment of the benchmark has no DDS graph, but its episodes must be the same files
the recorder writes, so that the real converter (``apo_trainer.convert``) and report read them as
they would read a robot's: one rosbag2/MCAP directory per episode, the contract's topics and types,
``apo.*`` custom data, messages serialised to CDR from the installed message definitions (the bytes
an rclpy publisher would send), written by the recorder's own :class:`EpisodeBagWriter`.
Stamps and log times are the simulated clock of the deployment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apo_core import topics
from apo_recorder import contract
from apo_recorder.bag_writer import EpisodeBagWriter, TopicSpec, qos_dict
from apo_recorder.msgdefs import build_typestore

IMAGE_T = "sensor_msgs/msg/Image"
STATE_T = "apo_interfaces/msg/RobotState"
ACTION_T = "apo_interfaces/msg/ActionCommand"
STEP_T = "apo_interfaces/msg/LabelledStep"
EVENT_T = "apo_interfaces/msg/EpisodeEvent"
MODE_T = "apo_interfaces/msg/InterventionMode"

# What the lockstep deployment records (the recorder's defaults without /joy: no joystick exists here).
RECORDED = {topics.IMAGE: IMAGE_T, topics.ROBOT_STATE: STATE_T, topics.POLICY_ACTION: ACTION_T,
            topics.TELEOP_ACTION: ACTION_T, topics.COMMAND: ACTION_T, topics.STEP: STEP_T,
            topics.EPISODE: EVENT_T, topics.MODE: MODE_T}
_QOS_KIND = {"sensor": dict(reliability="best_effort"), "reliable": {},
             "latched": dict(durability="transient_local")}


def _offered(topic: str) -> tuple[dict, ...]:
    kind, depth = topics.QOS[topic]
    return (qos_dict(depth=depth, **_QOS_KIND[kind]),)


class CdrEncoder:
    """Serialise the contract's message types from plain values (rosbags typestore, no rclpy)."""

    def __init__(self):
        self.store = build_typestore(sorted(set(RECORDED.values())))
        self._t = self.store.types

    def _header(self, stamp_ns: int, frame_id: str = ""):
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        return self._t["std_msgs/msg/Header"](stamp=self._t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                              frame_id=frame_id)

    def _ser(self, msg, typename: str) -> bytes:
        return bytes(self.store.serialize_cdr(msg, typename))

    def image(self, stamp_ns: int, rgb: np.ndarray, frame_id: str = "camera") -> bytes:
        h, w = rgb.shape[:2]
        return self._ser(self._t[IMAGE_T](header=self._header(stamp_ns, frame_id), height=h, width=w,
                                          encoding="rgb8", is_bigendian=0, step=w * 3,
                                          data=np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1)), IMAGE_T)

    def robot_state(self, stamp_ns: int, obs) -> bytes:
        t = self._t
        pose = t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=float(obs.eef_pos[0]), y=float(obs.eef_pos[1]),
                                                  z=float(obs.eef_pos[2])),
            orientation=t["geometry_msgs/msg/Quaternion"](*(float(v) for v in obs.eef_quat)))
        return self._ser(t[STATE_T](header=self._header(stamp_ns), joint_positions=_f64(obs.joint_positions),
                                    eef_pose=pose, gripper=_f64(obs.gripper_qpos), proprio=_f64(obs.proprio),
                                    task_success=bool(obs.success)), STATE_T)

    def action(self, stamp_ns: int, values, source: int, policy_version: str = "") -> bytes:
        return self._ser(self._t[ACTION_T](header=self._header(stamp_ns), action=_f64(values), source=source,
                                           policy_version=policy_version), ACTION_T)

    def step(self, stamp_ns: int, step) -> bytes:
        proposal = _f64([] if step.policy_action is None else step.policy_action)
        return self._ser(self._t[STEP_T](header=self._header(stamp_ns), episode_id=step.episode_id,
                                         step_index=int(step.step_index), executed_action=_f64(step.executed_action),
                                         policy_action=proposal, policy_version=step.policy_version,
                                         label=int(step.label), mode=int(step.mode)), STEP_T)

    def event(self, stamp_ns: int, ev) -> bytes:
        return self._ser(self._t[EVENT_T](header=self._header(stamp_ns), episode_id=ev.episode_id, event=int(ev.event),
                                          instruction=ev.instruction, task=ev.task,
                                          policy_version=ev.policy_version, reason=ev.reason), EVENT_T)

    def mode(self, stamp_ns: int, decision) -> bytes:
        return self._ser(self._t[MODE_T](header=self._header(stamp_ns), mode=int(decision.mode),
                                         active_input=decision.source or "", reason=decision.reason), MODE_T)


def open_episode_bag(bags_dir, episode_id: str, instruction: str, task: str, policy_version: str) -> EpisodeBagWriter:
    """A started writer for ``bags_dir/<episode_id>/`` with the contract's custom data."""
    path = Path(bags_dir) / contract.safe_episode_dir_name(episode_id)
    specs = [TopicSpec(topic, msgtype, _offered(topic)) for topic, msgtype in RECORDED.items()]
    custom = contract.default_custom_data(episode_id=episode_id, instruction=instruction, task=task,
                                          policy_version=policy_version, recorder_version="apo_bench")
    # No periodic fsync: the bench rewrites a cell from scratch after a crash, it never recovers bags.
    return EpisodeBagWriter(path, specs, custom, fsync=False).start()


def _f64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)
