"""Shared pieces of every sampler: the chain state, the energy+gradient call and the one MH step.

A *batch of chains* is a position tensor of shape ``chain_shape + event_shape``; everything
per chain (energy, acceptance, step size) has shape ``chain_shape``. Every chain accepts or
rejects on its own. Energies follow the potential-energy convention: the target density is
:math:`p(x) \\propto \\exp(-E(x))`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

__all__ = [
    "Info",
    "State",
    "energy_and_grad",
    "evaluate_energy",
    "init_state",
    "acceptance_probability",
    "metropolis_accept",
    "metropolis_select",
    "module_dtype_device",
    "per_chain",
    "randn_like",
    "select",
    "sum_event",
]

EnergyFn = Callable[[Tensor], Tensor]


@dataclass
class State:
    """The state of a batch of chains, caching what the next step needs.

    Attributes
    ----------
    position:
        Current points, shape ``chain_shape + event_shape``.
    energy:
        :math:`E(x)` at ``position``, shape ``chain_shape``.
    grad:
        :math:`\\nabla_x E(x)` at ``position`` (``None`` for gradient-free samplers).
    """

    position: Tensor
    energy: Tensor
    grad: Tensor | None = None


@dataclass
class Info:
    """Per-chain diagnostics of one transition (each of shape ``chain_shape``).

    ``acceptance_rate`` is the Metropolis-Hastings acceptance probability
    :math:`\\min(1, \\alpha)` of the proposal; ``diverging`` marks proposals rejected because
    their energy, gradient or Hamiltonian error was not finite (or too large for HMC).
    ``proposal`` is the state that was proposed (accepted or not), as BlackJAX's info carries
    it: annealed importance sampling reads the energies it evaluated there, and trajectory
    adaptation reads its position. For HMC, ``energy`` is the Hamiltonian at the point the
    chain is at after the transition (the accepted end of the trajectory, or the start if
    rejected), as Stan records it; ``n_steps`` is the number of leapfrog steps and ``momentum``
    the momentum at the end of the trajectory and ``integration_step`` the per-chain leapfrog
    step actually used (the adapted step times the step-size jitter; all ``None`` for the other
    samplers).
    """

    acceptance_rate: Tensor
    is_accepted: Tensor
    diverging: Tensor
    energy: Tensor | None = None
    n_steps: Tensor | None = None
    proposal: State | None = None
    momentum: Tensor | None = None
    integration_step: Tensor | None = None

    def as_dict(self) -> dict[str, Tensor]:
        """The per-chain tensors by name (``proposal``, ``momentum`` and ``integration_step``
        left out)."""
        skip = ("proposal", "momentum", "integration_step")
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return {name: value for name, value in values.items() if value is not None}


def module_dtype_device(obj) -> tuple[torch.dtype, torch.device] | None:
    """dtype and device of a module's first floating-point parameter or buffer (else None)."""
    if isinstance(obj, torch.nn.Module):
        for t in list(obj.parameters()) + list(obj.buffers()):
            if t.is_floating_point():
                return t.dtype, t.device
    return None


def per_chain(t: Tensor, event_dim: int) -> Tensor:
    """Append ``event_dim`` singleton dimensions so a per-chain tensor broadcasts over events."""
    if event_dim == 1:  # the common case, and a cheaper dispatch than reshape
        return t.unsqueeze(-1)
    return t.reshape(t.shape + (1,) * event_dim)


