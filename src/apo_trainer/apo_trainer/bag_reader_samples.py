"""Write episode bags in the recorder's layout, for tests and benchmarks of reading and conversion.

Real bags, written with the ``rosbags`` Writer (rosbag2 version 9, MCAP): the ``apo_interfaces``
types are registered from the package's ``.msg`` files, messages are CDR-serialised, and each
episode goes to ``<bags_dir>/<episode_id>/`` with the ``apo.*`` custom data, exactly as the
recorder does. Unlike the recorder's bags they carry no CRCs (rosbags writes 0), like bags from
recorders before CRCs were written: readers report them ``unverified``. Tests of CRC handling
write with ``apo_recorder.bag_writer`` instead. ``finish=False`` stops like a killed recorder: no ``metadata.yaml``, no MCAP
footer/summary, and the chunk still buffered in memory is lost.

Every value encodes where it came from so a test can check alignment without re-deriving it:
camera frame ``f`` has ``image[0, 0] = (f % 256, f // 256, 7)``, robot state ``s`` has
``proprio[0] = s``, and the executed action of step ``i`` is :func:`sample_action` ``(i)``.
The timeline per step ``i`` (period P, t = start + i P):

- ``image_every`` camera frames per step, frame ``f`` stamped ``start + f P/image_every - 3 ms``,
  received 2 ms later (``late_frames`` are received 1.5 P later instead, after their step);
- two robot states per step, state ``s`` stamped ``start + s P/2 - 1 ms``, received 0.5 ms later;
- policy proposal, teleop action (human steps), command, then the STEP stamped ``t + 1 ms``,
  received 0.5 ms later. The newest frame / state stamped at or before step ``i`` is therefore
  frame ``i * image_every`` and state ``2 i``.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from apo_core import topics
from apo_core.bag_contract import (  # noqa: F401 (EVENT_*: re-exported, were defined here)
    EPISODE_BAG_TOPICS,
    EVENT_ABORT,
    EVENT_END,
    EVENT_FAILURE,
    EVENT_OF_OUTCOME,
    EVENT_START,
    EVENT_SUCCESS,
    KEY_EPISODE_ID,
    KEY_INSTRUCTION,
    KEY_OUTCOME,
    KEY_POLICY_VERSION,
    KEY_SCHEMA_VERSION,
    KEY_TASK,
    SCHEMA_VERSION,
    TYPE_ACTION_COMMAND,
    TYPE_EPISODE_EVENT,
    TYPE_IMAGE,
    TYPE_INTERVENTION_MODE,
    TYPE_JOY,
    TYPE_LABELLED_STEP,
    TYPE_ROBOT_STATE,
)
from apo_core.labels import Label

MS = 1_000_000
OUTCOME_EVENT = EVENT_OF_OUTCOME  # outcome -> the event that states it (old name kept)


@dataclass
class SampleEpisode:
    """What to record for one synthetic episode."""

    episode_id: str
    live_labels: Sequence[int]
    action_dim: int = 7
    state_dim: int = 9
    image_size: tuple[int, int] = (48, 64)  # H, W
    image_every: int = 1
    instruction: str = "lift the red cube"
    task: str = "Lift"
    outcome: str = "success"
    policy_version: str = "v0001"
    period_ns: int = 100 * MS
    start_ns: int = 1_700_000_000 * 1_000_000_000
    skip_steps: Sequence[int] = ()  # step indices never published (a gap in /apo/step)
    late_frames: Sequence[int] = ()  # camera frames received after the step they belong to
    no_proposal_steps: Sequence[int] = ()  # steps whose policy_action is empty
    zero_stamps: bool = False  # publishers leave header stamps at 0 (alignment by log time)
    custom_data: dict = field(default_factory=dict)  # overrides of the apo.* custom data

    @property
    def num_steps(self) -> int:
        return len(self.live_labels)

    def expected_steps(self) -> list[int]:
        skip = set(self.skip_steps)
        return [i for i in range(self.num_steps) if i not in skip]


def sample_action(i: int, dim: int = 7, offset: float = 0.0) -> np.ndarray:
    """Deterministic executed action of step ``i``: smooth deltas plus a +-1 gripper."""
    a = 0.5 * np.sin(0.1 * i + np.arange(dim) + offset)
    a[-1] = 1.0 if (i // 7) % 2 else -1.0
    return a


def frame_image(f: int, h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w, dtype=np.uint8)[None, :]  # a gradient, so images are not constant
    img[0, 0] = (f % 256, f // 256, 7)
    return img


def frame_id(image: np.ndarray) -> int:
    """The camera frame number :func:`frame_image` encoded in an image."""
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


def find_msg_dir() -> Path:
    """``apo_interfaces/msg``: the source tree next to this package, or the installed share dir."""
    here = Path(__file__).resolve().parents[2] / "apo_interfaces" / "msg"
    if here.is_dir():
        return here
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        cand = Path(prefix) / "share" / "apo_interfaces" / "msg"
        if cand.is_dir():
            return cand
    raise FileNotFoundError("apo_interfaces/msg not found (neither in the source tree nor in AMENT_PREFIX_PATH)")


@lru_cache(maxsize=4)
def sample_typestore(msg_dir: str | None = None):
    """ROS 2 standard types plus ``apo_interfaces`` registered from their ``.msg`` files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    typs: dict = {}
    for path in sorted(Path(msg_dir or find_msg_dir()).glob("*.msg")):
        typs.update(get_types_from_msg(path.read_text(), f"apo_interfaces/msg/{path.stem}"))
    store.register(typs)
    return store


