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
# # Sampling an energy: Metropolis-Hastings, Langevin, MALA and HMC
#
# To use an energy-based model we must draw from $p(x) = e^{-E(x)}/Z$ without knowing $Z$.
# The theory pages derive two basic algorithms:
#
# * **Algorithm 1, random-walk Metropolis-Hastings**: propose $y = x + \epsilon\xi$ and accept
#   with probability $\min(1, e^{E(x) - E(y)})$. Only energy *differences* appear, so $Z$
#   cancels.
# * **Algorithm 2, Langevin dynamics**: $x \leftarrow x + \epsilon\, s(x) +
#   \sqrt{2\epsilon}\,\xi$ with the score $s(x) = \nabla_x \log p(x) = -\nabla_x E(x)$, in which
#   $Z$ cancels too. Without a correction this is the *unadjusted* Langevin algorithm (ULA).
#
# and two refinements that pyro-ebm also implements: **MALA** (the Langevin move used as a
# Metropolis-Hastings proposal, which removes ULA's bias) and **HMC** (many leapfrog steps
# along Hamiltonian dynamics per proposal). This notebook measures what the theory predicts:
# ULA's bias as a function of the step size, acceptance rates, effective sample sizes and how
# each method scales with the dimension.

# %%
import math
import os
import warnings

# ArviZ 0.2x announces its 1.0 refactor on import; not relevant here.
warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)

import arviz as az
import matplotlib.pyplot as plt
import torch

from pyro_ebm.energies import BananaEnergy, GaussianEnergy
from pyro_ebm.infer import KERNELS, sample

smoke_test = "CI" in os.environ
NUM_CHAINS = 64 if smoke_test else 256
NUM_SAMPLES = 200 if smoke_test else 2_000
DIMS = (2, 8, 32) if smoke_test else (2, 8, 32, 128, 512)
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## Algorithms 1 and 2 in a few lines
#
# Both algorithms are short enough to write out. Each line below acts on a whole batch of
# chains at once, the way pyro-ebm's samplers do.


# %%
def metropolis_hastings(energy, x, step_size, num_steps, generator):
    """Algorithm 1: random-walk Metropolis-Hastings on a batch of chains."""
    e = energy(x)
    for _ in range(num_steps):
        y = x + step_size * torch.randn(x.shape, generator=generator)
        e_y = energy(y)
        # accept with probability min(1, exp(E(x) - E(y))): always when the energy drops
        accept = torch.rand(e.shape, generator=generator).log() < e - e_y
        x = torch.where(accept[:, None], y, x)
        e = torch.where(accept, e_y, e)
    return x


def langevin(energy, x, step_size, num_steps, generator):
    """Algorithm 2: unadjusted Langevin dynamics with the score s(x) = -grad E(x)."""
    for _ in range(num_steps):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x).sum(), x)
        noise = torch.randn(x.shape, generator=generator)
        x = x - step_size * grad + math.sqrt(2 * step_size) * noise
    return x.detach()


banana = BananaEnergy(curvature=0.5)
g = torch.Generator().manual_seed(0)
start = torch.randn(2000, 2, generator=g)
by_mh = metropolis_hastings(banana, start, 1.0, 500, g)
by_langevin = langevin(banana, start, 0.05, 500, g)
exact = banana.sample(2000, generator=g)

fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharex=True, sharey=True)
for ax, (title, x) in zip(
    axes,
    [("exact draws", exact), ("Algorithm 1 (M-H)", by_mh), ("Algorithm 2 (Langevin)", by_langevin)],
    strict=True,
):
    ax.scatter(*x.T, s=2, alpha=0.4)
    ax.set_title(title)
    ax.set_xlim(-4, 4)
    ax.set_ylim(-3, 7)
plt.show()

