"""Analytic energies with exact log-partition functions, exact samplers and exact moments.

Every energy here follows the package convention :math:`E(x) = -\\log \\tilde p(x)`, so that
:math:`p(x) = e^{-E(x)} / Z` with :math:`\\log Z` given by :meth:`AnalyticEnergy.log_partition`.
They are the ground truth for testing samplers, objectives and partition-function estimators.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_int, check_positive_float
from ._checks import check_event_shape, resolve_float_dtype

__all__ = [
    "AnalyticEnergy",
    "BananaEnergy",
    "DoubleWellEnergy",
    "FunnelEnergy",
    "GaussianEnergy",
    "GaussianMixtureEnergy",
]

_LOG_2PI = math.log(2.0 * math.pi)

#: Anything ``torch.as_tensor`` turns into a real tensor: a tensor, nested sequences, a number.
TensorLike = Tensor | Sequence[Any] | float


def _as_buffer(value: TensorLike, name: str, dtype: torch.dtype) -> Tensor:
    try:
        tensor = torch.as_tensor(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be convertible to a real tensor, got {value!r}") from error
    tensor = tensor.detach().clone()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must contain only finite values, got {value!r}")
    return tensor


class AnalyticEnergy(nn.Module):
    r"""Base class of energies whose normalizing constant, samples and moments are known exactly.

    Subclasses compute :math:`E(x)` in ``forward`` for inputs of shape
    ``batch_shape + event_shape`` (any number of batch dimensions, including none) and return
    shape ``batch_shape``, computing in the input's dtype. All constants are buffers, so
    ``.to(dtype)`` and ``.to(device)`` work; :meth:`log_partition`, :meth:`sample`,
    :meth:`mean` and :meth:`variance` return tensors in the buffers' dtype and device.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import AnalyticEnergy, FunnelEnergy
    >>> energy = FunnelEnergy(dim=3)
    >>> isinstance(energy, AnalyticEnergy)
    True
    >>> x = energy.sample(4, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(energy.log_prob(x), -energy(x) - energy.log_partition())
    True
    """

    event_shape: torch.Size

    def forward(self, x: Tensor) -> Tensor:
        """:math:`E(x)` for ``x`` of shape ``batch_shape + event_shape``; shape ``batch_shape``."""
        raise NotImplementedError

    def log_partition(self) -> Tensor:
        r"""Exact :math:`\log Z = \log \int e^{-E(x)}\,dx` as a 0-d tensor."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact, independent draws from :math:`e^{-E}/Z`, shape ``(n, *event_shape)``."""
        raise NotImplementedError

    def mean(self) -> Tensor:
        """Exact mean of each coordinate, shape ``event_shape``."""
        raise NotImplementedError

    def variance(self) -> Tensor:
        """Exact variance of each coordinate, shape ``event_shape``."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        r"""Normalized log-density :math:`\log p(x) = -E(x) - \log Z`, shape ``batch_shape``.

        Examples
        --------
        >>> energy = GaussianEnergy(torch.zeros(1), torch.eye(1))
        >>> energy.log_prob(torch.zeros(1))  # -log(2 pi) / 2
        tensor(-0.9189)
        """
        return -self(x) - self.log_partition().to(dtype=x.dtype)

    @property
    def _reference(self) -> Tensor:
        return next(self.buffers())

    def _scalar(self, value: float) -> Tensor:
        ref = self._reference
        return torch.tensor(value, dtype=ref.dtype, device=ref.device)

    def _randn(self, *shape: int, generator: torch.Generator | None) -> Tensor:
        ref = self._reference
        return torch.randn(*shape, generator=generator, dtype=ref.dtype, device=ref.device)

    def _rand(self, *shape: int, generator: torch.Generator | None) -> Tensor:
        ref = self._reference
        return torch.rand(*shape, generator=generator, dtype=ref.dtype, device=ref.device)


class GaussianEnergy(AnalyticEnergy):
    r"""Quadratic energy of a multivariate normal distribution.

    .. math::

        E(x) = \tfrac12 (x - \mu)^\top \Sigma^{-1} (x - \mu), \qquad
        \log Z = \tfrac d2 \log(2\pi) + \tfrac12 \log\det\Sigma,

    with no additive constant in :math:`E`. It is evaluated through the Cholesky factor
    :math:`\Sigma = L L^\top` by a triangular solve, and sampled exactly as
    :math:`x = \mu + L z`, :math:`z \sim \mathcal N(0, I)`.

    Parameters
    ----------
    loc : tensor-like of shape (d,)
        Mean :math:`\mu`.
    covariance : tensor-like of shape (d, d)
        Symmetric positive-definite covariance :math:`\Sigma`.
    dtype : torch.dtype, optional
        Dtype of the buffers; defaults to the promoted dtype of floating-point tensor arguments,
        else ``torch.get_default_dtype()``.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> energy = GaussianEnergy(torch.zeros(2), torch.eye(2))
    >>> energy(torch.ones(3, 2))
    tensor([1., 1., 1.])
    >>> energy.log_partition()  # log(2 pi)
    tensor(1.8379)
    >>> energy.sample(4, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2])
    """

    loc: Tensor
    covariance: Tensor
    scale_tril: Tensor

    def __init__(
        self, loc: TensorLike, covariance: TensorLike, *, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        dtype = resolve_float_dtype(dtype, loc, covariance)
        loc_t = _as_buffer(loc, "loc", dtype)
        cov_t = _as_buffer(covariance, "covariance", dtype)
        if loc_t.dim() != 1 or loc_t.numel() == 0:
            raise ValueError(f"loc must have shape (d,) with d >= 1, got {tuple(loc_t.shape)}")
        d = loc_t.numel()
        if cov_t.shape != (d, d):
            raise ValueError(
                f"covariance must have shape (d, d) = {(d, d)} to match loc, "
                f"got {tuple(cov_t.shape)}"
            )
        tolerance = math.sqrt(torch.finfo(dtype).eps) * max(cov_t.abs().max().item(), 1e-300)
        if (cov_t - cov_t.mT).abs().max().item() > tolerance:
            raise ValueError("covariance must be symmetric")
        cov_t = 0.5 * (cov_t + cov_t.mT)
        scale_tril, info = torch.linalg.cholesky_ex(cov_t)
        if info.item() != 0:
            raise ValueError("covariance must be positive definite (its Cholesky factor failed)")
        self.event_shape = torch.Size([d])
        self.register_buffer("loc", loc_t)
        self.register_buffer("covariance", cov_t)
        self.register_buffer("scale_tril", scale_tril)

    @classmethod
    def ill_conditioned(
        cls,
        dim: int,
        condition_number: float,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> GaussianEnergy:
        r"""A centred Gaussian with a random orientation and a prescribed condition number.

        The covariance is :math:`\Sigma = Q \Lambda Q^\top` with :math:`Q` a Haar-random
        rotation (QR of a Gaussian matrix with the sign of :math:`R`'s diagonal fixed) and
        eigenvalues log-spaced between :math:`\kappa^{-1/2}` and :math:`\kappa^{1/2}`, so that
        :math:`\mathrm{cond}(\Sigma) = \kappa` and :math:`\det\Sigma = 1`.

        Parameters
        ----------
        dim : int
            Dimension; must be at least 2 unless ``condition_number == 1``.
        condition_number : float
            :math:`\kappa \ge 1`.
        generator : torch.Generator, optional
            Source of randomness for the rotation (global RNG if ``None``).
        dtype : torch.dtype, optional
            Dtype of the buffers (default ``torch.get_default_dtype()``); the matrix is built
            in float64 first.

        Examples
        --------
        >>> g = torch.Generator().manual_seed(0)
        >>> energy = GaussianEnergy.ill_conditioned(5, 1e3, g, dtype=torch.float64)
        >>> round(torch.linalg.cond(energy.covariance).item())
        1000
        """
        dim = check_int("dim", dim, 1)
        kappa = check_positive_float("condition_number", condition_number)
        if kappa < 1.0:
            raise ValueError(f"condition_number must be >= 1, got {condition_number!r}")
        if dim == 1 and kappa != 1.0:
            raise ValueError(f"condition_number must be 1 when dim == 1, got {condition_number!r}")
        dtype = resolve_float_dtype(dtype)
        matrix = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(matrix)
        q = torch.where(torch.diagonal(r) < 0, -q, q)  # flip columns: Haar-distributed Q
        if dim > 1:
            exponents = torch.linspace(-0.5, 0.5, dim, dtype=torch.float64)
        else:
            exponents = torch.zeros(1, dtype=torch.float64)
        eigenvalues = kappa**exponents
        covariance = (q * eigenvalues) @ q.mT
        covariance = 0.5 * (covariance + covariance.mT)
        return cls(torch.zeros(dim, dtype=dtype), covariance.to(dtype), dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        batch_shape = check_event_shape(x, self.event_shape)
        d = self.event_shape[0]
        diff = (x - self.loc.to(x.dtype)).reshape(-1, d)
        z = torch.linalg.solve_triangular(self.scale_tril.to(x.dtype), diff.mT, upper=False)
        return 0.5 * z.square().sum(0).reshape(batch_shape)

    def log_partition(self) -> Tensor:
        d = self.event_shape[0]
        return 0.5 * d * _LOG_2PI + torch.diagonal(self.scale_tril).log().sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_int("n", n, 0)
        z = self._randn(n, self.event_shape[0], generator=generator)
        return self.loc + z @ self.scale_tril.mT

    def mean(self) -> Tensor:
        return self.loc.clone()

    def variance(self) -> Tensor:
        return torch.diagonal(self.covariance).clone()

    def extra_repr(self) -> str:
        return f"dim={self.event_shape[0]}"


class GaussianMixtureEnergy(AnalyticEnergy):
    r"""Energy of a weighted mixture of Gaussians with isotropic or diagonal covariances.

    .. math::

        E(x) = -\log \sum_{k=1}^K w_k\, \mathcal N\big(x;\, \mu_k, \mathrm{diag}(s_k^2)\big),
        \qquad \log Z = \log \sum_{k=1}^K w_k.

    The weights need not be normalized, so :math:`\log Z` is a non-trivial check for
    partition-function estimators. Exact samples pick component :math:`k` with probability
    :math:`w_k / \sum_j w_j`, then draw from it.

    Parameters
    ----------
    locs : tensor-like of shape (K, d)
        Component means :math:`\mu_k`.
    scales : tensor-like of shape (K,) or (K, d)
        Positive standard deviations: one per component (isotropic) or per coordinate.
    weights : tensor-like of shape (K,), optional
        Positive, not necessarily normalized weights :math:`w_k`; all ones by default.
    dtype : torch.dtype, optional
        Dtype of the buffers; defaults to the promoted dtype of floating-point tensor arguments,
        else ``torch.get_default_dtype()``.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import GaussianMixtureEnergy
    >>> locs = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    >>> energy = GaussianMixtureEnergy(locs, torch.tensor([0.5, 0.5]), torch.tensor([1.0, 3.0]))
    >>> energy.log_partition()  # log(1 + 3)
    tensor(1.3863)
    >>> torch.allclose(energy.mean(), torch.tensor([1.0, 0.0]))  # (1 * -2 + 3 * 2) / 4 = 1
    True
    >>> energy(torch.zeros(3, 5, 2)).shape
    torch.Size([3, 5])
    """

    locs: Tensor
    scales: Tensor
    log_weights: Tensor

    def __init__(
        self,
        locs: TensorLike,
        scales: TensorLike,
        weights: TensorLike | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dtype = resolve_float_dtype(dtype, locs, scales, weights)
        locs_t = _as_buffer(locs, "locs", dtype)
        if locs_t.dim() != 2 or locs_t.shape[0] == 0 or locs_t.shape[1] == 0:
            raise ValueError(
                f"locs must have shape (K, d) with K, d >= 1, got {tuple(locs_t.shape)}"
            )
        k, d = locs_t.shape
        scales_t = _as_buffer(scales, "scales", dtype)
        if scales_t.shape == (k,):
            scales_t = scales_t[:, None].expand(k, d).clone()
        elif scales_t.shape != (k, d):
            raise ValueError(
                f"scales must have shape (K,) = {(k,)} or (K, d) = {(k, d)}, "
                f"got {tuple(scales_t.shape)}"
            )
        if not (scales_t > 0).all():
            raise ValueError("scales must be positive")
        if weights is None:
            weights_t = torch.ones(k, dtype=dtype, device=locs_t.device)
        else:
            weights_t = _as_buffer(weights, "weights", dtype)
            if weights_t.shape != (k,):
                raise ValueError(
                    f"weights must have shape (K,) = {(k,)}, got {tuple(weights_t.shape)}"
                )
            if not (weights_t > 0).all():
                raise ValueError("weights must be positive")
        self.event_shape = torch.Size([d])
        self.register_buffer("locs", locs_t)
        self.register_buffer("scales", scales_t)
        self.register_buffer("log_weights", weights_t.log())

    def forward(self, x: Tensor) -> Tensor:
        check_event_shape(x, self.event_shape)
        d = self.event_shape[0]
        locs, scales = self.locs.to(x.dtype), self.scales.to(x.dtype)
        standardized = (x.unsqueeze(-2) - locs) / scales  # batch + (K, d)
        log_components = (
            -0.5 * standardized.square().sum(-1) - scales.log().sum(-1) - 0.5 * d * _LOG_2PI
        )
        return -torch.logsumexp(self.log_weights.to(x.dtype) + log_components, dim=-1)

    def log_partition(self) -> Tensor:
        return torch.logsumexp(self.log_weights, dim=0)

    def _probs(self) -> Tensor:
        return torch.softmax(self.log_weights, dim=0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_int("n", n, 0)
        d = self.event_shape[0]
        if n == 0:
            return self.locs.new_empty(0, d)
        components = torch.multinomial(self._probs(), n, replacement=True, generator=generator)
        z = self._randn(n, d, generator=generator)
        return self.locs[components] + self.scales[components] * z

    def mean(self) -> Tensor:
        return self._probs() @ self.locs

    def variance(self) -> Tensor:
        probs = self._probs()
        spread = self.scales.square() + (self.locs - self.mean()).square()
        return probs @ spread

    def extra_repr(self) -> str:
        return f"num_components={self.locs.shape[0]}, dim={self.event_shape[0]}"


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
        dim = check_int("dim", dim, 1)
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
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
        dim = check_int("dim", dim, 1)
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
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
