"""The training-data schema: robomimic-style HDF5, one group per episode, plus action statistics.

Layout of a dataset file::

    data/                       attrs: apo_schema_version, total (steps)
      <episode name>/           attrs: episode_id, instruction, task, outcome, source,
                                       policy_version, num_samples, origin (bag path or "")
        obs/image               (T, H, W, 3) uint8, upright RGB
        obs/state               (T, S) float32 proprioception (S may be 0)
        actions                 (T, D) float64 raw executed actions
        policy_actions          (T, D) float64 policy proposals (NaN where none existed)
        live_labels             (T,) uint8, 1 autonomous / 2 human, as set by the arbiter
        labels                  (T,) uint8, live labels with the K-window applied (0 = undesirable)
        modes                   (T,) uint8, InterventionMode at each step
        step_index              (T,) int64
        timestamps              (T,) float64 seconds
    action_stats.json           next to the file (see normalization.ActionStats)

Both the simulator's expert demonstrations and converted interactive bags are written with
:func:`append_episode`, so the trainer sees one schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apo_core.errors import ApoError, MissingPathError
from apo_core.labels import DEFAULT_K, Label, apply_k_window
from apo_core.normalization import check_finite

SCHEMA_VERSION = 1
SOURCES = ("expert", "interactive")
OUTCOMES = ("success", "failure", "abort", "unknown")
# InterventionMode values (mirrors apo_interfaces/InterventionMode without importing ROS).
MODE_AUTONOMOUS, MODE_HUMAN, MODE_HOLD, MODE_ESTOP = 0, 1, 2, 3


class DatasetError(ApoError, ValueError):
    """A dataset file or episode does not follow the schema."""


@dataclass
class Episode:
    """One episode in memory, in schema form."""

    episode_id: str
    instruction: str
    images: np.ndarray  # (T, H, W, 3) uint8
    actions: np.ndarray  # (T, D)
    live_labels: np.ndarray  # (T,)
    states: np.ndarray | None = None  # (T, S)
    policy_actions: np.ndarray | None = None  # (T, D), NaN rows where absent
    modes: np.ndarray | None = None
    step_index: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    task: str = ""
    outcome: str = "unknown"
    source: str = "interactive"
    policy_version: str = ""
    origin: str = ""
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.images = np.asarray(self.images)
        t = len(self.images)
        if t == 0:
            raise DatasetError(f"episode {self.episode_id!r} has no steps")
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise DatasetError(f"episode {self.episode_id!r}: images must be (T, H, W, 3) uint8, got "
                               f"{self.images.shape} {self.images.dtype}")
        self.actions = check_finite(self.actions, f"episode {self.episode_id!r} actions")
        if self.actions.ndim != 2 or len(self.actions) != t:
            raise DatasetError(f"episode {self.episode_id!r}: actions shape {self.actions.shape} for {t} images")
        self.live_labels = np.asarray(self.live_labels, dtype=np.uint8)
        if self.live_labels.shape != (t,):
            raise DatasetError(f"episode {self.episode_id!r}: {self.live_labels.shape} labels for {t} steps")
        if np.any(~np.isin(self.live_labels, [Label.AUTONOMOUS, Label.HUMAN])):
            raise DatasetError(f"episode {self.episode_id!r}: live labels must be 1 or 2")
        if self.states is None:
            self.states = np.zeros((t, 0), dtype=np.float32)
        self.states = check_finite(self.states, f"episode {self.episode_id!r} states").astype(np.float32).reshape(t, -1)
        if self.policy_actions is None:
            self.policy_actions = np.full_like(self.actions, np.nan)
        self.policy_actions = np.asarray(self.policy_actions, dtype=np.float64).reshape(self.actions.shape)
        if self.modes is None:
            self.modes = np.where(self.live_labels == Label.HUMAN, MODE_HUMAN, MODE_AUTONOMOUS)
        self.modes = np.asarray(self.modes, dtype=np.uint8).reshape(t)
        self.step_index = np.arange(t) if self.step_index is None else np.asarray(self.step_index, np.int64)
        self.timestamps = np.zeros(t) if self.timestamps is None else np.asarray(self.timestamps, np.float64)
        if self.source not in SOURCES:
            raise DatasetError(f"episode {self.episode_id!r}: source {self.source!r} not in {SOURCES}")
        if self.outcome not in OUTCOMES:
            raise DatasetError(f"episode {self.episode_id!r}: outcome {self.outcome!r} not in {OUTCOMES}")

    def __len__(self) -> int:
        return len(self.actions)

    def labels(self, k: int = DEFAULT_K) -> np.ndarray:
        return apply_k_window(self.live_labels, k, modes=self.modes).astype(np.uint8)


def episode_group_name(index: int) -> str:
    return f"demo_{index}"


def _h5py():
    import h5py

    return h5py


def episode_ids(path) -> list[str]:
    """Episode ids already stored in a dataset file (empty if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        if "data" not in f:
            return []
        return [str(f["data"][name].attrs["episode_id"]) for name in sorted_episode_names(f)]


def sorted_episode_names(f) -> list[str]:
    names = list(f["data"].keys()) if "data" in f else []
    return sorted(names, key=lambda n: (len(n), n))


def append_episode(path, episode: Episode, k: int = DEFAULT_K, image_compression: str | None = None) -> str:
    """Add one episode to the dataset at ``path`` (created if needed); returns its group name.

    An episode whose id is already stored raises DatasetError (conversion skips those first).
    """
    h5py = _h5py()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "a") as f:
        data = f.require_group("data")
        data.attrs["apo_schema_version"] = SCHEMA_VERSION
        existing = {str(data[n].attrs.get("episode_id")) for n in data}
        if episode.episode_id in existing:
            raise DatasetError(f"episode {episode.episode_id!r} is already in {path}")
        dims = {tuple(data[n]["actions"].shape[1:]) for n in data}
        if dims and (episode.actions.shape[1],) not in dims:
            raise DatasetError(
                f"episode {episode.episode_id!r} has {episode.actions.shape[1]}-D actions but {path} holds "
                f"{sorted(dims)[0][0]}-D actions"
            )
        labels = episode.labels(k)  # validates labels and modes before anything is written
        name = episode_group_name(len(data))
        g = data.create_group(name)
        try:
            g.create_dataset("obs/image", data=episode.images, chunks=(1, *episode.images.shape[1:]),
                             compression=image_compression)
            g.create_dataset("obs/state", data=episode.states)
            g.create_dataset("actions", data=episode.actions)
            g.create_dataset("policy_actions", data=episode.policy_actions)
            g.create_dataset("live_labels", data=episode.live_labels)
            g.create_dataset("labels", data=labels)
            g.create_dataset("modes", data=episode.modes)
            g.create_dataset("step_index", data=episode.step_index)
            g.create_dataset("timestamps", data=episode.timestamps)
            for key in ("episode_id", "instruction", "task", "outcome", "source", "policy_version", "origin"):
                g.attrs[key] = getattr(episode, key)
            g.attrs["num_samples"] = len(episode)
            g.attrs["k_window"] = k
            for key, value in episode.attrs.items():
                g.attrs[key] = value
        except BaseException:
            del data[name]  # never leave a half-written group: later readers would fail on it
            raise
        data.attrs["total"] = int(data.attrs.get("total", 0)) + len(episode)
        f.flush()
    return name


def read_episode(path, name: str) -> Episode:
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"dataset not found: {path}")
    with h5py.File(path, "r") as f:
        if f"data/{name}" not in f:
            raise DatasetError(f"{path} has no episode group data/{name}")
        g = f["data"][name]
        a = dict(g.attrs)
        known = {"episode_id", "instruction", "task", "outcome", "source", "policy_version", "origin",
                 "num_samples", "k_window"}
        return Episode(
            episode_id=str(a["episode_id"]), instruction=str(a["instruction"]), images=g["obs/image"][()],
            actions=g["actions"][()], live_labels=g["live_labels"][()], states=g["obs/state"][()],
            policy_actions=g["policy_actions"][()], modes=g["modes"][()], step_index=g["step_index"][()],
            timestamps=g["timestamps"][()], task=str(a.get("task", "")), outcome=str(a.get("outcome", "unknown")),
            source=str(a.get("source", "interactive")), policy_version=str(a.get("policy_version", "")),
            origin=str(a.get("origin", "")), attrs={k: v for k, v in a.items() if k not in known},
        )
