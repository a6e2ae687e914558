"""APO, KTO, DPO and BC losses against values worked out by hand on small tensors."""

import math

import pytest
import torch

from apo_trainer.losses import adaptive_weights, apo_loss, bc_loss, dpo_loss, kto_loss


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def hand_apo(pol, ref, l1, des, beta, beta_d, beta_u, z0=None, z0_min=0.0, z0_max=None, reduction="mean",
             reweight=True, wd=1.0, wu=1.0):
    r = [p - q for p, q in zip(pol, ref, strict=True)]
    if z0 is None:
        z0 = sum(r) / len(r)
    if z0_min is not None:
        z0 = max(z0, z0_min)
    if z0_max is not None:
        z0 = min(z0, z0_max)
    total = sum(l1) if reweight else 0.0
    losses = []
    for ri, li, di in zip(r, l1, des, strict=True):
        w = li / total if total > 0 else 0.0
        lam_d = 1 - math.exp(-beta_d * w) if reweight else wd
        lam_u = math.exp(-beta_u * w) if reweight else wu
        if di:
            losses.append(lam_d - lam_d * sig(beta * (ri - z0)))
        else:
            losses.append(lam_u - lam_u * sig(beta * (z0 - ri)))
    return sum(losses) / len(losses) if reduction == "mean" else sum(losses), z0


def test_apo_matches_hand_computation_z0_clamped_at_zero():
    pol, ref, l1, des = [-1.0, -2.0, -3.0], [-1.5, -1.5, -2.0], [0.1, 0.3, 0.6], [1, 1, 0]
    res = apo_loss(t(pol), t(ref), t(l1), t(des, torch.bool), beta=0.5, beta_d=2.0, beta_u=3.0)
    expected, z0 = hand_apo(pol, ref, l1, des, 0.5, 2.0, 3.0)
    assert z0 == 0.0  # mean r = -1/3 is clamped at 0
    assert res.value == pytest.approx(expected, rel=1e-12)
    assert float(res.loss.detach()) == pytest.approx(expected, rel=1e-12)
    assert res.metrics["z0"] == 0.0
    assert res.metrics["reward_desirable"] == pytest.approx(0.0)  # (0.5 - 0.5) / 2
    assert res.metrics["reward_undesirable"] == pytest.approx(-1.0)
    assert res.metrics["lambda_D"] == pytest.approx(((1 - math.exp(-0.2)) + (1 - math.exp(-0.6))) / 2)
    assert res.metrics["lambda_U"] == pytest.approx(math.exp(-1.8))


def test_apo_positive_z0_and_worked_number():
    # r = [1, 2], z0 = 1.5, w = [0.25, 0.75]; one desirable, one undesirable.
    res = apo_loss(t([0.0, 0.0]), t([-1.0, -2.0]), t([1.0, 3.0]), t([1, 0], torch.bool),
                   beta=1.0, beta_d=1.0, beta_u=1.0)
    lam_d, lam_u = 1 - math.exp(-0.25), math.exp(-0.75)
    expected = ((lam_d - lam_d * sig(1 - 1.5)) + (lam_u - lam_u * sig(1.5 - 2))) / 2
    assert res.metrics["z0"] == pytest.approx(1.5)
    assert res.value == pytest.approx(expected, rel=1e-12)


def test_apo_all_desirable_batch():
    pol, ref, l1, des = [-1.0, -0.5, -2.0], [-1.2, -0.4, -2.5], [0.2, 0.2, 0.1], [1, 1, 1]
    res = apo_loss(t(pol), t(ref), t(l1), t(des, torch.bool), beta=0.3, beta_d=4.0, beta_u=4.0)
    expected, _ = hand_apo(pol, ref, l1, des, 0.3, 4.0, 4.0)
    assert res.value == pytest.approx(expected, rel=1e-12)
    assert math.isnan(res.metrics["reward_undesirable"]) and math.isnan(res.metrics["lambda_U"])
    assert res.metrics["n_undesirable"] == 0


def test_apo_all_zero_l1_has_no_division_by_zero():
    pol, ref, des = [-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0], [1, 0, 1]
    res = apo_loss(t(pol), t(ref), t([0.0, 0.0, 0.0]), t(des, torch.bool), beta=0.5)
    assert math.isfinite(res.value)
    # w = 0: lambda_D = 0 (desirable terms vanish), lambda_U = 1.
    z0 = max(0.0, (0.0 - 1.0 + 0.5) / 3)
    expected = (1 - sig(0.5 * (z0 - (-1.0)))) / 3
    assert res.value == pytest.approx(expected, rel=1e-12)
    assert res.metrics["lambda_D"] == 0.0 and res.metrics["lambda_U"] == 1.0


