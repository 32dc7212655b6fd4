"""Unadjusted Langevin algorithm (ULA) over a batch of chains.

Algorithm 2 of the reference note, in our sign convention and preconditioned:

.. math::
    x \\leftarrow x - \\epsilon M^{-1}\\nabla E(x) + \\sqrt{2\\epsilon}\\, L\\xi .

Every finite move is taken (no Metropolis-Hastings correction, so the chain is biased by
:math:`O(\\epsilon)`); a move to a non-finite energy or gradient is refused and counted as a
divergence. The reported ``acceptance_rate`` is the MALA acceptance probability the move *would*
have had, computed for free from the cached gradients: it is a bias diagnostic and drives the
step-size adaptation (towards MALA's 0.574) during warmup.

Reference: Roberts & Tweedie (1996), Bernoulli 2(4); Welling & Teh (2011) for its use with
noisy gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import EnergyFn, Info, State, energy_and_grad, select
from .mala import langevin_log_q, langevin_proposal
from .metric import Metric

__all__ = ["NEEDS_GRAD", "TARGET_ACCEPT", "step"]

TARGET_ACCEPT = 0.574
NEEDS_GRAD = True


def step(
    energy_fn: EnergyFn,
    state: State,
    step_size: Tensor,
    metric: Metric,
    generator,
    event_dim: int,
    with_acceptance: bool = True,
) -> tuple[State, Info]:
    """One unadjusted Langevin move of every chain.

    ``with_acceptance=False`` skips the would-be MALA acceptance (reported as NaN), for
    training loops that only need it as an occasional diagnostic.
    """
    eps = step_size.reshape(step_size.shape + (1,) * event_dim)
    position, log_q_forward = langevin_proposal(state, eps, metric, generator)
    energy, grad = energy_and_grad(energy_fn, position, event_dim)
    proposal = State(position, energy, grad)
    if not with_acceptance:
        finite = torch.isfinite(energy) & torch.isfinite(grad).flatten(energy.dim()).all(-1)
        new = select(finite, proposal, state, event_dim)
        unknown = torch.full_like(energy, math.nan)
        return new, Info(acceptance_rate=unknown, is_accepted=finite, diverging=~finite)
    log_ratio = state.energy - energy + langevin_log_q(state, proposal, step_size, metric)
    log_ratio = log_ratio - log_q_forward
    # a non-finite energy or gradient at the proposal makes the ratio non-finite
    finite = torch.isfinite(log_ratio)
    would_accept = torch.where(finite, log_ratio, torch.zeros_like(log_ratio)).clamp(max=0.0).exp()
    would_accept = torch.where(finite, would_accept, torch.zeros_like(would_accept))
    new = select(finite, proposal, state, event_dim)
    return new, Info(acceptance_rate=would_accept, is_accepted=finite, diverging=~finite)
