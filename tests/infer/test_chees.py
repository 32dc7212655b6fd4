"""ChEES trajectory-length adaptation and the leapfrog integrator's order."""

from __future__ import annotations

import pytest
import torch

from pyro_ebm.energies import GaussianEnergy
from pyro_ebm.infer import HMC, sample
from pyro_ebm.infer.base import init_state
from pyro_ebm.infer.chees import ChEES, halton
from pyro_ebm.infer.hmc import leapfrog, step
from pyro_ebm.infer.metric import Metric

F64 = torch.float64


def unit_gaussian(x):
    return 0.5 * x.square().sum(-1)


@pytest.mark.parametrize("start", [0.3, 1.5])
def test_chees_finds_the_jittered_optimum_on_a_whitened_gaussian(start):
    # On N(0, I) with time t = uT, u ~ U(0, 1), ChEES(T) is proportional to
    # E_u sin^2(uT) = 1/2 - sin(2T)/(4T): its maximum solves tan 2T = 2T, T = 2.25. The
    # leapfrog's time is ceil(uT / eps) eps, on average eps / 2 longer, so with eps = 0.2
    # the optimum of T is about 2.15. (ChEES(T) has further, lower local maxima at T = 5.4,
    # 8.6, ...: like the ChEES paper, the runner starts short and lets the length grow.)
    gen = torch.Generator().manual_seed(0)
    metric = Metric(torch.Size([10]))
    chees = ChEES(start)
    eps = torch.tensor(0.2, dtype=F64)
    x = torch.randn(512, 10, generator=gen, dtype=F64)
    state = init_state(unit_gaussian, x, 1, with_grad=True)
    for i in range(600):
        n = max(1, int(torch.ceil(chees.jitter() * chees.length / eps)))
        new, info = step(unit_gaussian, state, eps, metric, gen, 1, num_steps=n)
        chees.update(state, info, metric, torch.full((512,), n * float(eps), dtype=F64))
        if i >= 400:
            chees.accumulate()
        state = new
    assert 1.7 < chees.final_length() < 2.7, chees.final_length()


def test_runner_adapts_the_trajectory_under_the_metric_on_an_anisotropic_gaussian():
    # scales 1e-2..1e2: once the metric whitens it, the good length is that of a unit Gaussian
    # (about 1.5-2.2 at the adapted step size), not 100 times the smallest scale
    scales = torch.logspace(-2, 2, 8, dtype=F64)
    energy = GaussianEnergy(torch.zeros(8, dtype=F64), torch.diag(scales**2))
    out = sample(energy, 200, kernel="hmc", num_chains=128, seed=0, progress_bar=False)
    assert 1.0 < out.trajectory_length < 3.0, out.trajectory_length
    fixed = sample(energy, 20, kernel=HMC(num_steps=3), num_chains=8, seed=0, progress_bar=False)
    assert fixed.trajectory_length is None and (fixed.stats["n_steps"] == 3).all()


def test_leapfrog_energy_error_shrinks_fourfold_when_the_step_halves():
    energy = GaussianEnergy.ill_conditioned(6, 10.0, torch.Generator().manual_seed(1), dtype=F64)
    gen = torch.Generator().manual_seed(2)
    x = energy.sample(256, generator=gen)
    p = torch.randn(256, 6, generator=gen, dtype=F64)
    metric = Metric(torch.Size([6]))
    state = init_state(energy, x, 1, with_grad=True)
    h0 = state.energy + metric.kinetic(p)
    errors = []
    for eps, n in ((0.1, 10), (0.05, 20)):  # the same integration time 1.0
        end, p_end = leapfrog(energy, state, p, torch.tensor(eps, dtype=F64), metric, n, 1)
        errors.append(float((end.energy + metric.kinetic(p_end) - h0).abs().mean()))
    assert 3.2 < errors[0] / errors[1] < 4.8, errors


def test_halton_is_a_van_der_corput_sequence():
    assert [halton(i) for i in range(1, 6)] == [0.5, 0.25, 0.75, 0.125, 0.625]
