# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Pyro models on many chains: `VectorizedMCMC`
#
# `pyro.infer.MCMC` runs one chain per process, or one after another. pyro-ebm's engine runs
# hundreds of chains as one batch, with a warmup built for many chains (per-chain step sizes,
# restarts of lost chains, a dense mass matrix from the healthy chains, ChEES trajectory
# lengths for HMC) and a convergence check that warns. `pyro_ebm.infer.VectorizedMCMC` puts
# ordinary Pyro models on that engine; switching is one name:
#
# ```python
# mcmc = MCMC(NUTS(model), num_samples=1000)                      # Pyro
# mcmc = VectorizedMCMC(HMC(model), num_samples=500, num_chains=64)  # pyro-ebm
# mcmc.run(data); mcmc.get_samples()["theta"]; mcmc.summary()
# ```
#
# The model's joint potential (log-Jacobians of constrained sites included) is evaluated for
# all chains in one pass by running the model under an outer plate over the chains. Two
# models below, each sampled with Pyro's NUTS and with `VectorizedMCMC`, side by side:
#
# 1. **Eight schools** (Rubin 1981), the non-centred hierarchical model of posteriordb's
#    `eight_schools_noncentered`;
# 2. an **inverse problem with an energy-based prior**: $x \in \mathbb{R}^2$ with an
#    `EnergyDistribution` prior, observed through $y = A x + \sigma \varepsilon$ with an unknown
#    noise scale $\sigma \sim \mathrm{HalfNormal}(1)$.
#
# Finally, `EnergyDistribution.sample` keeps warm chains between calls, which makes
# `Predictive` with an EBM prior fast.

# %%
import os
import time
import warnings

warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, Predictive

from pyro_ebm import EnergyDistribution
from pyro_ebm.energies import BananaEnergy
from pyro_ebm.infer import HMC, VectorizedMCMC

smoke_test = "CI" in os.environ
NUTS_WARMUP, NUTS_SAMPLES = (100, 200) if smoke_test else (1_000, 1_000)
CHAINS, SAMPLES = (64, 400) if smoke_test else (64, 500)
WARMUP = None  # the engine's default, max(num_samples, 500)
torch.set_default_dtype(torch.float64)
pyro.set_rng_seed(0)


def min_ess_per_second(mcmc, seconds: float) -> tuple[float, float]:
    """The smallest ESS over all coordinates (Pyro's estimator for both) and it per second."""
    diag = mcmc.diagnostics()
    ess = min(float(v["n_eff"].min()) for k, v in diag.items() if isinstance(v, dict)
              and "n_eff" in v)  # fmt: skip
    return ess, ess / seconds


def both(model, kernel, *args) -> dict:
    """The model run with Pyro's NUTS (one chain) and with VectorizedMCMC(kernel): {name: (mcmc,
    seconds)}."""
    runs = {
        "Pyro NUTS (1 chain)": MCMC(NUTS(model), num_samples=NUTS_SAMPLES,
                                    warmup_steps=NUTS_WARMUP, disable_progbar=True),
        f"VectorizedMCMC({kernel.__name__})": VectorizedMCMC(
            kernel(model), num_samples=SAMPLES, warmup_steps=WARMUP, num_chains=CHAINS,
            disable_progbar=True),
    }  # fmt: skip
    out = {}
    for name, mcmc in runs.items():
        start = time.perf_counter()
        mcmc.run(*args)
        out[name] = (mcmc, time.perf_counter() - start)
    return out


# %% [markdown]
# ## 1. Eight schools
#
# Written the Pyro way: the schools are a plate, and the model indexes from the right, so it
# vectorizes over chains as it is.

# %%
y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", len(y)):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


runs = both(eight_schools, HMC, y, sigma)
vec = runs["VectorizedMCMC(HMC)"][0]
print(f"VectorizedMCMC evaluated the model: {vec.mode}")


def side_by_side(runs: dict, sites: list[str]) -> None:
    print(f"{'':>20}" + "".join(f"{name:>26}" for name in runs))
    for site in sites:
        cells = []
        for mcmc, _ in runs.values():
            draws = mcmc.get_samples()[site]
            draws = draws.reshape(draws.shape[0], -1)[:, 0]  # a vector site: its first entry
            cells.append(f"{float(draws.mean()):10.2f} +- {float(draws.std()):6.2f}")
        print(f"{site:>20}" + "".join(f"{c:>26}" for c in cells))
    for name, (mcmc, seconds) in runs.items():
        ess, rate = min_ess_per_second(mcmc, seconds)
        print(f"{name}: {seconds:.1f} s, min ESS {ess:.0f}, min ESS/s {rate:.1f}")


