"""The one interface every autoregressive VLA implements, and the action-token maths they share.

A policy maps (image, optional robot state, instruction) to a continuous action through the
OpenVLA recipe: the prompt is tokenised, image features are prefixed, the language model emits one
token per action dimension from the last ``n_bins`` vocabulary ids, and tokens are decoded to bin
centres and unnormalised with the policy's action statistics.

Training code needs two numbers per sample (docs/ARCHITECTURE.md, "Method in brief"): the summed log-probability of the target
action tokens and the L1 error of the greedy (teacher-forced) decoded action against the target.
:func:`action_token_metrics` computes both from logits and labels, for any policy.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from apo_core.action_tokenizer import ActionTokenizer
from apo_core.errors import ConfigError
from apo_core.normalization import ActionStats, check_finite

IGNORE_INDEX = -100
POLICY_META_FILENAME = "apo_policy.json"


@dataclass
class Observation:
    """What the policy sees at one control step."""

    image: np.ndarray  # H x W x 3 uint8, upright
    instruction: str
    state: np.ndarray | None = None


@dataclass
class ActionMetrics:
    """Per-sample outputs of a teacher-forced forward pass (all tensors of shape (B,))."""

    logps: torch.Tensor  # summed log-prob of the target action tokens (differentiable)
    l1: torch.Tensor  # mean |greedy decoded - target| over action dims, normalised space (no grad)
    token_accuracy: torch.Tensor  # share of action tokens whose argmax equals the target (no grad)
    pred_actions: torch.Tensor  # (B, D) greedy decoded normalised actions (no grad)
    # (B, D) log-prob of each action dimension's token (differentiable; ``logps`` is their sum), for a
    # policy with one token per dimension; None where tokens do not map to dimensions (FAST chunks).
    token_logps: torch.Tensor | None = None


def action_token_metrics(
    logits: torch.Tensor, labels: torch.Tensor, action_tokenizer: ActionTokenizer, action_dim: int
) -> ActionMetrics:
    """Summed action-token log-probs and greedy-decode L1 from causal-LM logits.

    ``labels`` has the target token ids at action positions and IGNORE_INDEX elsewhere; position t of
    ``logits`` predicts token t+1. Every sample must have exactly ``action_dim`` labelled tokens.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    counts = mask.sum(dim=1)
    if not torch.all(counts == action_dim):
        raise ValueError(f"each sample needs {action_dim} action labels, got {counts.tolist()}")
    safe_labels = shift_labels.clamp(min=0)
    logp_all = torch.log_softmax(shift_logits, dim=-1)
    token_logp = logp_all.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1) * mask
    logps = token_logp.sum(dim=1)
    per_dim = token_logp[mask].view(logits.shape[0], action_dim)  # labels run over the dimensions in order

    with torch.no_grad():
        first = action_tokenizer.first_action_token
        b = logits.shape[0]
        action_logits = shift_logits[mask].view(b, action_dim, -1)[..., first : action_tokenizer.vocab_size]
        pred_ids = action_logits.argmax(dim=-1) + first
        target_ids = shift_labels[mask].view(b, action_dim)
        centers = torch.as_tensor(action_tokenizer.bin_centers, dtype=torch.float32, device=logits.device)
        pred = centers[(action_tokenizer.vocab_size - pred_ids - 1).clamp(0, action_tokenizer.n_bins - 2)]
        target = centers[(action_tokenizer.vocab_size - target_ids - 1).clamp(0, action_tokenizer.n_bins - 2)]
        l1 = (pred - target).abs().mean(dim=1)
        acc = (pred_ids == target_ids).float().mean(dim=1)
    return ActionMetrics(logps=logps, l1=l1, token_accuracy=acc, pred_actions=pred, token_logps=per_dim)


