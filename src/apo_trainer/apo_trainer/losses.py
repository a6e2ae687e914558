"""APO and its baselines as pure functions of per-sample tensors.

Every loss takes summed action-token log-probs of the policy (differentiable) and of the reference
(constants), plus what the method needs (L1 errors, a desirable mask, rejected log-probs), and
returns a :class:`LossResult` with the loss to back-propagate and detached metrics for logging.

The paper's form (arXiv 2506.07127; docs/ARCHITECTURE.md, "Method in brief") is the default of every option; the public
reference code's differences are named options:

==========================  =====================================  =======================================
option                      paper form (default)                   reference-code variant
==========================  =====================================  =======================================
``z0_source``               ``"batch"``: mean implicit reward r     ``"mismatched"``: mean log-ratio of
                            of the batch's own (o_i, a_i) pairs     mismatched pairs (o_i, a_j), j != i, in
                                                                    the batch (TRL's KL estimate); pass
                                                                    ``kl_policy_logps``/``kl_ref_logps``
``z0_min`` / ``z0_max``     ``0.0`` / ``None``: clamp at 0          ``-5.0`` / ``5.0``
``reduction``               ``"mean"`` over the batch               ``"sum"`` over the batch
``weight_norm``             ``"paper"``: w_i = l_i / sum_j l_j      ``"reference"``: per subset,
                            over the batch, beta_D = beta_U = 8    w_i = (l_i + 1e-4) / (sum_{j in S} l_j
                                                                    + 1e-4), S = the sample's desirable or
                                                                    undesirable subset; beta_D = beta_U = 1
==========================  =====================================  =======================================

A third normalisation is this project's: ``weight_norm="mean"``, w_i = l_i / mean_j l_j, whose
distribution does not depend on the batch size (the paper's w has mean 1/B, so the same sample gets
lambda_U = 0.3 at batch 8 and 0.75 at batch 32 with beta = 8). With beta_D = beta_U = 1 it equals
the paper's form at a batch of 8 (the paper's per-GPU batch). It also has a floor on lambda_D
(``lambda_d_floor``, default 0.1): a desirable step the policy already decodes exactly (l = 0, about
30 % of them in the pilot) otherwise gets lambda_D = 0 and nothing holds its likelihood up while the
undesirable side pushes the shared action bins down (the pilot's "APO lowered the likelihood of
nearly everything"). lambda_D = floor + (1 - floor)(1 - exp(-beta_D w)).

Definitions (all per sample i; r_i = log pi(a_i|o_i) - log pi_ref(a_i|o_i), summed over the action
tokens; z0 detached):

- ``apo``: w_i = l_i / sum_j l_j (``weight_norm``, above), lambda_D = 1 - exp(-beta_D w), lambda_U = exp(-beta_U w);
  desirable v = lambda_D sigmoid(beta (r - z0)), undesirable v = lambda_U sigmoid(beta (z0 - r));
  per-sample loss lambda - v. A batch whose errors are all zero has nothing left to correct on its
  desirable samples: w = 0, so lambda_D = 0 and lambda_U = 1 (no division by zero).
- ``kto``: the same with constant lambda_D = ``desirable_weight``, lambda_U = ``undesirable_weight``.
  With ``z0_source="mismatched"`` and the default clamp this is TRL's ``KTOTrainer`` loss
  (``loss_type="kto"``): KL = mean(policy_KL_logps - reference_KL_logps) clamped at 0,
  losses = cat(w_D (1 - sigmoid(beta (r - KL))), w_U (1 - sigmoid(beta (KL - r)))).mean().
- ``dpo``: -log sigmoid(beta ((pi_c - ref_c) - (pi_r - ref_r))) on (chosen, rejected) pairs; the
  trainer builds the rejected action synthetically (see :mod:`apo_trainer.pairs`).
- ``bc``: negative log-likelihood of the action tokens, averaged per token (DAgger = BC on expert
  demonstrations + human corrections; the data side chooses which steps).

Data parallelism: the batch statistics (z0, the weights' normaliser, the mean's denominator) are sums over every
rank's samples when a :class:`Reducer` for the process group is passed, so N processes with B
samples each compute exactly the loss of one process on the N*B union batch; the returned ``loss``
is scaled so that DDP's gradient averaging yields that union-batch gradient. Without a reducer the
functions are plain single-batch maths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

Z0Source = Literal["batch", "mismatched"]
Reduction = Literal["mean", "sum"]
WeightNorm = Literal["paper", "reference", "mean"]
WEIGHT_NORMS = ("paper", "reference", "mean")
# beta_D = beta_U and the lambda_D floor each normalisation was designed with (used when not given).
DEFAULT_WEIGHT_BETA = {"paper": 8.0, "reference": 1.0, "mean": 1.0}
DEFAULT_LAMBDA_D_FLOOR = {"paper": 0.0, "reference": 0.0, "mean": 0.1}
REFERENCE_EPS = 1e-4  # the reference code adds it to every error and to each subset's sum


class Reducer:
    """Sums tensors over the ranks of a process group (identity when there is one process)."""

    def __init__(self, group=None):
        import torch.distributed as dist

        self._dist = dist
        self.group = group
        self.world_size = dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        out = t.detach().clone()
        if self.world_size > 1:
            self._dist.all_reduce(out, op=self._dist.ReduceOp.SUM, group=self.group)
        return out


class _LocalReducer(Reducer):
    def __init__(self):
        self.group = None
        self.world_size = 1

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone()


LOCAL = _LocalReducer()


@dataclass
class LossResult:
    loss: torch.Tensor  # back-propagate this (already scaled for DDP gradient averaging)
    value: float  # the loss of the whole (global) batch, for logging
    metrics: dict[str, float] = field(default_factory=dict)
    per_sample: torch.Tensor | None = None  # detached per-sample losses (local samples)


def _check_1d(name: str, t: torch.Tensor, n: int | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 1-D per-sample tensor, got shape {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} samples, expected {n}")
    return t


def _reduce(per_sample: torch.Tensor, reduction: Reduction, reducer: Reducer) -> tuple[torch.Tensor, float]:
    """(loss to back-propagate, global loss value) for a per-sample loss vector."""
    local_sum = per_sample.sum()
    stats = reducer.sum(torch.stack([local_sum.detach(), torch.tensor(float(per_sample.shape[0]),
                                                                       device=per_sample.device)]))
    global_sum, n_global = stats[0], stats[1]
    if n_global <= 0:
        raise ValueError("the loss needs at least one sample in the batch (across all ranks)")
    w = reducer.world_size
    if reduction == "mean":
        # DDP averages gradients over ranks: multiplying by the world size undoes that average.
        return local_sum * (w / n_global), float(global_sum / n_global)
    if reduction == "sum":
        return local_sum * w, float(global_sum)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def estimate_z0(
    logratios: torch.Tensor,
    *,
    z0_min: float | None = 0.0,
    z0_max: float | None = None,
    reducer: Reducer = LOCAL,
) -> torch.Tensor:
    """The reference point: mean log-ratio over the (global) batch, detached and clamped."""
    stats = reducer.sum(torch.stack([logratios.detach().sum(),
                                     torch.tensor(float(logratios.shape[0]), device=logratios.device)]))
    if stats[1] <= 0:
        raise ValueError("z0 needs at least one sample")
    z0 = stats[0] / stats[1]
    if z0_min is not None or z0_max is not None:
        z0 = z0.clamp(min=z0_min, max=z0_max)
    return z0.detach()


def resolve_weighting(
    weight_norm: str = "paper", beta_d: float | None = None, beta_u: float | None = None,
    lambda_d_floor: float | None = None,
) -> tuple[float, float, float]:
    """(beta_D, beta_U, lambda_D floor), each left as None taking the normalisation's own default."""
    if weight_norm not in WEIGHT_NORMS:
        raise ValueError(f"weight_norm must be one of {', '.join(WEIGHT_NORMS)}, got {weight_norm!r}")
    bd = DEFAULT_WEIGHT_BETA[weight_norm] if beta_d is None else float(beta_d)
    bu = DEFAULT_WEIGHT_BETA[weight_norm] if beta_u is None else float(beta_u)
    floor = DEFAULT_LAMBDA_D_FLOOR[weight_norm] if lambda_d_floor is None else float(lambda_d_floor)
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"lambda_d_floor must be in [0, 1), got {floor}")
    return bd, bu, floor