def sum_event(t: Tensor, event_dim: int) -> Tensor:
    """Sum over the ``event_dim`` rightmost dimensions (per-chain totals)."""
    return t.sum(dim=tuple(range(-event_dim, 0))) if event_dim else t


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` drawn from ``generator``."""
    return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


def _nonfinite_energy(x: Tensor, event_dim: int) -> Tensor:
    chain_shape = x.shape[: x.dim() - event_dim]
    return torch.full(chain_shape, math.nan, dtype=x.dtype, device=x.device)


class _EnergyShapeError(ValueError):
    """An energy that returned the wrong shape: a user error, never a rejected point."""


def _check_energy_shape(energy: Tensor, x: Tensor, event_dim: int) -> None:
    expected = x.shape[: x.dim() - event_dim]
    if energy.shape != expected:
        raise _EnergyShapeError(
            f"energy returned shape {tuple(energy.shape)} for input of shape {tuple(x.shape)}; "
            f"expected {tuple(expected)} (the input shape without its {event_dim} event dims)"
        )


#: What an energy may raise at a bad point (a failed Cholesky factor, a domain error): the
#: chains evaluated there get a non-finite energy, i.e. a rejected, divergent proposal.
_POINT_ERRORS = (RuntimeError, ValueError, ArithmeticError, IndexError)


def _split_on_error(evaluate: Callable[[Tensor], tuple], x: Tensor, event_dim: int) -> tuple:
    """``evaluate(x)``; if it raises, bisect the chains so only the failing ones get NaN.

    Energies of real posteriors raise at bad points (``torch.linalg.cholesky`` of a covariance
    that is numerically singular at one chain's proposal raises for the whole batch). Each
    chain is independent, so the batch is split in halves along its first dimension until the
    chains that raise are isolated (``2k log2 n`` extra calls for ``k`` failing chains of
    ``n``, and none when nothing raises): one chain's failure never rejects the others, as in
    Stan, where an exception rejects only that chain's proposal.
    """
    try:
        return evaluate(x)
    except _EnergyShapeError:
        raise
    except _POINT_ERRORS:
        if x.dim() == event_dim or x.shape[0] <= 1:
            raise
    half = x.shape[0] // 2
    parts = []
    for piece in (x[:half], x[half:]):
        try:
            parts.append(_split_on_error(evaluate, piece, event_dim))
        except _EnergyShapeError:
            raise
        except _POINT_ERRORS:
            parts.append(None)
    template = next((p for p in parts if p is not None), None)
    if template is None:
        raise RuntimeError("every chain of the batch raised")
    pieces = (x[:half], x[half:])
    out = []
    for k, item in enumerate(template):
        out.append(
            torch.cat(
                [
                    part[k] if part is not None else _nan_like_chain(item, piece, event_dim)
                    for part, piece in zip(parts, pieces, strict=True)
                ]
            )
        )
    return tuple(out)


def _nan_like_chain(example: Tensor, piece: Tensor, event_dim: int) -> Tensor:
    """NaN shaped like ``example`` for the chains of ``piece`` (energies or gradients)."""
    shape = (piece.shape[0],) + tuple(example.shape[1:])
    return torch.full(shape, math.nan, dtype=example.dtype, device=example.device)


def evaluate_energy(fn: EnergyFn, x: Tensor, event_dim: int) -> Tensor:
    """Evaluate ``fn(x)`` without gradients; chains at which it raises get a NaN energy."""

    def evaluate(points: Tensor) -> tuple[Tensor]:
        energy = fn(points)
        _check_energy_shape(energy, points, event_dim)
        return (energy.detach(),)

    with torch.no_grad():
        try:
            (energy,) = _split_on_error(evaluate, x, event_dim)
        except _EnergyShapeError:
            raise
        except _POINT_ERRORS:
            return _nonfinite_energy(x, event_dim)
    return energy


def energy_and_grad(fn: EnergyFn, x: Tensor, event_dim: int) -> tuple[Tensor, Tensor]:
    """One joint evaluation of :math:`E(x)` and :math:`\\nabla_x E(x)` for a batch of chains.

    Because chains are independent, the gradient of the summed energy is each chain's own
    gradient. Chains at which the energy raises (for example a linear-algebra failure) get a
    non-finite energy and gradient, so their step rejects instead of crashing; the other
    chains of the batch are evaluated normally (the batch is bisected, see
    :func:`_split_on_error`). Gradients never flow into the energy's parameters.
    """

    def evaluate(points: Tensor) -> tuple[Tensor, Tensor]:
        points = points.detach().requires_grad_(True)
        with torch.enable_grad():
            energy = fn(points)
            _check_energy_shape(energy, points, event_dim)
            if not energy.requires_grad:  # a constant energy (e.g. a NaN returned for a region)
                return energy.detach(), torch.zeros_like(points).detach()
            try:
                (grad,) = torch.autograd.grad(energy.sum(), points, allow_unused=True)
            except RuntimeError:  # a backward failure is a non-finite point too
                return energy.detach(), torch.full_like(points, math.nan).detach()
        if grad is None:  # energy independent of x
            grad = torch.zeros_like(points)
        return energy.detach(), grad  # autograd.grad without create_graph: no graph to drop

    try:
        return _split_on_error(evaluate, x, event_dim)
    except _EnergyShapeError:
        raise
    except _POINT_ERRORS:
        return _nonfinite_energy(x, event_dim), torch.full_like(x, math.nan).detach()


def init_state(fn: EnergyFn, position: Tensor, event_dim: int, *, with_grad: bool) -> State:
    """Build the initial :class:`State`; a non-finite energy at the start is a user error."""
    if with_grad:
        energy, grad = energy_and_grad(fn, position, event_dim)
        finite = torch.isfinite(energy) & torch.isfinite(grad).flatten(energy.dim()).all(-1)
    else:
        energy, grad = evaluate_energy(fn, position, event_dim), None
        finite = torch.isfinite(energy)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"the energy (or its gradient) is not finite at {bad} of {finite.numel()} initial "
            "points; pass `init=` a tensor of starting points (shape (num_chains, *event_shape)) "
            "inside the support of the density"
        )
    return State(position.detach(), energy, grad)


def metropolis_accept(
    current: State,
    proposal: State,
    log_correction: Tensor | float,
    event_dim: int,
    generator: torch.Generator | None,
) -> tuple[State, Info]:
    """The single Metropolis-Hastings accept/reject step shared by every corrected sampler.

    Accept each chain's proposal with probability
    :math:`\\min\\{1, \\exp(E(x) - E(y) + \\log q(x\\mid y) - \\log q(y\\mid x))\\}`, where
    ``log_correction`` is the proposal's term :math:`\\log q(x\\mid y) - \\log q(y\\mid x)`
    (zero for symmetric proposals; the kinetic-energy difference for HMC). Proposals whose
    energy or acceptance ratio is not finite are rejected and marked ``diverging`` (a gradient
    enters the ratio through ``log_correction`` for gradient-based proposals).

    Reference: Hastings (1970), *Monte Carlo sampling methods using Markov chains and their
    applications*, Biometrika 57(1).
    """
    log_ratio = current.energy - proposal.energy + log_correction
    # For MALA and HMC the proposal's gradient enters ``log_correction``, so a non-finite
    # gradient already makes the ratio non-finite: no separate pass over the gradient.
    return metropolis_select(current, proposal, log_ratio, event_dim, generator)


def acceptance_probability(log_ratio: Tensor) -> tuple[Tensor, Tensor]:
    """:math:`\\min(1, e^{\\log\\alpha})` and whether :math:`\\log\\alpha` is not finite.

    A NaN or infinite log ratio (a non-finite energy or gradient somewhere) gets probability
    0: it is rejected and reported as diverging. Shared by the eager steps, the compiled
    transition and ULA's would-be acceptance. Four operations: this runs on every transition
    of thousands of chains, where each dispatched operation costs microseconds.
    """
    cleaned = log_ratio.nan_to_num(nan=-math.inf, posinf=-math.inf, neginf=-math.inf)
    diverging = cleaned == -math.inf  # NaN and +-inf alike
    return cleaned.clamp(max=0.0).exp(), diverging


def metropolis_select(
    current: State,
    proposal: State,
    log_ratio: Tensor,
    event_dim: int,
    generator: torch.Generator | None,
) -> tuple[State, Info]:
    """Accept each chain's proposal with probability :math:`\\min(1, e^{\\log\\alpha})`."""
    acceptance, diverging = acceptance_probability(log_ratio)
    uniform = torch.rand(
        log_ratio.shape, dtype=log_ratio.dtype, device=log_ratio.device, generator=generator
    )
    accepted = uniform < acceptance
    new = select(accepted, proposal, current, event_dim)
    info = Info(acceptance_rate=acceptance, is_accepted=accepted, diverging=diverging)
    info.proposal = proposal
    return new, info


def select(mask: Tensor, if_true: State, if_false: State, event_dim: int) -> State:
    """Per-chain choice between two states (``torch.where`` over every cached field)."""
    wide = per_chain(mask, event_dim)
    grad = None
    if if_true.grad is not None and if_false.grad is not None:
        grad = torch.where(wide, if_true.grad, if_false.grad)
    position = torch.where(wide, if_true.position, if_false.position)
    energy = torch.where(mask, if_true.energy, if_false.energy)
    if type(if_false) is State:  # dataclasses.replace inspects the fields on every call
        return State(position, energy, grad)
    return replace(if_false, position=position, energy=energy, grad=grad)
