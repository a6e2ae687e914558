"""One APO episode as LeRobot frame columns, and the feature table those columns follow.

Every column is NaN- and null-free: a step without a policy proposal (expert steps, takeovers the
policy did not answer) gets ``apo.has_policy_action = False`` and zeros in ``apo.policy_action``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apo_core.dataset import Episode, read_episode, sorted_episode_names
from apo_core.labels import DEFAULT_K, Label, apply_k_window

ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
# LeRobot's HIL-SERL recording stores the teleop flag as complementary_info.<key> with key
# "is_intervention" (lerobot src/lerobot/rl/actor.py puts TeleopEvents.IS_INTERVENTION.value into
# complementary_info; src/lerobot/rl/buffer.py to_lerobot_dataset writes "complementary_info.{key}").
INTERVENTION_KEY = "complementary_info.is_intervention"


def image_key(camera: str) -> str:
    return f"observation.images.{camera}"


def _scalar(dtype: str) -> dict:
    return {"dtype": dtype, "shape": [1], "names": None}


def feature_spec(image_shape, state_dim: int, action_dim: int, camera: str) -> dict[str, dict]:
    """The ``features`` table of info.json (without the per-feature fps v3.0 adds)."""
    action_names = ACTION_NAMES if action_dim == len(ACTION_NAMES) else None
    features = {image_key(camera): {"dtype": "image", "shape": [int(s) for s in image_shape],
                                    "names": ["height", "width", "channel"]}}
    if state_dim:  # LeRobot has no use for a 0-wide state vector: leave the feature out
        features["observation.state"] = {"dtype": "float32", "shape": [state_dim], "names": None}
    features.update({
        "action": {"dtype": "float32", "shape": [action_dim], "names": action_names},
        "apo.label": _scalar("int64"),
        "apo.live_label": _scalar("int64"),
        "apo.mode": _scalar("int64"),
        "apo.policy_action": {"dtype": "float32", "shape": [action_dim], "names": action_names},
        "apo.has_policy_action": _scalar("bool"),
        INTERVENTION_KEY: _scalar("bool"),
        "next.done": _scalar("bool"),
        "timestamp": _scalar("float32"),
        "frame_index": _scalar("int64"),
        "episode_index": _scalar("int64"),
        "index": _scalar("int64"),
        "task_index": _scalar("int64"),
    })
    return features


@dataclass
class SourceEpisode:
    """An HDF5 episode with the desirability labels to export."""

    name: str
    episode: Episode
    labels: np.ndarray  # (T,) K-window labels 0 / 1 / 2
    k_window: int

    def features(self, camera: str) -> dict[str, dict]:
        ep = self.episode
        return feature_spec(ep.images.shape[1:], ep.states.shape[1], ep.actions.shape[1], camera)


def list_source_episodes(path: Path) -> list[tuple[str, str]]:
    """(group name, episode id) of every episode of the HDF5 file, in dataset order."""
    import h5py

    with h5py.File(path, "r") as f:
        return [(n, str(f["data"][n].attrs["episode_id"])) for n in sorted_episode_names(f)]


def read_source_episode(path: Path, name: str, k: int | None) -> SourceEpisode:
    """The episode and its labels: as stored by the converter when ``k`` is None, else re-derived with K=k."""
    import h5py

    ep = read_episode(path, name)
    if k is not None:
        return SourceEpisode(name, ep, ep.labels(k), int(k))
    with h5py.File(path, "r") as f:
        g = f["data"][name]
        labels = np.asarray(g["labels"][()], dtype=np.int64)
        stored_k = int(g.attrs.get("k_window", -1))
    if stored_k < 0:  # written before k_window was stored: derive with the default K
        return SourceEpisode(name, ep, apply_k_window(ep.live_labels, DEFAULT_K, modes=ep.modes), DEFAULT_K)
    return SourceEpisode(name, ep, labels, stored_k)


def png_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # cv2 expects BGR
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def episode_columns(src: SourceEpisode, camera: str, fps: int, episode_index: int, first_index: int,
                    task_index: int) -> dict[str, object]:
    """Column name -> per-frame values (numpy arrays; PNG bytes for the image) for one episode.

    ``timestamp`` is frame_index / fps: LeRobot checks that frames sit on that grid, so the recorded
    wall-clock times (which jitter) are not exported.
    """
    ep = src.episode
    t = len(ep)
    has_policy = np.isfinite(ep.policy_actions).all(axis=1)
    policy = np.where(has_policy[:, None], ep.policy_actions, 0.0).astype(np.float32)
    columns: dict[str, object] = {image_key(camera): [png_bytes(img) for img in ep.images]}
    if ep.states.shape[1]:
        columns["observation.state"] = ep.states.astype(np.float32)
    columns.update({
        "action": ep.actions.astype(np.float32),
        "apo.label": np.asarray(src.labels, dtype=np.int64),
        "apo.live_label": ep.live_labels.astype(np.int64),
        "apo.mode": ep.modes.astype(np.int64),
        "apo.policy_action": policy,
        "apo.has_policy_action": has_policy,
        INTERVENTION_KEY: ep.live_labels == Label.HUMAN,
        "next.done": np.arange(t) == t - 1,
        "timestamp": (np.arange(t) / fps).astype(np.float32),
        "frame_index": np.arange(t, dtype=np.int64),
        "episode_index": np.full(t, episode_index, dtype=np.int64),
        "index": np.arange(first_index, first_index + t, dtype=np.int64),
        "task_index": np.full(t, task_index, dtype=np.int64),
    })
    for key, value in columns.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"episode {ep.episode_id!r}: column {key} holds NaN/inf")
    return columns