# %% [markdown]
# Both pictures look right, but "looks right" hides two different kinds of error. A Markov
# chain that leaves $p$ invariant (Metropolis-Hastings) is only *slow*: its averages converge
# to the right answer, at a rate measured by the effective sample size. Unadjusted Langevin
# leaves a slightly different distribution invariant, so it is *biased*: its averages converge
# to the wrong answer, however long it runs.
#
# ## The bias of unadjusted Langevin
#
# On a Gaussian the bias is known in closed form. For $E(x) = x^2/(2s^2)$ the ULA update is
# linear, $x' = (1 - \epsilon/s^2)\,x + \sqrt{2\epsilon}\,\xi$, and its stationary variance
# $v$ solves $v = (1 - \epsilon/s^2)^2 v + 2\epsilon$:
#
# $$ v(\epsilon) = \frac{s^2}{1 - \epsilon / (2 s^2)}, $$
#
# an $O(\epsilon)$ overestimate. MALA makes the same proposal but accepts it with the
# Metropolis-Hastings probability, which restores the exact variance $s^2$ at every step size.
# We run both with a fixed step size (no adaptation) and measure the variance.

# %%
gauss = GaussianEnergy(torch.zeros(2), torch.eye(2))
step_sizes = [0.05, 0.1, 0.2, 0.4, 0.8, 1.2]
measured = {"ula": [], "mala": []}
acceptance = {"ula": [], "mala": []}
for eps in step_sizes:
    for kernel in ("ula", "mala"):
        fixed = KERNELS[kernel](step_size=eps, adapt_step_size=False, adapt_mass_matrix=False)
        # fixed, deliberately poor step sizes mix slowly: the R-hat/ESS warning is expected
        out = sample(gauss, NUM_SAMPLES, num_chains=NUM_CHAINS, kernel=fixed, warmup_steps=200,
                     seed=1, progress_bar=False, check_convergence=False)  # fmt: skip
        measured[kernel].append(float(out.samples.var(dim=(0, 1)).mean()))
        acceptance[kernel].append(float(out.stats["acceptance_rate"].mean()))

fine = torch.linspace(0.01, 1.25, 100)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(fine, 1 / (1 - fine / 2), "k-", label="ULA theory $1/(1-\\epsilon/2)$")
axes[0].plot(step_sizes, measured["ula"], "o", label="ULA measured")
axes[0].plot(step_sizes, measured["mala"], "s", label="MALA measured")
axes[0].axhline(1.0, color="gray", ls=":", label="truth")
axes[0].set_xlabel("step size $\\epsilon$")
axes[0].set_ylabel("estimated variance")
axes[0].legend()
axes[1].plot(step_sizes, acceptance["mala"], "s-", label="MALA acceptance")
axes[1].axhline(0.574, color="gray", ls=":", label="optimal 0.574")
axes[1].set_xlabel("step size $\\epsilon$")
axes[1].set_ylabel("mean acceptance")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The price of MALA's exactness is rejections, which grow with the step size; the price of
# ULA's simplicity is a bias that grows with it. ULA still has its place: training by
# contrastive divergence runs short chains whose bias is swamped by the fact that they are
# short, and there every saved rejection counts.
#
# ## Acceptance rates and step size
#
# Each Metropolis-Hastings kernel has a step size that balances large moves against
# rejections. Diffusion limits give the optimal acceptance rates as the dimension grows: 0.234
# for random-walk Metropolis (Roberts, Gelman and Gilks, 1997), 0.574 for MALA (Roberts and
# Rosenthal, 1998) and about 0.65 for HMC (Beskos et al., 2013). pyro-ebm's warmup adapts the
# step size towards these targets (per chain early in warmup, then one shared step size by
# dual averaging). Every kernel is an object that owns its settings (`MALA(step_size=...,
# target_accept_prob=...)`, `HMC(num_steps=...)`); here the step size is fixed. On a 10-d
# Gaussian, the acceptance as a function of the step size:

# %%
gauss10 = GaussianEnergy(torch.zeros(10), torch.eye(10))
sweep = torch.logspace(-2, 0.5, 9).tolist()
rates = {"rwmh": [], "mala": [], "hmc": []}
for eps in sweep:
    for kernel in rates:
        extra = {"num_steps": 10} if kernel == "hmc" else {}
        fixed = KERNELS[kernel](step_size=eps, adapt_step_size=False, adapt_mass_matrix=False,
                                **extra)  # fmt: skip
        out = sample(gauss10, 100, num_chains=NUM_CHAINS, kernel=fixed, warmup_steps=50, seed=2,
                     progress_bar=False, check_convergence=False)  # fmt: skip
        rates[kernel].append(float(out.stats["acceptance_rate"].mean()))