def test_apo_single_sample_batch():
    res = apo_loss(t([-1.0]), t([-1.4]), t([0.3]), t([1], torch.bool), beta=0.5, beta_d=2.0, beta_u=2.0)
    # r = 0.4 = z0, w = 1 -> lambda_D = 1 - e^-2, v = lambda_D * sigmoid(0) = lambda_D / 2.
    lam_d = 1 - math.exp(-2.0)
    assert res.value == pytest.approx(lam_d / 2, rel=1e-12)
    res_u = apo_loss(t([-1.0]), t([-1.4]), t([0.0]), t([0], torch.bool))
    assert res_u.value == pytest.approx(0.5, rel=1e-12)  # lambda_U = 1, sigmoid(0) = 1/2


def test_apo_reference_code_variant_mismatched_z0_symmetric_clamp_summed():
    pol, ref, l1, des = [-1.0, -9.0, -3.0, -0.2], [-1.5, -1.0, -2.0, -0.1], [0.1, 0.3, 0.6, 0.2], [1, 0, 0, 1]
    kl_pol, kl_ref = t([-20.0, -15.0, -18.0, -16.0]), t([-10.0, -9.0, -8.0, -11.0])  # mean log-ratio -7.75
    res = apo_loss(t(pol), t(ref), t(l1), t(des, torch.bool), beta=0.2, beta_d=3.0, beta_u=3.0,
                   z0_source="mismatched", kl_policy_logps=kl_pol, kl_ref_logps=kl_ref,
                   z0_min=-5.0, z0_max=5.0, reduction="sum")
    expected, z0 = hand_apo(pol, ref, l1, des, 0.2, 3.0, 3.0, z0=-7.75, z0_min=-5.0, z0_max=5.0, reduction="sum")
    assert z0 == -5.0 and res.metrics["z0"] == -5.0
    assert res.value == pytest.approx(expected, rel=1e-12)


def trl_kto_formula(p_chosen, p_rejected, p_kl, r_chosen, r_rejected, r_kl, beta, w_d, w_u):
    """TRL KTOTrainer (loss_type="kto") as its documentation and source state it, written out."""
    kl = (p_kl - r_kl).mean().detach().clamp(min=0)
    chosen_losses = 1 - torch.sigmoid(beta * ((p_chosen - r_chosen) - kl))
    rejected_losses = 1 - torch.sigmoid(beta * (kl - (p_rejected - r_rejected)))
    return torch.cat((w_d * chosen_losses, w_u * rejected_losses), 0).mean()


@pytest.mark.parametrize("kl_shift", [-3.0, 0.0, 2.5])
def test_kto_equals_trl_formula_value_and_gradient(kl_shift):
    g = torch.Generator().manual_seed(3)
    n = 6
    pol = (torch.randn(n, generator=g, dtype=torch.float64) * 3 - 10).requires_grad_()
    ref = torch.randn(n, generator=g, dtype=torch.float64) * 3 - 10
    des = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)
    kl_pol = torch.randn(n, generator=g, dtype=torch.float64) - 12 + kl_shift
    kl_ref = torch.randn(n, generator=g, dtype=torch.float64) - 12
    ours = kto_loss(pol, ref, des, beta=0.1, desirable_weight=1.0, undesirable_weight=1.33,
                    z0_source="mismatched", kl_policy_logps=kl_pol, kl_ref_logps=kl_ref)
    pol2 = pol.detach().clone().requires_grad_()
    # TRL orders chosen before rejected; the mean is order-free.
    theirs = trl_kto_formula(pol2[des], pol2[~des], kl_pol, ref[des], ref[~des], kl_ref, 0.1, 1.0, 1.33)
    assert float(ours.loss.detach()) == pytest.approx(float(theirs.detach()), rel=1e-12)
    ours.loss.backward()
    theirs.backward()
    assert torch.allclose(pol.grad, pol2.grad, rtol=1e-10, atol=1e-14)


def test_kto_batch_z0_is_apo_without_reweighting():
    pol, ref, des = [-1.0, -2.0, -3.0], [-1.5, -1.5, -2.0], [1, 1, 0]
    res = kto_loss(t(pol), t(ref), t(des, torch.bool), beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)
    expected, _ = hand_apo(pol, ref, [1, 1, 1], des, 0.5, 0, 0, reweight=False, wd=1.0, wu=2.0)
    assert res.value == pytest.approx(expected, rel=1e-12)


def test_gradient_signs_raise_desirable_lower_undesirable():
    pol = torch.tensor([-3.0, -3.0], dtype=torch.float64, requires_grad=True)
    res = apo_loss(pol, t([-3.0, -3.0]), t([0.5, 0.5]), t([1, 0], torch.bool), beta=0.5)
    res.loss.backward()
    assert pol.grad[0] < 0  # gradient descent raises the desirable log-prob
    assert pol.grad[1] > 0  # and lowers the undesirable one


