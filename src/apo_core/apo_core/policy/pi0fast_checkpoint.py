"""Recognising π0-FAST checkpoint directories of LeRobot and openpi, so ``load_policy`` can say what it found.

APO-ROS does not run these checkpoints: their model is PaliGemma (a SigLIP vision tower and a Gemma
2B language model), their FAST action tokenizer and text tokenizer are named by Hugging Face Hub id in
the config rather than stored in the directory, and openpi's original weights are a JAX/orbax tree.
Running one faithfully would need that model, both tokenizers and the checkpoint's own prompt format
(``Task: ..., State: <256-bin state>;`` then ``Action: `` and FAST ids mapped to the top of the
PaliGemma vocabulary), none of which an APO-ROS install has offline. So the support is detection: a
directory in one of these layouts gets a :class:`UnsupportedCheckpointError` that names the layout,
what it holds and what is missing, instead of "holds no APO policy". The chunked policy APO-ROS does
train and run is :class:`apo_core.policy.chunked_vla.ChunkedVLAPolicy` (same FAST idea, a small trunk).

Layouts recognised (read from the projects' public code, nothing imported from them):

- **LeRobot** (``PreTrainedPolicy.save_pretrained``): ``config.json`` whose ``type`` is ``pi0_fast``
  (``pi0fast`` in older releases), ``model.safetensors``, and the processor pipelines
  ``policy_preprocessor.json`` / ``policy_postprocessor.json`` with their normaliser state files
  (``*.safetensors`` named in the pipelines' ``state_file`` entries).
- **openpi**: a training checkpoint with ``params/`` (orbax: ``_METADATA``, ``manifest.ocdbt``) and
  ``assets/<asset id>/norm_stats.json``; or its PyTorch conversion, ``model.safetensors`` with
  ``assets/``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from apo_core.errors import ConfigError

LEROBOT_TYPES = ("pi0_fast", "pi0fast")
LEROBOT_PROCESSORS = ("policy_preprocessor.json", "policy_postprocessor.json")


class UnsupportedCheckpointError(ConfigError):
    """A directory holds a known foreign policy checkpoint that APO-ROS recognises but cannot run."""


@dataclass
class Pi0FastCheckpoint:
    """What a π0-FAST checkpoint directory holds, as far as its files say."""

    directory: Path
    layout: str  # "lerobot" | "openpi" | "openpi-pytorch"
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # chunk size, tokenizer ids, ... from the config

    def describe(self) -> str:
        facts = ", ".join(f"{k} {v!r}" for k, v in self.details.items())
        # openpi does not record the model kind next to the weights: pi0 and pi0-FAST look alike.
        family = "π0-FAST" if self.layout == "lerobot" else "π0 / π0-FAST"
        text = f"{self.directory} is a {self.layout} {family} checkpoint"
        text += f" ({facts})" if facts else ""
        text += f"; present: {', '.join(self.present) or 'nothing usable'}"
        if self.missing:
            text += f"; missing: {', '.join(self.missing)}"
        return text

    def refusal(self) -> str:
        return (f"{self.describe()}. APO-ROS cannot run it: its model is PaliGemma (SigLIP + Gemma) and its "
                "text and FAST action tokenizers are Hugging Face Hub ids, not files in the directory, so no "
                "local loader exists here. Train an APO-ROS chunked VLA instead (apo-train with "
                "policy.architecture: chunked_vla, the same DCT+BPE action chunks).")


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _safetensors_parameters(path: Path) -> int | str:
    """Parameters stored in a safetensors file, from its header alone (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return int(sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()))
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        return f"unreadable ({type(exc).__name__})"


def _lerobot(directory: Path, config: dict) -> Pi0FastCheckpoint:
    ckpt = Pi0FastCheckpoint(directory, "lerobot")
    ckpt.details = {k: config[k] for k in ("type", "chunk_size", "n_action_steps", "max_action_tokens",
                                           "paligemma_variant", "action_tokenizer_name", "text_tokenizer_name")
                    if k in config}
    ckpt.present.append("config.json")
    for name in ("model.safetensors", *LEROBOT_PROCESSORS):
        (ckpt.present if (directory / name).is_file() else ckpt.missing).append(name)
    if (directory / "model.safetensors").is_file():
        ckpt.details["parameters"] = _safetensors_parameters(directory / "model.safetensors")
    for name in LEROBOT_PROCESSORS:
        pipeline = _read_json(directory / name) if (directory / name).is_file() else None
        steps = pipeline.get("steps", []) if pipeline else []
        for step in steps if isinstance(steps, list) else []:
            state = step.get("state_file") if isinstance(step, dict) else None
            if isinstance(state, str):
                (ckpt.present if (directory / state).is_file() else ckpt.missing).append(state)
    for key in ("action_tokenizer_name", "text_tokenizer_name"):
        ref = config.get(key)
        if isinstance(ref, str) and not (directory / ref).exists() and not Path(ref).is_dir():
            ckpt.missing.append(f"{key} {ref!r} (a Hub id, not a local directory)")
    return ckpt


def _openpi(directory: Path) -> Pi0FastCheckpoint | None:
    params, assets = directory / "params", directory / "assets"
    norm_stats = sorted(str(p.relative_to(directory)) for p in assets.glob("*/norm_stats.json")) if assets.is_dir() \
        else []
    if params.is_dir():
        ckpt = Pi0FastCheckpoint(directory, "openpi")
        ckpt.present.append("params/ (orbax)")
        for name in ("_METADATA", "manifest.ocdbt"):
            if not (params / name).is_file():
                ckpt.missing.append(f"params/{name}")
    elif (directory / "model.safetensors").is_file() and assets.is_dir():
        ckpt = Pi0FastCheckpoint(directory, "openpi-pytorch")
        ckpt.present.append("model.safetensors")
    else:
        return None
    if norm_stats:
        ckpt.present += norm_stats
    else:
        ckpt.missing.append("assets/<asset id>/norm_stats.json")
    return ckpt


def detect_pi0fast_checkpoint(directory) -> Pi0FastCheckpoint | None:
    """The π0-FAST layout ``directory`` is in, or None when it is in none of them."""
    directory = Path(directory)
    config = _read_json(directory / "config.json") if (directory / "config.json").is_file() else None
    if config is not None and str(config.get("type", "")).lower() in LEROBOT_TYPES:
        return _lerobot(directory, config)
    return _openpi(directory)
