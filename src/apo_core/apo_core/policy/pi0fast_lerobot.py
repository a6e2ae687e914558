"""Running a LeRobot ``pi0_fast`` checkpoint directory (inference only), as LeRobot's own code does.

What is matched, and where in LeRobot (``src/lerobot/policies/pi0_fast/``, read, nothing imported):

- **Model** (modeling_pi0_fast.py, ``PI0FastPaliGemma``): transformers' ``PaliGemmaForConditionalGeneration``
  built from ``paligemma_variant`` exactly as LeRobot configures it (Gemma 2B or 300M widths, SigLIP
  intermediate size 4304, projection 2048, vocabulary 257152, ``dtype`` bfloat16 keeping the vision
  tower, projector and norms in float32), or from a ``paligemma_config`` in the APO-ROS side file
  ``apo_pi0fast.json``. LeRobot's language model (``pi_gemma.PiGemmaModel`` without AdaRMS) is
  transformers' Gemma decoder layers and final RMSNorm run over inputs embedded by the (scaled)
  Gemma embedding; :meth:`Pi0FastLeRobotPolicy._language_model` runs those same modules.
- **Weights** (``PI0FastPolicy.from_pretrained`` / ``_fix_pytorch_state_dict_keys``):
  ``model.paligemma_with_expert.paligemma.<transformers name>`` (the ``model.`` prefix optional;
  transformers 4 names such as ``language_model.model.layers`` are mapped to transformers 5 ones);
  when ``lm_head.weight`` is stored it is also the token embedding, as LeRobot copies it.
- **Prompt** (processor_pi0_fast.py, ``Pi0FastPrepareStateAndLanguageTokenizerProcessorStep``, then
  tokenizer_processor.py ``TokenizerProcessorStep``): the state normalised by the preprocessor's
  normaliser, discretised into 256 bins over [-1, 1] (``digitize(state, linspace(-1, 1, 257)[:-1]) - 1``),
  ``"Task: {task with '_' and newlines as spaces}, State: {bins};\\n"``, tokenised by the PaliGemma tokenizer
  (its own BOS), right-padded to ``tokenizer_max_length``; generation appends one more BOS
  (``sample_actions_fast_kv_cache``).
- **Images** (``PI0FastPolicy._preprocess_images`` and common/vla_utils.py ``resize_with_pad_torch``):
  [0, 1] float, resized keeping the aspect ratio (bilinear, ``align_corners=False``, clamped) and padded
  with 0 centred to ``image_resolution``, then ``* 2 - 1``; the observation's image is the config's
  first camera (or ``image_key``) and comes first, as LeRobot puts the cameras present first; every
  other camera follows as an all -1 image with mask 0.
- **Attention / decoding** (``embed_prefix_fast``, ``sample_actions_fast_kv_cache``): images and prompt
  attend to each other bidirectionally, padding masked with LeRobot's -2.3819763e38, positions are the
  cumulative count of real tokens; greedy (or ``temperature`` sampling) with a KV cache for
  ``max_decoding_steps``, stopping early when every row has emitted ``|``.
- **Action tokens** (``detokenize_actions``, ``_paligemma_tokens_to_act_tokens``, and
  tokenizer_processor.py ``ActionTokenizerProcessorStep``): the model writes ``Action: `` then FAST
  ids mapped to the top of the PaliGemma vocabulary, ``paligemma_id = vocab_size - 1 - fast_skip_tokens
  - fast_id``, then ``|``; everything from ``|`` on is dropped, every ``Action: `` token run is removed,
  and the rest is mapped back and decoded by the FAST processor
  (:mod:`apo_core.policy.pi0fast_fast_processor`).
- **Normalisation** (processor/normalize_processor.py): the normaliser / unnormaliser steps of
  ``policy_preprocessor.json`` / ``policy_postprocessor.json`` with their ``state_file`` statistics,
  modes MEAN_STD (``(x - mean) / (std + eps)``, inverse ``x * std + mean``), MIN_MAX, QUANTILES,
  QUANTILE10, IDENTITY per feature type; a feature without statistics is left as is.
- **Execution** (``select_action``): a chunk is planned when the slot's queue is empty and its first
  ``n_action_steps`` actions are executed one per ``predict`` call.

Where APO-ROS differs, on purpose:

- a sequence that does not start with ``Action:`` (LeRobot asserts), or that fails to decode (LeRobot
  logs and uses zero coefficients), gives LeRobot's zero-coefficient chunk (the normalised zero action,
  i.e. the mean action under MEAN_STD) and is counted in :attr:`Pi0FastLeRobotPolicy.decode_failures`;
  ``on_error="raise"`` raises :class:`Pi0FastDecodeError` instead;
- the unnormalised actions are clipped to the dataset's ``action.min`` / ``action.max`` when the
  statistics hold them, so no action leaves the range seen in the data, and are never NaN;
- the chunk is decoded with ``chunk_size`` steps (LeRobot passes ``n_action_steps``; the two are equal
  by default, and otherwise LeRobot's reshape of the coefficients is wrong);
- one observation image (APO-ROS's :class:`~apo_core.policy.base.Observation`) instead of a dict of
  cameras; relative actions (``use_relative_actions``) and real-time chunking are not supported.

Training (``encode_batch`` / ``forward_batch``, so BC/DAgger/APO) and ``save`` are not supported: the
policy is for running the checkpoint (policy node, evaluators); train APO-ROS's chunked VLA instead.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import numpy as np
import torch

from apo_core.errors import ApoError, ConfigError
from apo_core.normalization import ActionStats
from apo_core.policy.base import Observation, VLAPolicy
from apo_core.policy.pi0fast_checkpoint import (
    LEROBOT_VARIANTS,
    UnsupportedCheckpointError,
    detect_pi0fast_checkpoint,
    pipeline_step_config,
)
from apo_core.policy.pi0fast_fast_processor import PiFastProcessor

KIND = "lerobot_pi0fast"
MASK_VALUE = -2.3819763e38  # LeRobot's OPENPI_ATTENTION_MASK_VALUE
STATE_BINS = 256
ACTION_KEY = "action"
PREFIXES = ("model.paligemma_with_expert.paligemma.", "paligemma_with_expert.paligemma.")
# transformers 4 PaliGemma names -> transformers 5 names (the first matching prefix applies)
V4_NAMES = (("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
            ("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector."))
EMBED_KEY = "model.language_model.embed_tokens.weight"
LM_HEAD_KEY = "lm_head.weight"
FLOAT32_SELECTORS = ("vision_tower", "multi_modal_projector", "input_layernorm", "post_attention_layernorm",
                     "model.norm")  # what LeRobot keeps in float32 when dtype is bfloat16
# openpi / LeRobot Gemma variants: width, depth, mlp_dim, heads, kv heads, head_dim
GEMMA_VARIANTS = {"gemma_300m": (1024, 18, 4096, 8, 1, 256), "gemma_2b": (2048, 18, 16_384, 8, 1, 256)}
PALIGEMMA_VOCAB = 257152
NORM_MODES = ("IDENTITY", "MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10")
ON_ERROR = ("fallback", "raise")
OPTIONS = ("version", "max_decoding_steps", "temperature", "on_error", "image_key")

log = logging.getLogger(__name__)


class Pi0FastDecodeError(ApoError, ValueError):
    """A generated token sequence is not an action chunk (``on_error="raise"``)."""


# --- pieces that mirror LeRobot, usable alone -----------------------------------------------------
def paligemma_config_for_variant(variant: str):
    """The PaliGemma config LeRobot's ``PI0FastPaliGemma`` builds for ``paligemma_variant``."""
    from transformers import PaliGemmaConfig

    if variant not in GEMMA_VARIANTS:
        raise ConfigError(f"unknown paligemma_variant {variant!r} (known: {', '.join(LEROBOT_VARIANTS)})")
    width, depth, mlp_dim, heads, kv_heads, head_dim = GEMMA_VARIANTS[variant]
    cfg = PaliGemmaConfig()
    cfg.image_token_id = PALIGEMMA_VOCAB
    cfg.image_token_index = PALIGEMMA_VOCAB
    text = cfg.text_config
    text.hidden_size, text.intermediate_size, text.num_attention_heads = width, mlp_dim, heads
    text.head_dim, text.num_hidden_layers, text.num_key_value_heads = head_dim, depth, kv_heads
    text.hidden_act = text.hidden_activation = "gelu_pytorch_tanh"
    text.vocab_size = PALIGEMMA_VOCAB
    cfg.vision_config.intermediate_size = 4304
    cfg.vision_config.projection_dim = 2048
    cfg.vision_config.projector_hidden_act = "gelu_fast"
    cfg.projection_dim = 2048
    return cfg


