"""Metropolis-adjusted Langevin algorithm (MALA) over a batch of chains: the one copy of its math.

Proposal (preconditioned by :math:`M^{-1} = LL^\\top`, step size :math:`\\epsilon`):

.. math::
    y = x - \\epsilon M^{-1}\\nabla E(x) + \\sqrt{2\\epsilon}\\, L\\xi, \\qquad \\xi \\sim N(0, I),

so :math:`\\log q(y \\mid x) = -\\lVert y - x + \\epsilon M^{-1} \\nabla E(x)\\rVert_M^2 /
(4\\epsilon) + c = -\\tfrac12 \\lVert\\xi\\rVert^2 + c`. :func:`log_ratio` is the
Metropolis-Hastings log ratio :math:`E(x) - E(y) + \\log q(x \\mid y) - \\log q(y \\mid x)`; the
eager step, the compiled transition (:mod:`pyro_ebm.infer.compiled`) and ULA's bias diagnostic
all call these two functions. The state caches :math:`E` and :math:`\\nabla E`, so each step
costs exactly one energy+gradient call.

Reference: Roberts & Tweedie (1996), *Exponential convergence of Langevin distributions and
their discrete approximations*, Bernoulli 2(4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import (
    EnergyFn,
    Info,
    State,
    energy_and_grad,
    metropolis_select,
    per_chain,
    randn_like,
    sum_event,
)
from .metric import Metric

__all__ = [
    "NEEDS_GRAD",
    "TARGET_ACCEPT",
    "langevin_log_q",
    "log_ratio",
    "proposal",
    "step",
    "step_root",
]

TARGET_ACCEPT = 0.574
NEEDS_GRAD = True


def step_root(step_size: Tensor, event_dim: int) -> Tensor:
    """:math:`\\sqrt{\\epsilon / 8}`, broadcastable over a chain's event dimensions: the one
    constant a transition derives from its step size (the noise scale
    :math:`\\sqrt{2\\epsilon}` is four times it). Computed once per transition and shared by
    :func:`proposal` and :func:`log_ratio`."""
    root = (step_size * 0.125).sqrt()
    return per_chain(root, event_dim) if step_size.dim() else root


def proposal(
    state: State, step_size: Tensor, metric: Metric, xi: Tensor, root: Tensor | None = None
) -> Tensor:
    """One Euler-Maruyama step of the preconditioned Langevin diffusion, driven by noise ``xi``.

    ``step_size`` is per chain (shape ``chain_shape``) or a scalar; ``root`` is its
    :func:`step_root` when the caller has it.
    """
    eps = per_chain(step_size, metric.event_dim) if step_size.dim() else step_size
    if root is None:
        root = step_root(step_size, metric.event_dim)
    drift = metric.inv_mul(state.grad)
    position = torch.addcmul(state.position, eps, drift, value=-1.0)
    return torch.addcmul(position, root, metric.scale_noise(xi), value=4.0)


def langevin_log_q(to: State, frm: State, step_size: Tensor, metric: Metric) -> Tensor:
    """:math:`\\log q(\\text{to} \\mid \\text{frm})` up to a constant that cancels in MH."""
    eps = per_chain(step_size, metric.event_dim) if step_size.dim() else step_size
    residual = torch.addcmul(to.position - frm.position, eps, metric.inv_mul(frm.grad))
    return metric.mass_norm_sq(residual) / (-4 * step_size)


def log_ratio(
    current: State,
    proposed: State,
    step_size: Tensor,
    metric: Metric,
    xi: Tensor,
    root: Tensor | None = None,
) -> Tensor:
    """MH log ratio :math:`E(x) - E(y) + \\log q(x\\mid y) - \\log q(y\\mid x)` per chain.

    For the proposal :math:`y = x - \\epsilon M^{-1}\\nabla E(x) + \\sqrt{2\\epsilon}\\,L\\xi`
    made with the noise ``xi``, write :math:`s = \\nabla E(x) + \\nabla E(y)`. The reverse
    residual is :math:`x - y + \\epsilon M^{-1}\\nabla E(y)
    = L(\\epsilon L^\\top s - \\sqrt{2\\epsilon}\\,\\xi)`, so with
    :math:`u = \\sqrt{\\epsilon / 8}\\,L^\\top s`

    .. math::
        \\log q(x\\mid y) - \\log q(y\\mid x)
        = \\tfrac12\\lVert\\xi\\rVert^2 - \\tfrac12\\lVert 2u - \\xi\\rVert^2
        = 2\\,u^\\top(\\xi - u),

    one product with :math:`L^\\top` and no solve, and no cancellation between two large
    squared norms (:func:`langevin_log_q` is the direct form it equals). A non-finite energy
    or gradient at the proposal makes the ratio non-finite. ``root`` is the step size's
    :func:`step_root` when the caller has it.
    """
    if root is None:
        root = step_root(step_size, metric.event_dim)
    u = metric.scale_t(current.grad + proposed.grad) * root
    correction = sum_event(u * (xi - u), metric.event_dim)
    return torch.add(current.energy - proposed.energy, correction, alpha=2.0)


def step(
    energy_fn: EnergyFn,
    state: State,
    step_size: Tensor,
    metric: Metric,
    generator,
    event_dim: int,
) -> tuple[State, Info]:
    """One MALA transition of every chain; returns the new state and per-chain diagnostics."""
    xi = randn_like(state.position, generator)
    root = step_root(step_size, metric.event_dim)
    position = proposal(state, step_size, metric, xi, root)
    energy, grad = energy_and_grad(energy_fn, position, event_dim)
    proposed = State(position, energy, grad)
    ratio = log_ratio(state, proposed, step_size, metric, xi, root)
    return metropolis_select(state, proposed, ratio, event_dim, generator)
