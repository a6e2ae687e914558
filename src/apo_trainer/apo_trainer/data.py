"""Training steps read lazily from the APO HDF5 schema, with labels recomputed for a chosen K.

Each kept step has a *kind* (docs/ARCHITECTURE.md, "Method in brief"):

- ``expert``: a step of an expert demonstration (episode attribute ``source == "expert"``), always
  desirable, whatever its live label (no K-window: nobody took over from an expert);
- ``autonomous``: label 1 after the K-window, desirable;
- ``human``: label 2, a human correction, desirable;
- ``undesirable``: label 0, one of the K steps the policy executed before a takeover (HOLD / E-STOP
  steps are not counted in K; the step modes are read from the ``modes`` dataset).

The balanced sampler draws from three *groups*: ``desirable`` (expert + autonomous), ``human`` and
``undesirable``. Steps recorded while the arbiter was in HOLD or E-STOP mode are dropped: nobody
chose those actions (the robot was held still), so they are neither good nor bad examples.

Only per-episode metadata (labels, modes, shapes) is read at construction; images and actions are
read per item, through one h5py handle per process (h5py handles do not survive a fork).

Action chunks (``horizon=H``, for a chunked policy such as ``ChunkedVLAPolicy``): an item's
``action`` is the (H, D) chunk that starts at its step: the actions of that step and of the next
H - 1 steps of the same episode that are not HOLD / E-STOP (nobody chose those; the robot stood
still, so the next chosen action follows on), the last action repeated where the episode ends
first. The K-window labels apply to every step a chunk covers, and a chunk is only as good as its
worst step: it is ``undesirable`` when any step it covers is undesirable, otherwise it takes the
kind of its first step (so an autonomous chunk ending inside the K steps before a takeover is
undesirable: executing it would run those steps' actions). Expert chunks stay expert.

Each item also carries its *correction*: for an undesirable step, the action of the first human step
after it in the same episode (the command that took over from the policy; no human step lies between
a K-window step and its takeover), NaN for every other step. ``loss.undesirable_tokens: disagreeing``
pushes an undesirable action down only on the dimensions where it differs from that correction.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from apo_core.dataset import MODE_ESTOP, MODE_HOLD, sorted_episode_names
from apo_core.errors import ApoError, MissingPathError
from apo_core.labels import DEFAULT_K, Label, apply_k_window
from apo_core.normalization import STATS_FILENAME, ActionStats, check_finite
from apo_core.policy.base import cameras_conflict

log = logging.getLogger("apo_trainer.data")

KIND_NAMES = ("expert", "autonomous", "human", "undesirable")
EXPERT, AUTONOMOUS, HUMAN, UNDESIRABLE = range(4)
# Sampler groups by step kind. ``desirable`` draws expert and autonomous steps as one pool; naming
# ``expert`` and ``autonomous`` instead gives the policy's own steps a share of their own (so they can
# be down-weighted against the demonstrations). A set of shares must not name a kind twice.
GROUP_KINDS = {"desirable": (EXPERT, AUTONOMOUS), "expert": (EXPERT,), "autonomous": (AUTONOMOUS,),
               "human": (HUMAN,), "undesirable": (UNDESIRABLE,)}
DESIRABLE_KINDS = (EXPERT, AUTONOMOUS, HUMAN)
DROPPED_MODES = (MODE_HOLD, MODE_ESTOP)


class TrainingDataError(ApoError, ValueError):
    """The training data cannot be used as asked (empty, inconsistent, incompatible with the policy)."""


@dataclass
class _EpisodeRef:
    file: int
    name: str
    episode_id: str
    instruction: str
    source: str
    length: int


@dataclass
class DatasetSummary:
    files: list[str]
    episodes: int
    steps_total: int
    steps_kept: int
    dropped_hold_estop: int
    dropped_by_kind: int
    kinds: dict[str, int]
    action_dim: int
    state_dim: int
    image_shape: tuple[int, ...]
    k: int
    notes: list[str] = field(default_factory=list)
    horizon: int | None = None  # action chunk length (None: one action per item)

    def as_dict(self) -> dict:
        return {
            "files": self.files, "episodes": self.episodes, "steps_total": self.steps_total,
            "steps_kept": self.steps_kept, "dropped_hold_estop": self.dropped_hold_estop,
            "dropped_by_kind": self.dropped_by_kind, "kinds": self.kinds, "action_dim": self.action_dim,
            "state_dim": self.state_dim, "image_shape": list(self.image_shape), "k": self.k, "notes": self.notes,
            # Only when set, so the reference-cache fingerprint of per-step data stays as it was.
            **({"horizon": self.horizon} if self.horizon is not None else {}),
        }


def kinds_from_labels(live_labels, source: str, k: int, modes=None) -> np.ndarray:
    """Per-step kind codes for one episode (see the module docstring).

    With ``modes`` the K-window counts only the policy's own steps (HOLD / E-STOP steps are skipped,
    :func:`apo_core.labels.apply_k_window`); those steps come out AUTONOMOUS here and are dropped by
    the caller.
    """
    live = np.asarray(live_labels)
    if source == "expert":
        return np.full(live.shape, EXPERT, dtype=np.int8)
    labels = apply_k_window(live, k, modes=modes)
    kinds = np.empty(labels.shape, dtype=np.int8)
    kinds[labels == Label.AUTONOMOUS] = AUTONOMOUS
    kinds[labels == Label.HUMAN] = HUMAN
    kinds[labels == Label.UNDESIRABLE] = UNDESIRABLE
    return kinds


def next_human_steps(kinds) -> np.ndarray:
    """Raw index of the first HUMAN step after each step of one episode (-1 where none follows)."""
    kinds = np.asarray(kinds)
    human = np.flatnonzero(kinds == HUMAN)
    if human.size == 0:
        return np.full(kinds.shape, -1, dtype=np.int32)
    after = np.searchsorted(human, np.arange(len(kinds)), side="right")
    return np.where(after < human.size, human[np.minimum(after, human.size - 1)], -1).astype(np.int32)


def chunk_steps(keep_mode, horizon: int) -> np.ndarray:
    """(T, H) raw step indices of the chunk starting at each step of one episode (module docstring):
    the next ``horizon`` steps with ``keep_mode`` true from that step on, the last one repeated at the
    end. Rows of steps that are themselves dropped are filled the same way and never used."""
    keep_mode = np.asarray(keep_mode, dtype=bool)
    kept = np.flatnonzero(keep_mode)
    if kept.size == 0:
        return np.zeros((len(keep_mode), horizon), dtype=np.int32)
    first = np.searchsorted(kept, np.arange(len(keep_mode)))
    idx = np.minimum(first[:, None] + np.arange(horizon)[None, :], kept.size - 1)
    return kept[idx].astype(np.int32)


def chunk_kinds(kinds, steps: np.ndarray) -> np.ndarray:
    """Kind of each step's chunk: UNDESIRABLE when any step it covers is, else its first step's kind."""
    kinds = np.asarray(kinds)
    covers_bad = np.any(kinds[steps] == UNDESIRABLE, axis=1)
    return np.where(covers_bad & (kinds != EXPERT), UNDESIRABLE, kinds).astype(np.int8)


def _parse_kinds(kinds) -> tuple[int, ...]:
    if kinds is None:
        return tuple(range(len(KIND_NAMES)))
    out = []
    for name in kinds:
        if name not in KIND_NAMES:
            raise TrainingDataError(f"unknown step kind {name!r}; valid kinds: {', '.join(KIND_NAMES)}")
        out.append(KIND_NAMES.index(name))
    if not out:
        raise TrainingDataError("the list of step kinds to train on is empty")
    return tuple(sorted(set(out)))


def shares_problem(shares) -> str | None:
    """Why a set of sampler shares cannot be used with the step kinds' groups (None when it can)."""
    unknown = sorted(set(shares) - set(GROUP_KINDS))
    if unknown:
        return f"unknown group(s) {unknown}; groups: {', '.join(GROUP_KINDS)}"
    seen: dict[int, str] = {}
    for group in shares:
        for kind in GROUP_KINDS[group]:
            if kind in seen:
                return (f"groups {seen[kind]!r} and {group!r} both draw {KIND_NAMES[kind]} steps; name "
                        "'desirable' or 'expert' + 'autonomous', not both")
            seen[kind] = group
    return None


