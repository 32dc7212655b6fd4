"""Warmup adaptation: dual averaging of the step size and Welford estimates of the mass matrix.

References
----------
Nesterov (2009), *Primal-dual subgradient methods for convex problems*; Hoffman & Gelman (2014),
*The No-U-Turn Sampler*, JMLR 15, Algorithm 5 (dual averaging of :math:`\\log\\epsilon`);
Welford (1962) and Chan, Golub & LeVeque (1979) for the streaming, pooled variance; the
windowed schedule follows Stan's reference manual (fast / slow doubling windows / fast).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "DAMPED_GAMMA",
    "DualAveraging",
    "WarmupAdapter",
    "WelfordCovariance",
    "find_initial_step_size",
    "warmup_windows",
]

#: Dual averaging's gain used by every warmup here: four times Stan's damping (Stan: 0.05),
#: centred on the current step (``mu_scale=1``, not Stan's 10). Stan's constants leave the
#: averaged step where the acceptance curve's concavity puts it, not at the target: measured on
#: one chain in ``pyro.infer.MCMC`` (a 3-d Gaussian with scales 0.5-2, 500 warmup, seeds
#: 0-7), Stan's constants gave HMC 0.70-0.86 at target 0.65 (Pyro's own HMC: 0.81-0.84),
#: MALA 0.43-0.68 at 0.574 and RWMH 0.10-0.22 at 0.234; these give 0.61-0.79, 0.52-0.61 and
#: 0.15-0.25 (0.4 gave about the same, 0.1 was in between). The many-chain warmup measured
#: the same (see :mod:`pyro_ebm.infer.warmup`).
DAMPED_GAMMA = 0.2


def find_initial_step_size(
    mean_acceptance: Callable[[Tensor], float],
    target_accept: float,
    start: Tensor,
    max_rounds: int = 40,
) -> Tensor:
    """Double or halve a step size until the acceptance statistic crosses the target.

    A cheap version of Hoffman & Gelman's heuristic (Algorithm 4), the one copy used by the
    runner (on the median over chains), the Pyro kernels (one chain, a few proposals) and
    annealed importance sampling. ``mean_acceptance(eps)`` evaluates proposals at step size
    ``eps`` without moving the chains.
    """
    eps = start
    direction = 1.0 if mean_acceptance(eps) > target_accept else -1.0
    for _ in range(max_rounds):
        trial = eps * (2.0**direction)
        accept = mean_acceptance(trial)
        crossed = accept < target_accept if direction > 0 else accept > target_accept
        if crossed:
            return eps if direction > 0 else trial
        eps = trial
    return eps


class DualAveraging:
    """Dual averaging of :math:`\\log \\epsilon` towards a target acceptance probability.

    With :math:`H_t = \\delta - a_t` the gap between target and observed acceptance,

    .. math::
        \\bar H_t = (1 - \\tfrac{1}{t + t_0}) \\bar H_{t-1} + \\tfrac{1}{t + t_0} H_t, \\quad
        \\log\\epsilon_t = \\mu - \\tfrac{\\sqrt t}{\\gamma} \\bar H_t, \\quad
        \\log\\bar\\epsilon_t = t^{-\\kappa} \\log\\epsilon_t + (1 - t^{-\\kappa})
        \\log\\bar\\epsilon_{t-1},

    with :math:`\\mu = \\log(s\\,\\epsilon_0)`, :math:`s` = ``mu_scale`` (Stan's 10 favours
    exploring larger steps; 1 suits a start that a search has already placed near the target).
    A ``step_size`` of shape ``()`` is one step size shared by all chains (updated with their
    mean acceptance); a tensor of the chain shape keeps one per chain.
    """

    def __init__(
        self,
        step_size: Tensor,
        target_accept: float,
        *,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
        mu_scale: float = 10.0,
    ) -> None:
        self.target_accept = target_accept
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.mu_scale = mu_scale
        self.restart(step_size)

    def restart(self, step_size: Tensor) -> None:
        """Start a new averaging run around ``step_size`` (after a mass-matrix update)."""
        log_eps = step_size.log()
        self.mu = math.log(self.mu_scale) + log_eps
        self.log_step = log_eps.clone()
        self.log_step_avg = torch.zeros_like(log_eps)
        self.h_avg = torch.zeros_like(log_eps)
        self.t = 0

    def update(self, acceptance: Tensor) -> Tensor:
        """Record one transition's acceptance; returns the step size to use next."""
        if self.log_step.dim() == 0:
            acceptance = acceptance.mean()
        acceptance = torch.nan_to_num(acceptance, nan=0.0).to(self.log_step.dtype)
        self.t += 1
        t = self.t
        # h <- (1 - eta) h + eta (delta - a);  avg <- (1 - w) avg + w log_eps  (as lerps)
        self.h_avg = torch.lerp(self.h_avg, self.target_accept - acceptance, 1.0 / (t + self.t0))
        self.log_step = torch.add(self.mu, self.h_avg, alpha=-math.sqrt(t) / self.gamma)
        self.log_step_avg = torch.lerp(self.log_step_avg, self.log_step, t ** (-self.kappa))
        return self.log_step.exp()

    def final_step_size(self) -> Tensor:
        """The averaged step size :math:`\\bar\\epsilon`, used once warmup ends."""
        if self.t == 0:
            return self.log_step.exp()
        return self.log_step_avg.exp()

    def state_dict(self) -> dict:
        return {
            "mu": self.mu,
            "log_step": self.log_step,
            "log_step_avg": self.log_step_avg,
            "h_avg": self.h_avg,
            "t": self.t,
        }

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class WelfordCovariance:
    """Streaming variance (diagonal) or covariance (dense) pooled over all chains.

    Batches of draws are merged with Chan et al.'s parallel update, so a step of ``C`` chains
    adds ``C`` observations at once. :meth:`estimate` applies Stan's regularization
    :math:`\\tfrac{n}{n+5}\\hat\\Sigma + 10^{-3}\\tfrac{5}{n+5} I`.
    """

    def __init__(self, size: int, dense: bool, dtype: torch.dtype, device: torch.device) -> None:
        self.dense = dense
        self.size = size
        self.count = 0
        self.mean = torch.zeros(size, dtype=dtype, device=device)
        shape = (size, size) if dense else (size,)
        self.m2 = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, draws: Tensor) -> None:
        """Add draws of shape ``(n, size)``."""
        n = draws.shape[0]
        batch_mean = draws.mean(0)
        centred = draws - batch_mean
        batch_m2 = centred.T @ centred if self.dense else centred.square().sum(0)
        delta = batch_mean - self.mean
        total = self.count + n
        if self.dense:
            self.m2 = self.m2 + batch_m2 + torch.outer(delta, delta) * (self.count * n / total)
        else:
            self.m2 = self.m2 + batch_m2 + delta.square() * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def estimate(self) -> Tensor:
        n = self.count
        cov = self.m2 / max(n - 1, 1)
        shrink = 1e-3 * 5.0 / (n + 5.0)
        if self.dense:
            eye = torch.eye(self.size, dtype=cov.dtype, device=cov.device)
            return (n / (n + 5.0)) * cov + shrink * eye
        return (n / (n + 5.0)) * cov + shrink


