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
# # An energy-based prior in a Pyro model
#
# An energy-based model (EBM) defines a density only up to its normalizer,
# $p(x) = e^{-E(x)}/Z$. `pyro_ebm.EnergyDistribution` turns such an energy into a Pyro
# distribution, so a learned density can serve as a prior in any Pyro model and be sampled by
# Pyro's MCMC machinery as well as by pyro-ebm's own kernels.
#
# This tutorial solves a small **Bayesian inverse problem**: a 2-d quantity $x$ is observed
# only through a noisy linear measurement, $y_i = A x + \sigma \varepsilon_i$, and the prior
# over $x$ is an EBM learned from examples. We then
#
# 1. learn the prior with noise-contrastive estimation (NCE),
# 2. write the Pyro model with an `EnergyDistribution` prior,
# 3. sample the posterior with pyro-ebm's `MALA` and `RandomWalkMH` kernels and Pyro's `NUTS`,
# 4. check the chains with ArviZ (summary, trace, rank and energy plots), and
# 5. compare the kernels by effective sample size (ESS) per second.
#
# Under continuous integration (`CI` set in the environment) every size shrinks so that the
# notebook runs in seconds; the figures are then only smoke.

# %%
import os
import time
import warnings

# ArviZ 0.2x announces its 1.0 refactor on import; not relevant here.
warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)

import arviz as az
import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS

from pyro_ebm import EnergyDistribution, fit
from pyro_ebm.diagnostics import (
    StatsRecorder,
    bfmi,
    concat_chains,
    plot_energy,
    plot_rank,
    plot_trace,
    to_arviz,
)
from pyro_ebm.energies import BananaEnergy, MLPEnergy
from pyro_ebm.infer import MALA, RandomWalkMH, sample
from pyro_ebm.objectives import NCE, fit_gaussian_noise

smoke_test = "CI" in os.environ
NUM_EXAMPLES = 2_000 if smoke_test else 20_000  # examples the prior is learned from
TRAIN_STEPS = 300 if smoke_test else 4_000
NUM_CHAINS = 2 if smoke_test else 4
WARMUP = 150 if smoke_test else 1_000
NUM_SAMPLES = 150 if smoke_test else 2_000

pyro.set_rng_seed(0)
torch.manual_seed(0)

# %% [markdown]
# ## 1. Learning the prior
#
# Suppose past, fully observed examples of $x$ follow a curved "banana" distribution. We do not
# know that; we only have the examples. We fit an `MLPEnergy` to them with NCE: a logistic
# classifier separates the examples from Gaussian noise, and because its logit is
# $-E_\theta(x) - c - \log(\nu\,p_n(x))$, the learned constant $c$ converges to
# $\log Z_\theta$. The prior therefore comes out **normalized**.

# %%
truth = BananaEnergy()  # x1 ~ N(0, 1), x2 ~ N(x1^2 - 1, 1)
examples = truth.sample(NUM_EXAMPLES, generator=torch.Generator().manual_seed(1))

energy = MLPEnergy(2, hidden=(64, 64))
objective = NCE(fit_gaussian_noise(examples, scale=1.5), noise_ratio=4)
start = time.perf_counter()
history = fit(energy, examples, objective, steps=TRAIN_STEPS, batch_size=256, lr=2e-3,
              lr_warmup=0, seed=0, progress_bar=False)  # fmt: skip
print(f"trained in {time.perf_counter() - start:.1f} s; learned log Z = {history.log_Z:.3f}")

# The prior's parameters are fixed from now on: no gradient needs to reach them during MCMC.
energy.requires_grad_(False)
prior = EnergyDistribution(energy, event_shape=(2,))
print(prior, "| log Z known:", prior.is_normalized)

# %%
xx, yy = torch.meshgrid(torch.linspace(-4, 4, 200), torch.linspace(-3, 7, 250), indexing="xy")
points = torch.stack([xx, yy], -1)
with torch.no_grad():
    learned = prior.log_prob(points).exp()
    exact = truth.log_prob(points).exp()

fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharex=True, sharey=True)
axes[0].scatter(*examples[:2000].T, s=2, alpha=0.4)
axes[0].set_title("examples")
axes[1].contourf(xx, yy, exact, levels=20)
axes[1].set_title("true density")
axes[2].contourf(xx, yy, learned, levels=20)
axes[2].set_title("learned prior $e^{-E(x)-\\log Z}$")
for ax in axes:
    ax.set_xlim(-4, 4)
    ax.set_ylim(-3, 7)
    ax.set_aspect("equal")
