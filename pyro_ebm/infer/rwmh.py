"""Random-walk Metropolis-Hastings (RWMH) over a batch of chains.

Algorithm 1 of the reference note with a Gaussian proposal preconditioned by the mass matrix:
:math:`y = x + \\epsilon L \\xi`, accepted with probability :math:`\\min(1, e^{E(x) - E(y)})`.
Needs no gradients: one energy evaluation per step.

Reference: Metropolis et al. (1953), J. Chem. Phys. 21; Roberts, Gelman & Gilks (1997) for the
optimal acceptance rate 0.234.
"""

from __future__ import annotations

from torch import Tensor

from .base import EnergyFn, Info, State, evaluate_energy, metropolis_accept, per_chain, randn_like
from .metric import Metric

__all__ = ["NEEDS_GRAD", "TARGET_ACCEPT", "step"]

TARGET_ACCEPT = 0.234
NEEDS_GRAD = False


def step(
    energy_fn: EnergyFn,
    state: State,
    step_size: Tensor,
    metric: Metric,
    generator,
    event_dim: int,
) -> tuple[State, Info]:
    """One random-walk Metropolis transition of every chain."""
    eps = per_chain(step_size, event_dim)
    xi = randn_like(state.position, generator)
    position = state.position + eps * metric.scale_noise(xi)
    proposal = State(position, evaluate_energy(energy_fn, position, event_dim))
    return metropolis_accept(state, proposal, 0.0, event_dim, generator)
