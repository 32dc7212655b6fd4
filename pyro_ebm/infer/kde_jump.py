"""Mode-jumping moves: an independence Metropolis-Hastings step with a kernel-density proposal.

Local samplers (Langevin, MALA, HMC) cross low-density gaps between separated modes almost
never, so a population of chains keeps the shares of the modes it started with. An
independence proposal drawn from a kernel density estimate (KDE) over a set of *centers*
(for contrastive divergence: the current data batch),

.. math::
    q(y) = \\frac1m \\sum_{i=1}^m N(y;\\, c_i,\\, \\operatorname{diag}(h^2)),

is accepted with probability
:math:`\\min\\{1,\\ e^{E(x) - E(y)}\\, q(x) / q(y)\\}`, so the move leaves
:math:`p \\propto e^{-E}` invariant whatever the centers are (the proposal does not depend on
the current point), while it moves a chain from one mode to another in one step. Mode-jumping
proposals of this kind go back to Tjelmeland & Hegstad (2001), *Mode jumping proposals in MCMC*,
Scand. J. Statist. 28(1); an independence sampler is exact for any proposal density with the
target's support (Tierney 1994, *Markov chains for exploring posterior distributions*, Ann.
Statist. 22(4)).

The bandwidth defaults to Scott's rule per coordinate, :math:`h_k = s_k\\, m^{-1/(d+4)}`
(:math:`s_k` the centers' standard deviation along coordinate :math:`k`, :math:`d` the event
size).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import EnergyFn, acceptance_probability, evaluate_energy

__all__ = ["kde_jump", "kde_log_density", "scott_bandwidth"]


def scott_bandwidth(centers: Tensor, event_dim: int) -> Tensor:
    """Scott's rule per coordinate: :math:`h = s\\, m^{-1/(d+4)}`, shape ``event_shape``.

    A coordinate along which the centers do not vary gets the mean bandwidth of the others
    (or 1 when all are constant), so that every proposal has a density.
    """
    m = centers.shape[0]
    flat = centers.reshape(m, -1)
    d = flat.shape[1]
    sd = flat.std(0) if m > 1 else torch.ones_like(flat[0])
    positive = sd > 0
    fill = sd[positive].mean() if bool(positive.any()) else torch.ones((), dtype=sd.dtype)
    sd = torch.where(positive, sd, fill.to(sd))
    return (sd * m ** (-1.0 / (d + 4))).reshape(centers.shape[centers.dim() - event_dim :])


def kde_log_density(x: Tensor, centers: Tensor, bandwidth: Tensor) -> Tensor:
    """:math:`\\log q(x)` up to an additive constant (the same for every ``x``), shape ``(n,)``.

    ``x`` has shape ``(n, *event_shape)``, ``centers`` ``(m, *event_shape)``, ``bandwidth``
    ``event_shape`` (or a scalar).
    """
    xs = (x / bandwidth).reshape(x.shape[0], -1)
    cs = (centers / bandwidth).reshape(centers.shape[0], -1)
    sq = torch.cdist(xs, cs).square()
    return torch.logsumexp(-0.5 * sq, dim=1)


def kde_jump(
    energy_fn: EnergyFn,
    position: Tensor,
    centers: Tensor,
    generator: torch.Generator | None = None,
    *,
    bandwidth: Tensor | None = None,
    energy: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One independence MH move of each chain towards a KDE over ``centers``.

    Parameters
    ----------
    energy_fn:
        Batched energy :math:`E`.
    position:
        Current points, shape ``(n, *event_shape)`` (one batch dimension).
    centers:
        Points of the kernel density estimate, shape ``(m, *event_shape)``.
    generator:
        Random generator for the proposal and the accept/reject draw.
    bandwidth:
        Kernel standard deviation per coordinate (shape ``event_shape`` or scalar); default
        :func:`scott_bandwidth` of ``centers``.
    energy:
        :math:`E` at ``position`` if already known (saves one evaluation).

    Returns
    -------
    position, energy, accepted:
        The new points, their energies, and which chains jumped (shape ``(n,)``). A proposal
        whose energy is not finite (or raises) is rejected.
    """
    event_dim = position.dim() - 1
    centers = centers.detach().to(position)
    if bandwidth is None:
        bandwidth = scott_bandwidth(centers, event_dim)
    bandwidth = torch.as_tensor(bandwidth).to(position)
    n, m = position.shape[0], centers.shape[0]
    pick = torch.randint(m, (n,), generator=generator, device=position.device)
    noise = torch.randn(position.shape, dtype=position.dtype, device=position.device,
                        generator=generator)  # fmt: skip
    proposal = centers[pick] + bandwidth * noise
    if energy is None:
        energy = evaluate_energy(energy_fn, position, event_dim)
    proposed_energy = evaluate_energy(energy_fn, proposal, event_dim)
    log_q = kde_log_density(torch.cat([position, proposal]), centers, bandwidth)
    log_ratio = energy - proposed_energy + log_q[:n] - log_q[n:]
    prob, _ = acceptance_probability(log_ratio)
    uniform = torch.rand(n, dtype=position.dtype, device=position.device, generator=generator)
    accepted = uniform < prob
    wide = accepted.reshape((n,) + (1,) * event_dim)
    new_position = torch.where(wide, proposal, position)
    new_energy = torch.where(accepted, proposed_energy, energy)
    return new_position.detach(), new_energy.detach(), accepted
