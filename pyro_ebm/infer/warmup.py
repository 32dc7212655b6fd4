"""Many-chain warmup that survives bad starts: per-chain step sizes, restarts, pooled metric.

Chains started far outside the posterior (scales of 1e-3 and 1e2 in one target, correlations
near -1) need steps that differ by orders of magnitude until they reach the bulk, so one step
size shared on the chains' mean acceptance collapses and freezes every chain. Measured on
posteriordb posteriors, what survives it, and what this warmup does:

1. **Per-chain step sizes early, one shared step size once the chains are in the bulk.** In the
   initial fast interval (15% of warmup) each chain adapts its own :math:`\\log\\epsilon` by a
   constant-gain Robbins-Monro rule, :math:`\\log\\epsilon \\mathrel{+}= \\tfrac12(a -
   \\delta)` (no memory, so a chain whose geometry changes as it travels follows at once, and
   no chain can drag another's step down). At its end the lost chains are restarted (2.) and
   one shared step size is searched on the *median* acceptance (of probe proposals by at most
   :data:`SEARCH_CHAINS` chains, :func:`probe_acceptance`) and then adapted by dual
   averaging (Hoffman & Gelman 2014) on the mean acceptance of all chains, restarted at every
   mass-matrix update, centred on the searched step (:math:`\\mu = \\log\\epsilon_0`, not
   Stan's :math:`\\log 10\\epsilon_0`) and damped four times more than Stan's
   (:math:`\\gamma = 0.2`); sampling uses the geometric mean of the iterates over the second
   half of the terminal interval. Measured (64 chains, 4-d and 20-d Gaussians): per-chain dual
   averaging to the end left the sampling acceptance 0.06-0.2 off target (one noisy transition
   per chain and update); a shared one with Stan's constants left HMC 0.03-0.23 above target
   (its iterates fluctuate by 10% per step where the acceptance is a steep, curved function of
   :math:`\\epsilon`, so the acceptance at their average is not their average acceptance); with
   these constants MALA and RWMH end within 0.02 and HMC within 0.07.
2. **Restarts.** Every few iterations until the terminal interval, chains that are lost (log
   density more than :math:`10 + 3\\sqrt{2d}` below the 90% quantile over chains, about six
   standard deviations of a Gaussian's log density) or stuck (mean acceptance under 0.02 since
   the last check while in the bottom tenth of the log densities, or a step size a thousand
   times under the median while below the median log density) are moved to the state of a
   randomly chosen healthy chain, with that chain's step
   size. Their independent random streams separate them again; the terminal interval (at least
   ``min(50, warmup/4)`` iterations) leaves them time to. Restarts are counted per chain.
3. **Metric from healthy chains.** Stan's windows (fast, slow doubling windows, fast); in each
   slow window the positions of all chains are kept (thinned to a memory budget), and at its end
   the covariance of the chains that were neither restarted during the window nor lost at its
   end becomes the inverse mass matrix: dense up to :data:`DENSE_MAX_DIM` dimensions (shrunk
   towards its diagonal by :math:`(d + 5)/(n + d + 5)`), diagonal above. After each update a
   shared step size is searched on the median acceptance (stuck chains cannot drag a median)
   and dual averaging restarts from it. For the diffusive kernels (MALA, ULA) a dense
   estimate is compared with the Laplace metric (the inverse of the healthy chains' mean
   Hessian) and replaced by it where it preconditions their Hessians four times better
   (:mod:`pyro_ebm.infer.curvature`): a diffusive warmup never spreads the chains along the
   wide directions of a posterior whose scales span orders of magnitude.
4. **HMC.** Leapfrog steps are capped at ``HMC.EARLY_MAX_STEPS`` until the first metric
   estimate; from the first slow window on the trajectory length is adapted by ChEES
   (:mod:`pyro_ebm.infer.chees`); after each metric update the length is divided by the square
   root of the largest variance of the new covariance in the old metric's units (ChEES follows
   the longest direction, whose scale that is; measured: keeping the length inflated it to
   13-23 on a 20-d Gaussian with scales 1e-2..1e2, where 1.3 is right, and restarting it from
   1 left it too short under a diagonal metric on a rotated target). The final length is the
   average of :math:`\\log T` over the terminal interval. From the second slow window on,
   a window in which a chain that was not restarted accepted under 5% while the median chain
   accepted 30% or more turns on HMC's automatic step-size jitter (:func:`frozen_in_window`,
   ``HMC(step_size_jitter=None)``) for the rest of warmup and for sampling; the leapfrog steps
   are then counted at the mean jittered step and ChEES reads each chain's own integration
   time.

References: Stan Reference Manual, *HMC algorithm parameters* (windowed adaptation); Hoffman &
Gelman (2014), JMLR 15; Hoffman, Radul & Sountsov (2021), AISTATS (ChEES, many-chain
adaptation); Hoffman & Sountsov (2022), *Tuning-free generalized HMC* (MEADS: per-chain
robustness across many chains).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .adaptation import DAMPED_GAMMA, DualAveraging, find_initial_step_size, warmup_windows
from .base import EnergyFn, Info, State
from .chees import ChEES
from .convergence import FROZEN_ACCEPT
from .curvature import choose_metric
from .metric import Metric
from .rank_stats import sorted_quantile

__all__ = [
    "DENSE_MAX_DIM",
    "SEARCH_CHAINS",
    "WarmupResult",
    "estimate_inv_mass",
    "find_stuck_chains",
    "largest_scale",
    "probe_acceptance",
    "run_warmup",
    "search_step_size",
]

DENSE_MAX_DIM = 200
#: Chains that propose while a shared step size is searched (see :func:`probe_acceptance`).
SEARCH_CHAINS = 256
_SNAPSHOT_BUDGET = 2**22  # floats kept per slow window for the metric estimate
_EARLY_GAIN = 0.5
_INITIAL_TRAJECTORY = 1.0


@dataclass
class WarmupResult:
    """What warmup hands to sampling."""

    state: State
    step_size: Tensor
    trajectory_length: float | None
    restarts: Tensor
    divergences: Tensor
    step_size_jitter: float = 0.0


def search_step_size(
    accept_at: Callable[[Tensor], Tensor], target: float, start: Tensor, max_rounds: int = 40
) -> Tensor:
    """A shared step size where the *median* over chains of the acceptance crosses ``target``.

    Doubles (or halves) from ``start`` (Hoffman & Gelman 2014, Algorithm 4, on a median instead
    of one chain's value). ``accept_at(eps)`` returns per-chain acceptance probabilities of
    proposals made at ``eps`` without moving the chains.
    """

    def median(eps: Tensor) -> float:
        rates = torch.nan_to_num(accept_at(eps), nan=0.0)
        return float(rates.flatten().median())

    return find_initial_step_size(median, target, start, max_rounds)


def probe_acceptance(
    kernel, energy_fn: EnergyFn, state: State, metric: Metric, generator, event_dim: int
) -> Callable[[Tensor], Tensor]:
    """``accept_at(eps)`` for :func:`search_step_size`: the acceptance probabilities of one
    ``kernel`` proposal per chain at the shared step ``eps``, proposals not taken.

    Only every ``k``-th chain proposes, at most :data:`SEARCH_CHAINS` of them: the search reads
    a median to a factor of two in the step, and the median of 256 chains' acceptance is
    within about 0.02 of all chains' (its standard error, :math:`1.25\\,\\sigma/\\sqrt{n}` with
    :math:`\\sigma \\leq 0.5`), while each probe costs an energy and gradient evaluation of the
    chains that propose (measured in one process, a 150-step warmup of 1024 chains on a 2-d
    MLP: the searches took 2.8% of the run with every chain proposing, 1.7% with 256).
    """
    stride = max(1, math.ceil(state.energy.shape[0] / SEARCH_CHAINS))
    probe = State(
        state.position[::stride],
        state.energy[::stride],
        None if state.grad is None else state.grad[::stride],
    )
    tuning = kernel.probe_tuning()

    def accept_at(eps: Tensor) -> Tensor:
        return kernel.step(energy_fn, probe, eps, metric, generator, event_dim, **tuning)[
            1
        ].acceptance_rate

    return accept_at


def largest_scale(metric: Metric, inv_mass: Tensor) -> float:
    """Largest variance of the new covariance ``inv_mass`` in the units of ``metric``.

    :math:`\\lambda_{\\max}(L^{-1} \\Sigma L^{-\\top})` with :math:`LL^\\top` the current inverse
    mass matrix. ChEES adapts the trajectory to the longest direction in the current units; once
    the metric becomes :math:`\\Sigma` that direction's scale changes by
    :math:`1/\\sqrt{\\lambda_{\\max}}`, and so should the trajectory length.
    """
    size = metric.size
    cov = inv_mass if inv_mass.dim() == 2 and inv_mass.shape == (size, size) else None
    if metric.kind != "dense" and cov is None:  # diagonal (or identity) against diagonal
        old = 1.0 if metric.inv_mass is None else metric.inv_mass.reshape(-1)
        return float((inv_mass.reshape(-1) / old).max())
    if cov is None:
        cov = torch.diag(inv_mass.reshape(-1))
    if metric.kind == "dense":
        whiten = metric._scale_inv
    elif metric.kind == "diag":
        whiten = torch.diag(metric.inv_mass.reshape(-1).rsqrt())
    else:
        whiten = torch.eye(size, dtype=cov.dtype, device=cov.device)
    return float(torch.linalg.eigvalsh(whiten @ cov @ whiten.T).max())


def find_stuck_chains(
    lp: Tensor,
    mean_accept: Tensor,
    step_size: Tensor,
    event_size: int,
    previous_lp: Tensor | None = None,
) -> Tensor:
    """Chains (shape ``(num_chains, *batch)``) that are lost or stuck; see the module docs.

    Every statistic is taken over the chain dimension (0), separately per batch element. A
    chain far below the others that has closed at least 10% of its gap to the 90% quantile since
    ``previous_lp`` (the log densities at the last check) is still travelling and is left alone:
    restarting every laggard of a transient from the leaders would leave a few clones.
    """
    n = lp.shape[0]
    lp_f = lp.nan_to_num(nan=-math.inf, posinf=-math.inf, neginf=-math.inf)  # non-finite: -inf
    finite = lp_f > -math.inf
    # one sort per batch column serves the three order statistics (quantiles interpolate
    # linearly, the median is the lower middle value, as torch.quantile and torch.median)
    ordered = lp_f.reshape(n, -1).T.clamp(min=torch.finfo(lp.dtype).min).sort(-1).values
    column = (1,) + tuple(lp.shape[1:])
    ref = sorted_quantile(ordered, 0.9).reshape(column)
    gap = ref - lp_f
    travelling = torch.zeros_like(finite)
    if previous_lp is not None:
        travelling = finite & (lp_f - previous_lp > 0.1 * gap)
    far = (gap > 10.0 + 3.0 * math.sqrt(2.0 * event_size)) & ~travelling
    below_median = lp_f < ordered[:, (n - 1) // 2].reshape(column)
    bottom = lp_f < sorted_quantile(ordered, 0.1).reshape(column)
    frozen = (mean_accept < 0.02) & bottom
    stuck = far | frozen | ~finite
    if step_size.dim() == 0:  # one shared step size: no chain's step is tiny next to others'
        return stuck
    # contiguous: torch 2.13's median(dim=) of an expanded (stride-0) tensor on the CPU
    # returns uninitialized memory, which made restarts random
    eps = step_size.expand(lp.shape).contiguous()
    tiny = (eps < 1e-3 * eps.median(dim=0, keepdim=True).values) & below_median & ~travelling
    return stuck | tiny


def _donors(stuck: Tensor, generator: torch.Generator | None) -> Tensor:
    """For each chain, a random healthy chain of the same batch column (itself if healthy)."""
    n = stuck.shape[0]
    flat = stuck.reshape(n, -1)
    healthy_count = (~flat).sum(0)  # per column
    order = torch.argsort(flat.to(torch.int8), dim=0, stable=True)  # healthy indices first
    u = torch.rand(flat.shape, generator=generator, device=flat.device, dtype=torch.float64)
    rank = (u * healthy_count.clamp(min=1)).long().clamp(max=n - 1)
    donor = torch.gather(order, 0, rank)
    own = torch.arange(n, device=flat.device).unsqueeze(1).expand_as(flat)
    donor = torch.where(flat & (healthy_count > 0), donor, own)
    return donor.reshape(stuck.shape)


def _take(t: Tensor, donor: Tensor) -> Tensor:
    """``t`` (shape ``chain_shape + rest``) with chain ``i`` replaced by chain ``donor[i]``."""
    n = donor.shape[0]
    flat_donor = donor.reshape(n, -1)
    cols = flat_donor.shape[1]
    rest = t.shape[donor.dim() :]
    flat = t.reshape(n, cols, *rest)
    picked = flat[flat_donor, torch.arange(cols, device=t.device).unsqueeze(0).expand(n, cols)]
    return picked.reshape(t.shape)


def estimate_inv_mass(rows: Tensor, dense: bool) -> Tensor:
    """Inverse mass matrix from draws ``rows`` of shape ``(n, D)``.

    Dense: the sample covariance shrunk towards its diagonal with weight
    :math:`(D + 5)/(n + D + 5)`; diagonal: the sample variances. Variances are floored at the
    dtype's machine epsilon times the largest, so a coordinate that did not move cannot make the
    metric singular. Unlike Stan's absolute :math:`10^{-3}` regularization this keeps
    posteriors with scales of :math:`10^{-3}` intact.
    """
    n, size = rows.shape
    mean = rows.mean(0)
    centred = rows - mean
    var = centred.square().sum(0) / max(n - 1, 1)
    floor = torch.finfo(var.dtype).eps * float(var.max().clamp(min=1e-300)) + 1e-300
    var = var.clamp(min=floor)
    if not dense:
        return var
    cov = centred.T @ centred / max(n - 1, 1)
    weight = n / (n + size + 5.0)
    shrunk = weight * cov + (1 - weight) * torch.diag(var)
    shrunk = shrunk + torch.diag(var) * 1e-8
    return 0.5 * (shrunk + shrunk.T)


class _Snapshots:
    """Positions of all chains over a slow window, thinned to a memory budget.

    Positions are kept as ``(num_chains, batch, D)``; each batch element is centred on its own
    mean, so a batched target (an ``EnergyDistribution`` with a ``batch_shape``, whose elements
    may sit far apart) gets the pooled *within-element* covariance as its one shared metric.
    """

    def __init__(self, window: int, chain_shape: torch.Size, size: int) -> None:
        self.chains, self.batch = chain_shape[0], max(1, chain_shape[1:].numel())
        total = chain_shape.numel()
        self.stride = max(1, math.ceil(window * total * size / _SNAPSHOT_BUDGET))
        self.capacity = max(1, math.ceil(window / self.stride))
        # one preallocated block, a row copied in per snapshot: keeping each snapshot's own
        # tensor alive slowed every warmup transition (see ``run._Recorder``)
        self.block: Tensor | None = None
        self.rows: tuple[Tensor, ...] = ()  # the block's rows as views (one dispatch less)
        self.used = 0
        self.count = 0

    def add(self, position: Tensor) -> None:
        if self.count % self.stride == 0:
            if self.block is None:
                self.block = position.new_empty(
                    (self.capacity, self.chains, self.batch, position[0].numel() // self.batch)
                )
                self.rows = self.block.view(self.capacity, *position.shape).unbind(0)
            elif self.used == self.block.shape[0]:  # more snapshots than planned: grow
                self.block = torch.cat([self.block, torch.empty_like(self.block)])
                self.rows = self.block.view(self.block.shape[0], *position.shape).unbind(0)
            self.rows[self.used].copy_(position)
            self.used += 1
        self.count += 1

    def estimate(self, include: Tensor, dense: bool) -> Tensor | None:
        if not self.used:
            return None
        stack = self.block[: self.used]  # (snapshots, chains, batch, D)
        mask = include.reshape(self.chains, self.batch).all(1)
        if int(mask.sum()) >= 2:
            stack = stack[:, mask]
        centred = stack - stack.mean(dim=(0, 1), keepdim=True)
        rows = centred.reshape(-1, stack.shape[-1])
        if rows.shape[0] < 4:
            return None
        return estimate_inv_mass(rows, dense and rows.shape[0] >= 2 * rows.shape[1])


def _curvature_metric(
    energy_fn: EnergyFn, state: State, include: Tensor, metric: Metric, estimate: Tensor
) -> Tensor:
    """The window's dense ``estimate`` or the Laplace metric (:func:`curvature.choose_metric`),
    judged at the healthy chains' current positions."""
    if int(include.sum()) < 2:
        return estimate
    event_shape = metric.event_shape
    flat = state.position.reshape(state.position.shape[0], -1)[include]

    def flat_energy(z: Tensor) -> Tensor:
        return energy_fn(z.reshape(z.shape[:1] + event_shape))

    return choose_metric(flat_energy, flat, estimate)


