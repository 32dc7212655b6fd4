"""Unadjusted Langevin algorithm (ULA) over a batch of chains.

Algorithm 2 of 'Energy Based Models' (June 2024), in our sign convention and preconditioned:

.. math::
    x \\leftarrow x - \\epsilon M^{-1}\\nabla E(x) + \\sqrt{2\\epsilon}\\, L\\xi .

Every finite move is taken (no Metropolis-Hastings correction, so the chain is biased by
:math:`O(\\epsilon)`); a move to a non-finite energy or gradient is refused and counted as a
divergence. The reported ``acceptance_rate`` is the MALA acceptance probability the move *would*
have had (the same :func:`pyro_ebm.infer.mala.log_ratio`), computed for free from the cached
gradients: a bias diagnostic, and what drives the step-size adaptation (towards MALA's 0.574)
during warmup.

Reference: Roberts & Tweedie (1996), Bernoulli 2(4); Welling & Teh (2011) for its use with
noisy gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import mala
from .base import EnergyFn, Info, State, acceptance_probability, energy_and_grad, randn_like, select
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
    xi = randn_like(state.position, generator)
    root = mala.step_root(step_size, metric.event_dim)
    position = mala.proposal(state, step_size, metric, xi, root)
    energy, grad = energy_and_grad(energy_fn, position, event_dim)
    proposed = State(position, energy, grad)
    if with_acceptance:
        would_accept, diverging = acceptance_probability(
            mala.log_ratio(state, proposed, step_size, metric, xi, root)
        )
        finite = ~diverging
    else:
        finite = torch.isfinite(energy) & torch.isfinite(grad).flatten(energy.dim()).all(-1)
        would_accept = torch.full_like(energy, math.nan)
    new = select(finite, proposed, state, event_dim)
    info = Info(acceptance_rate=would_accept, is_accepted=finite, diverging=~finite)
    info.proposal = proposed
    return new, info