def kinds_without_group(shares) -> list[str]:
    """Step kinds that no group of ``shares`` draws (kept by the data filter, never sampled)."""
    drawn = {kind for group in shares if group in GROUP_KINDS for kind in GROUP_KINDS[group]}
    return [name for i, name in enumerate(KIND_NAMES) if i not in drawn]


class StepDataset(torch.utils.data.Dataset):
    """One item per kept step of one or more HDF5 dataset files."""

    def __init__(self, paths, k: int = DEFAULT_K, kinds=None, horizon: int | None = None):
        import h5py

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise TrainingDataError("no dataset file given (data.paths is empty)")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise TrainingDataError(f"K-window must be a non-negative integer, got {k!r}")
        self.k = k
        if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1):
            raise TrainingDataError(f"action chunk horizon must be a positive integer (or None), got {horizon!r}")
        self.horizon = horizon
        self.keep_kinds = _parse_kinds(kinds)
        self._episodes: list[_EpisodeRef] = []
        ep_idx, steps, kinds_all, chunks_all, next_human_all = [], [], [], [], []
        action_dim = state_dim = None
        image_shape = None
        first_where = ""
        cameras: dict[str, str] = {}  # camera attribute of an episode -> the first episode that has it
        steps_total = dropped_mode = dropped_kind = 0
        for fi, path in enumerate(self.paths):
            if not path.is_file():
                raise MissingPathError(f"dataset file not found: {path}")
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                raise TrainingDataError(f"{path} is not a readable HDF5 file: {exc}") from exc
            with f:
                names = sorted_episode_names(f)
                if not names:
                    raise TrainingDataError(f"{path} holds no episodes (no groups under data/)")
                for name in names:
                    g = f["data"][name]
                    where = f"{path}:data/{name}"
                    for needed in ("actions", "live_labels", "obs/image"):
                        if needed not in g:
                            raise TrainingDataError(f"{where} lacks the dataset {needed!r} of the APO schema")
                    a_shape = g["actions"].shape
                    if len(a_shape) != 2:
                        raise TrainingDataError(f"{where}/actions must be (T, D), got shape {a_shape}")
                    s_dim = int(g["obs/state"].shape[1]) if "obs/state" in g and g["obs/state"].ndim == 2 else 0
                    i_shape = tuple(g["obs/image"].shape[1:])
                    if action_dim is None:
                        action_dim, state_dim, image_shape, first_where = a_shape[1], s_dim, i_shape, where
                    if a_shape[1] != action_dim:
                        raise TrainingDataError(
                            f"mismatched action dimensions: {where} has {a_shape[1]}-D actions, "
                            f"{first_where} has {action_dim}-D actions")
                    if s_dim != state_dim:
                        raise TrainingDataError(
                            f"mismatched state dimensions: {where} has {s_dim}-D states, {first_where} has {state_dim}")
                    if i_shape != image_shape:
                        raise TrainingDataError(
                            f"mismatched image shapes: {where} has {i_shape} images, {first_where} has {image_shape}")
                    live = g["live_labels"][()]
                    t = len(live)
                    if a_shape[0] != t or g["obs/image"].shape[0] != t:
                        raise TrainingDataError(f"{where}: {t} labels but {a_shape[0]} actions and "
                                                f"{g['obs/image'].shape[0]} images")
                    stored_modes = g["modes"][()] if "modes" in g else None
                    modes = stored_modes if stored_modes is not None else np.zeros(t, np.uint8)
                    attrs = g.attrs
                    if attrs.get("camera"):  # demos name their camera; converted bags do not (yet)
                        cameras.setdefault(str(attrs["camera"]), where)
                    source = str(attrs.get("source", "interactive"))
                    try:
                        kinds_ep = kinds_from_labels(live, source, k, modes=stored_modes)
                    except ValueError as exc:
                        raise TrainingDataError(f"{where}: {exc}") from exc
                    keep_mode = ~np.isin(modes, DROPPED_MODES)
                    next_human = next_human_steps(kinds_ep)  # of the steps' own kinds, before chunking
                    if horizon is not None:
                        ep_chunks = chunk_steps(keep_mode, horizon)
                        kinds_ep = chunk_kinds(kinds_ep, ep_chunks)
                    keep_kind = np.isin(kinds_ep, self.keep_kinds)
                    keep = keep_mode & keep_kind
                    steps_total += t
                    dropped_mode += int((~keep_mode).sum())
                    dropped_kind += int((keep_mode & ~keep_kind).sum())
                    instruction = str(attrs.get("instruction", ""))
                    if keep.any() and not instruction.strip():
                        raise TrainingDataError(f"{where} has no task instruction (attribute 'instruction')")
                    e = len(self._episodes)
                    self._episodes.append(_EpisodeRef(fi, name, str(attrs.get("episode_id", name)), instruction,
                                                      source, t))
                    idx = np.flatnonzero(keep)
                    ep_idx.append(np.full(idx.shape, e, dtype=np.int32))
                    steps.append(idx.astype(np.int32))
                    kinds_all.append(kinds_ep[idx])
                    next_human_all.append(np.where(kinds_ep[idx] == UNDESIRABLE, next_human[idx], -1))
                    if horizon is not None:
                        chunks_all.append(ep_chunks[idx])
        self._ep_idx = np.concatenate(ep_idx)
        self._step = np.concatenate(steps)
        self.kinds = np.concatenate(kinds_all).astype(np.int8)
        self._correction_step = np.concatenate(next_human_all).astype(np.int32)
        self._chunk_steps = np.concatenate(chunks_all) if horizon is not None else None
        if len(cameras) > 1:  # one image input: two views in one training run teach the policy neither
            raise TrainingDataError("the training episodes come from different cameras: " + ", ".join(
                f"{c!r} ({w})" for c, w in cameras.items()) + "; train on one camera's episodes")
        # The camera the episodes name (None: none names one), recorded in the trained policy.
        self.camera: str | None = next(iter(cameras), None)
        self.action_dim = int(action_dim)
        self.state_dim = int(state_dim)
        self.image_shape = image_shape
        counts = {name: int((self.kinds == i).sum()) for i, name in enumerate(KIND_NAMES)}
        self.summary = DatasetSummary(
            files=[str(p) for p in self.paths], episodes=len(self._episodes), steps_total=steps_total,
            steps_kept=len(self.kinds), dropped_hold_estop=dropped_mode, dropped_by_kind=dropped_kind,
            kinds=counts, action_dim=self.action_dim, state_dim=self.state_dim, image_shape=image_shape, k=k,
            horizon=horizon,
        )
        if len(self.kinds) == 0:
            wanted = ", ".join(KIND_NAMES[i] for i in self.keep_kinds)
            raise TrainingDataError(
                f"no training steps in {', '.join(map(str, self.paths))}: {steps_total} steps in "
                f"{len(self._episodes)} episodes, {dropped_mode} dropped as HOLD/E-STOP, {dropped_kind} not of the "
                f"kinds trained on ({wanted}); kinds before filtering by kind are counted in the dataset summary")
        self._handles: dict = {}

    # --- indexing -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.kinds)

    def group_indices(self) -> dict[str, np.ndarray]:
        """Item indices of each sampler group."""
        return {g: np.flatnonzero(np.isin(self.kinds, ks)) for g, ks in GROUP_KINDS.items()}

    def desirable_mask(self) -> np.ndarray:
        return np.isin(self.kinds, DESIRABLE_KINDS)

    def episode_of(self, i: int) -> tuple[str, int]:
        e = self._episodes[int(self._ep_idx[i])]
        return e.episode_id, int(self._step[i])

    def _file(self, fi: int):
        import h5py

        key = (os.getpid(), fi)
        h = self._handles.get(key)
        if h is None:
            h = h5py.File(self.paths[fi], "r")
            self._handles[key] = h
        return h

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def close(self):
        for h in self._handles.values():
            try:
                h.close()
            except Exception:
                pass
        self._handles = {}

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"step index {i} out of range [0, {len(self)})")
        e = self._episodes[int(self._ep_idx[i])]
        t = int(self._step[i])
        g = self._file(e.file)["data"][e.name]
        where = f"{self.paths[e.file]}:data/{e.name} step {t}"
        if self._chunk_steps is None:
            action = check_finite(g["actions"][t], f"action at {where}")
        else:
            rows = self._chunk_steps[i]
            # One contiguous read (h5py fancy indexing needs increasing unique indices; rows repeat at the end).
            action = check_finite(g["actions"][int(rows[0]): int(rows[-1]) + 1][rows - rows[0]],
                                  f"action chunk at {where}")
        state = g["obs/state"][t].astype(np.float32) if self.state_dim else np.zeros(0, np.float32)
        policy_action = g["policy_actions"][t].astype(np.float64) if "policy_actions" in g else \
            np.full(self.action_dim, np.nan)
        kind = int(self.kinds[i])
        j = int(self._correction_step[i])
        correction = check_finite(g["actions"][j], f"correction at {where}").astype(np.float64) if j >= 0 else \
            np.full(self.action_dim, np.nan)
        return {
            "index": i,
            "image": np.asarray(g["obs/image"][t], dtype=np.uint8),
            "state": state,
            "action": action,
            "policy_action": policy_action,
            "correction": correction,
            "instruction": e.instruction,
            "kind": kind,
            "desirable": kind in DESIRABLE_KINDS,
        }

    def all_actions(self) -> np.ndarray:
        """Raw actions of every kept step, (N, D) (for statistics and checks)."""
        return self._gather(self._step[:, None])[:, 0]

    def all_chunks(self) -> np.ndarray:
        """Raw action chunks of every item, (N, H, D) (the corpus a FAST tokenizer is fitted on)."""
        if self._chunk_steps is None:
            raise TrainingDataError("this dataset reads one action per step: build it with horizon=H for chunks")
        return self._gather(self._chunk_steps)

    def _gather(self, step_rows: np.ndarray) -> np.ndarray:
        """Actions at raw step indices ``step_rows`` (N, W) of each item's episode, (N, W, D)."""
        import h5py

        out = np.empty((len(self), step_rows.shape[1], self.action_dim), dtype=np.float64)
        by_ep: dict[int, np.ndarray] = {}
        for e in np.unique(self._ep_idx):
            by_ep[int(e)] = np.flatnonzero(self._ep_idx == e)
        files: dict[int, h5py.File] = {}
        try:
            for e, rows in by_ep.items():
                ref = self._episodes[e]
                f = files.get(ref.file) or files.setdefault(ref.file, h5py.File(self.paths[ref.file], "r"))
                acts = f["data"][ref.name]["actions"][()]
                out[rows] = acts[step_rows[rows]]
        finally:
            for f in files.values():
                f.close()
        return check_finite(out, "dataset actions")