def _buffers(warmup_steps: int) -> tuple[int, int]:
    """Initial and terminal fast intervals: 15% and max(10%, min(50, 25%)) of warmup."""
    return int(0.15 * warmup_steps), max(int(0.1 * warmup_steps), min(50, warmup_steps // 4))


def warmup_windows(warmup_steps: int) -> list[int]:
    """Iterations (0-based) at whose end the mass matrix is re-estimated.

    Stan's schedule: an initial fast interval (15%) adapting only the step size, slow windows
    of doubling length (starting at 25 iterations) that estimate the mass matrix, and a
    terminal fast interval in which dual averaging settles on the final metric. The terminal
    interval is at least ``min(50, warmup/4)`` iterations (Stan's 10% leaves a 40-step warmup
    only 4 iterations to re-adapt the step size, whose average is then far off), and a slow span
    under 20 iterations estimates no mass matrix at all.
    """
    init, term = _buffers(warmup_steps)
    start, end = init, warmup_steps - term
    if end - start < 20:
        return []
    ends = []
    size = 25
    while start < end:
        stop = start + size
        if stop + 2 * size > end:  # the last window absorbs what is left
            stop = end
        ends.append(stop - 1)
        start = stop
        size *= 2
    return ends


def window_starts(warmup_steps: int) -> list[int]:
    """First iteration of each slow window (companion of :func:`warmup_windows`)."""
    ends = warmup_windows(warmup_steps)
    if not ends:
        return []
    return [_buffers(warmup_steps)[0]] + [e + 1 for e in ends[:-1]]


class WarmupAdapter:
    """Warmup of one chain in ``pyro.infer.MCMC``: dual averaging every step, mass matrix in
    Stan's windows.

    Dual averaging uses :data:`DAMPED_GAMMA` centred on the current step (not Stan's
    ``gamma=0.05`` around ten times it), restarted at every mass-matrix update. Used by the
    Pyro kernels (:mod:`pyro_ebm.infer.pyro_adapter`); ``sample()`` has its own many-chain
    warmup (:mod:`pyro_ebm.infer.warmup`). Call :meth:`update` after every
    warmup transition with the state reached and its acceptance probabilities; it returns the
    step size for the next transition, and :meth:`final_step_size` the frozen one.
    """

    def __init__(
        self,
        warmup_steps: int,
        step_size: Tensor,
        target_accept: float,
        metric,
        *,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        dense_mass: bool = False,
    ) -> None:
        self.metric = metric
        self.dense_mass = dense_mass
        self.step_size = step_size
        self.dual = (
            DualAveraging(step_size, target_accept, gamma=DAMPED_GAMMA, mu_scale=1.0)
            if adapt_step_size
            else None
        )
        ends = warmup_windows(warmup_steps) if adapt_mass_matrix else []
        self.ends = set(ends)
        starts = window_starts(warmup_steps) if adapt_mass_matrix else []
        self.first = min(starts) if starts else warmup_steps
        self.last = max(ends) if ends else -1
        self.welford: WelfordCovariance | None = None

    def update(self, i: int, position: Tensor, acceptance: Tensor) -> Tensor:
        """Adapt after warmup transition ``i`` (0-based); returns the next step size."""
        if self.dual is not None:
            self.step_size = self.dual.update(acceptance)
        if self.first <= i <= self.last:
            metric = self.metric
            if self.welford is None:
                self.welford = WelfordCovariance(
                    metric.size, self.dense_mass, position.dtype, position.device
                )
            self.welford.update(position.reshape(-1, metric.size))
            if i in self.ends:
                estimate = self.welford.estimate()
                if not self.dense_mass:
                    estimate = estimate.reshape(metric.event_shape)
                metric.set(estimate)
                self.welford = None
                if self.dual is not None:
                    self.dual.restart(self.step_size)
        return self.step_size

    def final_step_size(self) -> Tensor:
        return self.step_size if self.dual is None else self.dual.final_step_size()