side_by_side(runs, ["mu", "tau", "theta_trans"])

# %% [markdown]
# The posterior means and sds agree within Monte Carlo error (posteriordb's reference: $\mu$
# about 4.4 $\pm$ 3.3, $\tau$ about 3.6 $\pm$ 3.2; `theta_trans` is the first school's).
# `VectorizedMCMC` also records the `pyro.deterministic` site `theta`, which
# `pyro.infer.MCMC.get_samples` leaves out. The vectorized run draws many more effective
# samples per second. `vec.summary()` prints Pyro's table and `vec.diagnostics()` gives
# Pyro's `n_eff`/`r_hat` plus every chain's divergences, acceptance rate and warmup restarts;
# a run that has not converged warns.

# %%
vec.summary()

# %% [markdown]
# `to_arviz` turns the run into ArviZ data (on both ArviZ lines): every site under its name
# with its plate as a named dimension, the sampler statistics, and, from the model and its
# data, `observed_data` and the pointwise `log_likelihood` that `az.loo` needs.

# %%
from pyro_ebm.diagnostics import group_names, to_arviz

data = to_arviz(vec)
print(group_names(data))
print(data.posterior["theta"].dims, data.log_likelihood["y"].dims)

# %% [markdown]
# ## 2. An inverse problem with an energy-based prior
#
# The prior over $x$ is an energy, here a banana-shaped analytic one (tutorial 01 learns such a
# prior from data). The noise scale is a constrained (positive) site: `VectorizedMCMC` maps it
# to the real line and adds the log-Jacobian, as Pyro does.

# %%
A = torch.tensor([[1.0, 0.5], [0.3, -1.0], [-0.8, 0.6], [1.2, 1.0]])
y_obs = torch.tensor([0.9, -1.4, 0.2, 2.3])
prior = EnergyDistribution(BananaEnergy(curvature=1.0), event_shape=(2,))


def inverse_problem(y):
    x = pyro.sample("x", prior)
    noise = pyro.sample("noise", dist.HalfNormal(1.0))
    # the observations are one event, written from the right (x @ A.T): this vectorizes
    pyro.sample("y", dist.Normal(x @ A.T, noise.unsqueeze(-1)).to_event(1), obs=y)


# HMC, not MALA: MALA's effective draws here vary from run to run (271 to 1,800 at these
# sizes; a small noise scale makes the likelihood sharp), and it warns when they fall short
side_by_side(both(inverse_problem, HMC, y_obs), ["x", "noise"])

# %% [markdown]
# `bench/vectorized_models.py` runs both models at full size against exact references
# (posteriordb's draws for eight schools, 3-d quadrature for the inverse problem) and reports
# the same comparison with the pass criterion (max z < 5, sd within 15%, ESS >= 400).
#
# ## 3. `Predictive` with an EBM prior
#
# `Predictive(model, num_samples=n)` runs the model `n` times and each run calls the prior's
# `sample()`. `EnergyDistribution.sample` keeps a pool of warm chains per energy: the first
# call runs the warmup, every later call advances the pool by `num_transitions` (10)
# transitions and hands out the next chain. `fresh=True` (in `sampler_kwargs`) runs a new
# warmup on every call instead: independent draws, but each costs a whole run.


# %%
def prior_predictive():
    x = pyro.sample("x", prior)
    pyro.sample("y", dist.Normal(x @ A.T, 0.3).to_event(1))


n = 50 if smoke_test else 1_000
start = time.perf_counter()
draws = Predictive(prior_predictive, num_samples=n)()
per_draw = (time.perf_counter() - start) / n
fresh_prior = EnergyDistribution(BananaEnergy(curvature=1.0), event_shape=(2,),
                                 sampler_kwargs={"fresh": True})  # fmt: skip
start = time.perf_counter()
for _ in range(5):
    fresh_prior.sample()
per_fresh = (time.perf_counter() - start) / 5
print(f"warm pool: {1e3 * per_draw:.1f} ms per draw; fresh warmup: {1e3 * per_fresh:.0f} ms")
print("prior draws of x: mean", draws["x"].mean(0).tolist(), "(exact: 0, 0)")

# %% [markdown]
# Draws within one call come from different chains; a chain is handed out again only after
# `pool_size / n` calls (64 chains by default), i.e. hundreds of transitions later. The pool
# is rebuilt when the energy's parameters change (an optimizer step, `load_state_dict`).