def test_adaptive_weights_sum_to_one():
    w, lam_d, lam_u = adaptive_weights(t([1.0, 2.0, 5.0]), 2.0, 2.0)
    assert float(w.sum()) == pytest.approx(1.0)
    assert torch.all((lam_d > 0) & (lam_d < 1)) and torch.all((lam_u > 0) & (lam_u < 1))
    assert lam_d[2] > lam_d[0] and lam_u[2] < lam_u[0]  # larger error: more desirable weight, less undesirable


def test_dpo_hand_value():
    res = dpo_loss(t([-1.0, -2.0]), t([-3.0, -1.0]), t([-1.5, -2.0]), t([-2.5, -1.5]), beta=0.5)
    # logits: 0.5*((0.5) - (-0.5)) = 0.5 ; 0.5*((0) - (0.5)) = -0.25
    expected = (-math.log(sig(0.5)) - math.log(sig(-0.25))) / 2
    assert res.value == pytest.approx(expected, rel=1e-12)
    assert res.metrics["reward_accuracy"] == pytest.approx(0.5)


def test_bc_is_per_token_nll():
    res = bc_loss(t([-7.0, -14.0]), 7)
    assert res.value == pytest.approx(1.5)


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="ref_logps has 2 samples, expected 3"):
        apo_loss(t([1.0, 2, 3]), t([1.0, 2]), t([1.0, 1, 1]), t([1, 1, 1], torch.bool))
    with pytest.raises(ValueError, match="needs the per-sample L1"):
        apo_loss(t([1.0]), t([1.0]), None, t([1], torch.bool))
    with pytest.raises(ValueError, match="kl_policy_logps"):
        apo_loss(t([1.0]), t([1.0]), t([1.0]), t([1], torch.bool), z0_source="mismatched")
    with pytest.raises(ValueError, match="non-negative"):
        apo_loss(t([1.0]), t([1.0]), t([-1.0]), t([1], torch.bool))
    with pytest.raises(ValueError, match="at least one sample"):
        apo_loss(t([]), t([]), t([]), t([], torch.bool))


def test_dpo_negatives_use_the_overridden_proposal_or_a_fixed_perturbation():
    import numpy as np

    from apo_core.normalization import ActionStats
    from apo_trainer.pairs import rejected_actions

    stats = ActionStats(q01=[-2.0, -2.0, -1.0], q99=[2.0, 2.0, 1.0], mask=[True, True, False])
    actions = np.array([[0.0, 1.9, 1.0], [1.0, -1.0, -1.0], [0.5, 0.5, 1.0]])
    proposals = np.array([[1.0, 0.0, -1.0], [np.nan] * 3, [0.52, 0.5, 1.0]])  # last: too close to the target
    rej, from_prop = rejected_actions(actions, proposals, [10, 11, 12], stats, perturbation=0.25)
    assert from_prop.tolist() == [True, False, False]
    np.testing.assert_allclose(rej[0], proposals[0])
    moved = np.abs(stats.normalise(rej[1:]) - stats.normalise(actions[1:]))
    np.testing.assert_allclose(moved, 0.25, atol=1e-12)  # every dimension moves by exactly delta, inside [-1, 1]
    again, _ = rejected_actions(actions, proposals, [10, 11, 12], stats, perturbation=0.25)
    np.testing.assert_array_equal(rej, again)  # fixed per step: cacheable reference log-probs


def test_sft_term_adds_desirable_nll_per_token_only():
    pol, ref, l1, des = [-1.0, -2.0, -3.0], [-1.5, -1.5, -2.0], [0.1, 0.3, 0.6], [1, 1, 0]
    base = apo_loss(t(pol), t(ref), t(l1), t(des, torch.bool), beta=0.5, beta_d=2.0, beta_u=3.0)
    p = t(pol).requires_grad_(True)
    res = apo_loss(p, t(ref), t(l1), t(des, torch.bool), beta=0.5, beta_d=2.0, beta_u=3.0,
                   sft_weight=0.5, n_tokens=2)
    # desirable NLL per token: 1/2 and 2/2; the undesirable sample gets none; mean over the 3 samples
    assert res.value == pytest.approx(base.value + 0.5 * (0.5 + 1.0) / 3, rel=1e-12)
    assert res.metrics["sft_nll"] == pytest.approx(0.75)
    res.loss.backward()
    p0 = t(pol).requires_grad_(True)
    apo_loss(p0, t(ref), t(l1), t(des, torch.bool), beta=0.5, beta_d=2.0, beta_u=3.0).loss.backward()
    extra = (p.grad - p0.grad).tolist()
    assert extra == pytest.approx([-0.5 / 2 / 3, -0.5 / 2 / 3, 0.0])  # raises desirable log-probs only
    with pytest.raises(ValueError, match="sft_weight"):
        apo_loss(t(pol), t(ref), t(l1), t(des, torch.bool), sft_weight=1.0)
