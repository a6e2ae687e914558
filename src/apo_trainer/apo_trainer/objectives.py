"""Loss families as objects: what each trains on, which reference it needs, and its loss of a batch.

The trainer picks one objective at set-up from :data:`OBJECTIVES` (``loss.name`` -> class) and asks it
instead of testing loss names. :data:`LOSS_NAMES`, the registry's keys, is the one list of loss names
(the config, the retrain service and the command line take theirs from here).

- :class:`PreferenceObjective` (``apo``): unpaired preference loss with adaptive weights from the
  per-sample L1 (:func:`apo_trainer.losses.apo_loss`), z0 from the batch or from mismatched pairs, the
  optional sft anchor ``loss.sft_weight``; with gradient accumulation it computes z0 and the weights'
  scale over all micro-batches first (:meth:`PreferenceObjective.batch_statistics`).
  :class:`KTOObjective` (``kto``) is the same with constant weights.
- :class:`PairObjective` (``dpo``): each desirable step against a synthetic or proposal negative
  (:mod:`apo_trainer.pairs`); reference log-probs of chosen and rejected actions.
- :class:`LikelihoodObjective` (``bc``): NLL per action token; no reference; the only one that takes
  ``data.image_shift`` augmentation (the others compare with a reference cached on unshifted images).

Chunked policies (``ChunkedVLAPolicy``, data read with ``StepDataset(horizon=H)``) go through the same
objectives: ``batch["actions"]`` holds (B, H, D) chunks, log-probs are those of a chunk's whole token
sequence, the L1 is over the decoded chunk, "per action token" divides by each sample's own token
count (:func:`tokens_per_sample`), and DPO's negatives are whole chunks (:func:`apo_trainer.pairs.rejected_targets`).

``loss.undesirable_tokens: disagreeing`` (apo, kto; one token per action dimension): an undesirable
step's log-ratio sums only the tokens of the dimensions where its action lies more than
``loss.agree_bins`` bins from the human correction that followed it (:func:`disagreeing_dims`), in
the policy and in the reference alike, so the push-down leaves the dimensions the correction shares
(typically rotation and gripper while the arm drifts) where they were. Desirable steps, and an
undesirable step with no correction after it, sum every token.

The pure maths stays in :mod:`apo_trainer.losses`; an objective gathers its inputs through the
trainer's forward functions (``tr._forward``, ``tr._reference_forward``) and its state (``tr.ref``,
``tr.model`` / ``tr.ddp_model``, ``tr.loss_reducer``, ``tr.policy``, ``tr.rt``, ``tr.step``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from apo_core.errors import ConfigError
from apo_trainer.augment import random_shift
from apo_trainer.data import DESIRABLE_KINDS, KIND_NAMES
from apo_trainer.losses import LossResult, apo_loss, bc_loss, dpo_loss, estimate_z0, weight_scale
from apo_trainer.pairs import rejected_targets


def tokens_per_sample(policy, metrics) -> int | torch.Tensor:
    """Action tokens per sample for per-token NLL: the policy's fixed count (one per action dimension),
    or each sample's own count when it varies (FAST chunks: ``metrics.n_tokens``)."""
    n = getattr(metrics, "n_tokens", None)
    return policy.action_dim if n is None else n.to(metrics.logps.dtype)


def free_running_l1(policy, images, instructions, actions, states=None) -> torch.Tensor:
    """Per-sample L1 of the policy's greedy autoregressive decode against the target, without gradients.

    Normalised units, against the target's bin centre (as the teacher-forced L1 of
    ``action_token_metrics``, so both are 0 for an exact decode): mean over action dimensions of
    |decode(greedy tokens) - decode(tokens of the target)|. One greedy pass of ``action_dim`` tokens
    with a KV cache (``predict_normalised_batch``); a policy without it is decoded sample by sample.
    """
    if hasattr(policy, "free_running_l1"):  # a chunked policy: greedy chunk vs the decoded target chunk
        return policy.free_running_l1(images, instructions, actions, states)
    actions = np.asarray(actions)
    target = policy.action_tokenizer.decode(policy.labels_from_actions(actions))
    with torch.no_grad():
        if hasattr(policy, "predict_normalised_batch"):
            pred = policy.predict_normalised_batch(images, list(instructions), states)
        else:
            from apo_core.policy.base import Observation

            pred = np.stack([policy.action_stats.normalise(policy.predict(Observation(
                images[i], instructions[i], None if states is None else states[i]))) for i in range(len(actions))])
    return torch.as_tensor(np.abs(np.asarray(pred, dtype=np.float64) - target).mean(axis=1), dtype=torch.float32)


