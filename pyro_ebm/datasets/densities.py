"""Exact log densities of the toys whose sampler adds noise to a curve.

Each of these toys draws a point on a curve (or an arm) and adds Gaussian noise, so its
density is the curve's distribution convolved with the noise:

.. math::
    p(x) = \\int \\mathcal{N}(x;\\, c(t),\\, \\sigma^2 I)\\, p(t)\\, dt .

``rings`` and ``circles`` (uniform angle on circles) have the closed form

.. math::
    p(x) = \\sum_r \\frac{w_r}{2\\pi\\sigma^2}
    \\exp\\Big(-\\frac{(|x| - r)^2}{2\\sigma^2}\\Big)\\,
    \\tilde I_0\\Big(\\frac{r|x|}{\\sigma^2}\\Big),

with :math:`\\tilde I_0(z) = e^{-z} I_0(z)` the scaled Bessel function. ``moons``,
``swissroll`` and ``2spirals`` integrate over the curve parameter by the midpoint rule with
nodes far closer than the noise (at most 0.013 apart along the curve against a noise
standard deviation of 0.1-0.2; doubling the nodes changes the log density of a draw by at
most 2e-3, and its mean over draws far less). ``2spirals`` also
carries a uniform jitter, which convolved with the Gaussian is a difference of normal CDFs
per coordinate. ``pinwheel`` is a smooth bijection of a Gaussian (see :func:`pinwheel`).

The samplers these match are in :mod:`pyro_ebm.datasets.toys`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["CURVE_NAMES", "curve_log_prob"]

CURVE_NAMES = ("rings", "circles", "moons", "swissroll", "pinwheel", "2spirals")
"""The toys whose density this module gives."""

_CHUNK = 512  # points per block: keeps the (points x nodes) blocks to tens of MB


def _blocks(x: Tensor, fn) -> Tensor:
    flat = x.reshape(-1, 2)
    out = [fn(block) for block in flat.split(_CHUNK)] if flat.shape[0] else [flat[:, 0]]
    return torch.cat(out).reshape(x.shape[:-1])


def _circles(x: Tensor, radii: list[float], std: float) -> Tensor:
    rho = x.norm(dim=-1, keepdim=True)
    r = torch.tensor(radii, dtype=x.dtype, device=x.device)
    z = r * rho / std**2
    log_ring = (
        -((rho - r) ** 2) / (2 * std**2)
        + torch.log(torch.special.i0e(z))
        - math.log(2 * math.pi * std**2)
    )
    return torch.logsumexp(log_ring, -1) - math.log(len(radii))


def _on_curve(x: Tensor, centers: Tensor, std: float) -> Tensor:
    """Equal-weight mixture of isotropic Gaussians at ``centers`` (midpoint quadrature)."""
    centers = centers.to(x)
    c2 = centers.pow(2).sum(-1)

    def block(xs: Tensor) -> Tensor:  # |x - c|^2 = |x|^2 + |c|^2 - 2 x.c, by one matmul
        d2 = (xs.pow(2).sum(-1, keepdim=True) + c2 - 2.0 * xs @ centers.T).clamp(min=0.0)
        return torch.logsumexp(-0.5 * d2 / std**2, -1)

    norm = math.log(centers.shape[0]) + math.log(2 * math.pi * std**2)
    return _blocks(x, block) - norm


def _midpoints(n: int) -> Tensor:
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


def _moons_centers(n: int = 500) -> Tensor:
    angle = math.pi * _midpoints(n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    upper = torch.stack([cos, sin], -1)
    lower = torch.stack([1.0 - cos, 0.5 - sin], -1)
    shift = torch.tensor([-1.0, -0.2], dtype=torch.float64)
    return 2.0 * torch.cat([upper, lower]) + shift


def _swissroll_centers(n: int = 1500) -> Tensor:
    t = 1.5 * math.pi * (1.0 + 2.0 * _midpoints(n))
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) / 5.0


def _log_normal_interval(a: Tensor, b: Tensor) -> Tensor:
    """``log(Phi(a) - Phi(b))`` for ``a > b``, stable in both tails."""
    flip = b > 0  # both in the upper tail: Phi(a) - Phi(b) = Phi(-b) - Phi(-a)
    hi, lo = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi))


def _two_spirals(x: Tensor, n: int = 1500) -> Tensor:
    # x = sign * (g(s) + j) / 3 + 0.1 eps, s = 3 pi sqrt(u), j ~ U[0, 0.5]^2, sign = +-1
    s = 3.0 * math.pi * torch.sqrt(_midpoints(n)).to(x)
    mean = torch.stack([-torch.cos(s) * s, torch.sin(s) * s], -1) / 3.0
    width, std = 0.5 / 3.0, 0.1

    def arm(xs: Tensor) -> Tensor:
        d = xs[:, None, :] - mean  # (points, nodes, 2)
        per_coord = _log_normal_interval(d / std, (d - width) / std) - math.log(width)
        return torch.logsumexp(per_coord.sum(-1), -1) - math.log(n)

    both = torch.stack([_blocks(x, arm), _blocks(-x, arm)], -1)
    return torch.logsumexp(both, -1) - math.log(2.0)


def pinwheel(x: Tensor, grid: int = 400) -> Tensor:
    """Log density of ``pinwheel``, through the inverse of its map.

    The sampler draws an arm :math:`k` of 5, :math:`r \\sim \\mathcal{N}(1, 0.3^2)`,
    :math:`\\tau \\sim \\mathcal{N}(0, 0.1^2)`, and returns :math:`x = 2 M(a)(r, \\tau)` with
    the rotation :math:`M(a) = [[\\cos a, \\sin a], [-\\sin a, \\cos a]]` and
    :math:`a = 2\\pi k/5 + e^r/4`. Given :math:`w = x/2`: :math:`\\tau = w_1 \\sin a + w_2 \\cos a`,
    and :math:`r` solves :math:`h(r) = w_1 \\cos a(r) - w_2 \\sin a(r) - r = 0`; the Jacobian of
    :math:`(r, \\tau) \\mapsto w` is :math:`1 + a'(r)\\tau = -h'(r)`. So

    .. math::
        p(x) = \\frac{1}{4} \\sum_k \\frac{1}{5} \\sum_{r:\\, h(r)=0}
        \\frac{\\mathcal{N}(r; 1, 0.09)\\, \\mathcal{N}(\\tau; 0, 0.01)}{|1 + a'(r)\\tau|} .

    The roots are bracketed on ``grid`` nodes over :math:`r \\in [-0.8, 2.8]` (6 standard
    deviations each side) and refined by Newton's method.
    """
    r_nodes = torch.linspace(-0.8, 2.8, grid, dtype=x.dtype, device=x.device)
    base = 2.0 * math.pi * torch.arange(5, dtype=x.dtype, device=x.device) / 5.0

    def h_and_slope(w1, w2, r, b):
        a = b + 0.25 * torch.exp(r)
        cos, sin = torch.cos(a), torch.sin(a)
        tau = w1 * sin + w2 * cos
        return w1 * cos - w2 * sin - r, -(1.0 + 0.25 * torch.exp(r) * tau), tau

    def block(xs: Tensor) -> Tensor:
        w1, w2 = (xs[:, 0] / 2)[:, None, None], (xs[:, 1] / 2)[:, None, None]
        h, _, _ = h_and_slope(w1, w2, r_nodes, base[None, :, None])  # (points, arms, nodes)
        point, arm, cell = torch.nonzero((h[..., :-1] > 0) != (h[..., 1:] > 0), as_tuple=True)
        w1, w2, b = xs[point, 0] / 2, xs[point, 1] / 2, base[arm]
        h0, h1 = h[point, arm, cell], h[point, arm, cell + 1]
        r0, r1 = r_nodes[cell], r_nodes[cell + 1]
        r = r0 + h0 / (h0 - h1) * (r1 - r0)  # secant point of each bracket
        for _ in range(3):  # Newton, kept inside the bracket
            value, slope, _ = h_and_slope(w1, w2, r, b)
            r = torch.minimum(torch.maximum(r - value / slope, r0), r1)
        _, slope, tau = h_and_slope(w1, w2, r, b)
        log_p = (
            -0.5 * ((r - 1.0) / 0.3) ** 2
            - 0.5 * (tau / 0.1) ** 2
            - math.log(2 * math.pi * 0.3 * 0.1)
            - torch.log(slope.abs())
        )
        # log-sum-exp of each point's roots
        n = xs.shape[0]
        top = torch.full((n,), -math.inf, dtype=xs.dtype, device=xs.device)
        top = top.scatter_reduce(0, point, log_p, "amax")
        safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        total = torch.zeros_like(top).index_add_(0, point, torch.exp(log_p - safe[point]))
        return torch.log(total) + safe - math.log(5.0) - math.log(4.0)

    return _blocks(x, block)


def curve_log_prob(name: str, x: Tensor) -> Tensor:
    """Log density of one of :data:`CURVE_NAMES` at points ``x`` of shape ``(..., 2)``."""
    if name == "rings":
        return _circles(x, [3.0, 2.25, 1.5, 0.75], 0.08)
    if name == "circles":  # 3 * (circle of radius 1 or 0.5 + 0.08 noise)
        return _circles(x, [3.0, 1.5], 0.24)
    if name == "moons":
        return _on_curve(x, _moons_centers(), 0.2)
    if name == "swissroll":
        return _on_curve(x, _swissroll_centers(), 0.2)
    if name == "pinwheel":
        return pinwheel(x)
    if name == "2spirals":
        return _two_spirals(x)
    raise ValueError(f"name must be one of {CURVE_NAMES}; got {name!r}")