def _check_l1(l1: torch.Tensor) -> torch.Tensor:
    l1 = l1.detach()
    if not l1.is_floating_point():
        l1 = l1.float()
    if torch.any(l1 < 0) or not torch.all(torch.isfinite(l1)):
        raise ValueError("L1 errors must be finite and non-negative")
    return l1


def weight_scale(
    l1: torch.Tensor, desirable: torch.Tensor | None = None, weight_norm: str = "paper", reducer: Reducer = LOCAL
) -> torch.Tensor:
    """The batch statistic the adaptive weights divide by: (denominator of desirable samples, of undesirable).

    ``paper``: sum_j l_j (both entries); ``mean``: mean_j l_j; ``reference``: per subset, sum of the
    subset's errors + 1e-4. Sums and counts run over every rank through ``reducer``. Computing it once
    for a whole (accumulated) batch and passing it to :func:`adaptive_weights` gives every micro-batch
    the weights of the whole batch.
    """
    l1 = _check_l1(l1).double()
    if weight_norm not in WEIGHT_NORMS:
        raise ValueError(f"weight_norm must be one of {', '.join(WEIGHT_NORMS)}, got {weight_norm!r}")
    if desirable is None:
        if weight_norm == "reference":
            raise ValueError("weight_norm='reference' normalises per subset: pass the desirable mask")
        desirable = torch.ones_like(l1, dtype=torch.bool)
    desirable = desirable.bool().to(l1.device)
    stats = reducer.sum(torch.stack([l1.sum(), torch.tensor(float(l1.shape[0]), dtype=l1.dtype, device=l1.device),
                                     (l1 * desirable).sum(), (l1 * ~desirable).sum()]))
    if weight_norm == "paper":
        return stats[0].repeat(2)
    if weight_norm == "mean":
        return (stats[0] / stats[1] if stats[1] > 0 else stats[0]).repeat(2)
    return stats[2:] + REFERENCE_EPS


