"""No silent failure: the convergence warning fires on unmixed runs and stays quiet on mixed."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from pyro_ebm.energies import GaussianEnergy, GaussianMixtureEnergy
from pyro_ebm.infer import ConvergenceWarning, nested_rhat, sample
from pyro_ebm.infer.convergence import check_convergence

F64 = torch.float64


def test_warning_fires_when_chains_sit_in_different_modes():
    locs = torch.tensor([[-8.0, 0.0], [8.0, 0.0]])
    energy = GaussianMixtureEnergy(locs, torch.ones(2), torch.ones(2), dtype=F64)
    init = torch.cat([torch.full((16, 1), -8.0), torch.full((16, 1), 8.0)]).double()
    init = torch.cat([init, torch.zeros(32, 1, dtype=F64)], 1)
    with pytest.warns(ConvergenceWarning, match=r"R-hat .* for x\[0\]") as caught:
        out = sample(energy, 300, num_chains=32, init=init, seed=0, progress_bar=False)
    assert len([w for w in caught if w.category is ConvergenceWarning]) == 1
    assert not out.convergence.converged and out.convergence.worst == "x[0]"
    assert "warmup_steps" in str(caught[0].message)  # says what to try


@pytest.mark.parametrize("num_chains", [4, 64])
def test_no_warning_on_a_mixed_run(num_chains):
    energy = GaussianEnergy(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        out = sample(energy, 1000, num_chains=num_chains, seed=0, progress_bar=False)
    assert out.convergence.converged
    assert (out.convergence.nested_rhat is not None) == (num_chains >= 32)


def test_low_ess_alone_warns():
    energy = GaussianEnergy(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    with pytest.warns(ConvergenceWarning, match="ESS"):
        sample(energy, 20, num_chains=4, seed=0, progress_bar=False)


def test_nested_rhat_separates_agreeing_and_disagreeing_superchains():
    rng = np.random.default_rng(0)
    agree = rng.normal(size=(64, 10, 2))
    assert np.all(np.abs(nested_rhat(agree, 16) - 1) < 0.02)
    shifted = agree.copy()
    shifted[:4] += 3.0  # one superchain of four chains elsewhere
    assert nested_rhat(shifted, 16)[0] > 1.05
    with pytest.raises(ValueError, match="num_superchains"):
        nested_rhat(agree, 7)


def test_summary_is_arviz_summary():
    energy = GaussianEnergy(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    out = sample(energy, 200, num_chains=4, seed=0, progress_bar=False)
    table = out.summary()
    assert {"mean", "sd", "ess_bulk", "r_hat"} <= set(table.columns)
    assert len(table) == 2


def test_keep_false_and_opt_out_skip_the_check():
    energy = GaussianEnergy(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert sample(energy, 5, num_chains=2, seed=0, progress_bar=False,
                      keep=False).convergence is None  # fmt: skip
        assert sample(energy, 5, num_chains=2, seed=0, progress_bar=False,
                      check_convergence=False).convergence is None  # fmt: skip


def test_one_chain_is_checked_on_its_two_halves():
    torch.manual_seed(0)
    draws = torch.randn(1, 2000, 2, dtype=torch.float64)
    result = check_convergence(draws, -0.5 * draws.square().sum(-1), 1)
    assert math.isfinite(result.max_rhat) and result.max_rhat < 1.01
    assert result.converged
    trend = draws + torch.linspace(0, 3, 2000, dtype=torch.float64).view(1, -1, 1)
    assert not check_convergence(trend, -0.5 * trend.square().sum(-1), 1).converged
    # too short to split into two halves of 4 draws: no check rather than an error
    for n, checked in [(4, False), (7, False), (8, True)]:
        short = torch.randn(1, n, 2, dtype=torch.float64)
        result = check_convergence(short, -0.5 * short.square().sum(-1), 1)
        assert (result is not None) == checked, n
    for n, checked in [(3, False), (4, True)]:
        short = torch.randn(2, n, 2, dtype=torch.float64)
        result = check_convergence(short, -0.5 * short.square().sum(-1), 1)
        assert (result is not None) == checked, n


def test_frozen_chains_are_counted_and_warned_about():
    # two of 64 chains accept almost nothing at an ordinary log density (a stiff region): only
    # their acceptance shows it, and the warning must say so and suggest a smaller HMC step
    torch.manual_seed(0)
    draws = torch.randn(64, 200, 2, dtype=F64)
    lp = -0.5 * draws.square().sum(-1)
    acceptance = torch.full((64, 200), 0.65, dtype=F64)
    assert check_convergence(draws, lp, 1, acceptance=acceptance).converged
    acceptance[[3, 40]] = 0.01
    result = check_convergence(draws, lp, 1, acceptance=acceptance)
    assert result.frozen_chains == 2 and not result.converged
    message = result.message("hmc")
    assert "2 chain(s) accepting under 5%" in message and "target_accept_prob" in message
    assert "kernel='hmc'" in result.message("mala")
    assert check_convergence(draws, lp, 1).frozen_chains == 0  # not counted without acceptance
