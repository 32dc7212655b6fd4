"""Hamiltonian Monte Carlo (HMC) with a given number of leapfrog steps, over a batch of chains.

With momentum :math:`p \\sim N(0, M)` and Hamiltonian :math:`H(x, p) = E(x) + \\tfrac12 p^\\top
M^{-1} p`, the leapfrog integrator

.. math::
    p_{1/2} = p - \\tfrac{\\epsilon}{2}\\nabla E(x), \\quad x' = x + \\epsilon M^{-1} p_{1/2},
    \\quad p' = p_{1/2} - \\tfrac{\\epsilon}{2}\\nabla E(x')

is applied ``num_steps`` times (fused half steps: one energy+gradient call per leapfrog step,
the gradient at the start is cached) and the end point is accepted with probability
:math:`\\min(1, e^{H(x,p) - H(x',p')})`. A trajectory whose energy error exceeds
``max_energy_error`` or is not finite is rejected and counted as divergent. The optional
``jitter`` draws the number of steps uniformly from :math:`[\\lceil(1-j)L\\rceil, L]` at each
transition (shared by the chains, so the batch stays vectorized). The runner chooses the
number of steps of each transition (from a trajectory length adapted by ChEES, see
:mod:`pyro_ebm.infer.chees`); this module integrates and accepts.

Reference: Duane et al. (1987), Phys. Lett. B 195; Neal (2011), *MCMC using Hamiltonian
dynamics*, Handbook of MCMC.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import EnergyFn, Info, State, energy_and_grad, metropolis_accept, per_chain, randn_like
from .metric import Metric

__all__ = [
    "NEEDS_GRAD",
    "STEP_SIZE_JITTER",
    "TARGET_ACCEPT",
    "jitter_factor",
    "leapfrog",
    "mean_jitter_factor",
    "step",
]

TARGET_ACCEPT = 0.65
NEEDS_GRAD = True
#: Default step-size jitter of :class:`~pyro_ebm.infer.HMC` (see :func:`jitter_factor`).
STEP_SIZE_JITTER = 0.75


def jitter_factor(like: Tensor, jitter: float, generator: torch.Generator | None) -> Tensor:
    """Per-chain factors :math:`u = (1 - j)^U`, :math:`U \\sim U(0, 1)`: log-uniform in
    :math:`[1 - j, 1]`, shaped like ``like`` (one per chain), drawn from ``generator``."""
    uniform = torch.rand(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    return torch.exp(uniform * math.log1p(-jitter))


def mean_jitter_factor(jitter: float) -> float:
    """:math:`E[u] = j / (-\\log(1 - j))` for the factors of :func:`jitter_factor` (1 if 0)."""
    return jitter / -math.log1p(-jitter) if jitter > 0 else 1.0


def leapfrog(
    energy_fn: EnergyFn,
    state: State,
    momentum: Tensor,
    step_size: Tensor,
    metric: Metric,
    num_steps: int,
    event_dim: int,
    max_energy_error: float = math.inf,
) -> tuple[State, Tensor]:
    """Integrate Hamilton's equations for ``num_steps`` leapfrog steps (one gradient each).

    A chain whose energy or gradient turns non-finite, or whose energy error exceeds
    ``max_energy_error`` at some step (measured with the half-step momentum, which the
    position update computes anyway), is doomed: its proposal is rejected as divergent. From
    then on it is evaluated at its starting point and its end energy is NaN, so a trajectory
    that is flying off never reaches points where the energy overflows or raises (a failed
    Cholesky factor there would cost the whole batch a bisection, see
    :func:`~pyro_ebm.infer.base.energy_and_grad`), as Stan and NumPyro stop a divergent tree.
    """
    eps = per_chain(step_size, event_dim) if step_size.dim() else step_size
    position, grad, energy = state.position, state.grad, state.energy
    p = momentum - 0.5 * eps * grad
    lost = torch.zeros_like(state.energy, dtype=torch.bool)
    h_limit = state.energy + metric.kinetic(momentum) + max_energy_error
    for i in range(num_steps):
        velocity = metric.inv_mul(p)
        position = position + eps * velocity
        wide = per_chain(lost, event_dim)
        energy, grad = energy_and_grad(
            energy_fn, torch.where(wide, state.position, position), event_dim
        )
        finite = torch.isfinite(energy) & torch.isfinite(grad).flatten(energy.dim()).all(-1)
        h = energy + 0.5 * metric.dot(p, velocity)
        lost = lost | ~finite | (h > h_limit)
        wide = per_chain(lost, event_dim)
        grad = torch.where(wide, torch.zeros_like(grad), grad)
        p = torch.where(wide, torch.zeros_like(p), p)
        p = p - (eps if i < num_steps - 1 else 0.5 * eps) * grad
    energy = torch.where(lost, torch.full_like(energy, math.nan), energy)
    position = torch.where(per_chain(lost, event_dim), state.position, position)
    return State(position, energy, grad), p


def step(
    energy_fn: EnergyFn,
    state: State,
    step_size: Tensor,
    metric: Metric,
    generator,
    event_dim: int,
    *,
    num_steps: int = 10,
    jitter: float = 0.0,
    max_energy_error: float = 1000.0,
    host_generator: torch.Generator | None = None,
) -> tuple[State, Info]:
    """One HMC transition of every chain.

    ``host_generator`` (a CPU generator) draws the jittered number of steps on the host, so the
    loop length never waits on the device.
    """
    steps = num_steps
    if jitter > 0:
        low = max(1, math.ceil((1 - jitter) * num_steps))
        steps = int(torch.randint(low, num_steps + 1, (1,), generator=host_generator).item())
    momentum = metric.sample_momentum(randn_like(state.position, generator))
    h_start = state.energy + metric.kinetic(momentum)
    proposal, p_end = leapfrog(
        energy_fn, state, momentum, step_size, metric, steps, event_dim, max_energy_error
    )
    kinetic_end = metric.kinetic(p_end)
    log_correction = metric.kinetic(momentum) - kinetic_end
    energy_error = proposal.energy + kinetic_end - h_start
    log_correction = torch.where(
        energy_error > max_energy_error, torch.full_like(log_correction, math.nan), log_correction
    )
    new, info = metropolis_accept(state, proposal, log_correction, event_dim, generator)
    info.energy = torch.where(info.is_accepted, proposal.energy + kinetic_end, h_start)
    info.n_steps = torch.full_like(state.energy, float(steps))
    info.momentum = p_end
    info.integration_step = step_size if step_size.dim() else step_size.expand(state.energy.shape)
    return new, info
