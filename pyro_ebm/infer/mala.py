"""Metropolis-adjusted Langevin algorithm (MALA) over a batch of chains.

Proposal (preconditioned by :math:`M^{-1} = LL^\\top`, step size :math:`\\epsilon`):

.. math::
    y = x - \\epsilon M^{-1}\\nabla E(x) + \\sqrt{2\\epsilon}\\, L\\xi, \\qquad \\xi \\sim N(0, I),

so :math:`\\log q(y \\mid x) = -\\lVert y - x + \\epsilon M^{-1} \\nabla E(x)\\rVert_M^2 /
(4\\epsilon) + c`; the move is corrected by the shared Metropolis-Hastings step. The state
caches :math:`E` and :math:`\\nabla E`, so each step costs exactly one energy+gradient call.

Reference: Roberts & Tweedie (1996), *Exponential convergence of Langevin distributions and
their discrete approximations*, Bernoulli 2(4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import EnergyFn, Info, State, energy_and_grad, metropolis_accept, per_chain, randn_like
from .metric import Metric

__all__ = ["NEEDS_GRAD", "TARGET_ACCEPT", "langevin_log_q", "langevin_proposal", "step"]

TARGET_ACCEPT = 0.574
NEEDS_GRAD = True


def langevin_proposal(
    state: State, eps: Tensor, metric: Metric, generator
) -> tuple[Tensor, Tensor]:
    """One Euler-Maruyama step of the (preconditioned) Langevin diffusion.

    Returns the proposal and the forward log density :math:`\\log q(y \\mid x) =
    -\\tfrac12\\lVert\\xi\\rVert^2` (up to a constant), which follows from the noise directly.
    """
    xi = randn_like(state.position, generator)
    drift = metric.inv_mul(state.grad)
    # fused: x - eps * drift + sqrt(2 eps) * L xi
    position = torch.addcmul(state.position, eps, drift, value=-1.0)
    position = torch.addcmul(position, (2 * eps).sqrt(), metric.scale_noise(xi))
    log_q_forward = -0.5 * _sum_event(xi * xi, metric.event_dim)
    return position, log_q_forward


def step(
    energy_fn: EnergyFn,
    state: State,
    step_size: Tensor,
    metric: Metric,
    generator,
    event_dim: int,
) -> tuple[State, Info]:
    """One MALA transition of every chain; returns the new state and per-chain diagnostics."""
    eps = per_chain(step_size, event_dim)
    position, log_q_forward = langevin_proposal(state, eps, metric, generator)
    energy, grad = energy_and_grad(energy_fn, position, event_dim)
    proposal = State(position, energy, grad)
    log_correction = langevin_log_q(state, proposal, step_size, metric) - log_q_forward
    return metropolis_accept(state, proposal, log_correction, event_dim, generator)


def langevin_log_q(to: State, frm: State, step_size: Tensor, metric: Metric) -> Tensor:
    """:math:`\\log q(\\text{to} \\mid \\text{frm})` up to a constant that cancels in MH."""
    eps = per_chain(step_size, metric.event_dim)
    residual = torch.addcmul(to.position - frm.position, eps, metric.inv_mul(frm.grad))
    return metric.mass_norm_sq(residual) / (-4 * step_size)


def _sum_event(t: Tensor, event_dim: int) -> Tensor:
    return t.sum(dim=tuple(range(-event_dim, 0))) if event_dim else t