class VLAPolicy(abc.ABC):
    """Interface of a deployable, trainable VLA policy."""

    action_stats: ActionStats
    action_tokenizer: ActionTokenizer
    action_dim: int
    version: str = ""
    # True for a policy that keeps per-episode state (a chunked policy's chunk): then ``predict`` takes
    # ``slot=`` (and ``predict_batch_exact`` ``slots=``), one independent episode per slot, and
    # ``reset(slot)`` must be called when the environment of that slot starts an episode.
    episode_state_per_slot: bool = False
    # The camera whose images the policy was trained on (a simulator camera name, or the camera attribute
    # of its training episodes), None when unknown. Saved in apo_policy.json; the evaluators and the policy
    # node refuse to show the policy another camera's images (check_camera).
    camera: str | None = None

    @property
    @abc.abstractmethod
    def model(self) -> torch.nn.Module:
        """The trainable torch module (what an optimiser, peft or DDP wraps)."""

    @abc.abstractmethod
    def predict(self, obs: Observation) -> np.ndarray:
        """Raw (unnormalised) action for one observation, shape (action_dim,)."""

    @abc.abstractmethod
    def encode_batch(self, images, instructions, states=None, actions=None) -> dict:
        """Model inputs for a batch; ``actions`` are raw actions (B, D) that become the labels."""

    @abc.abstractmethod
    def forward_batch(self, batch: dict, model: torch.nn.Module | None = None) -> ActionMetrics:
        """Teacher-forced pass over an encoded batch; ``model`` may be a DDP/peft wrapper of self.model."""

    @abc.abstractmethod
    def save(self, directory) -> Path:
        """Write the policy in Hugging Face layout (safetensors) with its action statistics."""

    def reset(self, slot: int | None = None) -> None:
        """Start of an episode (in ``slot``; None: in every slot): forget per-episode state. A no-op for
        policies that map each observation alone; a chunked policy (``ChunkedVLAPolicy``) drops the
        chunk it is executing."""
        return None

    def action_logprobs(self, images, instructions, actions, states=None) -> torch.Tensor:
        return self.forward_batch(self.encode_batch(images, instructions, states, actions)).logps

    def action_l1(self, images, instructions, actions, states=None) -> torch.Tensor:
        return self.forward_batch(self.encode_batch(images, instructions, states, actions)).l1

    def labels_from_actions(self, actions) -> np.ndarray:
        """Raw actions (B, D) -> action token ids (B, D) through normalisation and binning."""
        arr = check_finite(actions, "action")
        if arr.ndim != 2 or arr.shape[1] != self.action_dim:
            raise ValueError(f"actions must have shape (B, {self.action_dim}), got {arr.shape}")
        return self.action_tokenizer.encode(self.action_stats.normalise(arr))

    def decode_tokens(self, token_ids) -> np.ndarray:
        """Action token ids (D,) -> raw action."""
        return self.action_stats.unnormalise(self.action_tokenizer.decode(token_ids))

    def token_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> ActionMetrics:
        """:func:`action_token_metrics` with this policy's action tokenizer and dimension."""
        return action_token_metrics(logits, labels, self.action_tokenizer, self.action_dim)

    # --- the policy directory's apo_policy.json ------------------------------------------------
    def write_meta(self, directory: Path, kind: str, **extra) -> None:
        """Write ``apo_policy.json``: the ``kind`` :func:`apo_core.policy.factory.load_policy` dispatches on,
        the version, the action dimension and any kind-specific ``extra`` entries."""
        meta = {"kind": kind, "version": self.version, "action_dim": self.action_dim, **extra}
        if self.camera:
            meta["camera"] = self.camera
        (directory / POLICY_META_FILENAME).write_text(json.dumps(meta, indent=2))

    @staticmethod
    def saved_version(directory: Path, version: str | None = None) -> str:
        """``version`` if given, else the version the directory's ``apo_policy.json`` states ("" if none)."""
        meta_path = directory / POLICY_META_FILENAME
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return version if version is not None else meta.get("version", "")


def cameras_conflict(trained: str | None, camera: str | None) -> bool:
    """True when a policy trained on ``trained``'s images would be given ``camera``'s. Either side unknown
    (None or "") does not conflict: policies saved before the camera was recorded, foreign checkpoints,
    robots whose launch names no camera, episodes converted from bags."""
    return bool(trained and camera and trained != camera)


def check_camera(policy: VLAPolicy, camera: str | None, where: str) -> None:
    """Refuse to run ``policy`` on images of ``camera`` when it was trained on another camera's.

    Either side unknown passes (``cameras_conflict``). ``where`` says what renders ``camera``.
    """
    trained = getattr(policy, "camera", None)
    if cameras_conflict(trained, camera):
        raise ConfigError(f"policy {policy.version or type(policy).__name__} was trained on images of camera "
                          f"{trained!r}, but {where} shows it camera {camera!r}: a policy sees only the view it "
                          f"learned (deploy it with camera:={trained}, or retrain it on {camera!r})")