def disagreeing_dims(policy, actions, corrections, agree_bins: int) -> np.ndarray:
    """(B, D) bool: dimensions whose action token lies more than ``agree_bins`` bins from the correction's.

    Rows whose correction is not finite (desirable steps; an undesirable step with no human step after
    it) are all True: every token counts, as without the option.
    """
    actions = np.asarray(actions)
    if actions.ndim != 2:
        raise ConfigError("loss.undesirable_tokens=disagreeing needs one action per step (a policy with one token per "
                          f"action dimension); this batch holds action chunks of shape {actions.shape[1:]}")
    corrections = np.asarray(corrections, dtype=np.float64)
    mask = np.ones(actions.shape, dtype=bool)
    rows = np.flatnonzero(np.isfinite(corrections).all(axis=1))
    if rows.size:
        mine = policy.labels_from_actions(actions[rows]).astype(np.int64)
        theirs = policy.labels_from_actions(corrections[rows]).astype(np.int64)
        mask[rows] = np.abs(mine - theirs) > agree_bins  # token ids are bins in reverse order: same distance
    return mask


class Objective:
    """One loss family. Class attributes say what the trainer must provide; :meth:`compute` is the loss."""

    default_kinds: ClassVar[tuple[str, ...]] = KIND_NAMES  # step kinds trained on when data.kinds is null
    reference_keys: ClassVar[tuple[str, ...]] = ()  # reference log-probs needed: "chosen", "rejected"
    batch_statistics_supported: ClassVar[bool] = False  # whole-batch statistics under gradient accumulation
    default_sampler: ClassVar[str] = "balanced"  # sampler.kind: auto
    augments_images: ClassVar[bool] = False  # data.image_shift applies
    uses_z0: ClassVar[bool] = False  # a reference point z0 (loss.z0_source, z0_min, z0_max) applies
    # Every step trained on is a target to raise (bc, and dpo's chosen side): undesirable steps must not be.
    raises_every_step: ClassVar[bool] = False

    def __init__(self, name: str, cfg):
        """``cfg``: the run's :class:`apo_trainer.config.TrainConfig` (which imports this module for
        :data:`LOSS_NAMES` and asks the objective classes what they need, so it is not imported here)."""
        self.name = name
        self.cfg = cfg
        self.loss = cfg.loss

    @property
    def needs_reference(self) -> bool:
        return bool(self.reference_keys)

    @property
    def reports_free_running_l1(self) -> bool:
        return False

    def fingerprint_fields(self) -> dict:
        """Settings of the objective the reference cache depends on (beyond data, policy and seed)."""
        return {"dpo": None}

    def sampler_notes(self, groups: dict, kind: str) -> list[str]:
        """Warnings about the sampled data for this objective."""
        return []

    def reference_actions(self, tr, batch: dict) -> dict[str, np.ndarray]:
        """The actions whose reference log-probs are cached, per key of :attr:`reference_keys`."""
        return {"chosen": batch["actions"]}

    def reference_values(self, tr, batch: dict, reference=None) -> dict[str, torch.Tensor]:
        """Per-sample reference log-probs of a batch, per key of :attr:`reference_keys` (what the cache holds)."""
        return {k: tr._reference_forward(batch, a, reference) for k, a in self.reference_actions(tr, batch).items()}

    def batch_statistics(self, tr, batches: list[dict]) -> list[dict]:
        raise NotImplementedError(f"loss {self.name!r} has no whole-batch statistics")

    def compute(self, tr, batch: dict, stats: dict | None = None) -> tuple[LossResult, dict]:
        """(loss, extra) of one (micro-)batch; extra holds per-sample ``l1`` and ``token_accuracy``."""
        raise NotImplementedError


