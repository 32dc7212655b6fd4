"""The annealed energy of AIS on flat chains, and the cached parts it is made of.

:math:`E_\\beta(x) = -(1 - \\beta)\\log p_0(x) + \\beta E(x)`, evaluated with both gradients in one
call; :meth:`AnnealedEnergy.parts_at` recovers the parts of the points a step accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from .._targets import EnergyFn, check_energy_output
from ..infer.base import State

__all__ = ["AnnealedEnergy", "Components"]


def _grad_or_zeros(out: Tensor, x: Tensor) -> Tensor:
    if not out.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(out.sum(), x, retain_graph=True, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


@dataclass
class Components:
    """Target energy ``e``, base log density ``l0`` and their gradients, for flat chains.

    ``e`` and ``l0`` have shape ``(N,)``; the gradients ``(N, D)``.
    """

    e: Tensor
    l0: Tensor
    ge: Tensor
    g0: Tensor

    def select(self, mask: Tensor, other: Components) -> Components:
        wide = mask[:, None]
        return Components(
            torch.where(mask, other.e, self.e),
            torch.where(mask, other.l0, self.l0),
            torch.where(wide, other.ge, self.ge),
            torch.where(wide, other.g0, self.g0),
        )

    def state(self, x: Tensor, beta: float, sanitize: bool = True) -> State:
        """The cached state of the annealed energy at inverse temperature ``beta``.

        With ``sanitize``, a non-finite gradient becomes zero: a dead chain (infinite energy,
        zero weight) then proposes finite points, which it always rejects, instead of NaNs.
        """
        energy = -(1 - beta) * self.l0 + beta * self.e
        grad = -(1 - beta) * self.g0 + beta * self.ge
        if sanitize:
            grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))
        return State(x, energy, grad)


class AnnealedEnergy:
    r""":math:`E_\beta(x) = -(1 - \beta)\log p_0(x) + \beta E(x)` on flat chains, recording its
    evaluations.

    Chains are stored flat, shape ``(N, D)``, and reshaped to ``(N, *event_shape)`` for the
    energy and the base, so every event shape (scalars included) runs through the same
    vector-valued step functions. A call computes both parts and both gradients (the backward
    passes of the two disjoint graphs cost what one joint backward costs) and returns a
    surrogate whose value is :math:`E_\beta(x)` and whose gradient is
    :math:`\nabla E_\beta(x)`, so the step functions' own backward pass is trivial.

    Every call appends the points and their parts to :attr:`evaluations`; after a step,
    :meth:`parts_at` finds the parts of each accepted position among them by exact equality of
    the positions, chain by chain. That needs no cooperation from the step function and does
    not depend on how often or in which order it calls the energy (MALA evaluates once, HMC
    once per leapfrog step); a position that none of the calls evaluated is evaluated afresh,
    so the result is always right and usually free.
    """

    def __init__(self, energy: EnergyFn, base: Distribution, event_shape: torch.Size) -> None:
        self.energy, self.base, self.event_shape = energy, base, event_shape
        self.beta = 0.0
        self.evaluations: list[tuple[Tensor, Components]] = []

    def components(self, x: Tensor) -> Components:
        x = x.detach()
        n = x.shape[0]
        bad = ~torch.isfinite(x).all(-1)
        if bool(bad.any()):  # never hand non-finite points to the base (it may validate)
            x = torch.where(bad[:, None], torch.zeros_like(x), x)
        x = x.requires_grad_(True)
        with torch.enable_grad():
            points = x.reshape(n, *self.event_shape)
            e = self.energy(points)
            check_energy_output(e, (n,), f"energy on points of shape {tuple(points.shape)}")
            l0 = self.base.log_prob(points)
            check_energy_output(l0, (n,), f"base.log_prob on points of shape {tuple(points.shape)}")
            l0 = l0.to(x.dtype)
            ge, g0 = _grad_or_zeros(e, x), _grad_or_zeros(l0, x)
        nan = torch.full_like(l0, math.nan)
        e = torch.where(bad, nan, e.detach().to(x.dtype))
        return Components(e, torch.where(bad, nan, l0.detach()), ge, g0)

    def __call__(self, x: Tensor) -> Tensor:
        parts = self.components(x)
        self.evaluations.append((x.detach(), parts))
        # a proposal keeps a non-finite gradient, so the Metropolis-Hastings step rejects it
        state = parts.state(x.detach(), self.beta, sanitize=False)
        # value E_beta(x), gradient grad E_beta(x)
        return state.energy + ((x - x.detach()) * state.grad).sum(-1)

    def parts_at(self, position: Tensor, accepted: Tensor, current: Components) -> Components:
        """The parts at ``position``: ``current`` where not ``accepted``, else those recorded.

        Clears :attr:`evaluations`. An accepted chain whose position no recorded call
        evaluated (bit for bit) is evaluated again.
        """
        parts, missing = current, accepted
        for points, recorded in reversed(self.evaluations):  # HMC: the last call is the end point
            if not bool(missing.any()):
                break
            found = missing & (points == position).all(-1)
            parts, missing = parts.select(found, recorded), missing & ~found
        self.evaluations.clear()
        if bool(missing.any()):
            parts = parts.select(missing, self.components(position))
        return parts
