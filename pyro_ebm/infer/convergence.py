"""No silent failure: R-hat, nested R-hat and ESS after sampling, and one clear warning.

After :func:`~pyro_ebm.infer.sample` the draws are checked with the rank-normalized split
:math:`\\hat R` and bulk/tail effective sample sizes of Vehtari et al. (2021), computed as ArviZ
computes them (:mod:`pyro_ebm.infer.rank_stats`), and, from 32
chains on, with nested :math:`\\hat R` (Margossian et al. 2024) over 16 superchains of
consecutive chains, which then decides. With many chains each one is short relative to its
autocorrelation, and split :math:`\\hat R` exceeds 1.01 by about :math:`1/(2\\,
\\mathrm{ESS}_{\\text{chain}})` on a converged run (measured: 1.03 on eight schools with 128
chains x 250 draws, 3,000 ESS and correct moments); nested :math:`\\hat R` pools the chains of
a superchain and stays near 1 there, while still growing when groups of chains disagree.
One :class:`ConvergenceWarning` names the worst parameter, its
:math:`\\hat R`, the smallest ESS, the number of chains stuck far below the others' log density
or frozen (accepting under :data:`FROZEN_ACCEPT` of their proposals, at an ordinary log density:
a region where the step is too large) and what to try, when :math:`\\hat R > 1.01`, the ESS is
under :data:`MIN_ESS` or a chain is stuck or frozen.

To keep the check cheap next to sampling it reads at most :data:`MAX_CHAINS` chains (evenly
spaced) and :data:`MAX_COORDS` coordinates plus the log density; ESS is then scaled by the
fraction of chains read (chains are exchangeable).

References: Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), *Rank-normalization,
folding, and localization: an improved R-hat*, Bayesian Analysis 16(2); Margossian, Hoffman,
Sountsov, Riou-Durand, Vehtari & Gelman (2024), *Nested R-hat: assessing the convergence of
Markov chain Monte Carlo when running many short chains*, Bayesian Analysis.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .rank_stats import rhat_and_ess

__all__ = [
    "FROZEN_ACCEPT",
    "MAX_RHAT",
    "MIN_ESS",
    "Convergence",
    "ConvergenceWarning",
    "check_convergence",
    "nested_rhat",
]

MAX_RHAT = 1.01
MIN_ESS = 400
#: A chain whose mean acceptance over the draws is below this is frozen (see ``Convergence``).
FROZEN_ACCEPT = 0.05
MAX_CHAINS = 128
MAX_COORDS = 32
_SUPERCHAINS = 16


class ConvergenceWarning(UserWarning):
    """The chains have not mixed (R-hat too high) or the effective sample size is too low."""


@dataclass
class Convergence:
    """The outcome of :func:`check_convergence`.

    Attributes
    ----------
    max_rhat:
        Largest rank-normalized split :math:`\\hat R` over the checked quantities.
    nested_rhat:
        Largest nested :math:`\\hat R` (``None`` unless chains are many and short).
    min_ess_bulk, min_ess_tail:
        Smallest bulk and tail ESS (for all chains).
    worst:
        Name of the quantity with the largest :math:`\\hat R` (``"x[i, ...]"`` or ``"lp"``).
    stuck_chains:
        Chains whose mean log density is far below the others'.
    converged:
        Whether no warning is due.
    frozen_chains:
        Chains that accepted under :data:`FROZEN_ACCEPT` of their proposals on average: they
        sit where the step size is too large for the local curvature (at an ordinary log
        density, so only their acceptance shows it). Counted when the acceptance is given.
    """

    max_rhat: float
    nested_rhat: float | None
    min_ess_bulk: float
    min_ess_tail: float
    worst: str
    stuck_chains: int
    converged: bool
    frozen_chains: int = 0

    def message(
        self, kernel: str, inspect: str = "Samples.summary() and Samples.convergence"
    ) -> str:
        """The warning text, with what to try (``inspect``: where to look further)."""
        parts = []
        rhat = self.nested_rhat if self.nested_rhat is not None else self.max_rhat
        label = "nested R-hat" if self.nested_rhat is not None else "R-hat"
        if rhat > MAX_RHAT:
            parts.append(f"{label} {rhat:.3f} > {MAX_RHAT} for {self.worst}")
        ess = min(self.min_ess_bulk, self.min_ess_tail)
        if ess < MIN_ESS:
            parts.append(f"ESS {ess:.0f} < {MIN_ESS}")
        if self.stuck_chains:
            parts.append(
                f"{self.stuck_chains} chain(s) with a mean log density far below the others"
            )
        if self.frozen_chains:
            parts.append(
                f"{self.frozen_chains} chain(s) accepting under {FROZEN_ACCEPT:.0%} of their "
                "proposals (the step size is too large where they are)"
            )
        if kernel == "hmc":
            kernel_hint = "a higher HMC(target_accept_prob=...) (a smaller step)"
        else:
            kernel_hint = "kernel='hmc'"
        return (
            f"the {kernel} chains may not have converged: {'; '.join(parts)}. Try more "
            f"warmup (warmup_steps=), more draws or chains, {kernel_hint}, or a start nearer "
            "the bulk (init=); check for several modes. Inspect " + inspect
        )


def _split_chains(x: np.ndarray) -> np.ndarray:
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], 0)


def nested_rhat(x: Tensor | np.ndarray, num_superchains: int) -> np.ndarray:
    """Nested :math:`\\hat R` of draws ``(chains, draws, ...)``, superchains of consecutive chains.

    With :math:`K` superchains of :math:`M` chains of :math:`N` draws,
    :math:`\\hat{\\mathfrak R} = \\sqrt{1 + \\hat B / \\hat W}`, :math:`\\hat B` the variance of
    the superchain means and :math:`\\hat W` the mean over superchains of the between-chain
    variance of their chain means plus the mean within-chain variance (Margossian et al. 2024,
    eq. 3-5). Works down to one draw per chain.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(64, 5))
    >>> bool(abs(nested_rhat(x, 8) - 1) < 0.1)
    True
    """
    x = np.asarray(x, dtype=np.float64)
    chains, draws = x.shape[:2]
    if chains % num_superchains or chains // num_superchains < 1 or num_superchains < 2:
        raise ValueError(
            f"num_superchains must be >= 2 and divide the number of chains ({chains}); "
            f"got {num_superchains}"
        )
    m = chains // num_superchains
    x = x.reshape(num_superchains, m, draws, *x.shape[2:])
    chain_mean = x.mean(2)
    super_mean = chain_mean.mean(1)
    between = super_mean.var(0, ddof=1)
    between_chains = chain_mean.var(1, ddof=1) if m > 1 else np.zeros_like(super_mean)
    within = x.var(2, ddof=1).mean(1) if draws > 1 else np.zeros_like(super_mean)
    w = (between_chains + within).mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(1.0 + between / w)


def _names(prefix: str, shape: tuple[int, ...], index) -> list[str]:
    if not shape:
        return [prefix]
    return [prefix + "[" + ", ".join(str(int(i)) for i in np.unravel_index(k, shape)) + "]"
            for k in index]  # fmt: skip


def check_convergence(
    draws: Tensor,
    lp: Tensor,
    event_dim: int,
    labels: list[str] | None = None,
    acceptance: Tensor | None = None,
) -> Convergence | None:
    """R-hat and ESS of ``draws`` ``(chains, draws, *batch, *event)`` and of ``lp``.

    ``lp`` has shape ``(chains, draws, *batch)``. ``labels`` names each flattened coordinate
    of a draw (default ``"x[i, ...]"``). ``acceptance`` (shape of ``lp``), the per-draw
    Metropolis acceptance probabilities, lets frozen chains be counted.

    Returns ``None`` when there are fewer than 4 draws per chain, or 8 for a single chain
    (whose two halves stand in for two chains): no split R-hat exists.
    """
    chains, n = draws.shape[:2]
    if n < (8 if chains == 1 else 4):
        return None
    shape = tuple(draws.shape[2:])  # batch + event
    pick = np.unique(np.linspace(0, chains - 1, min(chains, MAX_CHAINS)).round().astype(int))
    x = draws[pick].detach().to("cpu", torch.float64).reshape(len(pick), n, -1).numpy()
    size = x.shape[-1]
    coords = np.unique(np.linspace(0, size - 1, min(size, MAX_COORDS)).round().astype(int))
    lps = lp[pick].detach().to("cpu", torch.float64).reshape(len(pick), n, -1).numpy()
    values = np.concatenate([x[..., coords], lps], -1)
    names = _names("x", shape, coords) if labels is None else [labels[i] for i in coords]
    names = names + _names("lp", tuple(lp.shape[2:]), range(lps.shape[-1]))
    if values.shape[0] == 1:  # one chain: its two halves (split R-hat needs two chains)
        half = n // 2
        values = np.stack([values[0, :half], values[0, half : 2 * half]])
    rhat, bulk, tail = rhat_and_ess(values)
    scale = chains / len(pick)
    rhat = np.nan_to_num(rhat, nan=np.inf)
    worst = int(np.argmax(rhat))
    nested = None
    if len(pick) >= 2 * _SUPERCHAINS:
        usable = len(pick) - len(pick) % _SUPERCHAINS
        nested = float(np.nanmax(nested_rhat(values[:usable], _SUPERCHAINS)))
    mean_lp = lp.detach().to("cpu", torch.float64).mean(1).reshape(chains, -1)
    ref = torch.quantile(mean_lp, 0.9, dim=0)
    event_size = max(1, math.prod(draws.shape[draws.dim() - event_dim :]))
    gap = 10.0 + 3.0 * math.sqrt(2.0 * event_size)
    stuck = int((mean_lp < ref - gap).any(1).sum())
    frozen = 0
    if acceptance is not None:
        rate = acceptance.detach().to("cpu", torch.float64).nan_to_num(nan=0.0).mean(1)
        frozen = int((rate.reshape(chains, -1) < FROZEN_ACCEPT).any(1).sum())
    max_rhat = float(rhat.max())
    min_bulk = float(np.nan_to_num(bulk, nan=0.0).min() * scale)
    min_tail = float(np.nan_to_num(tail, nan=0.0).min() * scale)
    rhat_ok = (nested if nested is not None else max_rhat) <= MAX_RHAT
    ok = rhat_ok and min(min_bulk, min_tail) >= MIN_ESS and stuck == 0 and frozen == 0
    return Convergence(max_rhat, nested, min_bulk, min_tail, names[worst], stuck, ok, frozen)


def warn_if_unconverged(result: Convergence | None, kernel: str, **message) -> None:
    """Issue one :class:`ConvergenceWarning` if ``result`` says the run did not converge."""
    if result is not None and not result.converged:
        warnings.warn(result.message(kernel, **message), ConvergenceWarning, stacklevel=3)
