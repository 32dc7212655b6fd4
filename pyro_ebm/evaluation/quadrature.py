"""Log-partition functions of 1-d and 2-d energies by quadrature on a box (Simpson, trapezoid)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._targets import check_energy_output, resolve_energy
from .._validation import check_bounds, check_choice, check_int
from ..infer.base import module_dtype_device

__all__ = ["Bounds", "grid_log_partition"]

Bounds = Sequence[float] | Sequence[Sequence[float]] | Tensor


def _quadrature_weights(n: int, lo: float, hi: float, rule: str) -> tuple[Tensor, Tensor]:
    """Nodes and weights (float64) of a composite rule with ``n`` equally spaced nodes."""
    nodes = torch.linspace(lo, hi, n, dtype=torch.float64)
    h = (hi - lo) / (n - 1)
    weights = torch.full((n,), h, dtype=torch.float64)
    if rule == "trapezoid" or n == 2:
        weights[0] = weights[-1] = h / 2
        return nodes, weights

    def simpson(m: int) -> Tensor:  # Simpson's 1/3 rule on m (odd) nodes
        w = torch.zeros(m, dtype=torch.float64)
        if m > 1:
            w[1:-1:2], w[2:-1:2] = 4.0, 2.0
            w[0] = w[-1] = 1.0
        return w * (h / 3)

    if n % 2 == 1:
        return nodes, simpson(n)
    # An even number of nodes: Simpson's 1/3 rule on the first n - 3 nodes and the 3/8 rule on
    # the last four, so the whole rule keeps its O(h^4) error.
    weights = torch.zeros(n, dtype=torch.float64)
    weights[: n - 3] += simpson(n - 3)
    weights[n - 4 :] += torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) * (3 * h / 8)
    return nodes, weights


def grid_log_partition(
    energy: Any,
    bounds: Bounds,
    resolution: int | Sequence[int] = 501,
    *,
    rule: str = "simpson",
    batch_size: int = 65536,
    dim: int | None = None,
) -> Tensor:
    r"""Log-partition function of a 1-d or 2-d energy by quadrature on a box.

    .. math::

        \log Z_B = \log \int_B e^{-E(x)}\,dx
        \approx \operatorname{logsumexp}_i \big(\log w_i - E(x_i)\big),

    with the nodes :math:`x_i` of a tensor-product grid over the box :math:`B` and the
    product weights :math:`w_i` of the composite Simpson rule (the 3/8 rule closes an even
    number of nodes; error :math:`O(h^4)` for smooth integrands, and exponentially small when
    the integrand vanishes at the edges) or the trapezoid rule. The sum is formed as a
    log-sum-exp in float64, one chunk of ``batch_size`` nodes at a time, so neither large
    energies nor large grids overflow. Mass outside ``bounds`` is not counted.

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        Maps points of shape ``(n, *event_shape)`` to energies of shape ``(n,)``. Its event
        shape (``()``, ``(1,)``, ``(2,)`` or any shape with 1 or 2 elements) is read from its
        ``event_shape`` attribute; without one, points have shape ``(n, dim)``. Batched
        energies (a ``batch_shape``) are not supported.
    bounds : (lo, hi) or ((xlo, xhi), (ylo, yhi))
        The box. A single pair is used for every axis.
    resolution : int or sequence of int, default 501
        Nodes per axis (at least 2), one int for all axes or one per axis.
    rule : {"simpson", "trapezoid"}
        The composite quadrature rule (an axis with 2 nodes always uses the trapezoid).
    batch_size : int, default 65536
        Nodes evaluated per call of the energy (bounds memory).
    dim : int, optional
        1 or 2, for energies without an ``event_shape``; by default it is taken from
        ``bounds`` (a pair of pairs is 2-d, a single pair 1-d). For an energy with an
        ``event_shape`` it must agree with it.

    Returns
    -------
    Tensor
        :math:`\log Z_B` as a 0-d float64 tensor on the energy's device. Nodes are cast to the
        dtype of the energy's parameters (float64 for parameter-free callables); an energy of
        ``+inf`` contributes nothing and a NaN energy makes the result NaN.

    Raises
    ------
    ValueError
        For malformed ``bounds``, ``resolution < 2``, an unknown ``rule``, an energy that is
        not 1-d or 2-d, or one that returns the wrong shape.

    Examples
    --------
    >>> import math, torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> energy = GaussianEnergy(torch.zeros(2), torch.eye(2), dtype=torch.float64)
    >>> log_z = grid_log_partition(energy, (-8.0, 8.0), resolution=201)
    >>> abs(log_z.item() - math.log(2 * math.pi)) < 1e-8
    True
    >>> half_line = grid_log_partition(lambda x: 0.5 * x.square().sum(-1), (0, 10), dim=1)
    >>> round(half_line.exp().item(), 6)  # sqrt(pi / 2)
    1.253314
    """
    fn, event_shape = resolve_energy(energy)
    check_choice("rule", rule, ("simpson", "trapezoid"))
    batch_size = check_int("batch_size", batch_size, 1)
    if event_shape is None:
        if dim is None:
            try:
                nested = torch.as_tensor(bounds, dtype=torch.float64).dim() == 2
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(
                    f"bounds must be (lo, hi) or one (lo, hi) pair per axis; got {bounds!r}"
                ) from err
            dim = len(bounds) if nested else 1
        dim = check_int("dim", dim, 1)
        event_shape = torch.Size([dim])
    elif dim is not None and dim != event_shape.numel():
        raise ValueError(
            f"dim={dim!r} does not match the energy's event_shape {tuple(event_shape)}"
        )
    ndim = event_shape.numel()
    if ndim not in (1, 2):
        raise ValueError(
            "grid_log_partition integrates 1-d or 2-d energies; this one has event_shape "
            f"{tuple(event_shape)}: use ais_log_partition"
        )
    box = check_bounds("bounds", bounds, ndim)
    if isinstance(resolution, numbers.Integral):
        resolution = [resolution] * ndim
    if not isinstance(resolution, Sequence) or len(resolution) != ndim:
        raise ValueError(
            f"resolution must be an int or {ndim} ints (one per axis); got {resolution!r}"
        )
    sizes = [check_int("resolution", r, 2) for r in resolution]
    found = module_dtype_device(fn)
    dtype, device = found if found is not None else (torch.float64, torch.device("cpu"))

    axes = [_quadrature_weights(n, lo, hi, rule) for n, (lo, hi) in zip(sizes, box, strict=True)]
    nodes = [a[0].to(device) for a in axes]
    log_weights = [a[1].log().to(device) for a in axes]
    total = math.prod(sizes)
    chunks = []
    with torch.no_grad():
        for start in range(0, total, batch_size):
            index = torch.arange(start, min(start + batch_size, total), device=device)
            if ndim == 1:
                points, log_w = nodes[0][index][:, None], log_weights[0][index]
            else:
                i, j = index // sizes[1], index % sizes[1]
                points = torch.stack([nodes[0][i], nodes[1][j]], dim=-1)
                log_w = log_weights[0][i] + log_weights[1][j]
            points = points.to(dtype).reshape(len(index), *event_shape)
            out = fn(points)
            check_energy_output(out, (len(index),), f"energy on {len(index)} grid points")
            chunks.append(torch.logsumexp(log_w - out.to(torch.float64), dim=0))
    return torch.logsumexp(torch.stack(chunks), dim=0)
