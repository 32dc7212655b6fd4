"""The FFJORD 2-d toy densities: seeded samplers and, where known, the exact density and entropy."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from ._names import DENSITY_NAMES, _check_name
from .densities import CURVE_NAMES, curve_log_prob

__all__ = ["oracle_nll", "true_log_prob"]


# FFJORD divides the 8gaussians samples by 1.414 (not exactly sqrt(2)); we keep its constant.
_EIGHT_GAUSSIANS_DIVISOR = 1.414
_EIGHT_GAUSSIANS_RADIUS = 4.0 / _EIGHT_GAUSSIANS_DIVISOR
_EIGHT_GAUSSIANS_STD = 0.5 / _EIGHT_GAUSSIANS_DIVISOR

# The checkerboard lives on [-4, 4]^2: 8 of the 16 squares of side 2 carry mass.
_CHECKERBOARD_CELL = 2.0
_CHECKERBOARD_AREA = 32.0


def _uniform(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, dtype=torch.float64, generator=g)


def _normal(n: int, g: torch.Generator, d: int = 2) -> torch.Tensor:
    return torch.randn(n, d, dtype=torch.float64, generator=g)


def _coin(n: int, g: torch.Generator) -> torch.Tensor:
    """Independent fair 0/1 draws as float64."""
    return torch.randint(0, 2, (n,), generator=g).to(torch.float64)


def _eight_gaussians_centers(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    s = 1.0 / math.sqrt(2.0)
    unit = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]
    return torch.tensor(unit, dtype=torch.float64).mul(_EIGHT_GAUSSIANS_RADIUS).to(dtype)


def _sample_eight_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    component = torch.randint(0, 8, (n,), generator=g)
    return _eight_gaussians_centers()[component] + _EIGHT_GAUSSIANS_STD * _normal(n, g)


def _sample_checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    # Column index in {-2, -1, 0, 1}; the row is shifted by one on odd columns so that
    # the occupied unit squares are those whose two indices have an even sum.
    x1 = 4.0 * _uniform(n, g) - 2.0
    x2 = _uniform(n, g) - 2.0 * _coin(n, g) + torch.remainder(torch.floor(x1), 2.0)
    return _CHECKERBOARD_CELL * torch.stack([x1, x2], dim=-1)


def _on_circle(radius: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    return radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)


def _sample_rings(n: int, g: torch.Generator) -> torch.Tensor:
    radii = torch.tensor([3.0, 2.25, 1.5, 0.75], dtype=torch.float64)
    radius = radii[torch.randint(0, 4, (n,), generator=g)]
    angle = 2.0 * math.pi * _uniform(n, g)
    return _on_circle(radius, angle) + 0.08 * _normal(n, g)


def _sample_circles(n: int, g: torch.Generator) -> torch.Tensor:
    # make_circles(factor=0.5, noise=0.08), then scaled by 3.
    radius = 1.0 - 0.5 * _coin(n, g)
    angle = 2.0 * math.pi * _uniform(n, g)
    return 3.0 * (_on_circle(radius, angle) + 0.08 * _normal(n, g))


def _sample_moons(n: int, g: torch.Generator) -> torch.Tensor:
    # make_moons(noise=0.1): an upper half circle and a lower one shifted to (1, 0.5);
    # then scaled by 2 and shifted by (-1, -0.2).
    inner = _coin(n, g)
    angle = math.pi * _uniform(n, g)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x = torch.where(inner.bool(), 1.0 - cos, cos)
    y = torch.where(inner.bool(), 0.5 - sin, sin)
    points = torch.stack([x, y], dim=-1) + 0.1 * _normal(n, g)
    return 2.0 * points + torch.tensor([-1.0, -0.2], dtype=torch.float64)


def _sample_swissroll(n: int, g: torch.Generator) -> torch.Tensor:
    # make_swiss_roll(noise=1.0) keeping the (x, z) plane, then divided by 5.
    t = 1.5 * math.pi * (1.0 + 2.0 * _uniform(n, g))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=-1) + _normal(n, g)
    return points / 5.0


def _sample_pinwheel(n: int, g: torch.Generator) -> torch.Tensor:
    num_arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    arm = torch.randint(0, num_arms, (n,), generator=g).to(torch.float64)
    eps = _normal(n, g)
    radial = 1.0 + radial_std * eps[:, 0]
    tangential = tangential_std * eps[:, 1]
    angle = 2.0 * math.pi * arm / num_arms + rate * torch.exp(radial)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # FFJORD multiplies the row vector (radial, tangential) by [[cos, -sin], [sin, cos]].
    x = radial * cos + tangential * sin
    y = -radial * sin + tangential * cos
    return 2.0 * torch.stack([x, y], dim=-1)


def _sample_two_spirals(n: int, g: torch.Generator) -> torch.Tensor:
    # Arc parameter sqrt(u) * 540 degrees; uniform jitter of width 0.5 before the arm is
    # mirrored; everything divided by 3, then Gaussian noise of std 0.1.
    s = torch.sqrt(_uniform(n, g)) * 3.0 * math.pi
    jitter = 0.5 * torch.rand(n, 2, dtype=torch.float64, generator=g)
    arm = torch.stack([-torch.cos(s) * s, torch.sin(s) * s], dim=-1) + jitter
    sign = 1.0 - 2.0 * _coin(n, g)
    return sign[:, None] * arm / 3.0 + 0.1 * _normal(n, g)


_TOY_SAMPLERS: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "8gaussians": _sample_eight_gaussians,
    "checkerboard": _sample_checkerboard,
    "rings": _sample_rings,
    "circles": _sample_circles,
    "moons": _sample_moons,
    "swissroll": _sample_swissroll,
    "pinwheel": _sample_pinwheel,
    "2spirals": _sample_two_spirals,
}


def _checkerboard_in_support(x: torch.Tensor) -> torch.Tensor:
    """Whether points lie in the closed support: squares [2i, 2i+2] x [2j, 2j+2], i + j even."""
    a = x / _CHECKERBOARD_CELL
    # A coordinate on a cell edge belongs to both neighbouring cells; try each candidate.
    candidates = (torch.floor(a), torch.ceil(a) - 1.0)
    inside = torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
    for c1 in candidates:
        for c2 in candidates:
            i, j = c1[..., 0], c2[..., 1]
            valid = (i >= -2) & (i <= 1) & (j >= -2) & (j <= 1)
            inside |= valid & (torch.remainder(i + j, 2.0) == 0)
    return inside


def true_log_prob(name: str, x: torch.Tensor) -> torch.Tensor:
    """Exact log density of a toy data set, for the names in :data:`DENSITY_NAMES` (every toy).

    ``"8gaussians"`` is the equal-weight mixture of 8 isotropic Gaussians with standard
    deviation ``0.5 / 1.414`` centred at ``4 / 1.414`` times the 8 unit vectors at multiples of
    45 degrees (FFJORD divides by 1.414, not exactly by sqrt(2)). ``"checkerboard"`` is uniform,
    with density ``1 / 32``, on the 8 squares of side 2 in ``[-4, 4]^2`` whose indices
    ``floor(x1 / 2) + floor(x2 / 2)`` are even (edges included), and ``-inf`` elsewhere. The
    others add Gaussian noise to a curve; their densities (closed form for ``"rings"`` and
    ``"circles"``, quadrature over the curve for the rest) are derived in
    :mod:`pyro_ebm.datasets.densities`.

    Parameters
    ----------
    name : str
        One of :data:`DENSITY_NAMES`.
    x : torch.Tensor
        Floating-point points of shape ``(..., 2)``.

    Returns
    -------
    torch.Tensor
        Log density of shape ``x.shape[:-1]``, in the dtype of ``x``.

    Raises
    ------
    ValueError
        For an unknown name, a name whose true density is unknown, or an ``x`` that is not a
        floating-point tensor with last dimension 2.

    References
    ----------
    - Grathwohl et al., "FFJORD", ICLR 2019, ``lib/toy_data.py``.

    Examples
    --------
    >>> true_log_prob("checkerboard", torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
    tensor([-3.4657,    -inf])
    >>> lp = true_log_prob("8gaussians", torch.zeros(3, 2, dtype=torch.float64))
    >>> lp.shape, lp.dtype
    (torch.Size([3]), torch.float64)
    """
    _check_name(name, DENSITY_NAMES)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != 2:
        raise ValueError(f"x must have shape (..., 2), got {tuple(x.shape)}")
    if name in CURVE_NAMES:
        log_p = curve_log_prob(name, x)
        return torch.where(torch.isnan(x).any(-1), torch.full_like(log_p, math.nan), log_p)
    if name == "8gaussians":
        centers = _eight_gaussians_centers(x.dtype).to(x.device)
        var = _EIGHT_GAUSSIANS_STD**2
        sq_dist = (x.unsqueeze(-2) - centers).pow(2).sum(-1)
        log_normal = -0.5 * sq_dist / var - math.log(2.0 * math.pi * var)
        return torch.logsumexp(log_normal, dim=-1) - math.log(8.0)
    inside = _checkerboard_in_support(x)
    log_p = torch.full(x.shape[:-1], -math.inf, dtype=x.dtype, device=x.device)
    log_p = log_p.masked_fill(inside, -math.log(_CHECKERBOARD_AREA))
    return torch.where(torch.isnan(x).any(-1), torch.full_like(log_p, math.nan), log_p)


@functools.cache
def _eight_gaussians_entropy() -> float:
    # Trapezoid rule on a grid that holds all but a negligible part of the mass (the support
    # reaches about 12 standard deviations past the outermost centre). The integrand is smooth
    # and decays like a Gaussian, so the rule converges faster than any power of the spacing;
    # halving the spacing changes the result by less than 1e-12.
    half_width = _EIGHT_GAUSSIANS_RADIUS + 12.0 * _EIGHT_GAUSSIANS_STD
    grid = torch.linspace(-half_width, half_width, 601, dtype=torch.float64)
    step = (grid[1] - grid[0]).item()
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)
    log_p = true_log_prob("8gaussians", points)
    integrand = -torch.exp(log_p) * log_p
    weights = torch.ones_like(grid)
    weights[0] = weights[-1] = 0.5
    return float((weights[:, None] * weights[None, :] * integrand).sum() * step**2)


# Entropies of the curve toys: the trapezoid rule for the integral of -p log p on a grid of
# 301 x 301 nodes over [-6, 6]^2 (spacing 0.04, a half of the narrowest noise scale: the rule
# converges faster than any power of the spacing there); ``tests/test_datasets.py`` recomputes
# them (slow) and checks them against seeded draws (fast).
CURVE_ENTROPIES = {
    "rings": 2.623183,
    "circles": 3.268136,
    "moons": 2.393871,
    "swissroll": 2.669643,
    "pinwheel": 2.317788,
    "2spirals": 2.645428,
}


def oracle_nll(name: str) -> float:
    """Entropy in nats of a toy density: the best achievable expected negative log-likelihood.

    A model's test NLL on samples of ``name`` minus this value estimates its KL divergence from
    the truth. Known for the names in :data:`DENSITY_NAMES`: ``"checkerboard"`` is uniform on
    area 32, so its entropy is ``log 32``; for ``"8gaussians"`` the integral of ``-p log p`` is
    computed by the trapezoid rule on a fine grid, accurate to about 1e-10 (the result is a little
    below ``log 8 + log(2 pi e sigma^2)`` because the components overlap). The other toys'
    entropies come from the same rule on their :func:`true_log_prob` (:data:`CURVE_ENTROPIES`,
    to 1e-6).

    Parameters
    ----------
    name : str
        One of :data:`DENSITY_NAMES`.

    Returns
    -------
    float
        The differential entropy in nats.

    Raises
    ------
    ValueError
        For an unknown name or one whose true density is unknown.

    References
    ----------
    - Grathwohl et al., "FFJORD", ICLR 2019, ``lib/toy_data.py``.

    Examples
    --------
    >>> round(oracle_nll("checkerboard"), 4)
    3.4657
    >>> round(oracle_nll("8gaussians"), 4)
    2.8319
    """
    _check_name(name, DENSITY_NAMES)
    if name in CURVE_ENTROPIES:
        return CURVE_ENTROPIES[name]
    if name == "checkerboard":
        return math.log(_CHECKERBOARD_AREA)
    return _eight_gaussians_entropy()
