"""Random-walk Metropolis-Hastings (RWMH) over a batch of chains.

Algorithm 1 of 'Energy Based Models' (June 2024) with a Gaussian proposal preconditioned by the
mass matrix: :math:`y = x + \\epsilon L \\xi`, accepted with probability
:math:`\\min(1, e^{E(x) - E(y)})`. Needs no gradients: one energy evaluation per step.

Reference: Metropolis et al. (1953), J. Chem. Phys. 21; Roberts, Gelman & Gilks (1997) for the
optimal acceptance rate 0.234.
"""

from __future__ import annotations

from torch import Tensor

from .base import EnergyFn, Info, State, evaluate_energy, metropolis_select, per_chain, randn_like
from .metric import Metric

__all__ = ["NEEDS_GRAD", "TARGET_ACCEPT", "proposal", "step"]

TARGET_ACCEPT = 0.234
NEEDS_GRAD = False


def proposal(state: State, step_size: Tensor, metric: Metric, xi: Tensor) -> Tensor:
    """:math:`x + \\epsilon L\\xi` (a symmetric proposal: its MH log ratio is
    :math:`E(x) - E(y)`)."""
    eps = per_chain(step_size, metric.event_dim) if step_size.dim() else step_size
    return state.position + eps * metric.scale_noise(xi)


def step(
    energy_fn: EnergyFn,
    state: State,
    step_size: Tensor,
    metric: Metric,
    generator,
    event_dim: int,
) -> tuple[State, Info]:
    """One random-walk Metropolis transition of every chain."""
    xi = randn_like(state.position, generator)
    position = proposal(state, step_size, metric, xi)
    proposed = State(position, evaluate_energy(energy_fn, position, event_dim))
    return metropolis_select(state, proposed, state.energy - proposed.energy, event_dim, generator)
