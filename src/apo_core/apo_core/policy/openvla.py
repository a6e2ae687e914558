"""OpenVLA-style checkpoints from a local directory, on GPU.

Everything the deployment depends on is shared with the tested small-model path: the prompt
(:func:`build_prompt`), the action tokens (:class:`ActionTokenizer`, vocabulary without the padding
OpenVLA adds), the unnormalisation (:class:`ActionStats` read from ``dataset_statistics.json``) and the
training metrics (:func:`action_token_metrics`). Only the loading and the forward call are specific.
No weights are downloaded: ``local_files_only=True``.

Remote code (a ``modeling_*.py`` named by the checkpoint's ``auto_map``) runs only when the caller
passes ``trust_remote_code=True``, which the policy node does only when the operator sets its
``trust_remote_code`` parameter at start. Otherwise the checkpoint must be an architecture built into
transformers, loaded with its own classes; one that needs its own code fails before any of it is
imported, with a :class:`RemoteCodeRequiredError` saying how to allow it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from apo_core.action_tokenizer import ActionTokenizer
from apo_core.config import read_json_object
from apo_core.errors import ApoError, ConfigError, MissingPathError
from apo_core.normalization import STATS_FILENAME, ActionStats
from apo_core.policy.base import IGNORE_INDEX, ActionMetrics, Observation, VLAPolicy
from apo_core.policy.prompt import build_prompt

OPENVLA_STATS_FILENAME = "dataset_statistics.json"
# Llama's SentencePiece "empty" token OpenVLA appends to the prompt before generating actions.
OPENVLA_EMPTY_TOKEN = 29871


def load_openvla_stats(directory, unnorm_key: str | None = None) -> ActionStats:
    """Action statistics of an OpenVLA checkpoint: our ``action_stats.json`` if present, otherwise
    the ``dataset_statistics.json`` OpenVLA ships ({dataset: {"action": {q01, q99, mask, ...}}})."""
    directory = Path(directory)
    ours = directory / STATS_FILENAME
    if ours.is_file():
        return ActionStats.load(ours)
    path = directory / OPENVLA_STATS_FILENAME
    if not path.is_file():
        raise MissingPathError(f"no action statistics in {directory}: looked for {ours} and {path}")
    stats = json.loads(path.read_text())
    if unnorm_key is None:
        if len(stats) != 1:
            raise ValueError(f"{path} holds statistics for {sorted(stats)}; choose one with unnorm_key")
        unnorm_key = next(iter(stats))
    if unnorm_key not in stats:
        raise ValueError(f"unnorm_key {unnorm_key!r} not in {path} (available: {sorted(stats)})")
    action = stats[unnorm_key]["action"]
    mask = action.get("mask", [True] * len(action["q01"]))
    return ActionStats(q01=action["q01"], q99=action["q99"], mask=mask, mean=action.get("mean"), std=action.get("std"))


def openvla_action_vocab_size(config) -> int:
    """OpenVLA pads the LM vocabulary to a multiple of 64; action ids count from the unpadded size."""
    text_vocab = config.text_config.vocab_size
    return text_vocab - int(getattr(config, "pad_to_multiple_of", 0) or 0)


def pad_labels_for_prefix(labels: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """Insert IGNORE_INDEX for the ``n_prefix`` image tokens placed after BOS (as the model does)."""
    pad = torch.full((labels.shape[0], n_prefix), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
    return torch.cat([labels[:, :1], pad, labels[:, 1:]], dim=1)


REMOTE_AUTO_KEYS = ("AutoModelForVision2Seq", "AutoModelForImageTextToText", "AutoModelForCausalLM")
HOW_TO_ALLOW_REMOTE_CODE = ("to run it, set the policy node parameter trust_remote_code:=true at start (it applies "
                            "to that node's model_path only; do it only for code you trust), or pass "
                            "trust_remote_code=True to load_policy")


class RemoteCodeRequiredError(ApoError, PermissionError):
    """The checkpoint can only be loaded by running Python code it ships, and that is not allowed."""


def read_checkpoint_config(directory) -> dict:
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        raise MissingPathError(f"OpenVLA checkpoint not found: {config_path} does not exist")
    return read_json_object(config_path)


def remote_model_class(directory):
    """The model class a checkpoint's ``auto_map`` names (OpenVLA registers it for
    AutoModelForVision2Seq, which transformers 5 no longer has), loaded from the local directory.
    This imports and runs the checkpoint's code: call it only with trust_remote_code granted."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = read_checkpoint_config(directory).get("auto_map") or {}
    for key in REMOTE_AUTO_KEYS:
        if key in auto_map:
            return get_class_from_dynamic_module(auto_map[key], str(directory), local_files_only=True)
    raise ConfigError(f"{Path(directory) / 'config.json'} has no auto_map entry for any of {REMOTE_AUTO_KEYS}")


