"""Analytic energies with exact log Z, samplers and moments: the base class and the Gaussians.

Every energy here follows the package convention :math:`E(x) = -\\log \\tilde p(x)`, so that
:math:`p(x) = e^{-E(x)} / Z` with :math:`\\log Z` given by :meth:`AnalyticEnergy.log_partition`.
They are the ground truth for testing samplers, objectives and partition-function estimators;
the banana, funnel and double well are in :mod:`pyro_ebm.energies.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_int, check_positive_float
from ._checks import check_event_shape, resolve_float_dtype

__all__ = ["AnalyticEnergy", "GaussianEnergy", "GaussianMixtureEnergy"]

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