def map_lerobot_weights(state: dict) -> dict:
    """LeRobot pi0_fast parameter names -> transformers ``PaliGemmaForConditionalGeneration`` names."""
    mapped, foreign = {}, []
    for key, value in state.items():
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            foreign.append(key)
            continue
        name = key[len(prefix):]
        if not name.startswith(("model.", "lm_head.")):
            old = next((o for o in V4_NAMES if name.startswith(o[0])), None)
            name = old[1] + name[len(old[0]):] if old else name
        mapped[name] = value
    if foreign:
        raise ConfigError(f"model.safetensors has {len(foreign)} parameter(s) outside LeRobot's "
                          f"paligemma_with_expert.paligemma, e.g. {foreign[:3]}")
    if LM_HEAD_KEY in mapped:  # LeRobot: the LM head is the token embedding
        mapped[EMBED_KEY] = mapped[LM_HEAD_KEY]
    elif EMBED_KEY in mapped:
        mapped[LM_HEAD_KEY] = mapped[EMBED_KEY]
    return mapped


def lerobot_prompt(task: str, normalised_state) -> str:
    """LeRobot's pi0_fast prompt for one observation (state already normalised)."""
    cleaned = task.strip().replace("_", " ").replace("\n", " ")
    state = np.asarray(normalised_state, dtype=np.float32).reshape(-1)
    bins = np.digitize(state, bins=np.linspace(-1, 1, STATE_BINS + 1)[:-1]) - 1
    return f"Task: {cleaned}, State: {' '.join(map(str, bins.tolist()))};\n"