def collate_steps(items: list[dict]) -> dict:
    """Items -> batch of numpy arrays (images stay uint8; the policy encodes them)."""
    return {
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "images": np.stack([it["image"] for it in items]),
        "states": np.stack([it["state"] for it in items]),
        "actions": np.stack([it["action"] for it in items]),
        "policy_actions": np.stack([it["policy_action"] for it in items]),
        "corrections": np.stack([it["correction"] for it in items]),
        "instructions": [it["instruction"] for it in items],
        "kinds": torch.tensor([it["kind"] for it in items], dtype=torch.long),
        "desirable": torch.tensor([it["desirable"] for it in items], dtype=torch.bool),
    }


def dataset_action_stats(paths, dataset: StepDataset | None = None) -> tuple[ActionStats, str]:
    """The action statistics stored next to the first dataset file, or computed from its actions.

    Returns (stats, where they came from). Raises TrainingDataError for zero-range dimensions.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    first = Path(paths[0])
    stats_path = first.parent / STATS_FILENAME
    if stats_path.is_file():
        stats, origin = ActionStats.load(stats_path), str(stats_path)
    else:
        if dataset is None:
            dataset = StepDataset(paths)
        stats = ActionStats.from_actions(dataset.all_actions())
        origin = f"computed from the {len(dataset)} training steps ({stats_path} does not exist)"
        log.warning("no %s next to %s: action statistics %s", STATS_FILENAME, first, origin)
    check_stats(stats, origin)
    return stats, origin


def check_stats(stats: ActionStats, origin: str) -> None:
    dims = stats.zero_range_dims()
    if dims:
        raise TrainingDataError(
            f"action statistics from {origin} have zero range (q99 == q01) in normalised dimension(s) {dims}: "
            "the actions never vary there, so normalising them would divide by zero; unmask those dimensions "
            "in action_stats.json (mask: false) or record more varied data")


def check_policy_compatible(dataset: StepDataset, policy) -> None:
    """Refuse data the policy would misread (wrong action or state size, unusable statistics)."""
    if dataset.action_dim != policy.action_dim:
        raise TrainingDataError(
            f"mismatched action dimensions: the dataset ({', '.join(map(str, dataset.paths))}) has "
            f"{dataset.action_dim}-D actions, the policy expects {policy.action_dim}-D actions")
    state_dim = _policy_state_dim(policy)
    if state_dim is not None and state_dim != dataset.state_dim:
        raise TrainingDataError(
            f"mismatched state dimensions: the dataset has {dataset.state_dim}-D robot states, the policy "
            f"expects {state_dim}-D states")
    horizon = getattr(policy, "chunk_horizon", None)
    if horizon != dataset.horizon:
        raise TrainingDataError(
            f"the policy predicts {'chunks of ' + str(horizon) + ' actions' if horizon else 'one action per step'} "
            f"but the data was read {'in chunks of ' + str(dataset.horizon) if dataset.horizon else 'step by step'}")
    check_stats(policy.action_stats, "the policy")
    # The same test as the deployment check, with the advice a training job needs.
    trained = getattr(policy, "camera", None)
    if cameras_conflict(trained, dataset.camera):
        raise TrainingDataError(f"the policy was trained on camera {trained!r} images, the dataset's episodes come "
                                f"from camera {dataset.camera!r}: retrain from a policy of that camera, or from scratch")


def _policy_state_dim(policy) -> int | None:
    cfg = getattr(policy, "config", None)
    return int(cfg.state_dim) if cfg is not None and hasattr(cfg, "state_dim") else None
