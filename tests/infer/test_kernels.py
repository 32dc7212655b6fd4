"""Our kernels MALA, ULA, RandomWalkMH, HMC inside pyro.infer.MCMC: contract, correctness, NaNs."""

from __future__ import annotations

import math
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC
from pyro.infer.mcmc.api import StreamingMCMC
from pyro.ops.streaming import CountMeanVarianceStats, StatsOfDict

from pyro_ebm.infer import HMC, MALA, ULA, RandomWalkMH

from ..helpers import mcse_zscores

Z_CRIT = 4.5
KERNELS = [MALA, ULA, RandomWalkMH, HMC]
LOC = torch.tensor([1.0, -2.0, 0.5])
SCALE = torch.tensor([0.5, 1.0, 2.0])


def potential(params):
    return 0.5 * ((params["z"] - LOC.to(params["z"])) / SCALE.to(params["z"])).square().sum()


def model():
    pyro.sample("z", dist.Normal(LOC, SCALE).to_event(1))


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)


@pytest.mark.parametrize("kernel_cls", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract_with_potential_fn(kernel_cls, dtype):
    kernel = kernel_cls(potential_fn=potential)
    mcmc = MCMC(kernel, num_samples=40, warmup_steps=40, disable_progbar=True,
                initial_params={"z": torch.zeros(3, dtype=dtype)})  # fmt: skip
    mcmc.run()
    z = mcmc.get_samples()["z"]
    assert z.shape == (40, 3) and z.dtype == dtype and torch.isfinite(z).all()
    diag = kernel.diagnostics()
    assert set(diag) == {"divergences", "acceptance rate", "sample_stats"}
    stats = diag["sample_stats"]
    expected = {"lp", "acceptance_rate", "step_size", "diverging"}
    assert set(stats) == expected | ({"energy", "n_steps"} if kernel_cls is HMC else set())
    assert all(len(v) == 40 for v in stats.values())
    lp = torch.tensor(stats["lp"], dtype=torch.float64)
    expected = torch.stack([-potential({"z": zi.double()}) for zi in z])
    torch.testing.assert_close(lp, expected, rtol=1e-5, atol=1e-4)
    assert 0.0 <= diag["acceptance rate"] <= 1.0
    back = pickle.loads(pickle.dumps(kernel))
    assert isinstance(back, kernel_cls)


@pytest.mark.parametrize("kernel_cls", KERNELS)
def test_model_and_two_chains_in_processes(kernel_cls, monkeypatch):
    # Pyro draws chains sequentially when chains >= cores; pretend to have 4 cores so the two
    # chains really run in worker processes (the kernel must pickle and report back).
    monkeypatch.setattr("pyro.infer.mcmc.api.mp.cpu_count", lambda: 4)
    mcmc = MCMC(kernel_cls(model), num_samples=30, warmup_steps=30, num_chains=2,
                disable_progbar=True, mp_context="spawn")  # fmt: skip
    mcmc.run()
    z = mcmc.get_samples(group_by_chain=True)["z"]
    assert z.shape == (2, 30, 3) and torch.isfinite(z).all()
    diags = mcmc.diagnostics()
    assert set(diags["divergences"]) == {"chain 0", "chain 1"}
    assert len(mcmc._diagnostics[1]["sample_stats"]["lp"]) == 30


@pytest.mark.parametrize("kernel_cls", KERNELS)
def test_streaming_mcmc(kernel_cls):
    mcmc = StreamingMCMC(kernel_cls(model), num_samples=30, warmup_steps=20,
                         statistics=StatsOfDict(default=CountMeanVarianceStats),
                         disable_progbar=True)  # fmt: skip
    mcmc.run()
    stats = mcmc.get_statistics(group_by_chain=False)
    assert stats["z"]["mean"].shape == (3,)


@pytest.mark.parametrize("kernel_cls", KERNELS)
def test_initial_params_are_honoured(kernel_cls):
    # Pyro's RandomWalkKernel ignores initial_params; ours must start where it is told.
    start = torch.full((3,), 40.0, dtype=torch.float64)
    extra = {"num_steps": 1} if kernel_cls is HMC else {}
    kernel = kernel_cls(potential_fn=potential, step_size=1e-4, adapt_step_size=False, **extra)
    mcmc = MCMC(kernel, num_samples=5, warmup_steps=0, disable_progbar=True,
                initial_params={"z": start})  # fmt: skip
    mcmc.run()
    z = mcmc.get_samples()["z"]
    assert (z - start).abs().max() < 0.5


@pytest.mark.parametrize("kernel_cls", [MALA, RandomWalkMH, HMC])
def test_moments_by_mcse_z_test(kernel_cls):
    kernel = kernel_cls(potential_fn=potential)
    mcmc = MCMC(kernel, num_samples=3000, warmup_steps=500, disable_progbar=True,
                initial_params={"z": torch.zeros(3, dtype=torch.float64)})  # fmt: skip
    mcmc.run()
    z = mcmc.get_samples(group_by_chain=True)["z"]
    z_mean, z_var = mcse_zscores(z, LOC, SCALE.square())
    assert z_mean.abs().max() < Z_CRIT, z_mean
    assert z_var.abs().max() < Z_CRIT, z_var
    accept = kernel.diagnostics()["acceptance rate"]
    assert abs(accept - kernel.target_accept_prob) < 0.15, accept


@pytest.mark.parametrize("kernel_cls", [MALA, RandomWalkMH, HMC])
def test_one_chain_warmup_lands_near_the_target_acceptance(kernel_cls):
    """Averaged over four runs, the sampling acceptance after warmup is within 0.08 of the
    target. Stan's dual-averaging constants (gamma 0.05 around ten times the step) fail this
    for HMC on this target (mean 0.81 at 0.65 over seeds 0-7; Pyro's own HMC: 0.81-0.84)."""
    rates = []
    for seed in range(4):
        pyro.set_rng_seed(seed)
        kernel = kernel_cls(potential_fn=potential)
        MCMC(kernel, num_samples=1000, warmup_steps=500, disable_progbar=True,
             initial_params={"z": torch.zeros(3, dtype=torch.float64)}).run()  # fmt: skip
        rates.append(kernel.diagnostics()["acceptance rate"])
    mean = sum(rates) / len(rates)
    assert abs(mean - kernel.target_accept_prob) < 0.08, rates


def test_nan_potential_is_a_divergence_not_a_crash():
    def box(params):
        z = params["z"]
        e = 0.5 * z.square().sum()
        return e if bool((z.abs() < 1).all()) else torch.tensor(math.nan, dtype=z.dtype)

    kernel = MALA(potential_fn=box, step_size=1.0, adapt_step_size=False)
    mcmc = MCMC(kernel, num_samples=50, warmup_steps=0, disable_progbar=True,
                initial_params={"z": torch.zeros(2, dtype=torch.float64)})  # fmt: skip
    mcmc.run()
    assert len(kernel.diagnostics()["divergences"]) > 0
    assert (mcmc.get_samples()["z"].abs() < 1).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="built without `model=` or `potential_fn=`"):
        MCMC(MALA(), num_samples=2, disable_progbar=True).run()
    with pytest.raises(ValueError, match="at most one"):
        MALA(model, potential_fn=potential)
    with pytest.raises(ValueError, match="step_size"):
        MALA(model, step_size=-1.0)
    mcmc = MCMC(MALA(potential_fn=potential), num_samples=2, disable_progbar=True)
    with pytest.raises(ValueError, match="initial_params"):
        mcmc.run()


@pytest.mark.parametrize("kernel_cls", KERNELS)
def test_to_arviz_and_summary(kernel_cls):
    from pyro_ebm.diagnostics import az, to_arviz

    mcmc = MCMC(kernel_cls(model), num_samples=40, warmup_steps=40, disable_progbar=True)
    mcmc.run()
    idata = to_arviz(mcmc)
    assert idata.posterior["z"].shape == (1, 40, 3)
    assert {"lp", "acceptance_rate", "step_size", "diverging"} <= set(idata.sample_stats)
    summary = az.summary(idata)
    assert summary.shape[0] == 3 and summary["mean"].notna().all()
