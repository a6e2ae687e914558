"""Recognising π0-FAST checkpoint directories of LeRobot and openpi, and saying whether APO-ROS can run one.

A **LeRobot** ``pi0_fast`` checkpoint runs through ``load_policy`` (:mod:`apo_core.policy.pi0fast_lerobot`:
transformers' PaliGemma, LeRobot's prompt, FAST decoding and normalisers) when everything it needs is
local. Its model is PaliGemma (SigLIP + Gemma); its config names two tokenizers by Hugging Face Hub id
(``text_tokenizer_name``, the PaliGemma tokenizer; ``action_tokenizer_name``, the FAST processor), and
APO-ROS never downloads them. Each is looked for, first found wins (:func:`resolve_tokenizers`):

1. an explicit local directory: ``load_policy(..., text_tokenizer=DIR, action_tokenizer=DIR)``;
2. the APO-ROS side file ``apo_pi0fast.json`` next to the checkpoint
   (``{"text_tokenizer": DIR, "action_tokenizer": DIR}``, relative paths from the checkpoint);
3. the directory the processor pipeline saved next to the weights (newer LeRobot releases save
   ``tokenizer/`` and ``action_tokenizer/`` and name them in ``policy_preprocessor.json``);
4. the config's name itself when it is a local directory (absolute, or relative to the checkpoint);
5. the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME``/hub, else ~/.cache/huggingface/hub): the
   snapshot ``refs/main`` points at, exactly as transformers finds it with ``HF_HUB_OFFLINE=1``.

A text tokenizer directory needs ``tokenizer.json``; a FAST processor directory ``processor_config.json``
and ``tokenizer.json`` (its Python file, if any, is never run). A directory in one of the layouts that
cannot run gets a :class:`UnsupportedCheckpointError` that names the layout, what it holds and what is
missing or unsupported, instead of "holds no APO policy". openpi checkpoints (a JAX/orbax tree, or its
PyTorch conversion with ``assets/`` norm stats) are recognised and always refused.

Layouts recognised (read from the projects' public code, nothing imported from them):

- **LeRobot** (``PreTrainedPolicy.save_pretrained``): ``config.json`` whose ``type`` is ``pi0_fast``
  (``pi0fast`` in releases before 0.4, recognised but not run), ``model.safetensors``, and the
  processor pipelines ``policy_preprocessor.json`` / ``policy_postprocessor.json`` with their normaliser
  state files (``*.safetensors`` named in the pipelines' ``state_file`` entries).
- **openpi**: a training checkpoint with ``params/`` (orbax: ``_METADATA``, ``manifest.ocdbt``) and
  ``assets/<asset id>/norm_stats.json``; or its PyTorch conversion, ``model.safetensors`` with
  ``assets/``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from apo_core.errors import ConfigError

LEROBOT_TYPES = ("pi0_fast", "pi0fast")
LEROBOT_PROCESSORS = ("policy_preprocessor.json", "policy_postprocessor.json")
SIDE_FILE = "apo_pi0fast.json"  # APO-ROS's optional side file next to a LeRobot checkpoint
SIDE_KEYS = ("text_tokenizer", "action_tokenizer", "paligemma_config")
LEROBOT_VARIANTS = ("gemma_300m", "gemma_2b")
# (config.json key, side-file / load_policy key, pipeline step registry name, that step's config key)
TOKENIZERS = (("action_tokenizer_name", "action_tokenizer", "action_tokenizer_processor", "action_tokenizer_name"),
              ("text_tokenizer_name", "text_tokenizer", "tokenizer_processor", "tokenizer_name"))


class UnsupportedCheckpointError(ConfigError):
    """A directory holds a known foreign policy checkpoint that APO-ROS recognises but cannot run."""


@dataclass
class Pi0FastCheckpoint:
    """What a π0-FAST checkpoint directory holds, as far as its files say."""

    directory: Path
    layout: str  # "lerobot" | "openpi" | "openpi-pytorch"
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # settings APO-ROS does not run
    details: dict = field(default_factory=dict)  # chunk size, tokenizer ids, ... from the config
    config: dict = field(default_factory=dict)  # the LeRobot config.json
    tokenizers: dict = field(default_factory=dict)  # "text_tokenizer" / "action_tokenizer" -> local Path
    side: dict = field(default_factory=dict)  # the apo_pi0fast.json side file (empty if none)

    @property
    def runnable(self) -> bool:
        """A LeRobot checkpoint whose every part is local and supported (``load_policy`` runs it)."""
        return self.layout == "lerobot" and not self.missing and not self.unsupported

    def describe(self) -> str:
        facts = ", ".join(f"{k} {v!r}" for k, v in self.details.items())
        # openpi does not record the model kind next to the weights: pi0 and pi0-FAST look alike.
        family = "π0-FAST" if self.layout == "lerobot" else "π0 / π0-FAST"
        text = f"{self.directory} is a {self.layout} {family} checkpoint"
        text += f" ({facts})" if facts else ""
        text += f"; present: {', '.join(self.present) or 'nothing usable'}"
        if self.missing:
            text += f"; missing: {', '.join(self.missing)}"
        if self.unsupported:
            text += f"; not supported: {', '.join(self.unsupported)}"
        return text

    def refusal(self) -> str:
        if self.layout == "lerobot":
            how = ("APO-ROS runs a LeRobot pi0_fast checkpoint (its model is PaliGemma: SigLIP + Gemma) only when "
                   "everything is local and supported: the PaliGemma text tokenizer and the FAST action processor "
                   "are Hugging Face Hub ids in its config and are never downloaded; give local directories with "
                   f"load_policy(..., text_tokenizer=DIR, action_tokenizer=DIR), in {SIDE_FILE} next to the "
                   "checkpoint, or have them in the Hugging Face cache")
        else:
            how = ("APO-ROS cannot run it: its model is PaliGemma (SigLIP + Gemma), openpi's weights and norm "
                   "stats have no loader here and its text and FAST action tokenizers are Hugging Face Hub ids")
        return (f"{self.describe()}. {how}. Or train an APO-ROS chunked VLA instead (apo-train with "
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


def hf_cache_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of Hub model ``repo_id`` in the Hugging Face cache, or None; never downloads.

    The cache is ``HF_HUB_CACHE`` (or the older ``HUGGINGFACE_HUB_CACHE``), else ``HF_HOME``/hub, else
    ~/.cache/huggingface/hub, read at call time; the snapshot is the one ``refs/main`` names (the one
    transformers uses offline), else the only snapshot there is."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or repo_id.startswith(("/", ".")):
        return None
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        cache = os.path.join(os.environ.get("HF_HOME") or os.path.join("~", ".cache", "huggingface"), "hub")
    repo_dir = Path(cache).expanduser() / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    try:
        if ref.is_file():
            snapshot = repo_dir / "snapshots" / ref.read_text().strip()
            return snapshot if snapshot.is_dir() else None
        snapshots = [p for p in (repo_dir / "snapshots").iterdir() if p.is_dir()] \
            if (repo_dir / "snapshots").is_dir() else []
    except OSError:
        return None
    return snapshots[0] if len(snapshots) == 1 else None


def _pipeline_steps(directory: Path, name: str) -> list[dict]:
    pipeline = _read_json(directory / name) if (directory / name).is_file() else None
    steps = pipeline.get("steps", []) if pipeline else []
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def pipeline_step_config(directory: Path, pipeline: str, registry_name: str) -> tuple[dict, str | None]:
    """The ``config`` and ``state_file`` of the first step of ``pipeline`` registered as ``registry_name``."""
    for step in _pipeline_steps(directory, pipeline):
        if step.get("registry_name") == registry_name:
            cfg = step.get("config")
            state = step.get("state_file")
            return (cfg if isinstance(cfg, dict) else {}), (state if isinstance(state, str) else None)
    return {}, None


def _tokenizer_files(key: str, path: Path) -> list[str]:
    from apo_core.policy.pi0fast_fast_processor import missing_files

    if key == "action_tokenizer":
        return missing_files(path)
    return [] if (path / "tokenizer.json").is_file() else ["tokenizer.json"]


def resolve_tokenizers(directory: Path, config: dict, side: dict, explicit: dict) -> tuple[dict, list[str]]:
    """Local directories of the two tokenizers (module docstring, in order) and what is missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for cfg_key, key, registry, step_key in TOKENIZERS:
        ref = config.get(cfg_key)
        candidates: list[tuple[str, Path]] = []
        if explicit.get(key) is not None:
            candidates.append((f"{key}={str(explicit[key])!r}", Path(explicit[key]).expanduser()))
        elif isinstance(side.get(key), str):
            candidates.append((f"{SIDE_FILE} {key} {side[key]!r}", directory / Path(side[key]).expanduser()))
        else:
            step_cfg, _ = pipeline_step_config(directory, "policy_preprocessor.json", registry)
            saved = step_cfg.get(step_key)
            if isinstance(saved, str) and saved != ref and (directory / saved).is_dir():
                candidates.append((f"policy_preprocessor.json {step_key} {saved!r}", directory / saved))
            if isinstance(ref, str) and ((directory / ref).is_dir() or Path(ref).expanduser().is_dir()):
                local = directory / ref if (directory / ref).is_dir() else Path(ref).expanduser()
                candidates.append((f"{cfg_key} {ref!r}", local))
            elif isinstance(ref, str):
                cached = hf_cache_snapshot(ref)
                if cached is not None:
                    candidates.append((f"{cfg_key} {ref!r} (Hugging Face cache {cached})", cached))
        if not candidates:
            missing.append(f"{cfg_key} {ref!r} (a Hub id, not a local directory)" if isinstance(ref, str)
                           else f"{cfg_key} (not in config.json)")
            continue
        what, path = candidates[0]
        if not path.is_dir():
            missing.append(f"{what} (not a directory)")
            continue
        lacking = _tokenizer_files(key, path)
        if lacking:
            missing.append(f"{what} (its directory {path} lacks {', '.join(lacking)})")
            continue
        found[key] = path
    return found, missing


