"""APO training (and the KTO / DPO / BC baselines): ``train(config) -> TrainResult`` and ``apo-train``.

One round: load the starting policy, wrap it with LoRA (peft) or train it fully, cache the
reference log-probs of every training step with the starting weights (the reference policy is the
frozen starting policy; no second copy of the model is kept), then optimise with balanced batches,
checkpoint, and write the new policy directory (LoRA merged) and a metrics JSON.

Run on one process, or with ``torchrun --nproc_per_node N [--nnodes M ...] $(which apo-train) ...``
for data parallelism (DDP; gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from apo_core.config import flatten_dotted, parse_dotted_overrides
from apo_core.errors import ApoError
from apo_trainer import checkpoint as ckpt
from apo_trainer import runtime
from apo_trainer.config import BC_PRESET, TrainConfig, load_train_config
from apo_trainer.data import (
    StepDataset,
    TrainingDataError,
    check_policy_compatible,
    collate_steps,
    dataset_action_stats,
)
from apo_trainer.losses import LOCAL, LossResult, Reducer
from apo_trainer.objectives import LOSS_NAMES, free_running_l1, make_objective  # noqa: F401 (free_running_l1: re-exported)
from apo_trainer.sampler import BalancedBatchSampler

log = logging.getLogger("apo_trainer.train")

REFERENCE_FILE = "reference_logps.safetensors"
METRICS_JSON = "metrics.json"
METRICS_JSONL = "metrics.jsonl"
POLICY_SUBDIR = "policy"
# Keys that may change between a run and its resumption.
RESUMABLE_CHANGES = {
    "train.max_steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.resume",
    "train.progress_bar", "train.tensorboard", "train.torch_threads", "train.step_delay_s", "data.num_workers",
    "train.device",
}


class TrainingError(ApoError, RuntimeError):
    """Training cannot continue (e.g. the loss became NaN)."""


@dataclass
class TrainResult:
    output_dir: Path
    policy_dir: Path
    metrics_path: Path
    steps: int
    resumed_from_step: int | None
    final: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


# Config sections compared as one value when a resumed run checks its settings.
_COMPARED_WHOLE = frozenset({"shares", "vision", "text"})


def _lr_lambda(cfg: TrainConfig):
    total = cfg.train.max_steps
    warm = cfg.optim.warmup_steps if cfg.optim.warmup_steps is not None else int(cfg.optim.warmup_ratio * total)
    floor = cfg.optim.min_lr_ratio

    def fn(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if cfg.optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def _action_token_scheme(policy) -> tuple:
    """What turns a normalised action into tokens: the bins, or the whole FAST tokenizer of a chunked policy."""
    fast = getattr(policy, "fast_tokenizer", None)
    if fast is not None:
        return ("fast", fast.horizon, fast.scale, fast.bpe.to_str())
    return ("bins", policy.action_tokenizer.n_bins)


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Trainer:
    """Holds everything one training run needs; ``run()`` trains to ``train.max_steps``."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.objective = make_objective(cfg)  # the loss family, chosen once (apo_trainer.objectives)
        self.out = Path(cfg.output_dir)
        self.rt = runtime.start(cfg.train.device, cfg.train.precision, cfg.train.torch_threads)
        self.reducer = Reducer() if self.rt.distributed else LOCAL
        self.loss_reducer = self.reducer if cfg.loss.weight_scope == "global" else LOCAL
        self.history: list[dict] = []
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.resumed_from: int | None = None
        self._writer = None
        self._bar = None

    # --- set-up -------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, rt = self.cfg, self.rt
        if rt.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        rt.barrier()
        kinds = cfg.data.kinds if cfg.data.kinds is not None else list(self.objective.default_kinds)
        self.dataset = StepDataset(cfg.data.paths, k=cfg.data.k, kinds=kinds, horizon=self._chunk_horizon())
        if rt.is_main:
            log.info("dataset: %s", json.dumps(self.dataset.summary.as_dict()))
        torch.manual_seed(cfg.train.seed)
        self.policy = self._load_policy()
        check_policy_compatible(self.dataset, self.policy)
        # The trained policy keeps its base's camera, else takes the one its episodes name.
        self.policy.camera = self.policy.camera or self.dataset.camera
        self.full = not cfg.lora.enabled
        self._wrap_model()
        self.sampler = self._make_sampler()
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=cfg.optim.lr,
            betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2), eps=cfg.optim.adam_eps,
            weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg))
        latest = self._find_resume_point()
        self.ref: dict[str, torch.Tensor] | None = None
        if self.objective.needs_reference and cfg.reference.mode == "cached":
            self.ref = self._reference_cache(resuming=latest is not None)
        torch.manual_seed(cfg.train.seed * 1000 + rt.rank)
        if latest is not None:
            self._restore(latest)  # also restores this rank's RNG
        self.ddp_model = self.model
        if rt.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp_model = DDP(self.model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        if rt.is_main:
            (self.out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

    def _chunk_horizon(self) -> int | None:
        """Actions per training item: the chunk length of a chunked starting policy (its saved
        ``apo_policy.json``) or of a new one (``policy.architecture``); None for one action per step."""
        cfg = self.cfg
        if cfg.policy.path:
            from apo_core.policy import read_policy_meta

            horizon = read_policy_meta(cfg.policy.path).get("horizon")
            return int(horizon) if horizon is not None else None
        return cfg.policy.chunk_horizon if cfg.policy.architecture == "chunked_vla" else None

    def _load_policy(self):
        cfg = self.cfg
        if cfg.policy.path:
            from apo_core.policy import load_policy

            policy = load_policy(cfg.policy.path, device=str(self.rt.device))
            log.info("starting policy: %s (version %r)", cfg.policy.path, getattr(policy, "version", ""))
            return policy
        from apo_core.policy.small_vla import SmallVLAPolicy

        stats, origin = dataset_action_stats(cfg.data.paths, self.dataset)
        if cfg.policy.architecture == "chunked_vla":
            return self._new_chunked_policy(stats, origin)
        log.info("new small VLA (random init, seed %d); action statistics: %s", cfg.policy.init_seed, origin)
        policy = SmallVLAPolicy.create(
            stats, action_dim=self.dataset.action_dim, state_dim=self.dataset.state_dim,
            image_size=cfg.policy.image_size, text_vocab_size=cfg.policy.text_vocab_size, n_bins=cfg.policy.n_bins,
            vision=cfg.policy.vision or None, text=cfg.policy.text or None, seed=cfg.policy.init_seed)
        policy.model.to(self.rt.device)
        return policy

    def _new_chunked_policy(self, stats, origin: str):
        """A new chunked VLA whose FAST tokenizer is fitted on this run's training chunks."""
        from apo_core.fast_tokenizer import FastActionTokenizer
        from apo_core.policy.chunked_vla import ChunkedVLAPolicy

        cfg = self.cfg.policy
        fast = FastActionTokenizer.fit(stats.normalise(self.dataset.all_chunks()), None, scale=cfg.fast_scale,
                                       vocab_size=cfg.fast_vocab_size)
        log.info("new chunked VLA (random init, seed %d, horizon %d, FAST vocabulary %d fitted on %d chunks); "
                 "action statistics: %s", cfg.init_seed, fast.horizon, fast.vocab_size, len(self.dataset), origin)
        policy = ChunkedVLAPolicy.create(
            fast, stats, state_dim=self.dataset.state_dim, image_size=cfg.image_size,
            text_vocab_size=cfg.text_vocab_size, vision=cfg.vision or None, text=cfg.text or None, seed=cfg.init_seed)
        policy.model.to(self.rt.device)
        return policy

    def _wrap_model(self) -> None:
        cfg = self.cfg
        base = self.policy.model
        if cfg.lora.enabled:
            from peft import LoraConfig, get_peft_model

            if not hasattr(self.policy, "set_model"):
                raise TrainingError(f"{type(self.policy).__name__} cannot take a LoRA wrapper (no set_model)")
            for p in base.parameters():
                p.requires_grad_(False)
            lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                              target_modules=cfg.lora.target_modules, bias="none")
            peft_model = get_peft_model(base, lcfg)
            self.policy.set_model(peft_model)
            self.model = peft_model
        else:
            for p in base.parameters():
                p.requires_grad_(True)
            self.model = base
        self.model.to(self.rt.device)
        self._set_mode()
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in self.model.parameters())
        if self.rt.is_main:
            log.info("trainable parameters: %d of %d (%s)", n_train, n_all,
                     f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha}" if cfg.lora.enabled else "full fine-tuning")

    def _set_mode(self) -> None:
        # Frozen BatchNorm (eval mode) keeps the reference policy's statistics and makes the update
        # independent of how the batch is split over processes. The LM has no dropout by default.
        if self.cfg.train.batchnorm == "update":
            self.model.train()
        else:
            self.model.eval()

    def _make_sampler(self) -> BalancedBatchSampler:
        cfg = self.cfg
        kind = cfg.sampler.kind
        if kind == "auto":
            kind = self.objective.default_sampler
        if kind == "balanced":
            groups, shares = self.dataset.group_indices(), dict(cfg.sampler.shares)
        else:
            groups, shares = {"all": np.arange(len(self.dataset))}, {"all": 1.0}
        sampler = BalancedBatchSampler(
            groups, shares, batch_size=cfg.train.batch_size, num_replicas=self.rt.world_size, rank=self.rt.rank,
            seed=cfg.train.seed, num_batches=cfg.sampler.batches_per_epoch)
        for note in self.objective.sampler_notes(groups, kind):
            sampler.notes.append(note)
            log.warning("%s", note)
        if self.rt.is_main:
            log.info("sampler: %s", json.dumps(sampler.describe()))
        return sampler

    # --- forward helpers ----------------------------------------------------------------------
    def _encode(self, batch: dict, actions: np.ndarray):
        states = batch["states"] if self.dataset.state_dim else None
        return self.policy.encode_batch(batch["images"], batch["instructions"], states, actions)

    def _forward(self, batch: dict, actions: np.ndarray, model):
        enc = self._encode(batch, actions)
        with self.rt.autocast():
            return self.policy.forward_batch(enc, model=model)

    def _reference_forward(self, batch: dict, actions: np.ndarray, reference=None) -> torch.Tensor:
        """Summed log-probs under the reference (:meth:`_reference_metrics`), float64."""
        return self._reference_metrics(batch, actions, reference).logps.double()

    def _reference_metrics(self, batch: dict, actions: np.ndarray, reference=None):
        """Teacher-forced metrics under the starting weights: the LoRA adapter disabled, or (full
        fine-tuning, before the first update only) the model itself; or under ``reference``, a policy of
        its own (``reference.path``)."""
        with torch.no_grad():
            if reference is not None:
                states = batch["states"] if self.dataset.state_dim else None
                enc = reference.encode_batch(batch["images"], batch["instructions"], states, actions)
                with self.rt.autocast():
                    return reference.forward_batch(enc)
            if self.cfg.lora.enabled:
                with self.model.disable_adapter():
                    return self._forward(batch, actions, self.model)
            return self._forward(batch, actions, self.model)

    # --- reference cache ----------------------------------------------------------------------
    def _ref_fingerprint(self) -> str:
        c = self.cfg
        return json.dumps({
            "data": self.dataset.summary.as_dict(), "policy": c.policy.path, "loss": c.loss.name,
            **self.objective.fingerprint_fields(),
            "seed": c.train.seed, "precision": self.rt.precision,
            **({"reference": c.reference.path} if c.reference.path else {}),
        }, sort_keys=True)

    def _load_reference(self):
        """The policy of ``reference.path`` (None: the starting policy is the reference). It must read
        actions as the starting policy does (same statistics and bins), or the log-probs would be of
        other action tokens."""
        path = self.cfg.reference.path
        if not path:
            return None
        from apo_core.policy import load_policy

        ref = load_policy(path, device=str(self.rt.device))
        ref.model.eval()
        mine, theirs = self.policy.action_stats, ref.action_stats
        same = (ref.action_dim == self.policy.action_dim
                and _action_token_scheme(ref) == _action_token_scheme(self.policy)
                and all(np.array_equal(getattr(mine, k), getattr(theirs, k)) for k in ("q01", "q99", "mask")))
        if not same:
            raise TrainingError(f"reference.path {path} discretises actions differently from the starting policy "
                                f"{self.cfg.policy.path} (other action statistics or bins): its log-probs would be "
                                "of other tokens")
        if self.rt.is_main:
            log.info("reference policy: %s (version %r)", path, getattr(ref, "version", ""))
        return ref

    def _reference_cache(self, resuming: bool) -> dict[str, torch.Tensor]:
        path = self.out / REFERENCE_FILE
        fp = self._ref_fingerprint()
        if resuming:
            if not path.is_file():
                raise ckpt.CheckpointError(f"resuming needs the reference cache {path}, which is missing")
            with safe_open(str(path), "pt") as f:
                if f.metadata().get("fingerprint") != fp:
                    raise ckpt.CheckpointError(f"{path} was computed for other data or another policy; start a "
                                               "new output_dir (or set train.resume=false)")
            return {k: v.to(self.rt.device) for k, v in load_file(str(path)).items()}
        n = len(self.dataset)
        keys = self.objective.reference_keys
        out = {k: torch.zeros(n, dtype=torch.float64, device=self.rt.device) for k in keys}
        filled = torch.zeros(n, dtype=torch.float64, device=self.rt.device)
        from torch.utils.data import DataLoader

        mine = np.arange(self.rt.rank, n, self.rt.world_size)
        bs = self.cfg.reference.batch_size
        chunks = [mine[lo: lo + bs].tolist() for lo in range(0, len(mine), bs)]
        loader = DataLoader(self.dataset, batch_sampler=chunks, collate_fn=collate_steps,
                            num_workers=self.cfg.data.num_workers)
        t0 = time.perf_counter()
        reference = self._load_reference()
        for batch in loader:
            rows = batch["index"].to(self.rt.device)
            for key, values in self.objective.reference_values(self, batch, reference).items():
                out[key][rows] = values
            filled[rows] = 1.0
        del reference
        out = {k: self.reducer.sum(v) for k, v in out.items()}
        filled = self.reducer.sum(filled)
        if not torch.all(filled == 1.0):
            raise TrainingError("reference cache incomplete: some steps were computed by no rank or by several")
        if self.rt.is_main:
            log.info("reference log-probs cached for %d steps in %.1f s", n, time.perf_counter() - t0)
            tmp = path.with_suffix(".tmp")
            save_file({k: v.cpu().contiguous() for k, v in out.items()}, str(tmp), metadata={"fingerprint": fp})
            os.replace(tmp, path)
        self.rt.barrier()
        return out

    # --- resume -------------------------------------------------------------------------------
    def _find_resume_point(self) -> Path | None:
        latest = ckpt.latest_checkpoint(self.out) if self.cfg.train.resume else None
        if latest is None:
            # A fresh start: rows or checkpoints of an earlier (e.g. killed before its first
            # checkpoint) run in this directory must not leak into this one.
            if self.rt.is_main:
                for stale in (ckpt.checkpoint_root(self.out), self.out / METRICS_JSONL):
                    if stale.is_dir():
                        shutil.rmtree(stale)
                    elif stale.exists():
                        stale.unlink()
            self.rt.barrier()
        return latest

    def _restore(self, path: Path) -> None:
        state = ckpt.read_state(path)
        old = flatten_dotted(state["config"], _COMPARED_WHOLE)
        new = flatten_dotted(dataclasses.asdict(self.cfg), _COMPARED_WHOLE)
        defaults = flatten_dotted(dataclasses.asdict(TrainConfig()), _COMPARED_WHOLE)
        # A key added to the config since the checkpoint was written is unchanged if it holds its default.
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES
                         and not (k not in old and new.get(k) == defaults.get(k)))
        if changed:
            raise ckpt.CheckpointError(
                f"cannot resume from {path}: the config changed in {changed} (was "
                f"{[old.get(k) for k in changed]}); use a new output_dir or train.resume=false")
        ckpt.load_weights(self.model, path / "weights.safetensors", self.full)
        ckpt.load_optimizer(self.optimizer, path / "optimizer.safetensors")
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        rng_file = path / f"rng_rank{self.rt.rank}.safetensors"
        if rng_file.is_file():
            ckpt.set_rng_state(rng_file)
        self.resumed_from = self.step
        jsonl = self.out / METRICS_JSONL
        if jsonl.is_file():
            rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
            self.history = [r for r in rows if r.get("step", 0) <= self.step]
            if self.rt.is_main:
                jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        if self.rt.is_main:
            log.info("resumed from %s (step %d, epoch %d, batch %d)", path, self.step, self.epoch,
                     self.batch_in_epoch)

    def save_checkpoint(self) -> Path:
        rt = self.rt
        final = ckpt.step_dir(self.out, self.step)
        tmp = final.with_name(final.name + ".tmp")
        if rt.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        rt.barrier()
        ckpt.write_rank_rng(tmp, rt.rank)
        rt.barrier()
        if rt.is_main:
            state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                     "scheduler": self.scheduler.state_dict(), "config": dataclasses.asdict(self.cfg),
                     "world_size": rt.world_size}
            ckpt.write_shared(tmp, model=self.model, full=self.full, optimizer=self.optimizer, state=state)
            ckpt.finalize(self.out, self.step, self.cfg.train.keep_checkpoints)
        rt.barrier()
        return final

    # --- one optimisation step ----------------------------------------------------------------
    def batch_statistics(self, batches: list[dict]) -> list[dict]:
        """Whole-batch statistics of an accumulated step (the objective's; apo/kto only)."""
        return self.objective.batch_statistics(self, batches)

    def compute_loss(self, batch: dict, stats: dict | None = None) -> tuple[LossResult, dict]:
        """Loss of one (micro-)batch; ``stats`` from :meth:`batch_statistics` when it is part of a larger batch."""
        return self.objective.compute(self, batch, stats)

    def accumulate_gradients(self, batches: list[dict]) -> dict:
        """Forward and backward passes of one optimiser step's batches (gradients summed into ``.grad``).

        With several micro-batches, apo/kto first compute z0 and the weights' normalisation over all of
        them (:meth:`batch_statistics`, one extra forward pass without gradients per micro-batch): the
        accumulated gradient is then that of the whole batch, as if it had been one batch (with
        ``reduction: mean``; ``sum`` gives the reference code's sum per micro-batch over the number
        of micro-batches). Returns the step's loss metrics (counts summed, the rest averaged).
        """
        accum = len(batches)
        metrics: dict[str, float] = {}
        sums = torch.zeros(4, dtype=torch.float64, device=self.rt.device)
        stats = self.batch_statistics(batches) if accum > 1 and self.objective.batch_statistics_supported else None
        for i, batch in enumerate(batches):
            sync = i == accum - 1 or not self.rt.distributed
            ctx = self.ddp_model.no_sync() if not sync else _null()
            with ctx:
                res, extra = self.compute_loss(batch, None if stats is None else stats[i])
                if not math.isfinite(res.value):
                    raise TrainingError(f"loss is {res.value} at step {self.step + 1} ({self.cfg.loss.name}); "
                                        f"metrics: {res.metrics}")
                (res.loss / accum).backward()
            for k, v in res.metrics.items():
                metrics[k] = metrics.get(k, 0.0) + (v if k.startswith("n_") else v / accum)
            free = extra.get("l1_free_running")
            sums += torch.stack([extra["l1"].double().sum(), extra["token_accuracy"].double().sum(),
                                 torch.tensor(float(len(extra["l1"])), dtype=torch.float64, device=sums.device),
                                 free.double().sum() if free is not None else sums.new_zeros(())])
        tot = self.reducer.sum(sums)
        metrics.update(action_l1=float(tot[0] / tot[2]), token_accuracy=float(tot[1] / tot[2]))
        if self.objective.reports_free_running_l1:
            metrics["action_l1_free_running"] = float(tot[3] / tot[2])
        return metrics

    def train_step(self, batches: list[dict]) -> dict:
        """One optimiser step over ``grad_accum_steps`` batches; returns the step's metrics."""
        t0 = time.perf_counter()
        metrics = self.accumulate_gradients(batches)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.cfg.optim.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.max_grad_norm))
        else:
            grad_norm = float(torch.linalg.vector_norm(
                torch.stack([p.grad.detach().norm() for p in params if p.grad is not None])))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        metrics.update(step=self.step, epoch=self.epoch, lr=lr, grad_norm=grad_norm,
                       step_time_s=time.perf_counter() - t0)
        return metrics

    # --- loop ---------------------------------------------------------------------------------
    def _batches(self):
        """This rank's batches forever, from the resume position on; tracks (epoch, batch_in_epoch)."""
        from torch.utils.data import DataLoader

        while True:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate_steps,
                                num_workers=self.cfg.data.num_workers,
                                persistent_workers=False)
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def _log(self, metrics: dict) -> None:
        if not self.rt.is_main:
            return
        row = {k: _json_safe(v) for k, v in metrics.items()}
        self.history.append(row)
        with open(self.out / METRICS_JSONL, "a") as f:
            f.write(json.dumps(row) + "\n")
        keys = ["loss", "z0", "reward_desirable", "reward_undesirable", "lambda_D", "lambda_U",
                "reward_chosen", "reward_rejected", "action_l1", "token_accuracy", "lr"]
        text = " ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics and metrics[k] == metrics[k])
        line = f"step {self.step}/{self.cfg.train.max_steps} {text}"
        if self._bar is not None and not self._bar.disable:
            self._bar.write(line)
        else:
            print(line, flush=True)
        if self._writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and k not in ("step",) and v == v:
                    self._writer.add_scalar(f"train/{k}", v, self.step)

    def run(self) -> TrainResult:
        cfg, rt = self.cfg, self.rt
        from tqdm import tqdm

        if rt.is_main and cfg.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1)
        self._bar = tqdm(total=cfg.train.max_steps, initial=self.step, disable=not (rt.is_main and cfg.train.progress_bar),
                         desc=f"{cfg.loss.name}", dynamic_ncols=True)
        t_start = time.perf_counter()
        batches = self._batches()
        try:
            while self.step < cfg.train.max_steps:
                group = [next(batches) for _ in range(cfg.train.grad_accum_steps)]
                metrics = self.train_step(group)
                self._bar.update(1)
                if self.step % cfg.train.log_every == 0 or self.step == 1 or self.step == cfg.train.max_steps:
                    self._log(metrics)
                if self.step % cfg.train.checkpoint_every == 0 or self.step == cfg.train.max_steps:
                    self.save_checkpoint()
                if cfg.train.step_delay_s > 0:
                    time.sleep(cfg.train.step_delay_s)
        finally:
            self._bar.close()
            if self._writer is not None:
                self._writer.close()
        return self._finish(time.perf_counter() - t_start)

    def _finish(self, wall: float) -> TrainResult:
        policy_dir = self.out / POLICY_SUBDIR
        metrics_path = self.out / METRICS_JSON
        if self.rt.is_main:
            tmp = policy_dir.with_name(policy_dir.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            self.model.eval()
            self.policy.save(tmp)
            if policy_dir.exists():
                shutil.rmtree(policy_dir)
            os.replace(tmp, policy_dir)
            summary = {
                "loss": self.cfg.loss.name, "steps": self.step, "resumed_from_step": self.resumed_from,
                "world_size": self.rt.world_size, "precision": self.rt.precision, "device": str(self.rt.device),
                "wall_time_s": wall, "dataset": self.dataset.summary.as_dict(), "sampler": self.sampler.describe(),
                "final": self.history[-1] if self.history else {}, "first": self.history[0] if self.history else {},
                "history": self.history, "policy_dir": str(policy_dir), "config": dataclasses.asdict(self.cfg),
            }
            metrics_path.write_text(json.dumps(summary, indent=1))
            log.info("policy written to %s, metrics to %s", policy_dir, metrics_path)
        self.rt.barrier()
        self.dataset.close()
        return TrainResult(self.out, policy_dir, metrics_path, self.step, self.resumed_from,
                           self.history[-1] if self.history else {}, list(self.history))

    def close(self) -> None:
        self.rt.close()


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def train(config, overrides: dict | None = None, preset: dict | None = None) -> TrainResult:
    """Train from a TrainConfig, a mapping or a YAML path; returns where the results went."""
    cfg = config if isinstance(config, TrainConfig) else load_train_config(config, overrides, preset)
    trainer = Trainer(cfg)
    try:
        trainer.setup()
        return trainer.run()
    finally:
        trainer.close()


# --- command line -------------------------------------------------------------------------------
def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", help="YAML config file (keys: see src/apo_trainer/README.md)")
    p.add_argument("--output", help="output_dir")
    p.add_argument("--dataset", action="append", help="HDF5 dataset file (repeatable); sets data.paths")
    p.add_argument("--policy", help="starting policy directory (policy.path)")
    p.add_argument("--loss", choices=LOSS_NAMES, help="loss.name")
    p.add_argument("--max-steps", type=int, help="train.max_steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any key, e.g. --set optim.lr=1e-4 (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _cli(argv, prog: str, description: str, preset: dict | None) -> int:
    args = _parser(prog, description).parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else (logging.INFO if rank == 0 else logging.WARNING),
                        format=f"[%(asctime)s %(name)s r{rank}] %(levelname)s %(message)s", stream=sys.stderr)
    try:
        overrides = parse_dotted_overrides(args.set)
        quick = {}
        if args.output:
            quick["output_dir"] = args.output
        if args.dataset:
            quick["data"] = {"paths": args.dataset}
        if args.policy:
            quick.setdefault("policy", {})["path"] = args.policy
        if args.loss:
            quick.setdefault("loss", {})["name"] = args.loss
        if args.max_steps is not None:
            quick.setdefault("train", {})["max_steps"] = args.max_steps
        from apo_core.config import merge_overrides

        cfg = load_train_config(args.config, merge_overrides(quick, overrides), preset)
        if args.print_config:
            print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
            return 0
        result = train(cfg)
    except (ApoError, TrainingDataError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        print(json.dumps({"policy_dir": str(result.policy_dir), "metrics": str(result.metrics_path),
                          "steps": result.steps, "final": result.final}))
    return 0


def main(argv=None) -> int:
    """``apo-train``: APO (default) or a baseline, from a starting policy."""
    return _cli(argv, "apo-train", "Train a VLA policy with APO (or KTO, DPO, BC) on recorded HDF5 data.", None)


def main_bc(argv=None) -> int:
    """``apo-train-bc``: the initial policy, BC of a new small VLA on expert demonstrations."""
    return _cli(argv, "apo-train-bc", "Train the initial policy by behaviour cloning (full fine-tuning preset).",
                BC_PRESET)


if __name__ == "__main__":
    sys.exit(main())
