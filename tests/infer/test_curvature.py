"""The Laplace metric for diffusive kernels: when warmup takes it, when it keeps the covariance."""

from __future__ import annotations

import torch

from pyro_ebm.infer import MALA, sample
from pyro_ebm.infer.curvature import choose_metric, hessians

from ..helpers import mcse_zscores

Z_CRIT = 4.5
F64 = torch.float64


def _rotated_gaussian(dim: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=F64))
    cov = q @ torch.diag(torch.logspace(-2, 2, dim, dtype=F64) ** 2) @ q.T
    mean = 3 * torch.randn(dim, generator=gen, dtype=F64)
    prec = torch.linalg.inv(cov)

    def energy(x):
        r = x - mean
        return 0.5 * ((r @ prec) * r).sum(-1)

    return energy, mean, cov


def _run(energy, dim):
    return sample(energy, 250, kernel="mala", num_chains=128, event_shape=(dim,),
                  dtype=F64, seed=0, progress_bar=False)  # fmt: skip


def test_mala_defaults_are_right_on_a_rotated_gaussian_with_scales_1e_2_to_1e2(monkeypatch):
    """A start far from the answer (mean ~3, N(0, I) start) on a 20-d Gaussian whose scales span
    four orders of magnitude in a random basis: correct moments by MCSE z-test, and converged.
    Without the Laplace metric the same run is wrong (checked below)."""
    dim = 20
    energy, mean, cov = _rotated_gaussian(dim, 1)
    out = _run(energy, dim)
    z_mean, z_var = mcse_zscores(out.samples, mean, cov.diagonal())
    assert z_mean.abs().max() < Z_CRIT, z_mean
    assert z_var.abs().max() < Z_CRIT, z_var
    assert out.convergence.converged
    sd_err = (out.samples.reshape(-1, dim).std(0) / cov.diagonal().sqrt() - 1).abs().max()
    assert sd_err < 0.1

    monkeypatch.setattr(MALA, "curvature_metric", False)
    without = _run(energy, dim)
    assert not without.convergence.converged  # the failure this metric exists for


def test_choose_metric_takes_the_inverse_hessian_on_a_gaussian():
    energy, mean, cov = _rotated_gaussian(6, 2)
    x = mean + torch.randn(32, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    poor = torch.eye(6, dtype=F64)
    torch.testing.assert_close(choose_metric(energy, x, poor), cov, rtol=1e-8, atol=1e-10)


def test_choose_metric_keeps_the_covariance_where_curvature_varies():
    """Neal's funnel: the chains' Hessians disagree by orders of magnitude, so no constant
    metric preconditions them all, and the window's covariance is kept."""

    def funnel(x):
        v, z = x[:, 0], x[:, 1:]
        return v.square() / 18 + 0.5 * (z.square() * torch.exp(-v)[:, None]).sum(-1) + 2 * v

    gen = torch.Generator().manual_seed(0)
    v = 3 * torch.randn(64, 1, generator=gen, dtype=F64)
    x = torch.cat([v, torch.exp(v / 2) * torch.randn(64, 4, generator=gen, dtype=F64)], 1)
    estimate = torch.cov(x.T)
    assert choose_metric(funnel, x, estimate) is estimate


def test_choose_metric_falls_back_without_second_derivatives():
    class NoDoubleBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return 0.5 * x.square().sum(-1)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad[:, None] * x.detach()  # detached: no graph for a second derivative

    x = torch.randn(8, 3, dtype=F64)
    estimate = 2 * torch.eye(3, dtype=F64)
    assert hessians(NoDoubleBackward.apply, x) is None
    assert choose_metric(NoDoubleBackward.apply, x, estimate) is estimate
    assert choose_metric(lambda y: y.sum(-1), x, estimate) is estimate  # linear: no curvature
