"""Analytic energies with hard geometry and known answers: banana, funnel and double well.

Curvature (:class:`BananaEnergy`), scales that vary by orders of magnitude
(:class:`FunnelEnergy`) and separated modes (:class:`DoubleWellEnergy`) are what make samplers
fail; each energy here still has an exact log Z and exact sampler or moments, so a failure is
measurable. The base class is :class:`pyro_ebm.energies.analytic.AnalyticEnergy`.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .._validation import check_int, check_positive_float
from ._checks import check_event_shape, resolve_float_dtype
from .analytic import _LOG_2PI, AnalyticEnergy

__all__ = ["BananaEnergy", "DoubleWellEnergy", "FunnelEnergy"]


class BananaEnergy(AnalyticEnergy):
    r"""The twisted-Gaussian "banana" of Haario, Saksman and Tamminen (1999).

    With :math:`z \sim \mathcal N(0, I_d)`, set :math:`x_1 = s z_1`,
    :math:`x_2 = z_2 + b (x_1^2 - s^2)` and :math:`x_k = z_k` for :math:`k > 2`. The map has
    unit Jacobian, so

    .. math::

        E(x) = \frac{x_1^2}{2 s^2} + \frac{\big(x_2 - b (x_1^2 - s^2)\big)^2}{2}
        + \sum_{k>2} \frac{x_k^2}{2}, \qquad \log Z = \tfrac d2 \log(2\pi) + \log s,

    and the exact moments are :math:`\mathbb E x = 0`, :math:`\mathrm{Var}\, x_1 = s^2`,
    :math:`\mathrm{Var}\, x_2 = 1 + 2 b^2 s^4`, :math:`\mathrm{Var}\, x_k = 1` otherwise.

    Parameters
    ----------
    dim : int, default 2
        Dimension :math:`d \ge 2`.
    scale : float, default 1.0
        Standard deviation :math:`s` of :math:`x_1`.
    curvature : float, default 1.0
        Twist :math:`b` (any finite real; a negative value flips the banana). The shape
        depends on :math:`b s^2` alone; the default :math:`b s^2 = 1` bends the mass visibly
        (the arms at :math:`x_1 = \pm 2s` sit 3 units above the centre) while staying easy for
        gradient-based samplers. Haario et al. used :math:`s = 10` with :math:`b = 0.03`
        (moderate) or :math:`b = 0.1` (strong).
    dtype : torch.dtype, optional
        Dtype of the buffers (default ``torch.get_default_dtype()``).

    References
    ----------
    H. Haario, E. Saksman, J. Tamminen (1999). Adaptive proposal distribution for random walk
    Metropolis algorithm. Computational Statistics 14(3), 375-395.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import BananaEnergy
    >>> energy = BananaEnergy()
    >>> energy(torch.tensor([0.0, -1.0]))  # the centre of the banana
    tensor(0.)
    >>> energy.variance()
    tensor([1., 3.])
    """

    scale: Tensor
    curvature: Tensor

    def __init__(
        self,
        dim: int = 2,
        scale: float = 1.0,
        curvature: float = 1.0,
        *,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dim = check_int("dim", dim, 2)
        scale = check_positive_float("scale", scale)
        if isinstance(curvature, Tensor) and curvature.numel() == 1:
            curvature = curvature.item()
        if not isinstance(curvature, (int, float)) or isinstance(curvature, bool):
            raise ValueError(f"curvature must be a finite number, got {curvature!r}")
        if not math.isfinite(curvature):
            raise ValueError(f"curvature must be a finite number, got {curvature!r}")
        dtype = resolve_float_dtype(dtype)
        self.event_shape = torch.Size([dim])
        self.register_buffer("scale", torch.tensor(scale, dtype=dtype))
        self.register_buffer("curvature", torch.tensor(float(curvature), dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        check_event_shape(x, self.event_shape)
        scale, curvature = self.scale.to(x.dtype), self.curvature.to(x.dtype)
        x1, x2 = x[..., 0], x[..., 1]
        twisted = x2 - curvature * (x1.square() - scale.square())
        rest = x[..., 2:].square().sum(-1)
        return 0.5 * (x1 / scale).square() + 0.5 * twisted.square() + 0.5 * rest

    def log_partition(self) -> Tensor:
        return 0.5 * self.event_shape[0] * _LOG_2PI + self.scale.log()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_int("n", n, 0)
        z = self._randn(n, self.event_shape[0], generator=generator)
        x1 = self.scale * z[:, 0]
        x2 = z[:, 1] + self.curvature * (x1.square() - self.scale.square())
        return torch.cat([x1[:, None], x2[:, None], z[:, 2:]], dim=1)

    def mean(self) -> Tensor:
        return self.scale.new_zeros(self.event_shape)

    def variance(self) -> Tensor:
        variance = self.scale.new_ones(self.event_shape)
        variance[0] = self.scale.square()
        variance[1] = 1.0 + 2.0 * self.curvature.square() * self.scale.pow(4)
        return variance

    def extra_repr(self) -> str:
        return (
            f"dim={self.event_shape[0]}, scale={self.scale.item():g}, "
            f"curvature={self.curvature.item():g}"
        )


class FunnelEnergy(AnalyticEnergy):
    r"""Neal's funnel: a scale parameter and the variables it scales.

    With :math:`v = x_0 \sim \mathcal N(0, \sigma^2)` and
    :math:`x_k \mid v \sim \mathcal N(0, e^{v})` for :math:`k = 1, \dots, d-1`:

    .. math::

        E(x) = \frac{v^2}{2\sigma^2} + \sum_{k=1}^{d-1}\Big(\frac{x_k^2 e^{-v}}{2}
        + \frac v2\Big), \qquad
        \log Z = \tfrac12 \log(2\pi\sigma^2) + \tfrac{d-1}2 \log(2\pi).

    Exact moments: :math:`\mathbb E x = 0`, :math:`\mathrm{Var}\, v = \sigma^2` and
    :math:`\mathrm{Var}\, x_k = \mathbb E e^{v} = e^{\sigma^2/2}`. The neck (small :math:`v`)
    needs tiny steps and the mouth large ones, which defeats samplers with one global step size.
    With the default :math:`\sigma = 3` the :math:`x_k` have a fourth moment of
    :math:`3 e^{2\sigma^2} \approx 2 \cdot 10^8`, so moment checks of :math:`x_k` need a smaller
    ``scale``; check :math:`v` and :math:`x_k e^{-v/2} \sim \mathcal N(0, 1)` instead.

    Parameters
    ----------
    dim : int, default 10
        Dimension :math:`d \ge 2` (one scale variable and ``dim - 1`` scaled ones).
    scale : float, default 3.0
        Standard deviation :math:`\sigma` of :math:`v`.
    dtype : torch.dtype, optional
        Dtype of the buffers (default ``torch.get_default_dtype()``).

    References
    ----------
    R. M. Neal (2003). Slice sampling. Annals of Statistics 31(3), 705-767.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import FunnelEnergy
    >>> energy = FunnelEnergy(dim=3, scale=1.0)
    >>> energy(torch.zeros(3))
    tensor(0.)
    >>> energy.sample(2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3])
    """

    scale: Tensor

    def __init__(
        self, dim: int = 10, scale: float = 3.0, *, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        dim = check_int("dim", dim, 2)
        scale = check_positive_float("scale", scale)
        dtype = resolve_float_dtype(dtype)
        self.event_shape = torch.Size([dim])
        self.register_buffer("scale", torch.tensor(scale, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        check_event_shape(x, self.event_shape)
        v, rest = x[..., 0], x[..., 1:]
        n_rest = self.event_shape[0] - 1
        return (
            0.5 * (v / self.scale.to(x.dtype)).square()
            + 0.5 * rest.square().sum(-1) * torch.exp(-v)
            + 0.5 * n_rest * v
        )

    def log_partition(self) -> Tensor:
        d = self.event_shape[0]
        return 0.5 * d * _LOG_2PI + self.scale.log()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_int("n", n, 0)
        z = self._randn(n, self.event_shape[0], generator=generator)
        v = self.scale * z[:, :1]
        return torch.cat([v, torch.exp(0.5 * v) * z[:, 1:]], dim=1)

    def mean(self) -> Tensor:
        return self.scale.new_zeros(self.event_shape)

    def variance(self) -> Tensor:
        variance = torch.exp(0.5 * self.scale.square()).expand(self.event_shape).clone()
        variance[0] = self.scale.square()
        return variance

    def extra_repr(self) -> str:
        return f"dim={self.event_shape[0]}, scale={self.scale.item():g}"


@functools.lru_cache(maxsize=64)
def _double_well_quadrature(barrier: float) -> tuple[float, float]:
    r"""Return :math:`\log\int e^{-b(t^2-1)^2}dt` and the second moment of that density.

    The trapezoid rule on a uniform grid converges geometrically for smooth, rapidly decaying
    integrands; the spacing is a tenth of the narrowest feature (the well width
    :math:`1/\sqrt{8b}` or the overall width :math:`b^{-1/4}`) and the range is cut where
    :math:`b(t^2-1)^2 = 60`, leaving a relative tail mass below :math:`10^{-25}`.
    """
    half_width = math.sqrt(1.0 + math.sqrt(60.0 / barrier))
    spacing = 0.1 * min(1.0 / math.sqrt(8.0 * barrier), barrier**-0.25)
    num = max(4001, 2 * math.ceil(half_width / spacing) + 1)
    t = torch.linspace(-half_width, half_width, num, dtype=torch.float64)
    density = torch.exp(-barrier * (t.square() - 1.0).square())
    mass = torch.trapezoid(density, t)
    second_moment = torch.trapezoid(t.square() * density, t) / mass
    return math.log(mass.item()), second_moment.item()


class DoubleWellEnergy(AnalyticEnergy):
    r"""A quartic double well along the first coordinate, standard normal in the others.

    .. math::

        E(x) = b\,(x_1^2 - 1)^2 + \sum_{k>1} \frac{x_k^2}{2}, \qquad
        \log Z = \log \int_{\mathbb R} e^{-b(t^2-1)^2}\,dt + \tfrac{d-1}2 \log(2\pi).

    The two modes sit at :math:`x_1 = \pm 1`, separated by a barrier of height :math:`b` at
    :math:`x_1 = 0`. The one-dimensional integral, and :math:`\mathrm{Var}\,x_1 =
    \mathbb E x_1^2`, are computed by a float64 trapezoid rule on a fine grid (error near
    machine precision; the closed form is
    :math:`\tfrac\pi2 e^{-b/2}[I_{-1/4}(b/2) + I_{1/4}(b/2)]`).

    Exact samples of :math:`|x_1|` come from rejection sampling with the proposal
    :math:`\mathcal N(1, 1/(2b))`: for :math:`t \ge 0`, :math:`(t+1)^2 \ge 1` gives
    :math:`e^{-b(t^2-1)^2} \le e^{-b(t-1)^2}`, so a proposal :math:`t` is accepted with
    probability :math:`\mathbf 1[t \ge 0]\, e^{-b (t-1)^2 ((t+1)^2 - 1)}`; a fair random sign
    follows. The acceptance rate is 50% for large :math:`b` and stays above 15% for
    :math:`b \ge 0.01`.

    Parameters
    ----------
    dim : int, default 2
        Dimension :math:`d \ge 1`.
    barrier : float, default 3.0
        Barrier height :math:`b > 0`. At the default the density at :math:`x_1 = 0` is
        :math:`e^{-3} \approx 5\%` of its peak: clearly bimodal, yet crossable by a well-tuned
        sampler with many chains.
    dtype : torch.dtype, optional
        Dtype of the buffers (default ``torch.get_default_dtype()``).

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import DoubleWellEnergy
    >>> energy = DoubleWellEnergy(dim=2, barrier=3.0)
    >>> energy(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    tensor([0., 3.])
    >>> energy.log_partition()
    tensor(1.0329)
    """

    barrier: Tensor

    def __init__(
        self, dim: int = 2, barrier: float = 3.0, *, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        dim = check_int("dim", dim, 1)
        barrier = check_positive_float("barrier", barrier)
        dtype = resolve_float_dtype(dtype)
        self.event_shape = torch.Size([dim])
        self.register_buffer("barrier", torch.tensor(barrier, dtype=dtype))

    def _moments(self) -> tuple[float, float]:
        return _double_well_quadrature(self.barrier.item())

    def forward(self, x: Tensor) -> Tensor:
        check_event_shape(x, self.event_shape)
        x1 = x[..., 0]
        well = self.barrier.to(x.dtype) * (x1.square() - 1.0).square()
        return well + 0.5 * x[..., 1:].square().sum(-1)

    def log_partition(self) -> Tensor:
        log_mass, _ = self._moments()
        return self._scalar(log_mass + 0.5 * (self.event_shape[0] - 1) * _LOG_2PI)

    def _sample_abs_x1(self, n: int, generator: torch.Generator | None) -> Tensor:
        barrier = self.barrier.item()
        log_mass, _ = self._moments()
        acceptance = 0.5 * math.exp(log_mass) / math.sqrt(math.pi / barrier)
        proposal_sd = 1.0 / math.sqrt(2.0 * barrier)
        accepted: list[Tensor] = []
        needed = n
        while needed > 0:
            batch = math.ceil(1.2 * needed / acceptance) + 16
            t = 1.0 + proposal_sd * self._randn(batch, generator=generator)
            u = self._rand(batch, generator=generator)
            log_ratio = -barrier * (t - 1.0).square() * (t.square() + 2.0 * t)
            keep = (t >= 0) & (u.log() < log_ratio)
            accepted.append(t[keep][:needed])
            needed -= accepted[-1].numel()
        return torch.cat(accepted) if accepted else self.barrier.new_empty(0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_int("n", n, 0)
        magnitude = self._sample_abs_x1(n, generator)
        negative = self._rand(n, generator=generator) < 0.5
        x1 = torch.where(negative, -magnitude, magnitude)
        rest = self._randn(n, self.event_shape[0] - 1, generator=generator)
        return torch.cat([x1[:, None], rest], dim=1)

    def mean(self) -> Tensor:
        return self.barrier.new_zeros(self.event_shape)

    def variance(self) -> Tensor:
        _, second_moment = self._moments()
        variance = self.barrier.new_ones(self.event_shape)
        variance[0] = second_moment
        return variance

    def extra_repr(self) -> str:
        return f"dim={self.event_shape[0]}, barrier={self.barrier.item():g}"
