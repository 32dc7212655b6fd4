"""Mode-jumping independence moves (KDE proposal): exactness, mixing, rejection, bandwidth."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_ebm.infer.kde_jump import kde_jump, kde_log_density, scott_bandwidth

MEANS = torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.7, 0.3], dtype=torch.float64)
SD = 0.5


def mixture_energy(x: torch.Tensor) -> torch.Tensor:
    sq = (x[..., None, :] - MEANS).square().sum(-1)
    return -torch.logsumexp(WEIGHTS.log() - sq / (2 * SD**2), -1)


def mixture_draws(n: int, gen: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=gen)
    return MEANS[k] + SD * torch.randn(n, 2, dtype=torch.float64, generator=gen)


def test_kde_log_density_equals_the_mixture_density_up_to_a_constant():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(50, 3, dtype=torch.float64, generator=gen)
    bandwidth = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    x = 2 * torch.randn(40, 3, dtype=torch.float64, generator=gen)
    normal = torch.distributions.Normal(centers, bandwidth)
    direct = normal.log_prob(x[:, None]).sum(-1).logsumexp(-1)
    diff = kde_log_density(x, centers, bandwidth) - direct
    assert float(diff.std()) < 1e-10


def test_jumps_leave_the_target_invariant_with_a_mismatched_proposal():
    """Exact draws of a 70/30 mixture stay exact after 20 jumps whose KDE centers come from a
    different distribution (a Gaussian leaning towards the major mode, so that the proposal
    density's ratio matters): the mode share and the within-mode moments pass z-tests at the
    binomial / Gaussian standard errors of 4,000 independent chains."""
    gen = torch.Generator().manual_seed(1)
    n = 4000
    x = mixture_draws(n, gen)
    accepted = 0.0
    for _ in range(20):
        z = torch.randn(256, 2, dtype=torch.float64, generator=gen)
        centers = torch.tensor([-1.5, 0.0], dtype=torch.float64) + z * torch.tensor(
            [2.0, 1.0], dtype=torch.float64
        )
        x, energy, ok = kde_jump(mixture_energy, x, centers, gen)
        accepted += float(ok.double().mean()) / 20
    assert 0.05 < accepted < 0.95  # the moves happen
    assert torch.allclose(energy, mixture_energy(x))
    share = float((x[:, 0] > 0).double().mean())
    assert abs(share - 0.3) / math.sqrt(0.3 * 0.7 / n) < 4
    assert abs(float(x[:, 1].mean())) / (SD / math.sqrt(n)) < 4
    var = float(x[:, 1].var())
    assert abs(var / SD**2 - 1) / math.sqrt(2 / n) < 4


def test_jumps_move_chains_between_separated_modes():
    """All chains start in the minor mode; a local sampler would keep them there (the gap is
    12 sds wide). After 30 jumps towards a KDE of draws the share is the target's."""
    gen = torch.Generator().manual_seed(2)
    n = 2000
    x = MEANS[1] + SD * torch.randn(n, 2, dtype=torch.float64, generator=gen)
    for _ in range(30):
        x, _, _ = kde_jump(mixture_energy, x, mixture_draws(256, gen), gen)
    share = float((x[:, 0] < 0).double().mean())
    assert abs(share - 0.7) / math.sqrt(0.7 * 0.3 / n) < 4


def test_proposals_with_a_non_finite_energy_are_rejected():
    def energy(x):
        e = 0.5 * x.square().sum(-1)
        return torch.where(x[:, 0] > 0, torch.full_like(e, math.nan), e)

    gen = torch.Generator().manual_seed(3)
    x = -torch.rand(500, 2, dtype=torch.float64, generator=gen) - 0.1
    centers = torch.randn(100, 2, dtype=torch.float64, generator=gen)
    for _ in range(5):
        x, energy_x, _ = kde_jump(energy, x, centers, gen)
        assert bool((x[:, 0] <= 0).all()) and bool(torch.isfinite(energy_x).all())


def test_scott_bandwidth_per_coordinate_and_a_constant_coordinate():
    gen = torch.Generator().manual_seed(4)
    centers = torch.randn(256, 3, dtype=torch.float64, generator=gen) * torch.tensor(
        [1.0, 4.0, 0.0], dtype=torch.float64
    )
    h = scott_bandwidth(centers, 1)
    factor = 256 ** (-1 / 7)
    assert h.shape == (3,)
    assert float(h[1] / h[0]) == pytest.approx(float(centers[:, 1].std() / centers[:, 0].std()))
    assert float(h[0]) == pytest.approx(float(centers[:, 0].std()) * factor)
    assert float(h[2]) == pytest.approx(float(h[:2].mean()))  # no zero-width kernel
