"""The training configuration: one YAML file, loaded strictly (an unknown key fails, naming it).

Defaults are the paper's settings (docs/ARCHITECTURE.md, "Method in brief"): loss ``apo``, LoRA rank 32 / alpha 16 on all linear
layers, lr 5e-5, batch 8 per process, K = 10, warmup then cosine decay, gradient clipping at 1.0,
balanced batches 50/25/25. :data:`BC_PRESET` holds the overrides of the initial-policy preset
(``apo-train-bc``). Every key is listed with its meaning in ``src/apo_trainer/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from apo_core.config import load_config, merge_overrides, read_yaml
from apo_core.errors import ConfigError
from apo_core.labels import DEFAULT_K
from apo_trainer.data import KIND_NAMES, kinds_without_group, shares_problem
from apo_trainer.objectives import LOSS_NAMES, objective_class
from apo_trainer.sampler import split_problem


@dataclass
class PolicySection:
    path: str | None = None  # starting policy directory; null: create a new policy (BC from scratch)
    # The rest only shape a new policy (a saved one says what it is in its apo_policy.json).
    architecture: Literal["small_vla", "chunked_vla"] = "small_vla"  # chunked_vla: FAST action chunks
    chunk_horizon: int = 8  # chunked_vla: actions per chunk (H)
    fast_vocab_size: int = 1024  # chunked_vla: BPE vocabulary of the FAST tokenizer fitted on the data
    fast_scale: float = 10.0  # chunked_vla: DCT coefficient scale before rounding
    image_size: int = 128
    text_vocab_size: int = 512
    n_bins: int = 256
    vision: dict[str, Any] = field(default_factory=dict)  # overrides of small_vla.DEFAULT_VISION
    text: dict[str, Any] = field(default_factory=dict)  # overrides of small_vla.DEFAULT_TEXT
    init_seed: int = 0


@dataclass
class DataSection:
    paths: list[str] = field(default_factory=list)  # HDF5 dataset files (apo_core.dataset schema)
    k: int = DEFAULT_K  # K-window: labels are recomputed from live labels with this K
    kinds: list[str] | None = None  # step kinds to train on; null: by loss (see README)
    num_workers: int = 0  # DataLoader worker processes
    image_shift: int = 0  # bc only: shift each training image by up to this many pixels (augment.py)


@dataclass
class LossSection:
    name: Literal[LOSS_NAMES] = "apo"  # the objectives registry's keys
    beta: float = 0.1
    beta_d: float | None = None  # APO: lambda_D = 1 - exp(-beta_d * w); null: 8 (paper), 1 (reference, mean)
    beta_u: float | None = None  # APO: lambda_U = exp(-beta_u * w); null: as beta_d
    weight_norm: Literal["paper", "reference", "mean"] = "paper"  # how w_i is normalised (README)
    lambda_d_floor: float | None = None  # lambda_D >= floor; null: 0 (paper, reference), 0.1 (mean)
    l1_mode: Literal["teacher_forced", "free_running"] = "teacher_forced"  # the L1 the weights use
    desirable_weight: float = 1.0  # KTO's constant lambda_D
    sft_weight: float = 0.0  # apo/kto: + this x NLL per token of desirable samples (0: the paper's loss)
    undesirable_weight: float = 1.0  # KTO's constant lambda_U
    # apo/kto: which action tokens of an undesirable step its log-ratio sums (what the push-down lowers).
    # all: every token (the paper); disagreeing: only the dimensions whose bin differs by more than
    # agree_bins from the human correction that followed it (one token per dimension policies only).
    undesirable_tokens: Literal["all", "disagreeing"] = "all"
    agree_bins: int = 2
    z0_source: Literal["batch", "mismatched"] = "batch"  # reference code: mismatched
    z0_min: float | None = 0.0  # reference code: -5.0
    z0_max: float | None = None  # reference code: 5.0
    reduction: Literal["mean", "sum"] = "mean"  # reference code: sum
    weight_scope: Literal["global", "local"] = "global"  # batch statistics over all ranks or per rank
    dpo_perturbation: float = 0.25  # synthetic negative: target +- this, normalised units
    dpo_use_policy_proposals: bool = True  # the overridden policy proposal is the negative of a correction
    dpo_label_smoothing: float = 0.0


@dataclass
class LoraSection:
    enabled: bool = True
    r: int = 32
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"


@dataclass
class ReferenceSection:
    mode: Literal["cached", "online"] = "cached"  # cached: once per round before training
    batch_size: int = 32
    path: str | None = None  # reference policy directory (cached mode); null: the starting policy (policy.path)


@dataclass
class SamplerSection:
    kind: Literal["auto", "balanced", "uniform"] = "auto"  # auto: balanced except for bc
    shares: dict[str, float] = field(
        default_factory=lambda: {"desirable": 0.5, "human": 0.25, "undesirable": 0.25})
    batches_per_epoch: int | None = None  # null: about one pass over the data


@dataclass
class OptimSection:
    lr: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None  # overrides warmup_ratio when set
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0  # 0 disables clipping


@dataclass
class TrainSection:
    batch_size: int = 8  # per process
    grad_accum_steps: int = 1
    max_steps: int = 1000
    seed: int = 0
    device: str = "auto"  # auto: cuda:<local rank> when available, else cpu
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA with bf16 support
    batchnorm: Literal["frozen", "update"] = "frozen"  # update: BatchNorm statistics train (full fine-tuning)
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    resume: bool = True  # continue from output_dir/checkpoints/latest when present
    progress_bar: bool = True
    tensorboard: bool = True
    torch_threads: int | None = None
    step_delay_s: float = 0.0  # debugging aid: sleep after each step


@dataclass
class TrainConfig:
    output_dir: str = ""
    policy: PolicySection = field(default_factory=PolicySection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    lora: LoraSection = field(default_factory=LoraSection)
    reference: ReferenceSection = field(default_factory=ReferenceSection)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def validate(self) -> None:
        if not self.output_dir:
            raise ConfigError("output_dir is required (where the policy, checkpoints and metrics go)")
        if not self.data.paths:
            raise ConfigError("data.paths is empty: name at least one HDF5 dataset file")
        if self.data.k < 0:
            raise ConfigError(f"data.k must be >= 0, got {self.data.k}")
        if self.data.kinds is not None:
            bad = [k for k in self.data.kinds if k not in KIND_NAMES]
            if bad:
                raise ConfigError(f"data.kinds: unknown kind(s) {bad}; valid: {list(KIND_NAMES)}")
        objective = objective_class(self.loss.name)  # what the loss family needs, asked rather than named
        if objective.raises_every_step and "undesirable" in (self.data.kinds or ()):
            raise ConfigError(f"data.kinds: loss {self.loss.name!r} raises the likelihood of every step it trains on, "
                              "so it must not train on undesirable steps (the K steps before a takeover); "
                              "only apo and kto push them down")
        if self.policy.path is None and objective.reference_keys:
            raise ConfigError(f"policy.path is required for loss {self.loss.name!r} (only bc can start from a "
                              "new, randomly initialised policy)")
        if self.policy.path is None and self.lora.enabled:
            raise ConfigError("a new, randomly initialised policy (policy.path: null) must be fully fine-tuned: set "
                              "lora.enabled=false (apo-train-bc does)")
        if self.policy.chunk_horizon < 1 or self.policy.fast_scale <= 0:
            raise ConfigError(f"policy.chunk_horizon must be >= 1 and policy.fast_scale > 0, got "
                              f"{self.policy.chunk_horizon} and {self.policy.fast_scale}")
        for key, value in (("train.batch_size", self.train.batch_size), ("train.max_steps", self.train.max_steps),
                           ("train.grad_accum_steps", self.train.grad_accum_steps),
                           ("train.log_every", self.train.log_every),
                           ("train.checkpoint_every", self.train.checkpoint_every),
                           ("reference.batch_size", self.reference.batch_size), ("lora.r", self.lora.r)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if self.optim.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.optim.lr}")
        if not 0 <= self.optim.warmup_ratio < 1:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.optim.warmup_ratio}")
        if self.loss.z0_min is not None and self.loss.z0_max is not None and self.loss.z0_min > self.loss.z0_max:
            raise ConfigError(f"loss.z0_min {self.loss.z0_min} > loss.z0_max {self.loss.z0_max}")
        if self.loss.z0_source == "mismatched" and objective.uses_z0 and not self.lora.enabled:
            raise ConfigError("loss.z0_source=mismatched needs the reference log-probs of pairs drawn per batch, "
                              "computed with the LoRA adapter disabled: set lora.enabled=true (or use z0_source=batch)")
        if self.reference.path is not None and objective.reference_keys:
            if self.reference.mode != "cached":
                raise ConfigError("reference.path is loaded once to cache its log-probs: use reference.mode=cached")
            if self.loss.z0_source == "mismatched" and objective.uses_z0:
                raise ConfigError("loss.z0_source=mismatched computes reference log-probs per batch with the "
                                  "starting policy; with reference.path use z0_source=batch")
        if self.reference.mode == "online" and not self.lora.enabled:
            raise ConfigError("reference.mode=online computes the reference by disabling the LoRA adapter; with "
                              "lora.enabled=false use reference.mode=cached")
        if self.train.batchnorm == "update" and objective.reference_keys:
            raise ConfigError(f"train.batchnorm=update is for bc only: with loss {self.loss.name!r} the log-probs "
                              "must not depend on batch statistics (the reference log-probs are cached per step)")
        if self.lora.enabled and self.train.batchnorm == "update":
            raise ConfigError("train.batchnorm=update with LoRA would change the frozen base model's BatchNorm "
                              "statistics (the reference policy): use batchnorm=frozen")
        if self.train.keep_checkpoints < 1:
            raise ConfigError("train.keep_checkpoints must be >= 1 (resume needs the last checkpoint)")
        if not 0 < self.loss.dpo_perturbation <= 1:
            raise ConfigError(f"loss.dpo_perturbation must be in (0, 1], got {self.loss.dpo_perturbation}")
        for key, value in (("loss.beta_d", self.loss.beta_d), ("loss.beta_u", self.loss.beta_u)):
            if value is not None and value < 0:
                raise ConfigError(f"{key} must be >= 0 (or null for the weight_norm's default), got {value}")
        if self.data.image_shift < 0:
            raise ConfigError(f"data.image_shift must be >= 0, got {self.data.image_shift}")
        if self.data.image_shift and not objective.augments_images:
            raise ConfigError(f"data.image_shift is for loss bc only: {self.loss.name!r} compares log-probs with a "
                              "reference cached on unshifted images")
        if self.loss.sft_weight < 0:
            raise ConfigError(f"loss.sft_weight must be >= 0, got {self.loss.sft_weight}")
        if self.loss.agree_bins < 0:
            raise ConfigError(f"loss.agree_bins must be >= 0, got {self.loss.agree_bins}")
        if self.loss.undesirable_tokens == "disagreeing":
            if not objective.uses_z0:
                raise ConfigError(f"loss.undesirable_tokens=disagreeing is for apo and kto (their push-down of "
                                  f"undesirable steps); loss {self.loss.name!r} has none")
            if self.loss.z0_source == "mismatched":
                raise ConfigError("loss.undesirable_tokens=disagreeing sums the tokens of each step's own action; "
                                  "the mismatched pairs of z0_source=mismatched have no correction: use z0_source=batch")
        if self.loss.lambda_d_floor is not None and not 0 <= self.loss.lambda_d_floor < 1:
            raise ConfigError(f"loss.lambda_d_floor must be in [0, 1) (or null), got {self.loss.lambda_d_floor}")
        sampler_kind = self.sampler.kind if self.sampler.kind != "auto" else objective.default_sampler
        if sampler_kind == "balanced":
            problem = shares_problem(self.sampler.shares)
            if problem:
                raise ConfigError(f"sampler.shares: {problem}")
            kept = self.data.kinds if self.data.kinds is not None else objective.default_kinds
            undrawn = [k for k in kinds_without_group(self.sampler.shares) if k in kept]
            if undrawn:
                raise ConfigError(
                    f"sampler.shares has no group for the {', '.join(undrawn)} steps that loss {self.loss.name!r} "
                    f"trains on (data.kinds {list(kept)}): give them a share or leave them out with data.kinds")
            problem = split_problem(self.sampler.shares, self.train.batch_size)
            if problem:
                raise ConfigError(f"train.batch_size={self.train.batch_size} with sampler.shares: {problem}")


# The initial-policy preset: full fine-tuning of a new small VLA by BC on expert demonstrations.
# lr/batch were tuned on the synthetic square task on 2 CPU cores (README: "BC preset").
BC_PRESET: dict = {
    "loss": {"name": "bc"},
    "lora": {"enabled": False},
    "sampler": {"kind": "uniform"},
    "optim": {"lr": 3e-3, "weight_decay": 0.01, "warmup_ratio": 0.05, "min_lr_ratio": 0.1},
    "train": {"batch_size": 32, "max_steps": 2000, "batchnorm": "update", "checkpoint_every": 500},
}


def load_train_config(source=None, overrides: dict | None = None, preset: dict | None = None) -> TrainConfig:
    """TrainConfig from a YAML path or mapping, on top of ``preset``, with ``overrides`` applied last."""
    if source is None:
        data: dict = {}
    elif isinstance(source, (str, Path)):
        data = read_yaml(source)
    elif isinstance(source, dict):
        data = source
    else:
        raise ConfigError(f"config must be a YAML path or a mapping, got {type(source).__name__}")
    merged = merge_overrides(preset or {}, data)
    if overrides:
        merged = merge_overrides(merged, overrides)
    return load_config(TrainConfig, merged)
