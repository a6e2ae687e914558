"""The adaptive weights' normalisations: the paper's, the reference code's, and the batch-size-invariant one."""

import math

import pytest
import torch

from apo_trainer.losses import adaptive_weights, apo_loss, estimate_z0, kto_loss, weight_scale


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


# Eight samples as the balanced sampler draws them: 4 desirable, 2 human (desirable), 2 undesirable.
L1 = t([0.0, 0.02, 0.05, 0.0, 0.3, 0.2, 0.01, 0.04])
DES = t([1, 1, 1, 1, 1, 1, 0, 0], torch.bool)


def weights(norm, l1, des, **kw):
    return adaptive_weights(l1, desirable=des, weight_norm=norm, **kw)


def test_mean_gives_each_sample_the_same_weight_at_batch_8_and_64():
    w8, d8, u8 = weights("mean", L1, DES)
    w64, d64, u64 = weights("mean", L1.repeat(8), DES.repeat(8))  # the same 8 samples, 8 times
    for small, big in ((w8, w64), (d8, d64), (u8, u64)):
        assert torch.equal(big, small.repeat(8))
    assert float(w8.mean()) == pytest.approx(1.0) and float(w64.mean()) == pytest.approx(1.0)


def test_paper_weights_change_with_the_batch_size():
    w8, d8, u8 = weights("paper", L1, DES)
    w64, d64, u64 = weights("paper", L1.repeat(8), DES.repeat(8))
    assert torch.allclose(w64, w8.repeat(8) / 8)  # w has mean 1/B
    assert float(u64[6]) > float(u8[6]) + 0.1  # an undesirable sample is pushed down less at batch 64
    assert float(d64[4]) < float(d8[4]) - 0.3  # a correction is raised less
    # and in distribution, over many random batches: the mean lambda_U moves with B for the paper's
    # form and stays put for the mean normalisation.
    g = torch.Generator().manual_seed(0)

    def mean_lambdas(norm, batch, n_batches):
        lam_d, lam_u = [], []
        for _ in range(n_batches):
            l1 = torch.distributions.Exponential(10.0).sample((batch,)).double()
            l1 = l1 * (torch.rand(batch, generator=g) > 0.3)  # ~30 % exact (l = 0), as in the pilot
            des = torch.arange(batch) % 4 != 3
            _, d, u = weights(norm, l1, des)
            lam_d.append(d[des].mean())
            lam_u.append(u[~des].mean())
        return float(torch.stack(lam_d).mean()), float(torch.stack(lam_u).mean())

    torch.manual_seed(1)
    p8, p64 = mean_lambdas("paper", 8, 400), mean_lambdas("paper", 64, 50)
    m8, m64 = mean_lambdas("mean", 8, 400), mean_lambdas("mean", 64, 50)
    # (mean lambda_D, lambda_U): paper (0.43, 0.59) at 8 -> (0.11, 0.90) at 64; mean (0.48, 0.56) -> (0.48, 0.59)
    assert abs(p8[0] - p64[0]) > 0.2 and abs(p8[1] - p64[1]) > 0.2
    assert abs(m8[0] - m64[0]) < 0.04 and abs(m8[1] - m64[1]) < 0.04


def test_mean_with_beta_one_and_no_floor_is_the_paper_at_batch_8():
    _, dp, up = weights("paper", L1, DES)
    _, dm, um = weights("mean", L1, DES, beta_d=1.0, beta_u=1.0, lambda_d_floor=0.0)
    assert torch.allclose(dp, dm, rtol=1e-12) and torch.allclose(up, um, rtol=1e-12)


def test_floor_keeps_exact_desirable_samples_in_the_loss():
    _, d_paper, _ = weights("paper", L1, DES)
    _, d_mean, u_mean = weights("mean", L1, DES)
    assert float(d_paper[0]) == 0.0  # l = 0: ignored by the paper's form
    assert float(d_mean[0]) == pytest.approx(0.1)  # the default floor of the mean normalisation
    w = float(L1[4] / L1.mean())
    assert float(d_mean[4]) == pytest.approx(0.1 + 0.9 * (1 - math.exp(-w)))
    assert float(u_mean[6]) == pytest.approx(math.exp(-float(L1[6] / L1.mean())))  # no floor on lambda_U


