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

__all__ = ["NEEDS_GRAD", "TARGET_ACCEPT", "leapfrog", "step"]

TARGET_ACCEPT = 0.65
NEEDS_GRAD = True


def leapfrog(
    energy_fn: EnergyFn,
    state: State,
    momentum: Tensor,
    step_size: Tensor,
    metric: Metric,
    num_steps: int,
    event_dim: int,
) -> tuple[State, Tensor]:
    """Integrate Hamilton's equations for ``num_steps`` leapfrog steps (one gradient each)."""
    eps = per_chain(step_size, event_dim) if step_size.dim() else step_size
    position, grad, energy = state.position, state.grad, state.energy
    p = momentum - 0.5 * eps * grad
    for i in range(num_steps):
        position = position + eps * metric.inv_mul(p)
        energy, grad = energy_and_grad(energy_fn, position, event_dim)
        p = p - (eps if i < num_steps - 1 else 0.5 * eps) * grad
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
    proposal, p_end = leapfrog(energy_fn, state, momentum, step_size, metric, steps, event_dim)
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
    return new, info