class PreferenceObjective(Objective):
    """``apo``: desirable / undesirable steps against the reference, adaptive weights from the L1."""

    default_kinds = KIND_NAMES
    reference_keys = ("chosen",)
    batch_statistics_supported = True
    uses_z0 = True
    adaptive = True  # weights from the per-sample L1 (False: constant desirable/undesirable weights)

    @property
    def reports_free_running_l1(self) -> bool:
        return self.adaptive and self.loss.l1_mode == "free_running"

    def sampler_notes(self, groups: dict, kind: str) -> list[str]:
        if len(groups.get("undesirable", [])) == 0 and kind == "balanced":
            return ["no undesirable steps: the preference loss only raises desirable actions relative to the "
                    "reference"]
        return []

    def fingerprint_fields(self) -> dict:
        fields = super().fingerprint_fields()
        if self.loss.undesirable_tokens != "all":  # absent at the default: earlier caches stay valid
            fields["undesirable_tokens"] = [self.loss.undesirable_tokens, self.loss.agree_bins]
        return fields

    def token_mask(self, tr, batch: dict) -> torch.Tensor | None:
        """(B, D) tokens each sample's log-ratio sums (``loss.undesirable_tokens``); None: all of them."""
        if self.loss.undesirable_tokens == "all":
            return None
        corrections = batch.get("corrections")
        if corrections is None:
            corrections = np.full(np.shape(batch["actions"]), np.nan)
        mask = disagreeing_dims(tr.policy, batch["actions"], corrections, self.loss.agree_bins)
        return torch.as_tensor(mask, device=tr.rt.device)

    @staticmethod
    def summed_logps(metrics, mask: torch.Tensor | None) -> torch.Tensor:
        """Per-sample log-probs (float64) over the tokens ``mask`` keeps (all when None)."""
        if mask is None:
            return metrics.logps.double()
        if getattr(metrics, "token_logps", None) is None:
            raise ConfigError("loss.undesirable_tokens=disagreeing needs per-dimension log-probs, which this policy's "
                              "forward pass does not give (its tokens do not map to action dimensions)")
        return (metrics.token_logps.double() * mask).sum(dim=1)

    def reference_values(self, tr, batch: dict, reference=None) -> dict[str, torch.Tensor]:
        mask = self.token_mask(tr, batch)
        if mask is None:
            return super().reference_values(tr, batch, reference)
        return {"chosen": self.summed_logps(tr._reference_metrics(batch, batch["actions"], reference), mask)}

    def l1_for_weights(self, tr, batch: dict, teacher_forced: torch.Tensor) -> torch.Tensor:
        """The per-sample L1 the adaptive weights use (``loss.l1_mode``)."""
        if not self.reports_free_running_l1:
            return teacher_forced
        states = batch["states"] if tr.dataset.state_dim else None
        return free_running_l1(tr.policy, batch["images"], batch["instructions"], batch["actions"],
                               states).to(tr.rt.device)

    def inputs(self, tr, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(reference log-probs, mismatched-pair policy / reference log-probs or None) of a batch."""
        ref = tr.ref["chosen"][batch["index"].to(tr.rt.device)] if tr.ref is not None else \
            self.reference_values(tr, batch)["chosen"]
        kl_pol = kl_ref = None
        if self.loss.z0_source == "mismatched":
            shifted = np.roll(batch["actions"], 1, axis=0)
            with torch.no_grad():
                kl_pol = tr._forward(batch, shifted, tr.model).logps.double()
            kl_ref = tr._reference_forward(batch, shifted)
        return ref, kl_pol, kl_ref

    def batch_statistics(self, tr, batches: list[dict]) -> list[dict]:
        """First pass of an accumulated step, without gradients: z0 and the adaptive weights' scale over
        the whole batch (every micro-batch, every rank under ``weight_scope: global``), so that the
        micro-batches' backward passes optimise the loss of the whole batch. Returns per micro-batch
        what its backward pass reuses (L1, reference log-probs, z0, scale)."""
        cfg = self.loss
        per, ratios, l1s, des = [], [], [], []
        with torch.no_grad():
            for batch in batches:
                m = tr._forward(batch, batch["actions"], tr.model)
                ref, kl_pol, kl_ref = self.inputs(tr, batch)
                l1 = self.l1_for_weights(tr, batch, m.l1)
                logps = self.summed_logps(m, self.token_mask(tr, batch))
                ratios.append(kl_pol - kl_ref if kl_pol is not None else logps - ref)
                l1s.append(l1)
                des.append(batch["desirable"].to(tr.rt.device))
                per.append({"l1": l1, "ref": ref})
        z0 = estimate_z0(torch.cat(ratios), z0_min=cfg.z0_min, z0_max=cfg.z0_max, reducer=tr.loss_reducer)
        scale = weight_scale(torch.cat(l1s), torch.cat(des), cfg.weight_norm, tr.loss_reducer) \
            if self.adaptive else None
        for p in per:
            p.update(z0=z0, scale=scale)
        return per

    def loss_of(self, policy_logps, ref, l1, desirable, *, n_tokens: int, reducer, kl_pol=None, kl_ref=None,
                z0=None, scale=None) -> LossResult:
        """:func:`apo_loss` with this config's settings on given tensors."""
        c = self.loss
        return apo_loss(
            policy_logps, ref, l1, desirable, beta=c.beta, beta_d=c.beta_d, beta_u=c.beta_u, reweight=self.adaptive,
            weight_norm=c.weight_norm, lambda_d_floor=c.lambda_d_floor, desirable_weight=c.desirable_weight,
            undesirable_weight=c.undesirable_weight, z0_source=c.z0_source, kl_policy_logps=kl_pol,
            kl_ref_logps=kl_ref, z0_min=c.z0_min, z0_max=c.z0_max, reduction=c.reduction, reducer=reducer, z0=z0,
            scale=scale, sft_weight=c.sft_weight, n_tokens=n_tokens)

    def compute(self, tr, batch: dict, stats: dict | None = None) -> tuple[LossResult, dict]:
        m = tr._forward(batch, batch["actions"], tr.ddp_model)
        extra = {"l1": m.l1, "token_accuracy": m.token_accuracy}
        desirable = batch["desirable"].to(tr.rt.device)
        if stats is not None:
            ref, l1, z0, scale = stats["ref"], stats["l1"], stats["z0"], stats["scale"]
            kl_pol = kl_ref = None
        else:
            ref, kl_pol, kl_ref = self.inputs(tr, batch)
            l1, z0, scale = self.l1_for_weights(tr, batch, m.l1), None, None
        if self.reports_free_running_l1:
            extra["l1_free_running"] = l1
        mask = self.token_mask(tr, batch)
        res = self.loss_of(self.summed_logps(m, mask), ref, l1, desirable, n_tokens=tokens_per_sample(tr.policy, m),
                           reducer=tr.loss_reducer, kl_pol=kl_pol, kl_ref=kl_ref, z0=z0, scale=scale)
        if mask is not None and bool((~desirable).any()):  # how much of the undesirable actions is pushed down
            res.metrics["pushed_token_share"] = float(mask[~desirable].float().mean())
        return res, extra


class KTOObjective(PreferenceObjective):
    """``kto``: :class:`PreferenceObjective` with constant weights (``loss.desirable_weight`` /
    ``loss.undesirable_weight``)."""

    adaptive = False


class PairObjective(Objective):
    """``dpo``: each desirable step (chosen) against a rejected action built for it."""

    default_kinds = tuple(KIND_NAMES[k] for k in DESIRABLE_KINDS)  # each desirable step with its negative
    reference_keys = ("chosen", "rejected")
    raises_every_step = True

    def fingerprint_fields(self) -> dict:
        return {"dpo": [self.loss.dpo_perturbation, self.loss.dpo_use_policy_proposals]}

    def rejected(self, tr, batch: dict) -> np.ndarray:
        """The rejected actions (B, D), or chunks (B, H, D) for a chunked policy, of a batch's targets."""
        rej, _ = rejected_targets(
            batch["actions"], batch["policy_actions"], batch["index"].numpy(), tr.policy.action_stats,
            perturbation=self.loss.dpo_perturbation, use_policy_proposals=self.loss.dpo_use_policy_proposals,
            seed=self.cfg.train.seed)
        return rej

    def reference_actions(self, tr, batch: dict) -> dict[str, np.ndarray]:
        return {"chosen": batch["actions"], "rejected": self.rejected(tr, batch)}

    def loss_of(self, chosen, rejected, ref_chosen, ref_rejected, *, reducer) -> LossResult:
        """:func:`dpo_loss` with this config's settings on given tensors."""
        c = self.loss
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=c.beta,
                        label_smoothing=c.dpo_label_smoothing, reduction=c.reduction, reducer=reducer)

    def compute(self, tr, batch: dict, stats: dict | None = None) -> tuple[LossResult, dict]:
        rejected = self.rejected(tr, batch)
        both = {k: (np.concatenate([v, v]) if isinstance(v, np.ndarray) else v) for k, v in batch.items()}
        both["instructions"] = batch["instructions"] * 2
        m = tr._forward(both, np.concatenate([batch["actions"], rejected]), tr.ddp_model)
        b = len(batch["actions"])
        if tr.ref is not None:
            idx = batch["index"].to(tr.rt.device)
            ref_c, ref_r = tr.ref["chosen"][idx], tr.ref["rejected"][idx]
        else:
            ref_c, ref_r = tr._reference_forward(batch, batch["actions"]), tr._reference_forward(batch, rejected)
        res = self.loss_of(m.logps[:b], m.logps[b:], ref_c, ref_r, reducer=tr.loss_reducer)
        return res, {"l1": m.l1[:b], "token_accuracy": m.token_accuracy[:b]}


