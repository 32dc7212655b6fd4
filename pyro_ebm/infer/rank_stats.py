"""Rank-normalized split R-hat, bulk ESS and tail ESS for the engine's convergence check.

:func:`pyro_ebm.infer.sample` checks its draws with :func:`rhat_and_ess`. The statistics are
those of Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), *Rank-normalization, folding,
and localization: an improved R-hat for assessing convergence of MCMC*, Bayesian Analysis
16(2), computed as ``arviz.rhat`` and ``arviz.ess`` compute them (``tests/infer/
test_rank_stats.py`` pins the equality: to rounding with ArviZ 1.x; ArviZ 0.2x's tail
quantile differs by rounding where a 5% or 95% quantile falls on tied draws). They are
computed here, vectorized over the quantities in torch, because ArviZ's path (an xarray round
trip, and a rank, a normal quantile and an autocovariance per quantity and statistic) cost
40 ms for three quantities of 128 chains x 150 draws, a sixth of a 300-step run on a 2-d
model (14 ms here); and the engine's check no longer imports ArviZ.

With :math:`M` chains of :math:`N` draws split into :math:`2M` halves of :math:`n = \\lfloor
N/2 \\rfloor` draws (the middle draw dropped when :math:`N` is odd):

- **rank normalization**: each draw is replaced by :math:`z = \\Phi^{-1}((r - 3/8) / (S +
  1/4))`, :math:`r` its average rank among all :math:`S` draws (ties share their mean rank;
  rejected MCMC proposals repeat values);
- :math:`\\hat R = \\sqrt{(\\hat B / W + n - 1) / n}` with :math:`\\hat B` :math:`n` times the
  variance of the half-chain means and :math:`W` the mean half-chain variance; the reported
  :math:`\\hat R` is the larger of the bulk value (rank-normalized halves) and the folded one
  (rank-normalized :math:`|x - \\mathrm{median}(x)|`, the median of the halves' draws);
- ESS :math:`= S / \\hat\\tau`, :math:`\\hat\\tau = -1 + 2 \\sum_{k<K} P_k + \\hat\\rho_{2K}`
  with the autocorrelations :math:`\\hat\\rho_t = 1 - (W - \\bar\\gamma_t) / \\widehat{
  \\mathrm{var}}^+` combined over the halves, :math:`P_k = \\hat\\rho_{2k} + \\hat\\rho_{2k+1}`
  made monotone (Geyer's initial monotone sequence) and cut at the first non-positive pair
  :math:`K`, and :math:`\\hat\\tau \\geq 1 / \\log_{10} S`; bulk ESS on the rank-normalized
  halves, tail ESS the smaller ESS of the indicators :math:`x \\leq q_{0.05}` and :math:`x
  \\leq q_{0.95}`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["rhat_and_ess", "sorted_quantile"]

_TAIL_PROBS = (0.05, 0.95)


def _split(x: Tensor) -> Tensor:
    """``(k, chains, draws)`` -> ``(k, 2 chains, draws // 2)``: first and last halves."""
    half = x.shape[-1] // 2
    return torch.cat([x[..., :half], x[..., x.shape[-1] - half :]], 1)


def sorted_quantile(ordered: Tensor, prob: float) -> Tensor:
    """Linear-interpolation quantile (numpy's and torch's default) of each row of the sorted
    ``ordered`` ``(k, S)``: one sort serves every quantile of a row."""
    pos = prob * (ordered.shape[-1] - 1)
    lo = math.floor(pos)
    frac = pos - lo
    if frac == 0.0:
        return ordered[:, lo]
    a, b = ordered[:, lo], ordered[:, lo + 1]
    if frac == 0.5:  # the median: the mean of the middle pair
        return (a + b) / 2
    # from the nearer end (as numpy does), so a quantile at a tie is the tied value exactly
    return a + (b - a) * frac if frac < 0.5 else b - (b - a) * (1 - frac)


def _z_scale(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rank-normalize ``x`` ``(k, chains, draws)`` over all its draws, per quantity.

    Average ranks (ties at their mean rank) from one sort per row; returns the normalized
    draws and each row's draws sorted.
    """
    flat = x.reshape(x.shape[0], -1)
    ordered, order = torch.sort(flat, dim=-1)
    size = flat.shape[-1]
    idx = torch.arange(size, device=x.device).expand_as(order)
    new = torch.ones_like(order, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = torch.where(new, idx, torch.zeros_like(idx)).cummax(-1).values
    ends = torch.ones_like(new)
    ends[:, :-1] = new[:, 1:]
    last = torch.where(ends, idx, torch.full_like(idx, size)).flip(-1).cummin(-1).values.flip(-1)
    ranks = torch.empty_like(flat)
    ranks.scatter_(-1, order, (first + last).to(flat.dtype) / 2 + 1)
    z = torch.special.ndtri((ranks - 0.375) / (size + 0.25)).reshape(x.shape)
    return z, ordered


def _rhat(x: Tensor) -> Tensor:
    """Basic :math:`\\hat R` of ``x`` ``(k, chains, draws)`` (chains already split)."""
    n = x.shape[-1]
    between = n * x.mean(-1).var(-1, correction=1)
    within = x.var(-1, correction=1).mean(-1)
    return ((between / within + n - 1) / n).sqrt()


def _ess(x: Tensor) -> Tensor:
    """ESS of ``x`` ``(k, chains, draws)`` (chains already split); see the module docs."""
    k, m, n = x.shape
    total = m * n
    constant = (x.amax((1, 2)) - x.amin((1, 2))) < np.finfo(float).resolution
    centred = x - x.mean(-1, keepdim=True)
    size = 2 * n  # zero-padded to 2n: no circular wrap-around
    f = torch.fft.rfft(centred, n=size, dim=-1)
    # the chains' mean biased autocovariance, (k, n): by linearity one inverse transform of
    # the mean power spectrum instead of one per chain
    # (real and imaginary parts squared apart: squaring a view_as_real's pairs is ten times
    # slower, an inner dimension of 2)
    power = (f.real.square() + f.imag.square()).mean(1)
    acov = torch.fft.irfft(power.to(f.dtype), n=size, dim=-1)[..., :n] / n
    mean_var = acov[..., :1] * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus = var_plus + x.mean(-1).var(-1, correction=1).unsqueeze(-1)
    rho = 1 - (mean_var - acov) / var_plus  # (k, n)
    rho[:, 0] = 1.0
    # pairs P_j = rho[2j] + rho[2j+1], j = 0 .. last, read in order while the previous one is
    # positive: K of them after P_0, the sum over P_0 .. P_(K-1) made monotone (cummin)
    last = max((n - 3) // 2, 0)
    p = rho[:, : 2 * last + 2].reshape(k, last + 1, 2).sum(-1)
    alive = (p > 0).long().cumprod(-1)
    count = alive[:, :last].sum(-1, keepdim=True)  # K
    j = torch.arange(last + 1, device=x.device)
    tau = -1 + 2 * torch.where(j < count, p.cummin(-1).values, torch.zeros_like(p)).sum(-1)
    # then the even autocorrelation that ended the reading, when kept (its pair >= 0) or > 0
    even = rho.gather(-1, 2 * count).squeeze(-1)
    p_end = p.gather(-1, count).squeeze(-1)
    tau = tau + torch.where((p_end >= 0) | (even > 0), even, torch.zeros_like(even))
    ess = total / tau.clamp(min=1 / math.log10(total))
    ess = torch.where(rho.isnan().any(-1), torch.full_like(ess, math.nan), ess)
    return torch.where(constant, torch.full_like(ess, float(total)), ess)


def rhat_and_ess(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalized split R-hat, bulk ESS and tail ESS of ``values`` ``(chains, draws, k)``.

    Each of the ``k`` columns is one scalar quantity; returns three float arrays of shape
    ``(k,)`` (NaN where a column has a NaN; see the module docs for the definitions).

    Examples
    --------
    >>> import numpy as np
    >>> rhat, bulk, tail = rhat_and_ess(np.random.default_rng(0).normal(size=(4, 200, 2)))
    >>> bool((rhat < 1.05).all()) and bulk.shape == (2,)
    True
    """
    x = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if x.dim() != 3 or x.shape[0] < 2 or x.shape[1] < 4:
        raise ValueError(
            f"values must have shape (chains >= 2, draws >= 4, k); got {tuple(x.shape)}"
        )
    x = x.permute(2, 0, 1).contiguous()  # (k, chains, draws): each quantity's draws in a row
    bad = x.isnan().flatten(1).any(-1)
    x = torch.where(bad[:, None, None], torch.zeros_like(x), x)
    split = _split(x)
    bulk_z, ordered = _z_scale(split)
    median = sorted_quantile(ordered, 0.5)
    folded_z, _ = _z_scale((split - median[:, None, None]).abs())
    rhat = torch.maximum(_rhat(bulk_z), _rhat(folded_z))
    if x.shape[-1] % 2:  # the tail quantiles are of all the draws, the middle one included
        ordered = x.flatten(1).sort(-1).values
    below = [
        _split(x <= sorted_quantile(ordered, p)[:, None, None]).to(x.dtype) for p in _TAIL_PROBS
    ]
    k = x.shape[0]
    ess = _ess(torch.cat([bulk_z, *below]))  # one batch: bulk, then each tail indicator
    bulk, tail = ess[:k], ess[k:].reshape(len(_TAIL_PROBS), k).amin(0)
    nan = torch.full_like(rhat, math.nan)
    return tuple(torch.where(bad, nan, v).numpy() for v in (rhat, bulk, tail))