def resize_with_pad(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> (B, C, height, width): aspect kept, bilinear, centred zero padding."""
    import torch.nn.functional as F

    _, _, cur_h, cur_w = images.shape
    ratio = max(cur_w / width, cur_h / height)
    new_h, new_w = int(cur_h / ratio), int(cur_w / ratio)
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    pad_h0, rem_h = divmod(height - new_h, 2)
    pad_w0, rem_w = divmod(width - new_w, 2)
    return F.pad(resized, (pad_w0, pad_w0 + rem_w, pad_h0, pad_h0 + rem_h), mode="constant", value=0.0)


def preprocess_image(image, resolution: tuple[int, int]) -> torch.Tensor:
    """One H x W x 3 image (uint8, or float in [0, 1]) -> (1, 3, h, w) float32 in [-1, 1] for SigLIP."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image must be H x W x 3, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        x = torch.from_numpy(arr.astype(np.float32) / 255.0)
    else:
        x = torch.from_numpy(arr.astype(np.float32))
        if not torch.all(torch.isfinite(x)) or x.min() < 0 or x.max() > 1:
            raise ValueError("a float image must be finite and in [0, 1]")
    x = x.permute(2, 0, 1)[None]
    if tuple(x.shape[-2:]) != tuple(resolution):
        x = resize_with_pad(x, *resolution)
    return x * 2.0 - 1.0


class LeRobotNormalizer:
    """A LeRobot (un)normaliser step: statistics per feature key, a mode per feature type."""

    def __init__(self, stats: dict, feature_types: dict, norm_map: dict, eps: float = 1e-8):
        self.stats = stats  # key -> stat name -> float32 array
        self.feature_types = feature_types  # key -> "STATE" / "ACTION" / "VISUAL" ...
        self.norm_map = norm_map  # feature type -> mode
        self.eps = float(eps)
        for ftype, mode in norm_map.items():
            if mode not in NORM_MODES:
                raise ConfigError(f"normalisation mode {mode!r} for {ftype} is not supported (known: {NORM_MODES})")
        for key, ftype in feature_types.items():
            need = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
                    "QUANTILE10": ("q10", "q90")}.get(norm_map.get(ftype, "IDENTITY"), ())
            if key in stats and any(n not in stats[key] for n in need):
                raise ConfigError(f"{key}: {norm_map[ftype]} normalisation needs statistics {need}, the state file "
                                  f"has {sorted(stats[key])}")

    @classmethod
    def from_checkpoint(cls, directory: Path, pipeline: str, registry: str, config: dict) -> LeRobotNormalizer:
        from safetensors.numpy import load_file

        step, state_file = pipeline_step_config(directory, pipeline, registry)
        stats: dict[str, dict[str, np.ndarray]] = {}
        if state_file is not None:
            for flat, value in load_file(str(directory / state_file)).items():
                key, stat = flat.rsplit(".", 1)
                stats.setdefault(key, {})[stat] = np.asarray(value, dtype=np.float32)
        features = step.get("features")
        if not isinstance(features, dict):
            features = {**(config.get("input_features") or {}), **(config.get("output_features") or {})}
        types = {k: v.get("type") for k, v in features.items() if isinstance(v, dict)}
        norm_map = step.get("norm_map")
        if not isinstance(norm_map, dict):
            norm_map = config.get("normalization_mapping") or {}
        return cls(stats, types, {str(k): str(v) for k, v in norm_map.items()}, step.get("eps", 1e-8))

    def mode(self, key: str) -> str:
        if key not in self.stats:
            return "IDENTITY"
        return self.norm_map.get(self.feature_types.get(key, "ACTION" if key == ACTION_KEY else ""), "IDENTITY")

    def __call__(self, key: str, x, inverse: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        mode, s = self.mode(key), self.stats.get(key, {})
        if mode == "IDENTITY":
            return x
        if mode == "MEAN_STD":
            return x * s["std"] + s["mean"] if inverse else (x - s["mean"]) / (s["std"] + np.float32(self.eps))
        lo, hi = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}[mode]
        denom = s[hi] - s[lo]
        denom = np.where(denom == 0, np.float32(self.eps), denom).astype(np.float32)
        return (x + 1.0) * denom / 2.0 + s[lo] if inverse else 2.0 * (x - s[lo]) / denom - 1.0