def builtin_architecture(model_type) -> bool:
    """True when transformers itself implements ``model_type`` (no checkpoint code needed)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING_NAMES


def openvla_model_class(directory, trust_remote_code: bool = False):
    """The class to load the checkpoint with: its own code only if trusted, else transformers' built-in."""
    config = read_checkpoint_config(directory)
    auto_map = config.get("auto_map") or {}
    if not isinstance(auto_map, dict):
        raise ConfigError(f"{Path(directory) / 'config.json'}: auto_map must be a mapping")
    model_type = config.get("model_type")
    if trust_remote_code and any(key in auto_map for key in REMOTE_AUTO_KEYS):
        return remote_model_class(directory)
    if builtin_architecture(model_type):
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText
    if auto_map and trust_remote_code:
        raise ConfigError(f"{Path(directory) / 'config.json'}: auto_map has no entry for any of {REMOTE_AUTO_KEYS}")
    if auto_map:
        files = sorted({str(ref).split(".")[0] + ".py" for ref in auto_map.values() if isinstance(ref, str)})
        raise RemoteCodeRequiredError(
            f"{directory}: the checkpoint needs remote code: model_type {model_type!r} is not built into "
            f"transformers and config.json's auto_map names code shipped with the checkpoint ({', '.join(files)}); "
            f"remote code is off by default: {HOW_TO_ALLOW_REMOTE_CODE}")
    raise ConfigError(f"{Path(directory) / 'config.json'}: model_type {model_type!r} is not an architecture "
                      "transformers knows, and there is no auto_map")


class OpenVLAPolicy(VLAPolicy):
    def __init__(self, model, processor, action_stats: ActionStats, action_dim: int = 7, version: str = "",
                 dtype=torch.bfloat16):
        self._model = model
        self.processor = processor
        self.action_stats = action_stats
        self.action_dim = action_dim
        self.action_tokenizer = ActionTokenizer(openvla_action_vocab_size(model.config))
        self.version = version
        self.dtype = dtype

    @classmethod
    def load(cls, directory, device: str = "cuda", unnorm_key: str | None = None, version: str | None = None,
             dtype=None, trust_remote_code: bool = False) -> OpenVLAPolicy:
        from transformers import AutoProcessor

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise MissingPathError(f"OpenVLA checkpoint not found: {directory / 'config.json'} does not exist")
        if dtype is None:
            dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        # Decided before transformers touches the directory: without trust, nothing in it is imported.
        model_class = openvla_model_class(directory, trust_remote_code)
        try:
            processor = AutoProcessor.from_pretrained(directory, trust_remote_code=trust_remote_code,
                                                      local_files_only=True)
        except ValueError as exc:
            if trust_remote_code or "trust_remote_code" not in str(exc):
                raise
            raise RemoteCodeRequiredError(f"{directory}: the checkpoint's processor needs remote code: "
                                          f"{HOW_TO_ALLOW_REMOTE_CODE}") from exc
        model = model_class.from_pretrained(
            directory, dtype=dtype, trust_remote_code=trust_remote_code, local_files_only=True,
            low_cpu_mem_usage=True,
        ).to(device)
        model.eval()
        stats = load_openvla_stats(directory, unnorm_key)
        return cls(model, processor, stats, action_dim=stats.dim, version=cls.saved_version(directory, version),
                   dtype=dtype)

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    def set_model(self, model) -> None:
        self._model = model

    @property
    def device(self) -> torch.device:
        return next(self._model.parameters()).device

    def encode_batch(self, images, instructions, states=None, actions=None) -> dict:
        from PIL import Image

        if isinstance(instructions, str):
            instructions = [instructions]
        imgs = [Image.fromarray(np.asarray(im)) for im in np.asarray(images)]
        prompts = [build_prompt(t) for t in instructions]
        enc = self.processor(prompts, imgs, return_tensors="pt", padding=True)
        input_ids, attention = enc["input_ids"], enc["attention_mask"]
        if actions is not None:
            ids = torch.as_tensor(self.labels_from_actions(actions))
            labels = torch.full_like(input_ids, IGNORE_INDEX)
            input_ids = torch.cat([input_ids, ids], dim=1)
            labels = torch.cat([labels, ids], dim=1)
            attention = torch.cat([attention, torch.ones_like(ids)], dim=1)
        else:
            labels = None
        batch = {"pixel_values": enc["pixel_values"].to(self.device, self.dtype),
                 "input_ids": input_ids.to(self.device), "attention_mask": attention.to(self.device)}
        if labels is not None:
            batch["labels"] = labels.to(self.device)
        return batch

    def forward_batch(self, batch: dict, model=None) -> ActionMetrics:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = (model or self._model)(**inputs)
        n_prefix = out.logits.shape[1] - labels.shape[1]
        return self.token_metrics(out.logits, pad_labels_for_prefix(labels, n_prefix))

    @torch.inference_mode()
    def predict(self, obs: Observation) -> np.ndarray:
        from PIL import Image

        prompt = build_prompt(obs.instruction)
        enc = self.processor(prompt, Image.fromarray(np.asarray(obs.image)), return_tensors="pt").to(self.device)
        input_ids = enc["input_ids"]
        if input_ids[0, -1] != OPENVLA_EMPTY_TOKEN:
            empty = torch.tensor([[OPENVLA_EMPTY_TOKEN]], device=input_ids.device)
            input_ids = torch.cat([input_ids, empty], dim=1)
        generated = self._model.generate(
            input_ids=input_ids, pixel_values=enc["pixel_values"].to(self.dtype),
            max_new_tokens=self.action_dim, do_sample=False,
        )
        tokens = generated[0, -self.action_dim:].cpu().numpy()
        return self.decode_tokens(tokens)

    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(directory, safe_serialization=True)
        self.processor.save_pretrained(directory)
        self.action_stats.save(directory / STATS_FILENAME)
        self.write_meta(directory, "openvla")
        return directory