TOPIC_TYPES = EPISODE_BAG_TOPICS  # the recorder's topics and types (apo_core.bag_contract)


class _Msgs:
    """Message constructors over a type store."""

    def __init__(self, store):
        self.store = store
        self.t = store.types

    def header(self, stamp_ns: int, frame_id: str = ""):
        stamp = self.t["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        return self.t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def cdr(self, msg, topic: str) -> bytes:
        return bytes(self.store.serialize_cdr(msg, TOPIC_TYPES[topic]))


def write_sample_bag(bags_dir, ep: SampleEpisode, *, finish: bool = True, compress: bool = False,
                     msg_dir: str | None = None) -> Path:
    """Record ``ep`` as ``<bags_dir>/<episode_id>/``; returns the bag directory."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

    store = sample_typestore(msg_dir)
    m = _Msgs(store)
    path = Path(bags_dir) / ep.episode_id
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    if compress:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    conns = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in TOPIC_TYPES.items()}
    heap: list = []
    seq = 0

    def emit(log_time: int, topic: str, msg) -> None:
        nonlocal seq
        heapq.heappush(heap, (log_time, seq, topic, msg))
        seq += 1

    def flush(until: int | None) -> None:
        while heap and (until is None or heap[0][0] < until):
            log_time, _, topic, msg = heapq.heappop(heap)
            writer.write(conns[topic], log_time, m.cdr(msg, topic))

    def stamp(ns: int) -> int:
        return 0 if ep.zero_stamps else ns

    t = m.t
    ev = t[TYPE_EPISODE_EVENT]
    start = ep.start_ns
    emit(start - 50 * MS, topics.EPISODE, ev(header=m.header(stamp(start - 50 * MS)), episode_id=ep.episode_id,
                                             event=EVENT_START, instruction=ep.instruction, task=ep.task,
                                             policy_version=ep.policy_version, reason="operator"))
    h, w = ep.image_size
    period = ep.period_ns
    late = set(ep.late_frames)
    skip = set(ep.skip_steps)
    no_prop = set(ep.no_proposal_steps)
    mode_msg = t[TYPE_INTERVENTION_MODE]
    cmd = t[TYPE_ACTION_COMMAND]
    prev_mode = None
    for i, label in enumerate(ep.live_labels):
        ts = start + i * period
        for k in range(ep.image_every):
            f = i * ep.image_every + k
            st = start + f * period // ep.image_every - 3 * MS
            recv = st + (period + period // 2 if f in late else 2 * MS)
            img = t[TYPE_IMAGE](header=m.header(stamp(st), "camera"), height=h, width=w, encoding="rgb8",
                                             is_bigendian=0, step=w * 3, data=frame_image(f, h, w).reshape(-1))
            emit(recv, topics.IMAGE, img)
        for k in range(2):
            s = 2 * i + k
            st = start + s * period // 2 - 1 * MS
            proprio = np.zeros(ep.state_dim)
            proprio[0] = s
            pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                               orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0,
                                                                                              w=1.0))
            state = t[TYPE_ROBOT_STATE](header=m.header(stamp(st)), joint_positions=np.zeros(7),
                                                       eef_pose=pose, gripper=np.zeros(2), proprio=proprio,
                                                       task_success=False)
            emit(st + MS // 2, topics.ROBOT_STATE, state)
        action = sample_action(i, ep.action_dim)
        proposal = np.zeros(0) if i in no_prop else action + (0.01 if label == Label.AUTONOMOUS else 0.2)
        human = label == Label.HUMAN
        mode = 1 if human else 0
        if mode != prev_mode:
            emit(ts, topics.MODE, mode_msg(header=m.header(stamp(ts)), mode=mode,
                                           active_input="joystick" if human else "policy", reason="takeover"))
            prev_mode = mode
        if len(proposal):
            emit(ts + MS // 4, topics.POLICY_ACTION, cmd(header=m.header(stamp(ts)), action=proposal, source=0,
                                                         policy_version=ep.policy_version))
        if human:
            joy = t[TYPE_JOY](header=m.header(stamp(ts)), axes=np.zeros(6, np.float32),
                                           buttons=np.array([1, 0, 0, 0], np.int32))
            emit(ts + MS // 4, topics.JOY, joy)
            emit(ts + MS // 3, topics.TELEOP_ACTION, cmd(header=m.header(stamp(ts)), action=action, source=1,
                                                          policy_version=""))
        emit(ts + MS // 2, topics.COMMAND, cmd(header=m.header(stamp(ts + MS)), action=action, source=1 if human else 0,
                                               policy_version="" if human else ep.policy_version))
        if i not in skip:
            step = t[TYPE_LABELLED_STEP](
                header=m.header(stamp(ts + MS)), episode_id=ep.episode_id, step_index=i, executed_action=action,
                policy_action=proposal, policy_version=ep.policy_version, label=int(label), mode=mode)
            emit(ts + MS + MS // 2, topics.STEP, step)
        flush(ts - period)
    end = start + ep.num_steps * period
    if ep.outcome in OUTCOME_EVENT:
        emit(end, topics.EPISODE, ev(header=m.header(stamp(end)), episode_id=ep.episode_id,
                                     event=OUTCOME_EVENT[ep.outcome], instruction=ep.instruction, task=ep.task,
                                     policy_version=ep.policy_version, reason="simulator"))
    emit(end + MS, topics.EPISODE, ev(header=m.header(stamp(end + MS)), episode_id=ep.episode_id, event=EVENT_END,
                                      instruction=ep.instruction, task=ep.task, policy_version=ep.policy_version,
                                      reason="operator"))
    flush(None)
    if not finish:
        writer.abort()
        return path
    custom = {KEY_EPISODE_ID: ep.episode_id, KEY_INSTRUCTION: ep.instruction, KEY_TASK: ep.task,
              KEY_OUTCOME: ep.outcome, KEY_POLICY_VERSION: ep.policy_version, KEY_SCHEMA_VERSION: SCHEMA_VERSION}
    custom.update(ep.custom_data)
    for key, value in custom.items():
        writer.set_custom_data(key, str(value))
    writer.close()
    return path


def chunk_offsets(mcap_path) -> list[tuple[int, int]]:
    """(offset, record length) of every chunk record in an MCAP file, to aim damage in tests."""
    from apo_core.bags.mcap_records import find_chunks

    return [(i, info.record_end - i) for i, info in find_chunks(Path(mcap_path).read_bytes())]


def cut_file(path, keep_bytes: int) -> None:
    """Truncate ``path`` to its first ``keep_bytes`` bytes (a torn write)."""
    with open(path, "r+b") as f:
        f.truncate(keep_bytes)


def overwrite_bytes(path, offset: int, length: int, seed: int = 0) -> None:
    """Overwrite ``length`` bytes at ``offset`` with random garbage (a corrupted sector)."""
    rng = np.random.default_rng(seed)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(rng.integers(0, 256, size=length, dtype=np.uint8).tobytes())