def _load_text_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for a bad directory
        raise ConfigError(f"the text tokenizer in {path} does not load: {exc}") from exc


def _load_paligemma(directory: Path, config: dict, side: dict, device: str):
    from safetensors.torch import load_file
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    if "paligemma_config" in side:
        cfg = PaliGemmaConfig(**side["paligemma_config"])
    else:
        cfg = paligemma_config_for_variant(config.get("paligemma_variant", "gemma_2b"))
    model = PaliGemmaForConditionalGeneration(cfg)
    state = map_lerobot_weights(load_file(str(directory / "model.safetensors")))
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    absent = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if wrong or absent or extra:
        raise ConfigError(f"{directory / 'model.safetensors'} does not fit the PaliGemma of its config: "
                          f"shape mismatches {wrong[:3]}, missing {absent[:3]} ({len(absent)}), "
                          f"unexpected {extra[:3]} ({len(extra)})")
    model.load_state_dict(state, strict=True)
    if config.get("dtype", "float32") == "bfloat16":
        model.to(dtype=torch.bfloat16)
        for name, param in model.named_parameters():
            if any(sel in name for sel in FLOAT32_SELECTORS):
                param.data = param.data.to(dtype=torch.float32)
    elif config.get("dtype", "float32") != "float32":
        raise ConfigError(f"dtype {config.get('dtype')!r} is not supported (float32 or bfloat16)")
    return model.to(device).eval()