plt.show()

# %% [markdown]
# ## 2. The inverse problem as a Pyro model
#
# We measure one linear functional of $x$, $a^\top x$ with $a = (1, -0.35)$, four times with
# noise $\sigma = 1$. The likelihood alone only says that $x$ lies in a band around a line,
# which here runs roughly along the banana's right arm; the prior decides where along the band
# the mass lies, and bends it.
#
# `EnergyDistribution` is used like any other Pyro distribution: `log_prob` is
# $-E(x) - \log Z$ and `sample()` runs a short vectorized MCMC, which Pyro uses to initialize
# its samplers.

# %%
A = torch.tensor([[1.0, -0.35]])
sigma = 1.0
x_true = torch.tensor([1.5, 1.25])  # on the banana's right arm
y = x_true @ A.T + sigma * torch.randn(4, 1, generator=torch.Generator().manual_seed(2))


def model(y):
    x = pyro.sample("x", prior)  # the energy-based prior
    with pyro.plate("measurements", y.shape[0]):
        pyro.sample("y", dist.Normal(x @ A.T, sigma).to_event(1), obs=y)


print("observations:", y.squeeze(-1))

# %% [markdown]
# ## 3. Three samplers through `pyro.infer.MCMC`
#
# * `pyro_ebm.infer.MALA`: Metropolis-adjusted Langevin, one potential and gradient evaluation
#   per step, step size adapted towards acceptance 0.574;
# * Pyro's `NUTS`: the no-U-turn sampler, many gradient evaluations per step. A
#   `StatsRecorder` passed as `hook_fn` records its per-draw statistics (energy, tree depth,
#   ...) for ArviZ;
# * `pyro_ebm.infer.RandomWalkMH`: Gaussian random-walk Metropolis, no gradients, scale adapted
#   towards acceptance 0.234.
#
# Each chain is one `MCMC` run, and `concat_chains` joins the chains. (`MCMC(num_chains=4)`
# would run them in worker processes on a machine with enough cores, which makes the timings
# hard to compare; the recorder works there too.)


# %%
def run(make_kernel, record_stats=False):
    """NUM_CHAINS chains, one after the other, as ArviZ data; and the wall time."""
    chains = []
    start = time.perf_counter()
    for _ in range(NUM_CHAINS):
        recorder = StatsRecorder() if record_stats else None
        mcmc = MCMC(make_kernel(), num_samples=NUM_SAMPLES, warmup_steps=WARMUP,
                    hook_fn=recorder, disable_progbar=True)  # fmt: skip
        mcmc.run(y)
        chains.append(to_arviz(mcmc, recorder=recorder))
    return concat_chains(chains), time.perf_counter() - start


pyro.set_rng_seed(1)
idata, seconds = {}, {}
idata["MALA (pyro-ebm)"], seconds["MALA (pyro-ebm)"] = run(lambda: MALA(model))
idata["NUTS (Pyro)"], seconds["NUTS (Pyro)"] = run(lambda: NUTS(model), record_stats=True)
idata["RWMH (pyro-ebm)"], seconds["RWMH (pyro-ebm)"] = run(lambda: RandomWalkMH(model))

# %% [markdown]
# ## 4. Diagnostics with ArviZ
#
# `to_arviz` names the posterior and the sampler statistics as ArviZ expects, so the standard
# checks apply. First the summary: $\hat R$ near 1 and a healthy bulk and tail ESS. The plots
# below go through `pyro_ebm.diagnostics`' `plot_trace`, `plot_rank` and `plot_energy`, which
# call ArviZ and return a matplotlib figure on ArviZ 0.2x and 1.x alike (1.x renamed
# `plot_trace` to `plot_trace_dist` and returns a `PlotCollection`).

# %%
for name, data in idata.items():
    print(name)
    print(az.summary(data, var_names=["x"]).to_string(), "\n")

# %% [markdown]
# The trace plot shows the marginal densities per chain (left) and the draws in order
# (right); divergent transitions, if any, are marked.

# %%
plot_trace(idata["NUTS (Pyro)"], var_names=["x"], compact=False, figsize=(10, 4))
plt.show()