class LikelihoodObjective(Objective):
    """``bc``: negative log-likelihood per action token (DAgger on expert demonstrations + human corrections)."""

    default_kinds = ("expert", "human")
    default_sampler = "uniform"
    raises_every_step = True
    augments_images = True

    def compute(self, tr, batch: dict, stats: dict | None = None) -> tuple[LossResult, dict]:
        shift = self.cfg.data.image_shift
        if shift:
            # Seeded by (seed, rank, step, first sample): a resumed run draws the same shifts.
            rng = np.random.default_rng([self.cfg.train.seed, tr.rt.rank, tr.step, int(batch["index"][0])])
            batch = {**batch, "images": random_shift(batch["images"], shift, rng)}
        m = tr._forward(batch, batch["actions"], tr.ddp_model)
        return bc_loss(m.logps, tokens_per_sample(tr.policy, m), reducer=tr.loss_reducer), \
            {"l1": m.l1, "token_accuracy": m.token_accuracy}


OBJECTIVES: dict[str, type[Objective]] = {
    "apo": PreferenceObjective,
    "kto": KTOObjective,
    "dpo": PairObjective,
    "bc": LikelihoodObjective,
}
LOSS_NAMES: tuple[str, ...] = tuple(OBJECTIVES)


def objective_class(name: str) -> type[Objective]:
    """The objective class of a loss name; ConfigError listing the valid names otherwise."""
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown loss {name!r}; valid: {', '.join(LOSS_NAMES)}") from None


def make_objective(cfg) -> Objective:
    """The objective of ``cfg.loss.name``, set up with the config."""
    return objective_class(cfg.loss.name)(cfg.loss.name, cfg)