# --- the policy -----------------------------------------------------------------------------------
class Pi0FastLeRobotPolicy(VLAPolicy):
    """A LeRobot ``pi0_fast`` checkpoint run for inference (see the module docstring)."""

    episode_state_per_slot = True  # one action queue per slot (environment)

    def __init__(self, paligemma, text_tokenizer, fast: PiFastProcessor, config: dict, normalizer: LeRobotNormalizer,
                 unnormalizer: LeRobotNormalizer, *, text_max_length: int | None = None, version: str = "",
                 max_decoding_steps: int | None = None, temperature: float | None = None, on_error: str = "fallback",
                 image_key: str | None = None):
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.paligemma = paligemma
        self.text_tokenizer = text_tokenizer
        self.fast = fast
        self.action_tokenizer = fast
        self.config = config
        self.normalizer, self.unnormalizer = normalizer, unnormalizer
        inputs = config.get("input_features") or {}
        outputs = config.get("output_features") or {}
        shape = (outputs.get(ACTION_KEY) or {}).get("shape")
        if not shape:
            raise ConfigError("config.json output_features has no 'action' shape: the action dimension is unknown")
        self.action_dim = int(shape[0])
        self.image_keys = [k for k, v in inputs.items() if isinstance(v, dict) and v.get("type") == "VISUAL"]
        self.image_keys += [f"observation.images.empty_camera_{i}" for i in range(int(config.get("empty_cameras", 0)))
                            if f"observation.images.empty_camera_{i}" not in self.image_keys]
        if not self.image_keys:
            raise ConfigError("config.json input_features has no VISUAL feature")
        self.image_key = image_key or self.image_keys[0]
        if self.image_key not in self.image_keys:
            raise ConfigError(f"image_key {self.image_key!r} is not a camera of the config: {self.image_keys}")
        # LeRobot's _preprocess_images: the cameras present in the batch first, then the missing ones
        self.camera_order = [self.image_key] + [k for k in self.image_keys if k != self.image_key]
        self.state_key = next((k for k, v in inputs.items() if isinstance(v, dict) and v.get("type") == "STATE"),
                              "observation.state")
        self.chunk_size = int(config.get("chunk_size", 50))
        self.chunk_horizon = self.chunk_size
        self.n_action_steps = int(config.get("n_action_steps", self.chunk_size))
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ConfigError(f"n_action_steps {self.n_action_steps} must be in [1, chunk_size {self.chunk_size}]")
        self.resolution = tuple(int(v) for v in config.get("image_resolution", (224, 224)))
        self.fast_skip_tokens = int(config.get("fast_skip_tokens", 128))
        self.max_decoding_steps = int(max_decoding_steps if max_decoding_steps is not None
                                      else config.get("max_decoding_steps", 256))
        self.temperature = float(temperature if temperature is not None else config.get("temperature", 0.0))
        if self.max_decoding_steps < 1 or not self.temperature >= 0:
            raise ConfigError("max_decoding_steps must be >= 1 and temperature >= 0")
        self.text_max_length = int(text_max_length or config.get("tokenizer_max_length", 200))
        self.validate_prefix = bool(config.get("validate_action_token_prefix", True))
        self.on_error = on_error
        self.version = version
        self.decode_failures = 0  # generated sequences that fell back to the zero-coefficient chunk
        self.last_decode_errors: list[str] = []
        tok = text_tokenizer
        self._prefix_ids = tok.encode("Action: ", add_special_tokens=False)
        self._prefix_tokens = tok.convert_ids_to_tokens(self._prefix_ids)
        self._end_id = tok.convert_tokens_to_ids("|")
        top = tok.vocab_size - 1 - self.fast_skip_tokens
        if top - (fast.vocab_size - 1) < 0 or top >= paligemma.config.text_config.vocab_size:
            raise ConfigError(f"FAST ids 0..{fast.vocab_size - 1} map to PaliGemma ids {top - fast.vocab_size + 1}.."
                              f"{top}, outside the model's vocabulary of {paligemma.config.text_config.vocab_size}")
        lo, hi = (unnormalizer.stats.get(ACTION_KEY, {}).get(k) for k in ("min", "max"))
        self.action_bounds = (lo, hi) if lo is not None and hi is not None and lo.shape == hi.shape == (
            self.action_dim,) else None
        self.action_stats = ActionStats(q01=lo, q99=hi, mask=np.ones(self.action_dim, bool)) \
            if self.action_bounds else None
        self._queues: dict[int, deque] = {}

    # --- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, directory, device: str = "cpu", text_tokenizer=None, action_tokenizer=None,
             **options) -> Pi0FastLeRobotPolicy:
        """Load a LeRobot pi0_fast directory; refuses (:class:`UnsupportedCheckpointError`) what is not local.

        ``text_tokenizer`` / ``action_tokenizer``: local directories (see
        :mod:`apo_core.policy.pi0fast_checkpoint` for the other places they are looked for);
        ``options``: ``version``, ``max_decoding_steps``, ``temperature``, ``on_error``
        (``"fallback"`` / ``"raise"``), ``image_key`` (the camera the observation image stands for)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown LeRobot pi0_fast option(s) {unknown} (known: {', '.join(OPTIONS)})")
        directory = Path(directory)
        ckpt = detect_pi0fast_checkpoint(directory, text_tokenizer, action_tokenizer)
        if ckpt is None:
            raise ConfigError(f"{directory} is not a LeRobot pi0_fast checkpoint")
        if not ckpt.runnable:
            raise UnsupportedCheckpointError(ckpt.refusal())
        config = ckpt.config
        fast = PiFastProcessor.from_directory(ckpt.tokenizers["action_tokenizer"])
        tok = _load_text_tokenizer(ckpt.tokenizers["text_tokenizer"])
        normalizer = LeRobotNormalizer.from_checkpoint(directory, "policy_preprocessor.json", "normalizer_processor",
                                                       config)
        unnormalizer = LeRobotNormalizer.from_checkpoint(directory, "policy_postprocessor.json",
                                                         "unnormalizer_processor", config)
        step, _ = pipeline_step_config(directory, "policy_preprocessor.json", "tokenizer_processor")
        model = _load_paligemma(directory, config, ckpt.side, device)
        try:
            return cls(model, tok, fast, config, normalizer, unnormalizer, text_max_length=step.get("max_length"),
                       **options)
        except ValueError as exc:
            raise ConfigError(f"{directory}: {exc}") from exc

    @property
    def model(self) -> torch.nn.Module:
        return self.paligemma

    # --- tokens <-> actions -------------------------------------------------------------------
    def fast_to_paligemma(self, fast_ids) -> np.ndarray:
        return self.text_tokenizer.vocab_size - 1 - self.fast_skip_tokens - np.asarray(fast_ids, dtype=np.int64)

    def paligemma_to_fast(self, ids) -> np.ndarray:
        return self.text_tokenizer.vocab_size - 1 - self.fast_skip_tokens - np.asarray(ids, dtype=np.int64)

    def action_token_sequence(self, chunk) -> list[int]:
        """A raw chunk (chunk_size, D) as the tokens the model is trained to write after BOS:
        ``Action: `` + mapped FAST ids + ``|`` + EOS (LeRobot's ``ActionTokenizerProcessorStep``)."""
        arr = np.asarray(chunk, dtype=np.float32)
        if arr.shape != (self.chunk_size, self.action_dim):
            raise ValueError(f"chunk must have shape ({self.chunk_size}, {self.action_dim}), got {arr.shape}")
        codes = self.fast_to_paligemma(self.fast.encode(self.normalizer(ACTION_KEY, arr))).tolist()
        end = self.text_tokenizer.encode("|", add_special_tokens=False) + [self.text_tokenizer.eos_token_id]
        return list(self._prefix_ids) + codes + end

    def detokenize(self, token_ids) -> tuple[np.ndarray, bool, str]:
        """Generated PaliGemma ids -> (normalised chunk (chunk_size, D), ok, why not ok)."""
        h, d = self.chunk_size, self.action_dim
        try:
            ids = [int(i) for i in np.asarray(token_ids).reshape(-1).tolist()]
            tokens = self.text_tokenizer.convert_ids_to_tokens(ids)
            if self.validate_prefix and not (len(tokens) >= 2 and tokens[0] == "Action" and tokens[1] == ":"):
                return np.zeros((h, d)), False, f"does not start with 'Action:' (starts {tokens[:2]})"
            if "|" in tokens:
                tokens = tokens[:tokens.index("|")]
            n, i = len(self._prefix_tokens), 0
            while n and i <= len(tokens) - n:
                if tokens[i:i + n] == self._prefix_tokens:
                    tokens = tokens[:i] + tokens[i + n:]
                else:
                    i += 1
            codes = self.paligemma_to_fast(self.text_tokenizer.convert_tokens_to_ids(tokens))
        except Exception as exc:  # a generated sequence must never crash the control loop
            return np.zeros((h, d)), False, f"{type(exc).__name__}: {exc}"
        chunk, ok = self.fast.decode(codes, h, d)
        return chunk, ok, "" if ok else "the FAST processor could not decode it"

    def decode_tokens(self, token_ids) -> np.ndarray:
        """Generated PaliGemma ids -> raw chunk (chunk_size, D): unnormalised, within the action bounds."""
        chunk, ok, why = self.detokenize(token_ids)
        if not ok:
            self.decode_failures += 1
            self.last_decode_errors.append(why)
            if self.on_error == "raise":
                raise Pi0FastDecodeError(f"generated action tokens do not decode: {why}")
            log.warning("pi0_fast action tokens do not decode (%s); using the zero-coefficient chunk", why)
        raw = self.unnormalizer(ACTION_KEY, chunk.astype(np.float32), inverse=True).astype(np.float64)
        raw = np.nan_to_num(raw, nan=0.0, posinf=np.finfo(np.float32).max, neginf=-np.finfo(np.float32).max)
        if self.action_bounds is not None:
            raw = np.clip(raw, *self.action_bounds)
        return raw

    # --- model inputs ---------------------------------------------------------------------------
    def prompt(self, instruction: str, state) -> str:
        if state is None:
            raise ValueError("LeRobot's pi0_fast needs the robot state (its prompt holds the discretised state); "
                             "the observation has none")
        state = np.asarray(state, dtype=np.float32).reshape(-1)
        expected = ((self.config.get("input_features") or {}).get(self.state_key) or {}).get("shape")
        if expected and state.shape[0] != int(expected[0]):
            raise ValueError(f"state has {state.shape[0]} values, the checkpoint's {self.state_key} {expected[0]}")
        return lerobot_prompt(instruction, self.normalizer(self.state_key, state))

    def _prefix(self, images: list[np.ndarray], prompts: list[str]):
        """Embeddings, padding mask and 2-D attention mask of [cameras..., prompt, BOS] per row."""
        dev = next(self.paligemma.parameters()).device
        pixels = torch.cat([preprocess_image(img, self.resolution) for img in images]).to(dev)
        b = pixels.shape[0]
        enc = self.text_tokenizer(prompts, max_length=self.text_max_length, truncation=True, padding="max_length",
                                  padding_side="right", return_tensors="pt")
        bos = torch.full((b, 1), self.text_tokenizer.bos_token_id, dtype=torch.long)
        tokens = torch.cat([enc["input_ids"], bos], dim=1).to(dev)
        masks = torch.cat([enc["attention_mask"].bool(), torch.ones(b, 1, dtype=torch.bool)], dim=1).to(dev)
        embs, pads = [], []
        for key in self.camera_order:
            present = key == self.image_key
            img = pixels if present else -torch.ones_like(pixels)
            feats = self.paligemma.model.get_image_features(img.float()).pooler_output
            embs.append(feats.float())
            pads.append(torch.full((b, feats.shape[1]), present, dtype=torch.bool, device=dev))
        embs.append(self.paligemma.model.language_model.get_input_embeddings()(tokens))
        pads.append(masks)
        dtype = self._layer_dtype()
        embs_t = torch.cat([e.to(dtype) for e in embs], dim=1)
        pad = torch.cat(pads, dim=1)
        att = pad[:, None, :] & pad[:, :, None]  # images + prompt: bidirectional among real tokens
        return embs_t, pad, att

    def _layer_dtype(self) -> torch.dtype:
        return self.paligemma.model.language_model.layers[0].self_attn.q_proj.weight.dtype

    def _language_model(self, embeds, att2d, position_ids, cache):
        """LeRobot's PaliGemma language-model pass on embeddings with a custom 2-D mask (B, Q, K)."""
        lm = self.paligemma.model.language_model
        mask = torch.where(att2d[:, None], 0.0, MASK_VALUE).to(embeds.dtype)
        hidden = embeds
        pos = lm.rotary_emb(hidden, position_ids)
        for layer in lm.layers[: lm.config.num_hidden_layers]:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                           use_cache=True, position_embeddings=pos)
        return lm.norm(hidden)

    def _next(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature > 0:
            return torch.multinomial(torch.softmax(logits.float() / self.temperature, dim=-1), num_samples=1)
        return torch.argmax(logits, dim=-1, keepdim=True)

    @torch.inference_mode()
    def generate_tokens(self, images, prompts: list[str]) -> torch.Tensor:
        """Generated ids (B, max_decoding_steps) after [cameras, prompt, BOS]; zero after an early stop."""
        from transformers import DynamicCache

        embeds, pad, att = self._prefix(list(images), prompts)
        b = embeds.shape[0]
        lm_head = self.paligemma.lm_head
        embed = self.paligemma.model.language_model.get_input_embeddings()
        cache = DynamicCache(config=self.paligemma.config.text_config)
        hidden = self._language_model(embeds, att, torch.cumsum(pad, dim=1) - 1, cache)
        nxt = self._next(lm_head(hidden[:, -1:, :])[:, -1])
        out = torch.zeros((b, self.max_decoding_steps), dtype=torch.long, device=embeds.device)
        out[:, 0] = nxt[:, 0]
        greedy = self.temperature == 0
        finished = nxt[:, 0] == self._end_id
        for t in range(1, self.max_decoding_steps):
            if greedy and bool(finished.all()):
                break
            pad = torch.cat([pad, torch.ones((b, 1), dtype=torch.bool, device=pad.device)], dim=1)
            position = (pad.sum(dim=1, keepdim=True) - 1).long()
            hidden = self._language_model(embed(nxt).to(embeds.dtype), pad[:, None, :], position, cache)
            nxt = self._next(lm_head(hidden[:, -1:, :])[:, -1])
            out[:, t] = nxt[:, 0]
            finished |= nxt[:, 0] == self._end_id
        return out

    # --- prediction -----------------------------------------------------------------------------
    def predict_chunks(self, images, instructions, states) -> np.ndarray:
        """Raw chunks (B, chunk_size, D), one per observation, each generated alone (no queue involved)."""
        images = list(images)
        if isinstance(instructions, str):
            instructions = [instructions] * len(images)
        if states is None:
            states = [None] * len(images)
        out = []
        for img, instruction, state in zip(images, instructions, states, strict=True):
            ids = self.generate_tokens([img], [self.prompt(instruction, state)])[0]
            out.append(self.decode_tokens(ids.cpu().numpy()))
        return np.stack(out)

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        return self.predict_chunks([obs.image], [obs.instruction], [obs.state])[0]

    def reset(self, slot: int | None = None) -> None:
        """Start of an episode in ``slot`` (None: every slot): drop the queued actions."""
        if slot is None:
            self._queues.clear()
        else:
            self._queues.pop(int(slot), None)

    def predict(self, obs: Observation, slot: int = 0) -> np.ndarray:
        """This control step's raw action (D,): the next of the slot's queued ``n_action_steps``, planning
        a chunk when the queue is empty (LeRobot's ``select_action``)."""
        queue = self._queues.setdefault(int(slot), deque())
        if not queue:
            queue.extend(self.predict_chunk(obs)[: self.n_action_steps])
        return queue.popleft()

    def predict_batch_exact(self, images, instructions, states=None, margin: float = 0.0, slots=None) -> np.ndarray:
        """Raw actions (B, D), row i for the episode in ``slots[i]`` (each row generated alone, so exact)."""
        b = len(images)
        slots = [0] if slots is None and b == 1 else slots
        if slots is None or len(slots) != b or len(set(slots)) != b:
            raise ValueError(f"need {b} distinct slots, one per row, got {slots}")
        if isinstance(instructions, str):
            instructions = [instructions] * b
        states = [None] * b if states is None else list(states)
        return np.stack([self.predict(Observation(images[i], instructions[i], states[i]), slots[i]) for i in range(b)])

    # --- not supported: training and saving ---------------------------------------------------
    def encode_batch(self, images, instructions, states=None, actions=None) -> dict:
        raise NotImplementedError("a LeRobot pi0_fast checkpoint runs for inference only; training it with APO-ROS "
                                  "is not supported (train policy.architecture: chunked_vla instead)")

    def forward_batch(self, batch: dict, model: torch.nn.Module | None = None):
        return self.encode_batch(None, None)

    def labels_from_actions(self, actions):
        return self.encode_batch(None, None)

    def save(self, directory) -> Path:
        raise NotImplementedError("a LeRobot pi0_fast checkpoint is loaded from its own directory; APO-ROS does not "
                                  "re-save it")
