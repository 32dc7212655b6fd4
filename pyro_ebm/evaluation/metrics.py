"""Two-sample distances between model draws and data: the unbiased squared MMD."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive_float

__all__ = ["mmd"]


def _as_points(t: Tensor, name: str) -> Tensor:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape (n, d)")
    if t.dim() < 2 or t.shape[0] < 2:
        raise ValueError(
            f"{name} must have shape (n, d, ...) with n >= 2 points (use {name}[:, None] for "
            f"scalars); got {tuple(t.shape)}"
        )
    return t.reshape(t.shape[0], -1)


def mmd(x: Tensor, y: Tensor, bandwidth: float | None = None) -> Tensor:
    r"""Unbiased estimate of the squared maximum mean discrepancy with a Gaussian kernel.

    With :math:`k(a, b) = \exp(-\lVert a - b\rVert^2 / (2h^2))` and samples
    :math:`x_{1:n} \sim P`, :math:`y_{1:m} \sim Q` (Gretton et al. 2012, eq. 3),

    .. math::

        \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)}\sum_{i \ne j} k(x_i, x_j)
        + \frac{1}{m(m-1)}\sum_{i \ne j} k(y_i, y_j) - \frac{2}{nm}\sum_{i, j} k(x_i, y_j).

    Its expectation is :math:`\mathrm{MMD}^2(P, Q) \ge 0`, zero iff :math:`P = Q`; the
    estimate itself can be slightly negative.

    Parameters
    ----------
    x, y : Tensor
        Samples of shape ``(n, d)`` and ``(m, d)`` (trailing dimensions are flattened),
        ``n, m >= 2``.
    bandwidth : float, optional
        :math:`h > 0`. By default the median heuristic: the median Euclidean distance between
        distinct points of the pooled sample :math:`\{x_i\} \cup \{y_j\}` (computed without
        gradient; if it is zero, the mean distance, else 1).

    Returns
    -------
    Tensor
        A 0-d tensor in the promoted dtype of ``x`` and ``y``, differentiable in both.

    References
    ----------
    A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schoelkopf and A. Smola (2012), "A kernel
    two-sample test", JMLR 13, 723-773.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    >>> y = torch.randn(200, 2, generator=g, dtype=torch.float64)
    >>> bool(abs(mmd(x, y)) < 0.01), bool(mmd(x, y + 1.0) > 0.05)
    (True, True)
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of features; got {tuple(x.shape)} and "
            f"{tuple(y.shape)} after flattening"
        )
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(device=x.device, dtype=dtype)
    n, m = x.shape[0], y.shape[0]

    def sq_dist(a: Tensor, b: Tensor) -> Tensor:
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()

    dxx, dyy, dxy = sq_dist(x, x), sq_dist(y, y), sq_dist(x, y)
    if bandwidth is None:
        with torch.no_grad():
            pooled = torch.cat([x, y]).detach()
            dist = torch.pdist(pooled)
            h = dist.median()
            if not bool(h > 0):
                h = dist.mean() if bool(dist.mean() > 0) else torch.ones_like(h)
    else:
        h = torch.tensor(check_positive_float("bandwidth", bandwidth), dtype=dtype, device=x.device)
    scale = -0.5 / h.square()
    kxx, kyy, kxy = (scale * dxx).exp(), (scale * dyy).exp(), (scale * dxy).exp()
    sum_xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    sum_yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sum_xx + sum_yy - 2 * kxy.mean()