# %% [markdown]
# Rank plots are the sharper test of mixing: pool all draws, rank them, and compare the ranks
# of each chain (histograms with ArviZ 0.2x, rank ECDFs with ArviZ 1.x). Chains that sample the
# same distribution give flat histograms, or ECDFs inside the band, that overlap.

# %%
for name, data in idata.items():
    fig = plot_rank(data, var_names=["x"], figsize=(10, 2.6))
    fig.suptitle(name)
    plt.show()

# %% [markdown]
# The energy plot compares the marginal distribution of the Hamiltonian with the distribution
# of its changes between draws; when the transition distribution is much narrower than the
# marginal (low Bayesian fraction of missing information, BFMI), the sampler explores the
# energy levels slowly. It needs the Hamiltonian of every draw, which only HMC-type kernels
# have, here recorded by `StatsRecorder`.

# %%
plot_energy(idata["NUTS (Pyro)"], figsize=(6, 4))
plt.show()
print("BFMI per chain:", bfmi(idata["NUTS (Pyro)"]).round(2))

# %% [markdown]
# All three samplers target the same posterior (black contours). It follows the prior's curved
# arm and reaches down into the prior's bulk, well below the true value (red star): with one
# noisy measurement, the prior dominates. No Gaussian approximation would capture this shape.

# %%
with torch.no_grad():
    log_post = prior.log_prob(points) + dist.Normal(points @ A.T, sigma).log_prob(
        y.reshape(4, 1, 1, 1)
    ).sum((0, -1))
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharex=True, sharey=True)
for ax, (name, data) in zip(axes, idata.items(), strict=True):
    draws = data.posterior["x"].values.reshape(-1, 2)
    ax.contour(xx, yy, log_post.exp(), levels=8, colors="k", linewidths=0.7)
    ax.scatter(*draws.T, s=2, alpha=0.3)
    ax.plot(*x_true, "r*", ms=12)
    ax.set_title(name)
    ax.set_xlim(-1.5, 3)
    ax.set_ylim(-4, 4.5)
plt.show()

# %% [markdown]
# ## 5. ESS per second
#
# The figure of merit for a sampler is effective samples per unit of work. We take the smaller
# bulk ESS of the two coordinates and divide by wall time (warmup included).
#
# A fourth contender skips Pyro altogether: the posterior energy
# $E(x) + \sum_i \lVert y_i - A x\rVert^2 / (2\sigma^2)$ is a batched function of $x$, so
# `pyro_ebm.infer.sample` can run many MALA chains at once, each with its own accept/reject.


# %%
def posterior_energy(x):
    residual = y - (x @ A.T).unsqueeze(-2)  # (..., 4, 1)
    return energy(x) + 0.5 * residual.pow(2).sum((-2, -1)) / sigma**2


start = time.perf_counter()
vectorized = sample(posterior_energy, NUM_SAMPLES, num_chains=64, kernel="mala",
                    warmup_steps=WARMUP, event_shape=(2,), seed=0, progress_bar=False)  # fmt: skip
seconds["MALA, 64 vectorized chains"] = time.perf_counter() - start
idata["MALA, 64 vectorized chains"] = vectorized.to_arviz()

print(f"{'sampler':28s} {'draws':>7s} {'seconds':>8s} {'min ESS':>8s} {'ESS/s':>8s} {'accept':>7s}")
for name, data in idata.items():
    ess = float(az.ess(data, var_names=["x"])["x"].min())
    draws = data.posterior.sizes["chain"] * data.posterior.sizes["draw"]
    accept = float(data.sample_stats["acceptance_rate"].mean())
    print(f"{name:28s} {draws:7d} {seconds[name]:8.2f} {ess:8.0f} {ess / seconds[name]:8.0f} "
          f"{accept:7.2f}")  # fmt: skip

# %% [markdown]
# NUTS produces the most nearly independent draws per transition, but each transition costs
# many gradient evaluations through Pyro's model tracing. MALA costs one evaluation per step and
# random-walk Metropolis one energy evaluation (no gradient), so per second they keep up. In our
# full-size runs (on a shared 2-core CPU) the three Pyro-driven kernels were within a small
# factor of each other, random-walk Metropolis ahead: in two dimensions its cheap steps win, and
# it falls behind quickly as the dimension grows (see the sampling tutorial). The 64 vectorized
# chains produced one to two orders of magnitude more effective samples per second: running
# many chains as one batch, which Pyro's kernels cannot do, is the way to sample a small
# posterior fast.
