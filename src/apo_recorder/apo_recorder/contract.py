"""The bag contract: what one episode bag contains. The bag -> HDF5 conversion is written against this.

Everything here is plain data (no rclpy, no rosbags), shared by the writer, the recovery tool, the
readers, the node and the tests. The constants themselves live in :mod:`apo_core.bag_contract` (the
one statement of the contract in code, shared with the trainer) and are re-exported here:

- one rosbag2 directory per episode, ``<output_dir>/<episode_id>/``, holding ``metadata.yaml``
  (rosbag2 metadata version 9) and ``<episode_id>.mcap`` (MCAP storage), written with ``rosbags``;
- the topics/types of ``DEFAULT_TOPICS``; every connection carries the full message definition
  (``ros2msg`` with its dependencies) and the publishers' offered QoS;
- message log time = the recorder's receive time in ns; payload = the CDR bytes as received;
- ``custom_data`` keys of ``CUSTOM_DATA_KEYS`` (all strings), ``apo.schema_version`` = ``"1"``.

While an episode is being written its directory also holds ``JOURNAL_NAME`` (episode info, topic
types and hashes, the writer's pid). It is removed when the bag is closed; a directory that still
has it (and no ``metadata.yaml``) was left by a killed recorder: ``recover_bag`` repairs it.
"""

from __future__ import annotations

import hashlib

# The contract's facts (topics and types, custom_data keys, outcomes, event codes, journal name) are
# stated once in apo_core.bag_contract; re-exported here under the names the recorder has always used.
from apo_core.bag_contract import (  # noqa: F401 (re-exported)
    CUSTOM_DATA_KEYS,
    END_EVENT_OUTCOME,
    EVENT_ABORT,
    EVENT_END,
    EVENT_FAILURE,
    EVENT_START,
    EVENT_SUCCESS,
    JOURNAL_NAME,
    KEY_EPISODE_ID,
    KEY_INSTRUCTION,
    KEY_OUTCOME,
    KEY_POLICY_VERSION,
    KEY_RECORDER_VERSION,
    KEY_RECOVERED,
    KEY_SCHEMA_VERSION,
    KEY_TASK,
    METADATA_VERSION,
    OUTCOME_ABORT,
    OUTCOME_FAILURE,
    OUTCOME_SUCCESS,
    OUTCOME_UNKNOWN,
    OUTCOMES,
    SCHEMA_VERSION,
    STORAGE_ID,
)
from apo_core.bag_contract import EPISODE_BAG_TOPICS as _EPISODE_BAG_TOPICS

# What the recorder records by default: topic -> ROS 2 type name (a copy: callers may extend it).
DEFAULT_TOPICS: dict[str, str] = dict(_EPISODE_BAG_TOPICS)


def bag_file_name(episode_id: str) -> str:
    """Name of the MCAP file inside the episode directory (rosbags names it after the directory)."""
    return f"{episode_id}.mcap"


MAX_DIR_NAME = 128  # apo_core.names.MAX_NAME_LENGTH: bag names must pass apo_core.names.check_name


def safe_episode_dir_name(episode_id: str) -> str:
    """The directory name used for ``episode_id``: a plain name that ``apo_core.names.check_name`` accepts.

    Episode ids are normally simple (``ep_0001``, a UUID, a timestamp); anything that could escape
    the output directory or confuse a shell is mapped to ``_`` and leading non-alphanumerics are
    dropped, so a bag can never land elsewhere. An id too long for a file name (a hostile or broken
    publisher) is cut and given a hash of the whole id, so distinct ids stay distinct directories.
    The true id is always in ``apo.episode_id``.
    """
    cleaned = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_." else "_" for ch in episode_id.strip())
    cleaned = cleaned.lstrip("-_.")
    if len(cleaned) > MAX_DIR_NAME:
        digest = hashlib.sha1(episode_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        cleaned = f"{cleaned[:MAX_DIR_NAME - 13]}-{digest}"
    return cleaned or "episode"


def default_custom_data(episode_id: str = "", instruction: str = "", task: str = "",
                        policy_version: str = "", outcome: str = OUTCOME_UNKNOWN,
                        recorder_version: str = "") -> dict[str, str]:
    """A complete custom_data mapping with every contract key present."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
    return {
        KEY_EPISODE_ID: episode_id,
        KEY_INSTRUCTION: instruction,
        KEY_TASK: task,
        KEY_OUTCOME: outcome,
        KEY_POLICY_VERSION: policy_version,
        KEY_SCHEMA_VERSION: SCHEMA_VERSION,
        KEY_RECORDER_VERSION: recorder_version,
    }
