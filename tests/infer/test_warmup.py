"""Warmup that survives bad starts: restarts, per-chain early steps, shared dual averaging."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_ebm.energies import GaussianEnergy
from pyro_ebm.infer import KERNELS, sample
from pyro_ebm.infer.adaptation import DualAveraging
from pyro_ebm.infer.warmup import (
    _Snapshots,
    estimate_inv_mass,
    find_stuck_chains,
    search_step_size,
)

from ..helpers import mcse_zscores

Z_CRIT = 4.5
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: intra-op threads only add synchronisation
    yield
    torch.set_num_threads(threads)


def far_posterior() -> GaussianEnergy:
    """Scales 1e-3 and 1e2 in one target, a -0.99 correlation, means far from 0.

    A N(0, I) start is 1000 sd away in the first coordinate and 20 sd in the correlated pair:
    the situation of posteriordb's sblrc and kidiq posteriors.
    """
    mean = torch.tensor([1.0, -50.0, 10.0, 0.6, 0.0], dtype=F64)
    sd = torch.tensor([1e-3, 1e2, 3.0, 0.03, 1.0], dtype=F64)
    corr = torch.eye(5, dtype=F64)
    corr[2, 3] = corr[3, 2] = -0.99
    cov = sd[:, None] * corr * sd[None, :]
    return GaussianEnergy(mean, cov)


class TrappedFarPosterior(torch.nn.Module):
    """:func:`far_posterior` plus a narrow local mode 60 nats below it, 500 sd away.

    Chains that start in the trap cannot leave it (the barrier is ~1e5 nats); its mass is
    e^-60 of the total, so the moments are those of the Gaussian.
    """

    def __init__(self) -> None:
        super().__init__()
        self.main = far_posterior()
        self.register_buffer("trap", self.main.mean() + torch.tensor([0.5, 0, 0, 0, 0], dtype=F64))

    def forward(self, x):
        e_trap = 60.0 + 0.5 * ((x - self.trap) / 0.01).square().sum(-1)
        return -torch.logaddexp(-self.main(x), -e_trap)


@pytest.mark.parametrize("kernel", ["mala", "hmc"])
def test_far_start_with_mixed_scales_gives_correct_moments(kernel):
    energy = far_posterior()
    out = sample(energy, 400, kernel=kernel, num_chains=128, seed=0, progress_bar=False)
    assert out.convergence is not None and out.convergence.converged, out.convergence
    z_mean, z_var = mcse_zscores(out.samples, energy.mean(), energy.variance())
    assert z_mean.abs().max() < Z_CRIT, z_mean
    assert z_var.abs().max() < Z_CRIT, z_var
    # the dense metric from healthy chains recovers the covariance, scales 1e-6..1e4 included
    rel = (out.inv_mass.diagonal() / energy.variance() - 1).abs().max()
    assert rel < 0.3, rel


@pytest.mark.parametrize("kernel", ["mala", "hmc"])
def test_chains_stuck_in_a_local_mode_are_restarted_and_counted(kernel):
    target = TrappedFarPosterior()
    gen = torch.Generator().manual_seed(4)
    start = torch.randn(128, 5, generator=gen, dtype=F64)  # N(0, I): far from the bulk
    start[:32] = target.trap + 0.01 * torch.randn(32, 5, generator=gen, dtype=F64)
    out = sample(target, 400, kernel=kernel, num_chains=128, init=start, seed=0,
                 progress_bar=False, event_shape=(5,))  # fmt: skip
    restarted = out.warmup_restarts > 0
    assert restarted[:32].all()  # every trapped chain was moved to a healthy one
    z_mean, z_var = mcse_zscores(out.samples, target.main.mean(), target.main.variance())
    assert z_mean.abs().max() < Z_CRIT, z_mean
    assert z_var.abs().max() < Z_CRIT, z_var
    without = sample(target, 50, kernel=kernel, num_chains=128, init=start, seed=0,
                     progress_bar=False, event_shape=(5,), restart_chains=False,
                     check_convergence=False)  # fmt: skip
    assert int(without.warmup_restarts.sum()) == 0
    assert (without.samples[:32, -1, 0] - target.trap[0]).abs().max() < 0.1  # still trapped


@pytest.mark.parametrize("kernel", ["mala", "hmc", "rwmh"])
def test_acceptance_after_warmup_is_within_005_of_the_target(kernel):
    energy = GaussianEnergy(torch.zeros(10, dtype=F64), torch.eye(10, dtype=F64))
    kern = KERNELS[kernel]()
    out = sample(energy, 300, kernel=kern, num_chains=64, seed=1, progress_bar=False)
    accept = float(out.stats["acceptance_rate"].mean())
    assert abs(accept - kern.target_accept_prob) < 0.05, accept


def test_target_accept_prob_is_honoured():
    energy = GaussianEnergy(torch.zeros(10, dtype=F64), torch.eye(10, dtype=F64))
    low = sample(energy, 200, kernel=KERNELS["mala"](target_accept_prob=0.35), num_chains=64,
                 seed=2, progress_bar=False)  # fmt: skip
    assert abs(float(low.stats["acceptance_rate"].mean()) - 0.35) < 0.05


def test_ula_warms_up_exactly_as_mala():
    energy = GaussianEnergy(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    kw = dict(num_chains=16, warmup_steps=200, seed=3, progress_bar=False)
    ula = sample(energy, 5, kernel="ula", **kw)
    mala = sample(energy, 5, kernel="mala", **kw)
    assert torch.equal(ula.step_size, mala.step_size)
    assert torch.equal(ula.inv_mass, mala.inv_mass)


def test_dual_averaging_reaches_its_target_on_a_synthetic_acceptance_curve():
    # acceptance a(eps) = 1 / (1 + (eps / 0.3)^2): the target 0.574 is met at eps* below
    target = 0.574
    best = 0.3 * math.sqrt(1 / target - 1)
    gen = torch.Generator().manual_seed(0)
    dual = DualAveraging(torch.tensor(5.0, dtype=F64), target)
    eps = torch.tensor(5.0, dtype=F64)
    for _ in range(3000):
        rate = 1.0 / (1.0 + (eps / 0.3) ** 2)
        noisy = (rate + 0.1 * torch.randn((), generator=gen, dtype=F64)).clamp(0, 1)
        eps = dual.update(noisy)
    assert abs(float(dual.final_step_size()) / best - 1) < 0.05


def test_find_stuck_chains_spares_travelling_chains():
    lp = torch.tensor([0.0, -1.0, -2.0, -500.0, -400.0, -0.5], dtype=F64)
    before = torch.tensor([0.0, -1.0, -2.0, -500.0, -900.0, -0.5], dtype=F64)
    accept = torch.full_like(lp, 0.5)
    eps = torch.ones((), dtype=F64)
    stuck = find_stuck_chains(lp, accept, eps, event_size=2, previous_lp=before)
    # chain 3 is far below and did not move; chain 4 is far below but closed half its gap
    assert stuck.tolist() == [False, False, False, True, False, False]
    frozen = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.0], dtype=F64)
    # a chain that stopped accepting counts as stuck only in the bottom tenth of log densities
    assert not find_stuck_chains(lp, frozen, eps, 2, before)[5]
    assert find_stuck_chains(lp, torch.zeros_like(lp), eps, 2, before)[3]


def test_step_size_search_uses_the_median_not_the_mean():
    # 40% of chains accept nothing at any step (stuck far out): a mean would drag the step
    # towards zero; the median finds the healthy chains' step
    def accept_at(eps):
        healthy = torch.full((6,), float(1.0 / (1.0 + (eps / 0.5) ** 2)), dtype=F64)
        return torch.cat([healthy, torch.zeros(4, dtype=F64)])

    eps = search_step_size(accept_at, 0.574, torch.tensor(1.0, dtype=F64))
    assert 0.2 < float(eps) < 1.0


def test_dense_estimate_keeps_tiny_scales_and_shrinks_to_the_diagonal():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(400, 3, generator=gen, dtype=F64) * torch.tensor([1e-4, 1.0, 1e3])
    dense = estimate_inv_mass(rows, dense=True)
    assert dense.shape == (3, 3)
    ratio = dense.diagonal() / torch.tensor([1e-8, 1.0, 1e6], dtype=F64)
    assert ((ratio > 0.8) & (ratio < 1.2)).all(), ratio  # Stan's absolute 1e-3 would swamp 1e-8
    torch.linalg.cholesky(dense)  # positive definite
    assert estimate_inv_mass(rows, dense=False).shape == (3,)


def test_find_stuck_chains_with_one_shared_step_size_is_deterministic():
    # A shared (0-dim) step size is expanded over the chains. torch 2.13's CPU median(dim=)
    # of an expanded (stride-0) tensor reads the memory *after* the scalar's storage, so its
    # "median" was garbage, and healthy chains were flagged as "tiny step" and restarted at
    # random. Here the memory after the step size holds huge values: nothing may be flagged.
    gen = torch.Generator().manual_seed(0)
    lp = -0.5 * torch.randn(128, generator=gen, dtype=torch.float64).square()
    accept = torch.full((128,), 0.6, dtype=torch.float64)
    storage = torch.full((256,), 1e300, dtype=torch.float64)
    storage[0] = 0.9
    eps = storage[0]  # a 0-dim view; what follows it in memory is 1e300
    assert not bool(find_stuck_chains(lp, accept, eps, 10, lp).any())
    assert torch.equal(
        find_stuck_chains(lp, accept, eps, 10, lp),
        find_stuck_chains(lp, accept, eps.expand(128).clone(), 10, lp),
    )


def test_window_snapshots_equal_the_positions_they_copied():
    """The window's snapshots are copies (later changes to a position do not reach them), also
    past the planned number of rows, and give the pooled covariance of the draws."""
    gen = torch.Generator().manual_seed(0)
    snaps = _Snapshots(3, torch.Size([200]), 2)
    draws = [torch.randn(200, 2, generator=gen) * torch.tensor([1.0, 3.0]) for _ in range(5)]
    for x in draws:  # five adds into a block planned for three rows
        snaps.add(x)
        x.zero_()
    assert snaps.used == 5
    stacked = torch.stack([snaps.block[i, :, 0] for i in range(5)])
    assert float(stacked.abs().min()) > 0  # none of the rows was zeroed with its source
    cov = snaps.estimate(torch.ones(200, dtype=torch.bool), dense=True)
    torch.testing.assert_close(torch.diag(cov), torch.tensor([1.0, 9.0]), rtol=0.15, atol=0.0)


def _stuck_by_torch_quantiles(lp, mean_accept, step_size, event_size, previous_lp):
    """The restart rule written with torch.quantile and torch.median, one call per statistic
    (the form the one-sort version replaced)."""
    finite = torch.isfinite(lp)
    lp_f = torch.where(finite, lp, torch.full_like(lp, -math.inf))
    floor = torch.finfo(lp.dtype).min
    ref = torch.quantile(lp_f.nan_to_num(neginf=floor), 0.9, dim=0, keepdim=True)
    gap = ref - lp_f
    travelling = finite & (lp_f - previous_lp > 0.1 * gap)
    far = (gap > 10.0 + 3.0 * math.sqrt(2.0 * event_size)) & ~travelling
    below_median = lp_f < lp_f.median(dim=0, keepdim=True).values
    bottom = lp_f < torch.quantile(lp_f.nan_to_num(neginf=floor), 0.1, dim=0, keepdim=True)
    frozen = (mean_accept < 0.02) & bottom
    eps = step_size.expand(lp.shape).contiguous()
    tiny = (eps < 1e-3 * eps.median(dim=0, keepdim=True).values) & below_median & ~travelling
    return far | frozen | tiny | ~finite


@pytest.mark.parametrize("shape", [(64,), (63, 3)])
def test_find_stuck_chains_equals_the_rule_written_with_torch_quantiles(shape):
    gen = torch.Generator().manual_seed(3)
    for trial in range(20):
        lp = torch.randn(shape, generator=gen, dtype=F64) * 10 ** (trial % 3)
        lp[torch.rand(shape, generator=gen) < 0.1] -= 300.0  # lost chains
        lp[torch.rand(shape, generator=gen) < 0.05] = math.nan
        lp[torch.rand(shape, generator=gen) < 0.03] = -math.inf
        before = lp - torch.rand(shape, generator=gen, dtype=F64) * 50
        accept = torch.rand(shape, generator=gen, dtype=F64) * (trial % 2)
        eps = torch.exp(torch.randn(shape, generator=gen, dtype=F64) * 4)
        got = find_stuck_chains(lp, accept, eps, 3, before)
        assert torch.equal(got, _stuck_by_torch_quantiles(lp, accept, eps, 3, before)), trial
        assert got.any() and not got.all()
        shared = torch.tensor(0.3, dtype=F64)  # a shared step: no chain's step is tiny
        assert torch.equal(
            find_stuck_chains(lp, accept, shared, 3, before),
            _stuck_by_torch_quantiles(lp, accept, shared, 3, before),
        )


def test_step_size_probes_use_a_strided_subset_of_the_chains():
    from pyro_ebm.infer import MALA
    from pyro_ebm.infer.base import init_state
    from pyro_ebm.infer.metric import Metric
    from pyro_ebm.infer.warmup import SEARCH_CHAINS, probe_acceptance

    seen = []

    def energy(x):
        seen.append(x.shape[0])
        return 0.5 * x.square().sum(-1)

    gen = torch.Generator().manual_seed(0)
    position = torch.randn(1000, 3, generator=gen, dtype=F64)
    state = init_state(energy, position, 1, with_grad=True)
    seen.clear()
    accept_at = probe_acceptance(MALA(), energy, state, Metric((3,)), gen, 1)
    rates = accept_at(torch.tensor(0.5, dtype=F64))
    stride = math.ceil(1000 / SEARCH_CHAINS)
    assert seen == [len(range(0, 1000, stride))] and rates.shape == (len(range(0, 1000, stride)),)
    assert torch.equal(state.position, position)  # proposals are not taken
    small = init_state(energy, position[:100], 1, with_grad=True)
    seen.clear()
    probe_acceptance(MALA(), energy, small, Metric((3,)), gen, 1)(torch.tensor(0.5, dtype=F64))
    assert seen == [100]  # fewer chains than the limit: all of them propose