fig, ax = plt.subplots(figsize=(6, 3.8))
for kernel, target in (("rwmh", 0.234), ("mala", 0.574), ("hmc", 0.65)):
    (line,) = ax.semilogx(sweep, rates[kernel], "o-", label=kernel.upper())
    ax.axhline(target, color=line.get_color(), ls=":")
ax.set_xlabel("step size $\\epsilon$")
ax.set_ylabel("mean acceptance (10-d Gaussian)")
ax.legend()
plt.show()

# %% [markdown]
# ## Effective sample size, and how it scales with the dimension
#
# Successive draws of a chain are correlated; the effective sample size (ESS) is the number of
# independent draws that would estimate a mean as precisely. What matters in practice is ESS
# per unit of work. The work unit here is one evaluation of the energy's gradient (one energy
# evaluation for random-walk Metropolis, which needs no gradient and is 2-3 times cheaper per
# call; for HMC, one per leapfrog step).
#
# Theory predicts how the step size must shrink as the dimension $d$ grows to keep the
# acceptance rate fixed, and the ESS per unit of work shrinks with it: like $d^{-1}$ for
# random-walk Metropolis, $d^{-1/3}$ for MALA and $d^{-1/4}$ for HMC. We check on isotropic
# Gaussians, with the default warmup (step size and mass matrix adapted; HMC's trajectory
# length adapted by ChEES), and take the median bulk ESS over the coordinates.


# %%
def ess_per_evaluation(out):
    idata = out.to_arviz()
    ess = float(az.ess(idata, var_names=["x"])["x"].median())
    if out.kernel == "hmc":
        evaluations = float(out.stats["n_steps"].sum())
    else:
        evaluations = out.samples.shape[0] * out.samples.shape[1]
    return ess / evaluations, float(out.stats["acceptance_rate"].mean()), float(out.step_size)


table = {kernel: [] for kernel in ("rwmh", "mala", "hmc")}
print(f"{'d':>4s} {'kernel':>6s} {'step':>7s} {'accept':>7s} {'ESS/eval':>9s}")
for d in DIMS:
    target = GaussianEnergy(torch.zeros(d), torch.eye(d))
    for kernel in table:
        # ESS is what this table measures; short RWMH runs in high d are meant to show it low
        out = sample(target, NUM_SAMPLES, num_chains=16, kernel=kernel, warmup_steps=NUM_SAMPLES,
                     seed=3, progress_bar=False, check_convergence=False)  # fmt: skip
        per_eval, accept, step = ess_per_evaluation(out)
        table[kernel].append(per_eval)
        print(f"{d:4d} {kernel:>6s} {step:7.3f} {accept:7.2f} {per_eval:9.4f}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.2))
dims = torch.tensor(DIMS, dtype=torch.float64)
for kernel, slope in (("rwmh", -1.0), ("mala", -1 / 3), ("hmc", -1 / 4)):
    (line,) = ax.loglog(DIMS, table[kernel], "o-", label=kernel.upper())
    reference = table[kernel][-1] * (dims / DIMS[-1]) ** slope  # anchored at the largest d
    ax.loglog(DIMS, reference, ":", color=line.get_color(), label=f"$d^{{{slope:.2g}}}$")
ax.set_xlabel("dimension $d$")
ax.set_ylabel("ESS per evaluation")
ax.legend(ncol=2)
plt.show()

# %% [markdown]
# The dotted lines have the predicted slopes, anchored at the largest dimension. Small
# dimensions are not yet in the asymptotic regime, but from $d \approx 30$ on the measured
# curves run close to parallel to the predictions (in our full-size run, between $d = 32$ and
# $d = 512$: about $d^{-0.9}$ for random-walk Metropolis, $d^{-0.4}$ for MALA and $d^{-0.3}$
# for HMC; under CI the chains are too short for more than the trend). Two practical lessons:
#
# * random-walk Metropolis, the simplest algorithm, loses a factor $d$ and is only worth
#   using when gradients are unavailable or the dimension is small;
# * per gradient evaluation, HMC's long trajectories beat MALA's single steps, and the gap
#   widens with the dimension; MALA is still the default for vectorized sampling of small EBMs
#   because each of its steps is cheap and it needs no trajectory length.
#
# Every experiment here ran many chains at once: `pyro_ebm.infer.sample` advances every
# chain in one batched energy evaluation, each chain with its own accept/reject.