def frozen_in_window(rate: Tensor, restarted: Tensor) -> bool:
    """Whether a slow window shows chains frozen by a step too large for where they are.

    ``rate`` is each chain's mean acceptance over the window. True when a chain that was not
    restarted during it accepted under :data:`~pyro_ebm.infer.convergence.FROZEN_ACCEPT` while
    the median chain accepted at least 0.3: the shared step suits most of the posterior but
    not every region of it, which turns on HMC's automatic step-size jitter.
    """
    kept = rate[~restarted]
    if kept.numel() < 2:
        return False
    return bool((kept < FROZEN_ACCEPT).any()) and float(kept.median()) >= 0.3


def run_warmup(
    kernel,
    energy_fn: EnergyFn,
    state: State,
    step_size: Tensor,
    metric: Metric,
    generator: torch.Generator | None,
    event_dim: int,
    num_steps: int,
    *,
    restart: bool = True,
    progress: Callable[[int, Info, Tensor, Tensor], None] | None = None,
    step: Callable | None = None,
) -> WarmupResult:
    """Warm ``state`` up for ``num_steps`` transitions (see the module docstring).

    ``step_size`` is per chain (shape ``chain_shape``). ``progress(i, info, divergences,
    restarts)`` is called after every transition. ``step`` replaces the warmup kernel's
    ``step`` (the runner passes the compiled transition with ``compile=True``).
    """
    chain_shape = state.energy.shape
    size = metric.size
    warm = kernel.warmup_kernel
    step = warm.step if step is None else step
    target = warm.target_accept_prob
    chees = None
    length = kernel.trajectory
    if kernel.adapts_trajectory:
        length = _INITIAL_TRAJECTORY
        chees = ChEES(length)
    dense = kernel.dense_mass if kernel.dense_mass is not None else size <= DENSE_MAX_DIM
    # diffusive kernels get the Laplace metric where it preconditions far better (curvature.py)
    curvature = bool(getattr(kernel, "curvature_metric", False)) and len(chain_shape) == 1
    ends = warmup_windows(num_steps) if kernel.adapt_mass_matrix else []
    init_end = int(0.15 * num_steps)
    starts = ([init_end] + [e + 1 for e in ends[:-1]]) if ends else []
    terminal = (
        (ends[-1] + 1) if ends else num_steps - max(int(0.1 * num_steps), min(50, num_steps // 4))
    )
    check_every = max(5, num_steps // 20)
    settle = (terminal + num_steps) // 2  # dual averaging's iterates averaged from here
    log_eps_sum, log_eps_n = 0.0, 0
    restarts = torch.zeros(chain_shape, dtype=torch.long, device=state.energy.device)
    divergences = torch.zeros_like(restarts)
    # one running total of each chain's acceptance; a restart check and a slow window read
    # their means as differences from the total at their start (one addition per step)
    accept_total = torch.zeros_like(state.energy)
    steps_done = 0
    check_total, check_at = accept_total, 0
    eps = step_size
    dual: DualAveraging | None = None
    snaps: _Snapshots | None = None
    restarted_in_window = torch.zeros(chain_shape, dtype=torch.bool, device=restarts.device)
    metric_estimated = not kernel.adapt_mass_matrix
    jitter_on = False  # HMC's automatic step-size jitter (see ``frozen_in_window``)
    window_total, window_at = accept_total, 0
    windows_seen = 0

    def search(start: Tensor) -> Tensor:  # a shared step size from the chains where they are
        accept_at = probe_acceptance(warm, energy_fn, state, metric, generator, event_dim)
        return search_step_size(accept_at, target, start)

    last_lp = -state.energy
    checked_at = -1

    def do_restarts(i: int) -> None:
        nonlocal state, eps, check_total, check_at, last_lp, checked_at
        if checked_at == i:
            return
        checked_at = i
        mean_accept = (accept_total - check_total) / max(steps_done - check_at, 1)
        stuck = find_stuck_chains(-state.energy, mean_accept, eps, size, last_lp)
        check_total, check_at = accept_total, steps_done
        last_lp = -state.energy
        if not restart or not bool(stuck.any()) or bool(stuck.all()):
            return
        donor = _donors(stuck, generator)
        state = State(
            _take(state.position, donor),
            _take(state.energy, donor),
            None if state.grad is None else _take(state.grad, donor),
        )
        if eps.dim():
            eps = _take(eps, donor)
        restarts.add_(stuck.long())
        restarted_in_window.logical_or_(stuck)
        last_lp = -state.energy

    for i in range(num_steps):
        early = not metric_estimated
        if chees is not None:
            length = chees.length
        u = chees.jitter() if chees is not None else 1.0
        jitter = kernel.resolved_jitter(jitter_on)
        median_eps = float(eps.median()) if length is not None else math.nan
        kw = kernel.tuning(length, median_eps, fraction=u, early=early, jitter=jitter)
        start = state
        state, info = step(energy_fn, state, eps, metric, generator, event_dim, **kw)
        acceptance = torch.nan_to_num(info.acceptance_rate, nan=0.0)
        accept_total = accept_total + acceptance
        steps_done += 1
        divergences.add_(info.diverging)
        if kernel.adapt_step_size:
            if i < init_end:  # per chain, no memory: each chain follows its own geometry
                eps = (eps * torch.exp(_EARLY_GAIN * (acceptance - target))).clamp(1e-20, 1e10)
            elif dual is not None:
                eps = dual.update(acceptance)
                if i >= settle:
                    log_eps_sum = log_eps_sum + eps.log()
                    log_eps_n += 1
        if chees is not None and i >= init_end and info.momentum is not None:
            used = info.integration_step  # the jittered step of each chain
            if used is None:
                used = eps if eps.dim() else eps.expand(chain_shape)
            time = kw["num_steps"] * used
            chees.max_length = kernel.max_num_steps * float(eps.median())
            chees.update(start, info, metric, time)
            if i >= terminal:
                chees.accumulate()
        if snaps is not None:
            snaps.add(state.position)
        if i in ends:  # a slow window ends: restarts, then the metric from healthy chains
            windows_seen += 1
            if windows_seen >= 2 and not jitter_on:
                rate = (accept_total - window_total) / max(steps_done - window_at, 1)
                jitter_on = frozen_in_window(rate, restarted_in_window)
            do_restarts(i)
            include = ~restarted_in_window & ~find_stuck_chains(
                -state.energy, torch.ones_like(state.energy), eps, size
            )
            estimate = snaps.estimate(include, dense) if snaps is not None else None
            snaps = None
            if estimate is not None and estimate.dim() == 2 and curvature:
                estimate = _curvature_metric(energy_fn, state, include, metric, estimate)
            if estimate is not None:
                new = estimate if estimate.dim() == 2 else estimate.reshape(metric.event_shape)
                ratio = largest_scale(metric, new)
                metric.set(new)
                metric_estimated = True
                if kernel.adapt_step_size:
                    start_eps = torch.ones((), dtype=eps.dtype, device=eps.device)
                    eps = search(start_eps)
                    dual = DualAveraging(eps, target, gamma=DAMPED_GAMMA, mu_scale=1.0)
                if chees is not None:  # the longest direction shrank by sqrt(ratio)
                    chees.restart(min(max(chees.length / math.sqrt(ratio), 0.5), 1e3))
        elif (i + 1) % check_every == 0 and i + 1 < terminal:
            do_restarts(i)
        if i + 1 == init_end or (i + 1 > init_end and dual is None):
            # the end of the initial interval: restart the lost, then one shared step size
            if i + 1 < terminal:
                do_restarts(i)
            if kernel.adapt_step_size:
                eps = search(eps.median().clone())
                dual = DualAveraging(eps, target, gamma=DAMPED_GAMMA, mu_scale=1.0)
        if (i + 1) in starts:  # a slow window starts at the next iteration
            window_end = next(e for e in ends if e > i)
            snaps = _Snapshots(window_end - i, chain_shape, size)
            restarted_in_window.zero_()
            window_total, window_at = accept_total, steps_done
        if progress is not None:
            progress(i, info, divergences, restarts)
    if log_eps_n:
        eps = (log_eps_sum / log_eps_n).exp()
    elif dual is not None:
        eps = dual.final_step_size()
    if chees is not None:
        length = chees.final_length()
    jitter = kernel.resolved_jitter(jitter_on)
    return WarmupResult(state, eps, length, restarts, divergences, jitter)