def test_reference_normalises_each_subset_with_eps():
    w, d, u = weights("reference", L1, DES)
    sd, su = float(L1[DES].sum()), float(L1[~DES].sum())
    for i in range(8):
        den = sd if DES[i] else su
        expect = (float(L1[i]) + 1e-4) / (den + 1e-4)
        assert float(w[i]) == pytest.approx(expect, rel=1e-12)
        assert float(d[i]) == pytest.approx(1 - math.exp(-expect), rel=1e-12)  # beta 1
        assert float(u[i]) == pytest.approx(math.exp(-expect), rel=1e-12)
    assert float(w[~DES].sum()) == pytest.approx(1.0, abs=0.01)  # weights sum to ~1 within each subset
    with pytest.raises(ValueError, match="desirable mask"):
        adaptive_weights(L1, weight_norm="reference")


def test_all_zero_errors_have_no_division_by_zero():
    zero = torch.zeros(4, dtype=torch.float64)
    des = t([1, 1, 0, 0], torch.bool)
    for norm in ("paper", "mean"):
        w, d, u = weights(norm, zero, des)
        assert torch.all(w == 0) and torch.all(u == 1)
    _, d, _ = weights("mean", zero, des)
    assert torch.allclose(d, torch.full_like(d, 0.1))
    w, _, _ = weights("reference", zero, des)
    assert torch.allclose(w, torch.full_like(w, 1.0))  # eps / eps


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="weight_norm must be one of paper, reference, mean"):
        adaptive_weights(L1, weight_norm="median")
    with pytest.raises(ValueError, match="lambda_d_floor"):
        adaptive_weights(L1, weight_norm="mean", lambda_d_floor=1.5)


@pytest.mark.parametrize("norm", ["paper", "reference", "mean"])
@pytest.mark.parametrize("reweight", [True, False], ids=["apo", "kto"])
def test_halves_with_the_whole_batch_statistics_equal_the_whole_batch(norm, reweight):
    """What gradient accumulation relies on: z0 and the weights' scale of the whole batch, passed to
    each half, give the whole batch's per-sample losses and gradient (the halves' mean losses average)."""
    g = torch.Generator().manual_seed(5)
    n = 16
    pol = (torch.randn(n, generator=g, dtype=torch.float64) - 20).requires_grad_()
    ref = torch.randn(n, generator=g, dtype=torch.float64) - 20
    l1 = torch.rand(n, generator=g, dtype=torch.float64) * 0.3
    des = torch.arange(n) % 4 != 3
    kw = dict(beta=0.5, weight_norm=norm, reweight=reweight, z0_min=None)
    whole = apo_loss(pol, ref, l1, des, **kw)
    whole.loss.backward()
    g_whole = pol.grad.clone()
    pol.grad = None
    z0 = estimate_z0(pol.detach() - ref, z0_min=None)
    scale = weight_scale(l1, des, norm)
    halves = [apo_loss(pol[s], ref[s], l1[s], des[s], z0=z0, scale=scale, **kw)
              for s in (slice(0, 8), slice(8, 16))]
    sum(h.loss / 2 for h in halves).backward()
    assert torch.allclose(torch.cat([h.per_sample for h in halves]), whole.per_sample, rtol=1e-12)
    assert sum(h.value for h in halves) / 2 == pytest.approx(whole.value, rel=1e-12)
    assert torch.allclose(pol.grad, g_whole, rtol=1e-10, atol=1e-15)
    # without the whole batch's statistics the halves are a different loss
    pol.grad = None
    alone = [apo_loss(pol[s], ref[s], l1[s], des[s], **kw) for s in (slice(0, 8), slice(8, 16))]
    assert not torch.allclose(torch.cat([h.per_sample for h in alone]), whole.per_sample, rtol=1e-6)


def test_kto_ignores_the_weight_normalisation():
    pol, ref, des = t([-1.0, -2.0, -3.0]), t([-1.5, -1.5, -2.0]), t([1, 1, 0], torch.bool)
    a = kto_loss(pol, ref, des, beta=0.5)
    b = kto_loss(pol, ref, des, beta=0.5, weight_norm="mean")
    assert a.value == b.value
