"""The embedded default VLA: a small ResNet image encoder + a small Llama decoder, random init.

Built only from transformers components so it saves, loads, and takes LoRA adapters like any
Hugging Face model, yet it trains and runs on two CPU cores. The sequence fed to the decoder is

    <s> [image tokens] [state token]? "In: What action should the robot take to ...?\\nOut:" [7 action tokens]

exactly the OpenVLA layout (image features after BOS), with the action tokens taken from the last
``n_bins`` ids of the vocabulary by :class:`~apo_core.action_tokenizer.ActionTokenizer`.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    ResNetConfig,
    ResNetModel,
)
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast

from apo_core.action_tokenizer import ActionTokenizer
from apo_core.errors import MissingPathError
from apo_core.normalization import STATS_FILENAME, ActionStats, check_finite
from apo_core.policy.base import IGNORE_INDEX, ActionMetrics, Observation, VLAPolicy
from apo_core.policy.prompt import build_prompt
from apo_core.policy.text_tokenizer import build_text_tokenizer

# Sizes of the embedded default; small enough for < 50 ms predict on 2 CPU cores.
DEFAULT_VISION = {
    "embedding_size": 32,
    "hidden_sizes": [32, 64, 128],
    "depths": [1, 1, 1],
    "layer_type": "basic",
}
# Logit gap under which predict_batch_exact re-decodes a sample alone; measured batched-vs-single logit
# differences are about 1e-6 (bench/bench_eval.py prints them).
EXACT_MARGIN = 1e-3
DEFAULT_TEXT = {
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


class SmallVLAConfig(PreTrainedConfig):
    model_type = "apo_small_vla"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=ResNetConfig, init_kwargs=DEFAULT_VISION),
        "text_config": SubConfigSpec(config_class=LlamaConfig, init_kwargs=DEFAULT_TEXT),
    }
    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_size: int = 128
    state_dim: int = 0
    action_dim: int = 7
    n_bins: int = 256
    tie_word_embeddings: bool = False


class SmallVLAModel(PreTrainedModel):
    """Image encoder -> projector -> decoder-only LM; ``forward`` returns causal-LM logits."""

    config_class = SmallVLAConfig
    base_model_prefix = "vla"
    main_input_name = "input_ids"
    _no_split_modules = ["LlamaDecoderLayer"]
    _supports_sdpa = True

    def __init__(self, config: SmallVLAConfig):
        super().__init__(config)
        self.vision = ResNetModel(config.vision_config)
        hidden = config.text_config.hidden_size
        vis_dim = config.vision_config.hidden_sizes[-1]
        # OpenVLA-style MLP projector from vision features to LM embeddings.
        self.projector = nn.Sequential(nn.Linear(vis_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.state_proj = nn.Linear(config.state_dim, hidden) if config.state_dim > 0 else None
        self.language_model = LlamaForCausalLM(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def prefix_embeddings(self, pixel_values: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """Image (and state) tokens, shape (B, P, hidden)."""
        feats = self.vision(pixel_values).last_hidden_state  # (B, C, h, w)
        tokens = self.projector(feats.flatten(2).transpose(1, 2))
        if self.state_proj is not None:
            if state is None:
                raise ValueError("this policy is conditioned on robot state but no state was given")
            tokens = torch.cat([tokens, self.state_proj(state.to(tokens.dtype)).unsqueeze(1)], dim=1)
        return tokens

    def build_inputs_embeds(self, pixel_values, input_ids, attention_mask, state=None):
        """Insert the prefix after BOS: returns (inputs_embeds, attention_mask, n_prefix)."""
        text = self.get_input_embeddings()(input_ids)
        prefix = self.prefix_embeddings(pixel_values, state).to(text.dtype)
        embeds = torch.cat([text[:, :1], prefix, text[:, 1:]], dim=1)
        ones = torch.ones(prefix.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        return embeds, mask, prefix.shape[1]

    def forward(self, pixel_values, input_ids, attention_mask, labels=None, state=None, **kwargs):
        embeds, mask, n_prefix = self.build_inputs_embeds(pixel_values, input_ids, attention_mask, state)
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        logits = out.logits
        if labels is not None:
            pad = torch.full(
                (labels.shape[0], n_prefix), IGNORE_INDEX, dtype=labels.dtype, device=labels.device
            )
            labels = torch.cat([labels[:, :1], pad, labels[:, 1:]], dim=1)
        return CausalLMOutputWithPast(logits=logits, loss=None, past_key_values=None, hidden_states=None), labels

    def _init_weights(self, module):
        std = self.config.text_config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        else:
            super()._init_weights(module)


_inference_pixels = threading.local()  # per thread: one reusable float image buffer for inference


def _reusable_pixels(shape: tuple[int, ...]) -> torch.Tensor:
    """This thread's float (B, 3, H, W) buffer with the layout ``.permute(0, 3, 1, 2).float()`` gives (the
    HWC bytes in order, so values and strides stay exactly those of a fresh conversion)."""
    buf = getattr(_inference_pixels, "buf", None)
    if buf is None or buf.shape != shape:
        b, c, h, w = shape
        buf = _inference_pixels.buf = torch.empty((b, h, w, c), dtype=torch.float32).permute(0, 3, 1, 2)
    return buf


def preprocess_images(images, image_size: int) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) -> float (B, 3, S, S) in [-1, 1].

    No copy of the uint8 pixels (a read-only view, e.g. of a ROS message's buffer, is read in place) and,
    under ``torch.inference_mode``, the float image reuses this thread's buffer instead of a new allocation
    per frame (nothing keeps it past the forward pass there; training always gets a fresh tensor)."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {arr.dtype}")
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # only read below; torch warns about any read-only array
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pixels = torch.from_numpy(arr)
    else:
        pixels = torch.from_numpy(arr)
    pixels = pixels.permute(0, 3, 1, 2)
    if torch.is_inference_mode_enabled():
        x = _reusable_pixels(tuple(pixels.shape)).copy_(pixels)
    else:
        x = pixels.float()
    x.div_(127.5).sub_(1.0)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x


class SmallVLATrunkPolicy(VLAPolicy):
    """What every policy on the small VLA's trunk shares (one token per action dimension here, FAST chunks in
    :mod:`apo_core.policy.chunked_vla`): model access through a peft wrapper, the cached prompt ids, the
    robot-state tensor and the image/instruction inputs of a batch. Subclasses set ``_model``,
    ``tokenizer`` and ``_prompt_cache``."""

    # --- model access ------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        return self._model

    def set_model(self, model: torch.nn.Module) -> None:
        """Replace the module (e.g. with its peft wrapper)."""
        self._model = model

    @property
    def device(self) -> torch.device:
        return next(self._model.parameters()).device

    @property
    def config(self) -> SmallVLAConfig:
        return self._base_model().config

    def _base_model(self) -> SmallVLAModel:
        m = self._model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    # --- training-side forward ---------------------------------------------------------------
    TARGETS = "target actions"  # what the labels of an encoded batch are, for forward_batch's error

    def forward_batch(self, batch: dict, model: torch.nn.Module | None = None) -> ActionMetrics:
        if "labels" not in batch:
            raise ValueError(f"forward_batch needs a batch encoded with {self.TARGETS}")
        out, labels = (model or self._model)(**batch)
        return self.batch_metrics(out.logits, labels)

    def batch_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> ActionMetrics:
        """The per-sample metrics of a teacher-forced pass (one token per action dimension here)."""
        return self.token_metrics(logits, labels)

    # --- files -------------------------------------------------------------------------------
    def _save_trunk(self, directory) -> Path:
        """Write the model (plain weights: a peft wrapper is merged first), the text tokenizer and the action
        statistics into ``directory`` (created); the subclass adds its own files and ``apo_policy.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model = self._model
        if hasattr(model, "merge_and_unload"):  # a peft wrapper: store plain weights
            model = model.merge_and_unload()
        model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        self.action_stats.save(directory / STATS_FILENAME)
        return directory

    @staticmethod
    def _trunk_directory(directory, *more_files: str) -> Path:
        """``directory`` as a Path once the trunk's files (and ``more_files``) are in it; MissingPathError
        naming the first missing file otherwise."""
        directory = Path(directory)
        for needed in ("config.json", "model.safetensors", STATS_FILENAME, "tokenizer.json", *more_files):
            if not (directory / needed).is_file():
                raise MissingPathError(f"model directory {directory} is incomplete: {directory / needed} not found")
        return directory

    @staticmethod
    def _load_trunk(directory: Path, device: str) -> tuple[SmallVLAModel, object, ActionStats]:
        """(model on ``device`` in eval mode, text tokenizer, action statistics) written by :meth:`_save_trunk`."""
        from transformers import PreTrainedTokenizerFast

        model = SmallVLAModel.from_pretrained(directory)
        model.to(device).eval()
        return model, PreTrainedTokenizerFast.from_pretrained(directory), ActionStats.load(directory / STATS_FILENAME)

    # --- encoding ----------------------------------------------------------------------------
    def _prompt_ids(self, instruction: str) -> list[int]:
        ids = self._prompt_cache.get(instruction)
        if ids is None:
            ids = [self.tokenizer.bos_token_id] + self.tokenizer.encode(build_prompt(instruction), add_special_tokens=False)
            if len(self._prompt_cache) < 1024:
                self._prompt_cache[instruction] = ids
        return ids

    def _states_tensor(self, states, batch: int) -> torch.Tensor | None:
        if self.config.state_dim == 0:
            return None
        if states is None:
            raise ValueError("this policy is conditioned on robot state but no state was given")
        arr = check_finite(states, "robot state").reshape(batch, -1)
        if arr.shape[1] != self.config.state_dim:
            raise ValueError(f"state has {arr.shape[1]} dims, the policy expects {self.config.state_dim}")
        return torch.from_numpy(arr.astype(np.float32)).to(self.device)

    def _encode(self, pixel_values: torch.Tensor, instructions: list[str], states, targets) -> dict:
        """Model inputs: per sample BOS + prompt ids, then its target token ids (``targets[i]``, a list; None:
        no targets) as labels; right-padded, with the attention mask and the robot-state tensor."""
        b = pixel_values.shape[0]
        seqs, labs = [], []
        for i, text in enumerate(instructions):
            ids = list(self._prompt_ids(text))
            lab = [IGNORE_INDEX] * len(ids)
            if targets is not None:
                ids += targets[i]
                lab += targets[i]
            seqs.append(ids)
            labs.append(lab)
        length = max(len(s) for s in seqs)
        input_ids = torch.full((b, length), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((b, length), dtype=torch.long)
        for i, (s, lab) in enumerate(zip(seqs, labs, strict=True)):
            input_ids[i, : len(s)] = torch.tensor(s)
            labels[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(s)] = 1
        batch = {"pixel_values": pixel_values, "input_ids": input_ids.to(self.device),
                 "attention_mask": attention.to(self.device)}
        st = self._states_tensor(states, b)
        if st is not None:
            batch["state"] = st
        if targets is not None:
            batch["labels"] = labels.to(self.device)
        return batch

    def _pixels_and_instructions(self, images, instructions) -> tuple[torch.Tensor, list[str]]:
        """The batch's preprocessed images on the policy's device and one instruction per image."""
        if isinstance(instructions, str):
            instructions = [instructions]
        pixel_values = preprocess_images(images, self.config.image_size).to(self.device)
        if len(instructions) != pixel_values.shape[0]:
            raise ValueError(f"{len(instructions)} instructions for {pixel_values.shape[0]} images")
        return pixel_values, instructions


class SmallVLAPolicy(SmallVLATrunkPolicy):
    """The embedded default policy (see module docstring)."""

    def __init__(self, model: SmallVLAModel, tokenizer, action_stats: ActionStats, version: str = ""):
        cfg = model.config
        if action_stats.dim != cfg.action_dim:
            raise ValueError(f"action statistics have {action_stats.dim} dims, model expects {cfg.action_dim}")
        if len(tokenizer) != cfg.text_config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens, model vocabulary is {cfg.text_config.vocab_size}")
        self._model = model
        self.tokenizer = tokenizer
        self.action_stats = action_stats
        self.action_dim = cfg.action_dim
        self.action_tokenizer = ActionTokenizer(cfg.text_config.vocab_size, cfg.n_bins)
        self.version = version
        self._prompt_cache: dict[str, list[int]] = {}

    # --- construction / persistence ----------------------------------------------------------
    @classmethod
    def create(
        cls,
        action_stats: ActionStats | None = None,
        *,
        action_dim: int = 7,
        state_dim: int = 0,
        image_size: int = 128,
        text_vocab_size: int = 512,
        n_bins: int = 256,
        vision: dict | None = None,
        text: dict | None = None,
        seed: int = 0,
    ) -> SmallVLAPolicy:
        """A randomly initialised policy (seeded, so two calls give the same weights)."""
        tokenizer = build_text_tokenizer(text_vocab_size, n_bins)
        text_cfg = {**DEFAULT_TEXT, **(text or {})}
        text_cfg.update(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        config = SmallVLAConfig(
            vision_config={**DEFAULT_VISION, **(vision or {})},
            text_config=text_cfg,
            image_size=image_size,
            state_dim=state_dim,
            action_dim=action_dim,
            n_bins=n_bins,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = SmallVLAModel(config)
        model.eval()
        stats = action_stats if action_stats is not None else ActionStats.identity(action_dim)
        return cls(model, tokenizer, stats)

    def save(self, directory) -> Path:
        directory = self._save_trunk(directory)
        self.write_meta(directory, "small_vla")
        return directory

    @classmethod
    def load(cls, directory, device: str = "cpu", version: str | None = None) -> SmallVLAPolicy:
        directory = cls._trunk_directory(directory)
        model, tokenizer, stats = cls._load_trunk(directory, device)
        return cls(model, tokenizer, stats, version=cls.saved_version(directory, version))

    # --- encoding ----------------------------------------------------------------------------
    def encode_batch(self, images, instructions, states=None, actions=None) -> dict:
        pixel_values, instructions = self._pixels_and_instructions(images, instructions)
        action_ids = self.labels_from_actions(actions) if actions is not None else None
        targets = None if action_ids is None else [action_ids[i].tolist() for i in range(len(instructions))]
        return self._encode(pixel_values, instructions, states, targets)

    # --- inference ---------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_normalised_batch(self, images, instructions, states=None) -> np.ndarray:
        """Greedy decoding restricted to action tokens, with a KV cache; returns (B, D) in [-1, 1]."""
        return self._decode_batch(images, instructions, states)[0]

    @torch.inference_mode()
    def _decode_batch(self, images, instructions, states=None, want_gaps: bool = False):
        """(B, D) normalised actions and, if asked, each row's smallest top-1/top-2 action-logit gap."""
        base = self._base_model()
        enc = self.encode_batch(images, instructions, states)
        # Right padding would put pad tokens between prompt and action: decode per prompt length group.
        lengths = enc["attention_mask"].sum(dim=1)
        out = np.zeros((enc["input_ids"].shape[0], self.action_dim), dtype=np.float64)
        gaps = np.full(out.shape[0], np.inf) if want_gaps else None
        for length in torch.unique(lengths).tolist():
            rows = (lengths == length).nonzero(as_tuple=True)[0]
            sub = {k: v[rows] for k, v in enc.items()}
            sub["input_ids"] = sub["input_ids"][:, :length]
            sub["attention_mask"] = sub["attention_mask"][:, :length]
            sub_gaps = [] if want_gaps else None
            out[rows.cpu().numpy()] = self._greedy_actions(base, sub, sub_gaps)
            if want_gaps:
                gaps[rows.cpu().numpy()] = torch.stack(sub_gaps, dim=1).min(dim=1).values.cpu().numpy()
        return out, gaps

    @torch.inference_mode()
    def predict_batch_exact(self, images, instructions, states=None, margin: float = EXACT_MARGIN) -> np.ndarray:
        """Raw actions (B, D), row i bitwise equal to ``predict`` of sample i alone, at batched speed.

        A batched forward differs from a one-sample forward in the last bits of the logits (other
        GEMM/convolution blocking), enough to flip a greedy choice between two nearly equal action
        tokens, and one flipped bin changes a closed-loop rollout. Rows whose winning logit leads the
        runner-up by less than ``margin`` at any action token are decoded again alone; the others
        cannot flip, as batched and single logits differ by orders of magnitude less than ``margin``.
        """
        norm, gaps = self._decode_batch(images, instructions, states, want_gaps=True)
        if norm.shape[0] > 1:
            images = np.asarray(images)
            instructions = [instructions] * norm.shape[0] if isinstance(instructions, str) else instructions
            st = None if states is None else np.asarray(states).reshape(norm.shape[0], -1)
            for i in np.nonzero(gaps < margin)[0]:
                norm[i] = self._decode_batch(images[i : i + 1], [instructions[i]], None if st is None else st[i : i + 1])[0][0]
        return self.action_stats.unnormalise(norm)

    def _greedy_actions(self, base: SmallVLAModel, enc: dict, gaps: list | None = None) -> np.ndarray:
        lm = base.language_model
        embeds, mask, _ = base.build_inputs_embeds(
            enc["pixel_values"], enc["input_ids"], enc["attention_mask"], enc.get("state")
        )
        first, vocab = self.action_tokenizer.first_action_token, self.action_tokenizer.vocab_size
        out = lm(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
        past = out.past_key_values
        tokens = []
        for i in range(self.action_dim):
            logits = out.logits[:, -1, first:vocab]
            if gaps is not None:
                top2 = logits.float().topk(2, dim=-1).values
                gaps.append(top2[:, 0] - top2[:, 1])
            nxt = logits.argmax(dim=-1) + first
            tokens.append(nxt)
            if i == self.action_dim - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = lm(input_ids=nxt[:, None], attention_mask=mask, past_key_values=past, use_cache=True)
            past = out.past_key_values
        ids = torch.stack(tokens, dim=1).cpu().numpy()
        return self.action_tokenizer.decode(ids)

    def predict_batch(self, images, instructions, states=None) -> np.ndarray:
        return self.action_stats.unnormalise(self.predict_normalised_batch(images, instructions, states))

    def predict(self, obs: Observation) -> np.ndarray:
        states = None if obs.state is None else np.asarray(obs.state)[None]
        return self.predict_batch(np.asarray(obs.image)[None], [obs.instruction], states)[0]
