"""A small chunked VLA (π0-FAST style): the small VLA's trunk generating FAST tokens of an action chunk.

Same vision/text trunk as :mod:`apo_core.policy.small_vla` (its :class:`SmallVLAModel` and
preprocessing, imported, not copied); what differs is the action head. The decoder sequence is

    <s> [image tokens] [state token]? "In: What action should the robot take to ...?\\nOut:" [FAST ids...] </s>

where the FAST ids (:class:`~apo_core.fast_tokenizer.FastActionTokenizer`: DCT + BPE over a chunk of H
normalised actions) take the last ``fast.vocab_size`` ids of the vocabulary (as the OpenVLA tokenizer's
256 bins do), and the text tokenizer's ``</s>`` ends the chunk.

Generation (greedy, KV cache) picks among the FAST ids and ``</s>`` only; ``</s>`` is not allowed as
the first token. A row stops at ``</s>``, when its tokens hold all H x D coefficients (training always
puts ``</s>`` there), or at the token budget ``max_action_tokens`` (default H x D: every BPE token
carries at least one coefficient). The ids decode through the tokenizer's safe path
(``relaxed=True``): missing high frequencies are zero-filled, extra ones dropped, the result clipped
to [-1, 1] and unnormalised with the policy's statistics; a sequence that does not decode at all
(empty, unknown id) gives the hold chunk, raw zeros. So a malformed generation gives a smooth or
hold chunk, never NaN or an out-of-range action.

``predict(obs)`` returns one action per control step: the chunk is executed by a
:class:`~apo_core.policy.chunk_execution.ChunkExecutor` (receding horizon, re-plan every
``replan_every`` steps, default H // 2; optional temporal ensembling), with one state per ``slot``
(environment). Call ``reset()`` (or ``reset(slot)``) at the start of every episode.

Training quantities (docs/ARCHITECTURE.md, "Method in brief"), per sample:

- ``logps``: log-probability of the chunk's whole token sequence, the sum over its FAST tokens and
  the closing ``</s>`` (the probability of generating exactly that chunk);
- ``l1``: mean over the H x D elements of |decoded greedy (teacher-forced) chunk - decoded target
  tokens|, normalised units, so an exact prediction gives 0 (as the bin-centre L1 of the small VLA);
- ``n_tokens``: tokens in the target sequence (FAST ids + ``</s>``), for per-token NLL (BC).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from apo_core.errors import ConfigError
from apo_core.fast_tokenizer import FastActionTokenizer, FastDecodeError
from apo_core.normalization import ActionStats, check_finite
from apo_core.policy.base import IGNORE_INDEX, ActionMetrics, Observation
from apo_core.policy.chunk_execution import ChunkExecutor, check_execution, default_replan_every
from apo_core.policy.small_vla import (
    DEFAULT_TEXT,
    DEFAULT_VISION,
    EXACT_MARGIN,
    SmallVLAConfig,
    SmallVLAModel,
    SmallVLATrunkPolicy,
)
from apo_core.policy.text_tokenizer import build_text_tokenizer

KIND = "chunked_vla"
FAST_SUBDIR = "fast_tokenizer"  # the text tokenizer's tokenizer.json sits in the policy directory itself
CHUNK_CONFIG_FILENAME = "chunked_vla.json"
DEFAULT_HORIZON = 8


@dataclass
class ChunkMetrics(ActionMetrics):
    """:class:`ActionMetrics` of a chunk; ``pred_actions`` is (B, H, D), plus the tokens per sample."""

    n_tokens: torch.Tensor | None = None  # (B,) target tokens (FAST ids + </s>)


class ChunkedVLAPolicy(SmallVLATrunkPolicy):
    """The small chunked VLA (see the module docstring)."""

    episode_state_per_slot = True  # one ChunkExecutor state per slot (environment)

    def __init__(self, model: SmallVLAModel, tokenizer, fast: FastActionTokenizer, action_stats: ActionStats, *,
                 replan_every: int | None = None, ensemble_decay: float | None = None,
                 max_action_tokens: int | None = None, version: str = ""):
        cfg = model.config
        if action_stats.dim != cfg.action_dim or fast.action_dim != cfg.action_dim:
            raise ValueError(f"action statistics ({action_stats.dim}) / FAST tokenizer ({fast.action_dim}) dimensions "
                             f"differ from the model's {cfg.action_dim}")
        if fast.stats is not None:
            raise ValueError("the FAST tokenizer of a policy works on normalised chunks (stats=None); the policy "
                             "normalises with its own action statistics")
        if len(tokenizer) != cfg.text_config.vocab_size or cfg.n_bins != fast.vocab_size:
            raise ValueError(f"vocabulary mismatch: text tokenizer {len(tokenizer)} / model {cfg.text_config.vocab_size}"
                             f" tokens, model action ids {cfg.n_bins} / FAST vocabulary {fast.vocab_size}")
        self._model = model
        self.tokenizer = tokenizer
        self.fast_tokenizer = fast
        # Generic code reads policy.action_tokenizer; for this policy it is the FAST tokenizer.
        self.action_tokenizer = fast
        self.action_stats = action_stats
        self.action_dim = cfg.action_dim
        self.chunk_horizon = fast.horizon
        self.version = version
        budget = fast.num_coefficients if max_action_tokens is None else int(max_action_tokens)
        if budget < 1:
            raise ValueError(f"max_action_tokens must be >= 1, got {max_action_tokens}")
        self.max_action_tokens = budget
        self.executor = ChunkExecutor(fast.horizon, replan_every, ensemble_decay)
        self.first_fast_id = cfg.text_config.vocab_size - fast.vocab_size
        self.eos_id = tokenizer.eos_token_id
        # Coefficients each FAST id stands for (one character per coefficient).
        self._coeff_counts = np.array([len(fast.bpe.id_to_token(i)) for i in range(fast.vocab_size)])
        self._prompt_cache: dict[str, list[int]] = {}

    # --- construction / persistence ----------------------------------------------------------
    @classmethod
    def create(cls, fast: FastActionTokenizer, action_stats: ActionStats | None = None, *, state_dim: int = 0,
               image_size: int = 128, text_vocab_size: int = 512, vision: dict | None = None,
               text: dict | None = None, seed: int = 0, **execution) -> ChunkedVLAPolicy:
        """A randomly initialised policy (seeded) around a fitted FAST tokenizer (``fast.stats`` None)."""
        tokenizer = build_text_tokenizer(text_vocab_size, fast.vocab_size)
        text_cfg = {**DEFAULT_TEXT, **(text or {})}
        text_cfg.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        config = SmallVLAConfig(vision_config={**DEFAULT_VISION, **(vision or {})}, text_config=text_cfg,
                                image_size=image_size, state_dim=state_dim, action_dim=fast.action_dim,
                                n_bins=fast.vocab_size)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = SmallVLAModel(config)
        model.eval()
        stats = action_stats if action_stats is not None else ActionStats.identity(fast.action_dim)
        return cls(model, tokenizer, fast, stats, **execution)

    def execution_config(self) -> dict:
        return {"horizon": self.chunk_horizon, "replan_every": self.executor.replan_every,
                "ensemble_decay": self.executor.ensemble_decay, "max_action_tokens": self.max_action_tokens}

    def save(self, directory) -> Path:
        """Model (safetensors) + text tokenizer + FAST tokenizer (``fast_tokenizer/``) + statistics + execution."""
        directory = self._save_trunk(directory)
        self.fast_tokenizer.save_pretrained(directory / FAST_SUBDIR)
        (directory / CHUNK_CONFIG_FILENAME).write_text(json.dumps(self.execution_config(), indent=2))
        self.write_meta(directory, KIND, horizon=self.chunk_horizon)
        return directory

    @classmethod
    def load(cls, directory, device: str = "cpu", version: str | None = None, **execution) -> ChunkedVLAPolicy:
        """Read a directory written by :meth:`save` (local files only); ``execution`` (replan_every,
        ensemble_decay, max_action_tokens) overrides the saved execution settings."""
        directory = cls._trunk_directory(directory, CHUNK_CONFIG_FILENAME)
        saved = _read_execution(directory / CHUNK_CONFIG_FILENAME)
        unknown = sorted(set(execution) - {"replan_every", "ensemble_decay", "max_action_tokens"})
        if unknown:
            raise ConfigError(f"unknown chunked-policy setting(s) {unknown}")
        fast = FastActionTokenizer.from_pretrained(directory / FAST_SUBDIR)
        if fast.horizon != saved["horizon"]:
            raise ConfigError(f"{directory}: {CHUNK_CONFIG_FILENAME} says horizon {saved['horizon']}, the FAST "
                              f"tokenizer {fast.horizon}")
        model, tokenizer, stats = cls._load_trunk(directory, device)
        version = cls.saved_version(directory, version)
        settings = {k: saved[k] for k in ("replan_every", "ensemble_decay", "max_action_tokens")} | execution
        try:
            return cls(model, tokenizer, fast, stats, version=version, **settings)
        except ValueError as exc:
            raise ConfigError(f"{directory}: {exc}") from exc

    # --- actions <-> tokens ------------------------------------------------------------------
    def _check_chunks(self, chunks) -> np.ndarray:
        arr = check_finite(chunks, "action chunk")
        if arr.ndim != 3 or arr.shape[1:] != (self.chunk_horizon, self.action_dim):
            raise ValueError(f"actions must be chunks of shape (B, {self.chunk_horizon}, {self.action_dim}), got "
                             f"{arr.shape}; training data for a chunked policy comes from StepDataset(horizon=H)")
        return arr

    def labels_from_actions(self, actions) -> list[np.ndarray]:
        """Raw chunks (B, H, D) -> per chunk its FAST ids (0 .. fast.vocab_size - 1; lengths vary)."""
        arr = self._check_chunks(actions)
        return [self.fast_tokenizer.encode_normalised(c) for c in self.action_stats.normalise(arr)]

    def decode_tokens(self, token_ids) -> np.ndarray:
        """FAST ids -> raw chunk (H, D) through the safe path (never NaN, never out of range)."""
        return self.action_stats.unnormalise(self._decode_normalised(token_ids))

    def _decode_normalised(self, token_ids) -> np.ndarray:
        try:
            return self.fast_tokenizer.decode_normalised(token_ids, on_error="raise", relaxed=True)
        except FastDecodeError:
            # The hold chunk, raw zeros (no motion), in this policy's normalised space: the tokenizer has
            # no statistics, so its own fallback would be the middle of the range instead.
            return self.action_stats.normalise(np.zeros((self.chunk_horizon, self.action_dim)))

    def quantised_targets(self, actions) -> np.ndarray:
        """Normalised chunks (B, H, D) as their tokens decode: what an exact prediction reproduces."""
        return np.stack([self._decode_normalised(ids) for ids in self.labels_from_actions(actions)])

    # --- encoding ----------------------------------------------------------------------------
    def encode_batch(self, images, instructions, states=None, actions=None) -> dict:
        """Model inputs; ``actions``, if given, are raw chunks (B, H, D) whose FAST ids + ``</s>`` become labels."""
        pixel_values, instructions = self._pixels_and_instructions(images, instructions)
        b = pixel_values.shape[0]
        targets = None
        if actions is not None:
            targets = [(ids + self.first_fast_id).tolist() + [self.eos_id] for ids in self.labels_from_actions(actions)]
            if len(targets) != b:
                raise ValueError(f"{len(targets)} action chunks for {b} images")
        return self._encode(pixel_values, instructions, states, targets)

    # --- training-side forward (the trunk's forward_batch) --------------------------------------
    TARGETS = "target action chunks"

    def batch_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> ChunkMetrics:
        return self.chunk_metrics(logits, labels)

    def chunk_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> ChunkMetrics:
        """Summed sequence log-probs, teacher-forced decoded-chunk L1 and token accuracy (module docstring)."""
        shift_logits = logits[:, :-1, :].float()
        shift_labels = labels[:, 1:]
        mask = shift_labels != IGNORE_INDEX
        n_tokens = mask.sum(dim=1)
        if torch.any(n_tokens < 2):
            raise ValueError(f"each sample needs its chunk's tokens and </s> as labels, got counts {n_tokens.tolist()}")
        logp_all = torch.log_softmax(shift_logits, dim=-1)
        token_logp = logp_all.gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        logps = token_logp.sum(dim=1)
        with torch.no_grad():
            argmax = shift_logits.argmax(dim=-1)
            acc = ((argmax == shift_labels) & mask).sum(dim=1).float() / n_tokens.float()
            # Greedy FAST ids at the target's FAST positions (the </s> position excluded), among FAST ids only.
            lo, hi = self.first_fast_id, self.first_fast_id + self.fast_tokenizer.vocab_size
            fast_argmax = (shift_logits[..., lo:hi].argmax(dim=-1)).cpu().numpy()
            lab = shift_labels.cpu().numpy()
            fast_pos = (lab >= lo) & (lab < hi)
            pred, target = [], []
            for i in range(lab.shape[0]):
                pred.append(self._decode_normalised(fast_argmax[i][fast_pos[i]]))
                target.append(self._decode_normalised(lab[i][fast_pos[i]] - lo))
            pred_t = torch.as_tensor(np.stack(pred), dtype=torch.float32, device=logits.device)
            target_t = torch.as_tensor(np.stack(target), dtype=torch.float32, device=logits.device)
            l1 = (pred_t - target_t).abs().mean(dim=(1, 2))
        return ChunkMetrics(logps=logps, l1=l1, token_accuracy=acc, pred_actions=pred_t, n_tokens=n_tokens)

    def free_running_l1(self, images, instructions, actions, states=None) -> torch.Tensor:
        """Per-sample L1 of the greedy generated chunk against the decoded target tokens (no gradients)."""
        target = self.quantised_targets(actions)
        with torch.no_grad():
            pred = self.predict_normalised_chunks(images, list(instructions), states)
        return torch.as_tensor(np.abs(pred - target).mean(axis=(1, 2)), dtype=torch.float32)

    # --- chunk generation --------------------------------------------------------------------
    @torch.inference_mode()
    def predict_normalised_chunks(self, images, instructions, states=None) -> np.ndarray:
        """Greedy chunks (B, H, D) in [-1, 1], one per observation (no executor state involved)."""
        return self._generate_batch(images, instructions, states)[0]

    @torch.inference_mode()
    def _generate_batch(self, images, instructions, states=None):
        """(B, H, D) normalised chunks and each row's smallest top-1/top-2 logit gap over its choices."""
        base = self._base_model()
        enc = self.encode_batch(images, instructions, states)
        # Right padding would put pad tokens between prompt and chunk: generate per prompt-length group.
        lengths = enc["attention_mask"].sum(dim=1)
        b = enc["input_ids"].shape[0]
        out = np.zeros((b, self.chunk_horizon, self.action_dim))
        gaps = np.full(b, np.inf)
        for length in torch.unique(lengths).tolist():
            rows = (lengths == length).nonzero(as_tuple=True)[0]
            sub = {k: v[rows] for k, v in enc.items()}
            sub["input_ids"] = sub["input_ids"][:, :length]
            sub["attention_mask"] = sub["attention_mask"][:, :length]
            ids, sub_gaps = self._greedy_ids(base, sub)
            r = rows.cpu().numpy()
            out[r] = np.stack([self._decode_normalised(x) for x in ids])
            gaps[r] = sub_gaps
        return out, gaps

    def _greedy_ids(self, base: SmallVLAModel, enc: dict) -> tuple[list[np.ndarray], np.ndarray]:
        """Greedy FAST ids per row (stops: module docstring) and each row's smallest decision gap."""
        lm = base.language_model
        embeds, mask, _ = base.build_inputs_embeds(enc["pixel_values"], enc["input_ids"], enc["attention_mask"],
                                                   enc.get("state"))
        b = embeds.shape[0]
        lo, n_fast = self.first_fast_id, self.fast_tokenizer.vocab_size
        needed = self.fast_tokenizer.num_coefficients
        out = lm(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
        past = out.past_key_values
        ids: list[list[int]] = [[] for _ in range(b)]
        coeffs = np.zeros(b, dtype=np.int64)
        done = np.zeros(b, dtype=bool)
        gaps = np.full(b, np.inf)
        for step in range(self.max_action_tokens):
            logits = out.logits[:, -1, :].float()
            # Candidates: the FAST ids, then </s> (column n_fast), which may not open a chunk.
            cand = torch.cat([logits[:, lo:lo + n_fast], logits[:, self.eos_id:self.eos_id + 1]], dim=1)
            if step == 0:
                cand[:, n_fast] = -torch.inf
            top2 = cand.topk(2, dim=-1)
            choice = top2.indices[:, 0].cpu().numpy()
            gap = (top2.values[:, 0] - top2.values[:, 1]).cpu().numpy()
            nxt = np.full(b, self.tokenizer.pad_token_id, dtype=np.int64)
            for i in np.flatnonzero(~done):
                gaps[i] = min(gaps[i], gap[i])
                if choice[i] == n_fast:
                    done[i] = True
                    continue
                ids[i].append(int(choice[i]))
                coeffs[i] += self._coeff_counts[choice[i]]
                nxt[i] = lo + choice[i]
                done[i] = coeffs[i] >= needed
            if done.all() or step == self.max_action_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = lm(input_ids=torch.as_tensor(nxt, device=mask.device)[:, None], attention_mask=mask,
                     past_key_values=past, use_cache=True)
            past = out.past_key_values
        return [np.asarray(x, dtype=np.int64) for x in ids], gaps

    @torch.inference_mode()
    def predict_chunks_exact(self, images, instructions, states=None, margin: float = EXACT_MARGIN) -> np.ndarray:
        """Normalised chunks (B, H, D), row i bitwise what generating for sample i alone gives.

        As ``SmallVLAPolicy.predict_batch_exact``: a row whose winning logit led the runner-up by less
        than ``margin`` at any generated token is generated again alone (a batched forward differs from a
        one-sample one in the last bits, enough to flip a near tie)."""
        chunks, gaps = self._generate_batch(images, instructions, states)
        if chunks.shape[0] > 1:
            images = np.asarray(images)
            instructions = [instructions] * chunks.shape[0] if isinstance(instructions, str) else instructions
            st = None if states is None else np.asarray(states).reshape(chunks.shape[0], -1)
            for i in np.nonzero(gaps < margin)[0]:
                chunks[i] = self._generate_batch(images[i:i + 1], [instructions[i]],
                                                 None if st is None else st[i:i + 1])[0][0]
        return chunks

    # --- execution: one action per control step ----------------------------------------------
    def reset(self, slot: int | None = None) -> None:
        """Start of an episode in ``slot`` (None: every slot): drop the chunks planned so far."""
        self.executor.reset(slot)

    def predict(self, obs: Observation, slot: int = 0) -> np.ndarray:
        """This control step's raw action (D,) for the episode running in ``slot``; plans a chunk when due."""
        states = None if obs.state is None else np.asarray(obs.state)[None]
        return self.predict_batch_exact(np.asarray(obs.image)[None], [obs.instruction], states, slots=[slot])[0]

    def predict_batch_exact(self, images, instructions, states=None, margin: float = EXACT_MARGIN,
                            slots=None) -> np.ndarray:
        """Raw actions (B, D) for B environments, row i for the episode in ``slots[i]``.

        Each slot keeps its own chunks, so the caller must say which environment a row comes from and
        call ``reset(slot)`` when that environment starts an episode. Rows due for a new plan are
        generated in one batched forward, each bitwise as if alone (:meth:`predict_chunks_exact`)."""
        b = len(images)
        if slots is None:
            if b != 1:
                raise ValueError("a chunked policy keeps one chunk per environment: pass slots=[environment id per "
                                 f"row] for a batch of {b} (and call reset(slot) when an environment starts an episode)")
            slots = [0]
        slots = [int(s) for s in slots]
        if len(slots) != b or len(set(slots)) != b:
            raise ValueError(f"need {b} distinct slots, one per row, got {slots}")
        if isinstance(instructions, str):
            instructions = [instructions] * b
        due = [i for i, s in enumerate(slots) if self.executor.needs_plan(s)]
        if due:
            images = np.asarray(images)
            st = None if states is None else np.asarray(states).reshape(b, -1)[due]
            chunks = self.predict_chunks_exact(images[due], [instructions[i] for i in due], st, margin)
            for i, chunk in zip(due, chunks, strict=True):
                self.executor.add_plan(slots[i], chunk)
        return self.action_stats.unnormalise(np.stack([self.executor.next_action(s) for s in slots]))


def _read_execution(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    keys = {"horizon", "replan_every", "ensemble_decay", "max_action_tokens"}
    if not isinstance(cfg, dict) or set(cfg) != keys:
        raise ConfigError(f"{path} must hold exactly the keys {sorted(keys)}")
    horizon = cfg["horizon"]
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
        raise ConfigError(f"{path}: horizon must be a positive integer, got {horizon!r}")
    try:
        check_execution(horizon, cfg["replan_every"] if cfg["replan_every"] is not None
                        else default_replan_every(horizon), cfg["ensemble_decay"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return cfg