def _read_side(directory: Path, ckpt: Pi0FastCheckpoint) -> dict:
    path = directory / SIDE_FILE
    if not path.is_file():
        return {}
    side = _read_json(path)
    if side is None:
        ckpt.unsupported.append(f"{SIDE_FILE} (not a JSON object)")
        return {}
    unknown = sorted(set(side) - set(SIDE_KEYS))
    if unknown:
        ckpt.unsupported.append(f"{SIDE_FILE} key(s) {unknown} (known: {', '.join(SIDE_KEYS)})")
    bad = [k for k in ("text_tokenizer", "action_tokenizer") if k in side and not isinstance(side[k], str)]
    if bad or ("paligemma_config" in side and not isinstance(side["paligemma_config"], dict)):
        ckpt.unsupported.append(f"{SIDE_FILE} (tokenizers must be path strings, paligemma_config an object)")
    ckpt.present.append(SIDE_FILE)
    return side


def _lerobot(directory: Path, config: dict, explicit: dict) -> Pi0FastCheckpoint:
    ckpt = Pi0FastCheckpoint(directory, "lerobot", config=config)
    ckpt.details = {k: config[k] for k in ("type", "chunk_size", "n_action_steps", "max_action_tokens",
                                           "paligemma_variant", "action_tokenizer_name", "text_tokenizer_name")
                    if k in config}
    ckpt.present.append("config.json")
    for name in ("model.safetensors", *LEROBOT_PROCESSORS):
        (ckpt.present if (directory / name).is_file() else ckpt.missing).append(name)
    if (directory / "model.safetensors").is_file():
        ckpt.details["parameters"] = _safetensors_parameters(directory / "model.safetensors")
    for name in LEROBOT_PROCESSORS:
        for step in _pipeline_steps(directory, name):
            state = step.get("state_file")
            if isinstance(state, str):
                (ckpt.present if (directory / state).is_file() else ckpt.missing).append(state)
    ckpt.side = _read_side(directory, ckpt)
    ckpt.tokenizers, missing = resolve_tokenizers(directory, config, ckpt.side, explicit)
    ckpt.missing += missing
    if str(config.get("type")).lower() != "pi0_fast":
        ckpt.unsupported.append(f"type {config.get('type')!r} (LeRobot's π0-FAST before 0.4; APO-ROS runs 'pi0_fast')")
    if config.get("use_relative_actions"):
        ckpt.unsupported.append("use_relative_actions true (actions relative to the state)")
    if "paligemma_config" not in ckpt.side and config.get("paligemma_variant", "gemma_2b") not in LEROBOT_VARIANTS:
        ckpt.unsupported.append(f"paligemma_variant {config.get('paligemma_variant')!r} "
                                f"(known: {', '.join(LEROBOT_VARIANTS)})")
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


def detect_pi0fast_checkpoint(directory, text_tokenizer=None, action_tokenizer=None) -> Pi0FastCheckpoint | None:
    """The π0-FAST layout ``directory`` is in, or None when it is in none of them.

    ``text_tokenizer`` / ``action_tokenizer``: local directories given by the caller (they win over
    every other source, see the module docstring)."""
    directory = Path(directory)
    config = _read_json(directory / "config.json") if (directory / "config.json").is_file() else None
    if config is not None and str(config.get("type", "")).lower() in LEROBOT_TYPES:
        return _lerobot(directory, config, {"text_tokenizer": text_tokenizer, "action_tokenizer": action_tokenizer})
    return _openpi(directory)