def adaptive_weights(
    l1: torch.Tensor, beta_d: float | None = None, beta_u: float | None = None, reducer: Reducer = LOCAL, *,
    desirable: torch.Tensor | None = None, weight_norm: str = "paper", lambda_d_floor: float | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w, lambda_D, lambda_U) from per-sample L1 errors normalised over the (global) batch.

    ``scale``: the batch statistic of :func:`weight_scale`, when the batch is larger than ``l1`` (gradient
    accumulation); by default it is computed from ``l1`` itself. A zero denominator (every error of the
    batch zero) gives w = 0: nothing to correct, no 0/0.
    """
    beta_d, beta_u, floor = resolve_weighting(weight_norm, beta_d, beta_u, lambda_d_floor)
    l1 = _check_l1(l1)
    if scale is None:
        scale = weight_scale(l1, desirable, weight_norm, reducer)
    scale = scale.to(device=l1.device, dtype=torch.float64)
    des = torch.ones_like(l1, dtype=torch.bool) if desirable is None else desirable.bool().to(l1.device)
    num = l1.double() + (REFERENCE_EPS if weight_norm == "reference" else 0.0)
    den = torch.where(des, scale[0], scale[1])
    w = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    w = w.to(l1.dtype)
    lam_d = 1.0 - torch.exp(-beta_d * w)
    if floor > 0:
        lam_d = floor + (1.0 - floor) * lam_d
    return w, lam_d, torch.exp(-beta_u * w)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, reducer: Reducer) -> float:
    s = reducer.sum(torch.stack([(values.detach().double() * mask).sum(), mask.float().sum()]))
    return float(s[0] / s[1]) if s[1] > 0 else math.nan


def apo_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    l1: torch.Tensor | None,
    desirable: torch.Tensor,
    *,
    beta: float = 0.1,
    beta_d: float | None = None,
    beta_u: float | None = None,
    reweight: bool = True,
    weight_norm: WeightNorm = "paper",
    lambda_d_floor: float | None = None,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    z0_source: Z0Source = "batch",
    kl_policy_logps: torch.Tensor | None = None,
    kl_ref_logps: torch.Tensor | None = None,
    z0_min: float | None = 0.0,
    z0_max: float | None = None,
    reduction: Reduction = "mean",
    reducer: Reducer | None = None,
    z0: torch.Tensor | float | None = None,
    scale: torch.Tensor | None = None,
    sft_weight: float = 0.0,
    n_tokens: int | torch.Tensor | None = None,
) -> LossResult:
    """APO (``reweight=True``) or KTO (``reweight=False``); see the module docstring.

    ``sft_weight`` > 0 adds ``sft_weight`` x the negative log-likelihood per action token (``n_tokens``, a
    number or a per-sample tensor when samples have different token counts, e.g. FAST chunks,
    per action) of each desirable sample to its per-sample loss: a likelihood anchor on what should be
    done, so pushing undesirable actions down cannot drag the shared action bins with it.

    ``beta_d`` / ``beta_u`` / ``lambda_d_floor`` left as None take ``weight_norm``'s defaults (paper: 8,
    8, 0). ``z0`` and ``scale`` (:func:`weight_scale`) are the batch statistics when this call sees only
    part of the batch (gradient accumulation: the trainer computes them over the whole batch first);
    given, they replace the estimates from this call's samples.
    """
    reducer = reducer or LOCAL
    n = _check_1d("policy_logps", policy_logps).shape[0]
    _check_1d("ref_logps", ref_logps, n)
    desirable = _check_1d("desirable", desirable, n).bool()
    ref_logps = ref_logps.detach().to(policy_logps.dtype)
    r = policy_logps - ref_logps

    if z0 is not None:
        z0 = torch.as_tensor(z0, dtype=r.dtype, device=r.device).detach()
    elif z0_source == "batch":
        z0 = estimate_z0(r, z0_min=z0_min, z0_max=z0_max, reducer=reducer)
    elif z0_source == "mismatched":
        if kl_policy_logps is None or kl_ref_logps is None:
            raise ValueError("z0_source='mismatched' needs kl_policy_logps and kl_ref_logps")
        kl = _check_1d("kl_policy_logps", kl_policy_logps).detach() - _check_1d("kl_ref_logps", kl_ref_logps).detach()
        z0 = estimate_z0(kl, z0_min=z0_min, z0_max=z0_max, reducer=reducer)
    else:
        raise ValueError(f"z0_source must be 'batch' or 'mismatched', got {z0_source!r}")

    if reweight:
        if l1 is None:
            raise ValueError("APO's adaptive reweighting needs the per-sample L1 errors")
        _check_1d("l1", l1, n)
        _, lam_d, lam_u = adaptive_weights(l1, beta_d, beta_u, reducer, desirable=desirable, weight_norm=weight_norm,
                                           lambda_d_floor=lambda_d_floor, scale=scale)
    else:
        lam_d = torch.full((n,), float(desirable_weight), device=r.device, dtype=r.dtype)
        lam_u = torch.full((n,), float(undesirable_weight), device=r.device, dtype=r.dtype)
    lam_d = lam_d.to(r.dtype)
    lam_u = lam_u.to(r.dtype)

    v_d = lam_d * torch.sigmoid(beta * (r - z0))
    v_u = lam_u * torch.sigmoid(beta * (z0 - r))
    lam = torch.where(desirable, lam_d, lam_u)
    v = torch.where(desirable, v_d, v_u)
    per_sample = lam - v
    sft_nll = None
    if sft_weight:
        if sft_weight < 0 or n_tokens is None:
            raise ValueError(f"sft_weight must be >= 0 with n_tokens > 0, got {sft_weight} and {n_tokens}")
        sft_nll = -policy_logps / _token_counts(n_tokens, policy_logps)
        per_sample = per_sample + float(sft_weight) * torch.where(desirable, sft_nll, torch.zeros_like(sft_nll))
    loss, value = _reduce(per_sample, reduction, reducer)

    und = ~desirable
    metrics = {
        "loss": value,
        "z0": float(z0),
        "reward_desirable": _masked_mean(r, desirable, reducer),
        "reward_undesirable": _masked_mean(r, und, reducer),
        "lambda_D": _masked_mean(lam_d, desirable, reducer),
        "lambda_U": _masked_mean(lam_u, und, reducer),
        "logps_desirable": _masked_mean(policy_logps, desirable, reducer),
        "logps_undesirable": _masked_mean(policy_logps, und, reducer),
    }
    if sft_nll is not None:
        metrics["sft_nll"] = _masked_mean(sft_nll, desirable, reducer)
    counts = reducer.sum(torch.stack([desirable.float().sum(), und.float().sum()]))
    metrics["n_desirable"] = float(counts[0])
    metrics["n_undesirable"] = float(counts[1])
    if not math.isnan(metrics["reward_desirable"]) and not math.isnan(metrics["reward_undesirable"]):
        metrics["reward_margin"] = metrics["reward_desirable"] - metrics["reward_undesirable"]
    return LossResult(loss=loss, value=value, metrics=metrics, per_sample=per_sample.detach())


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    **kwargs,
) -> LossResult:
    """KTO: APO without the adaptive reweighting (constant lambda_D / lambda_U)."""
    kwargs.pop("l1", None)
    return apo_loss(
        policy_logps, ref_logps, None, desirable, beta=beta, reweight=False,
        desirable_weight=desirable_weight, undesirable_weight=undesirable_weight, **kwargs,
    )


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    reducer: Reducer | None = None,
) -> LossResult:
    """DPO (sigmoid loss, optional conservative label smoothing) on (chosen, rejected) pairs."""
    reducer = reducer or LOCAL
    n = _check_1d("policy_chosen_logps", policy_chosen_logps).shape[0]
    for name, t in (("policy_rejected_logps", policy_rejected_logps), ("ref_chosen_logps", ref_chosen_logps),
                    ("ref_rejected_logps", ref_rejected_logps)):
        _check_1d(name, t, n)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    r_c = policy_chosen_logps - ref_chosen_logps.detach().to(policy_chosen_logps.dtype)
    r_r = policy_rejected_logps - ref_rejected_logps.detach().to(policy_rejected_logps.dtype)
    logits = beta * (r_c - r_r)
    per_sample = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    loss, value = _reduce(per_sample, reduction, reducer)
    ones = torch.ones_like(r_c, dtype=torch.bool)
    metrics = {
        "loss": value,
        "reward_chosen": _masked_mean(r_c, ones, reducer),
        "reward_rejected": _masked_mean(r_r, ones, reducer),
        "reward_accuracy": _masked_mean((r_c > r_r).float(), ones, reducer),
    }
    metrics["reward_margin"] = metrics["reward_chosen"] - metrics["reward_rejected"]
    return LossResult(loss=loss, value=value, metrics=metrics, per_sample=per_sample.detach())


def _token_counts(n_tokens, policy_logps: torch.Tensor) -> torch.Tensor | float:
    """``n_tokens`` as a divisor of the per-sample log-probs: a positive number, or a positive (B,) tensor."""
    if isinstance(n_tokens, torch.Tensor):
        _check_1d("n_tokens", n_tokens, policy_logps.shape[0])
        if torch.any(n_tokens <= 0):
            raise ValueError(f"n_tokens must be positive, got {n_tokens.tolist()}")
        return n_tokens.detach().to(device=policy_logps.device, dtype=policy_logps.dtype)
    if not n_tokens or n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    return float(n_tokens)


def bc_loss(policy_logps: torch.Tensor, n_tokens: int | torch.Tensor, *, reducer: Reducer | None = None) -> LossResult:
    """Behaviour cloning: mean negative log-likelihood per action token."""
    reducer = reducer or LOCAL
    _check_1d("policy_logps", policy_logps)
    per_sample = -policy_logps / _token_counts(n_tokens, policy_logps)
    loss, value = _reduce(per_sample, "mean", reducer)
    return LossResult(loss=loss, value=value, metrics={"loss": value}, per_sample=per_sample.detach())
