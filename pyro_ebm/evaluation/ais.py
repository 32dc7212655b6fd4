"""Log-partition functions in any dimension by annealed importance sampling (Neal 2001).

References
----------
- R. M. Neal (2001), "Annealed importance sampling", Statistics and Computing 11, 125-139.
- R. B. Grosse, Z. Ghahramani and R. P. Adams (2015), "Sandwiching the marginal likelihood
  using bidirectional Monte Carlo", arXiv:1511.02543 (the sigmoid schedule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from .._targets import EnergyFn, resolve_energy
from .._validation import check_choice, check_int, check_positive_float
from ..infer import hmc, mala
from ..infer.adaptation import find_initial_step_size
from ..infer.base import State, module_dtype_device
from ..infer.metric import Metric
from ..progress import progress
from ._annealed import AnnealedEnergy

__all__ = ["AISResult", "ais_log_partition"]

_AIS_KERNELS = {"mala": mala, "hmc": hmc}
_SCHEDULES = ("sigmoid", "geometric", "linear")
_SIGMOID_SHARPNESS = 4.0  # Grosse et al. (2015) use delta = 4
_GEOMETRIC_MIN_BETA = 1e-4


@dataclass(frozen=True)
class AISResult:
    """The outcome of :func:`ais_log_partition`.

    Attributes
    ----------
    log_Z : Tensor
        The estimate :math:`\\log \\hat Z`, a 0-d float64 tensor.
    stderr : float
        Delta-method standard error of ``log_Z``.
    log_weights : Tensor
        Log importance weights of the chains, shape ``(num_chains,)``, float64.
    ess : float
        Effective sample size :math:`(\\sum_i w_i)^2 / \\sum_i w_i^2` of the weights.
    acceptance_rate : float
        Mean Metropolis-Hastings acceptance probability over all transitions and live chains.
    samples : Tensor
        The chains' final positions, shape ``(num_chains, *event_shape)``; with
        ``log_weights`` they are importance-weighted draws from :math:`e^{-E}/Z`.
    betas : Tensor
        The inverse temperatures :math:`0 = \\beta_0 < \\dots < \\beta_K = 1`, float64.
    step_sizes : Tensor
        The step size used at each transition, shape ``((K - 1) * num_mcmc_steps,)``.
    """

    log_Z: Tensor
    stderr: float
    log_weights: Tensor
    ess: float
    acceptance_rate: float
    samples: Tensor
    betas: Tensor
    step_sizes: Tensor


def _schedule(kind: str, num_temperatures: int) -> Tensor:
    """Inverse temperatures ``beta_0 = 0 < ... < beta_K = 1`` (float64, length K + 1)."""
    k = num_temperatures
    t = torch.arange(k + 1, dtype=torch.float64)
    if kind == "linear":
        betas = t / k
    elif kind == "sigmoid":
        s = torch.sigmoid(_SIGMOID_SHARPNESS * (2 * t / k - 1))
        betas = (s - s[0]) / (s[-1] - s[0])
    else:  # geometric
        exponent = (k - t[1:]) / max(k - 1, 1)
        betas = torch.cat([t.new_zeros(1), _GEOMETRIC_MIN_BETA**exponent])
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def _sample_base(
    base: Distribution, n: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``n`` draws from ``base``; seeded from ``generator`` without touching global RNG state."""
    if generator is None:
        return base.sample((n,))
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        return base.sample((n,))


def _mean_acceptance(acceptance: Tensor, live: Tensor) -> float:
    if not bool(live.any()):
        return 0.0
    return float(torch.nan_to_num(acceptance[live], nan=0.0).mean())


def ais_log_partition(
    energy: Any,
    *,
    event_shape: Sequence[int] | None = None,
    base: Distribution | None = None,
    num_temperatures: int = 200,
    num_chains: int = 256,
    kernel: str = "mala",
    num_mcmc_steps: int = 1,
    step_size: float | None = None,
    adapt_step_size: bool = True,
    inv_mass: Tensor | None = None,
    kernel_kwargs: dict[str, Any] | None = None,
    seed: int | torch.Generator | None = None,
    schedule: str = "sigmoid",
    progress_bar: bool = False,
) -> AISResult:
    r"""Log-partition function by annealed importance sampling (Neal 2001).

    With a normalized base density :math:`p_0` and inverse temperatures
    :math:`0 = \beta_0 < \beta_1 < \dots < \beta_K = 1`, the intermediate densities

    .. math::

        f_k(x) = p_0(x)^{1 - \beta_k}\, e^{-\beta_k E(x)}, \qquad
        E_{\beta_k}(x) = -(1 - \beta_k)\log p_0(x) + \beta_k E(x),

    run from :math:`f_0 = p_0` (:math:`Z_0 = 1`) to :math:`f_K = e^{-E}`. Each chain starts at
    :math:`x_0 \sim p_0`, moves by transitions :math:`T_k` that leave :math:`f_k` invariant
    (``num_mcmc_steps`` MALA or HMC steps on :math:`E_{\beta_k}`), and carries the log weight

    .. math::

        \log w = \sum_{k=1}^{K} \big[\log f_k(x_{k-1}) - \log f_{k-1}(x_{k-1})\big]
               = \sum_{k=1}^{K} (\beta_k - \beta_{k-1})\big(-E(x_{k-1}) - \log p_0(x_{k-1})\big),

    where :math:`x_{k-1}` is the state after :math:`T_{k-1}` (no transition is needed at
    :math:`\beta_K`). Then :math:`\mathbb E[w] = Z`, and with :math:`N` chains

    .. math::

        \log \hat Z = \operatorname{logsumexp}_i \log w_i - \log N, \qquad
        \operatorname{se}(\log \hat Z) \approx \frac{\operatorname{sd}(w)}{\sqrt N\,\bar w}
        \quad\text{(delta method)}.

    :math:`\hat Z` is unbiased, so :math:`\log \hat Z` is biased low (Jensen) when the weights
    are uneven; a small ``ess`` relative to ``num_chains`` warns that the standard error is
    itself unreliable and more temperatures are needed.

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        The energy :math:`E`, mapping ``(n, *event_shape)`` to ``(n,)``.
    event_shape : sequence of int, optional
        Defaults to the energy's ``event_shape`` attribute, else to ``base.event_shape``.
    base : torch.distributions.Distribution, optional
        A normalized base :math:`p_0` with ``sample``, ``log_prob`` and this ``event_shape``
        (and an empty ``batch_shape``), e.g. ``Independent(Normal(loc, scale), 1)`` fitted to
        data. Its ``log_prob`` must be differentiable. Default: a standard normal.
    num_temperatures : int, default 200
        :math:`K \ge 1`. ``K = 1`` is plain importance sampling from the base.
    num_chains : int, default 256
        :math:`N \ge 2` independent chains, run as one batch.
    kernel : {"mala", "hmc"}
        The transition, built from :func:`pyro_ebm.infer.mala.step` or
        :func:`pyro_ebm.infer.hmc.step` on the annealed energy.
    num_mcmc_steps : int, default 1
        Transitions per intermediate temperature.
    step_size : float, optional
        Initial step size; by default found at :math:`\beta_1` by doubling or halving until the
        mean acceptance crosses the kernel's target (0.574 for MALA, 0.65 for HMC).
    adapt_step_size : bool, default True
        After every transition, :math:`\log\epsilon \mathrel{+}= \bar a - a^\star` with
        :math:`\bar a` the mean acceptance of the live chains and :math:`a^\star` the target.
        Each transition leaves its :math:`f_k` invariant whatever its step size, so the weights
        stay valid; the step size depends on the past only through an average over all
        chains (a dependence of order :math:`1/N` on any one chain). Pass ``False`` with a
        ``step_size`` for a fixed step and the textbook estimator.
    inv_mass : Tensor, optional
        Inverse mass matrix (diagonal of shape ``event_shape`` or dense ``(D, D)``) shared by
        all temperatures; identity by default.
    kernel_kwargs : dict, optional
        Passed to the step function, e.g. ``{"num_steps": 5}`` leapfrog steps for HMC.
    seed : int or torch.Generator, optional
        Makes the run reproducible without touching the global random state (a generator must
        live on the energy's device); ``None`` uses torch's global generator.
    schedule : {"sigmoid", "geometric", "linear"}
        Spacing of :math:`\beta_k`: ``"sigmoid"`` (Grosse et al. 2015, dense at both ends,
        :math:`\tilde\beta_k = \sigma(4(2k/K - 1))` rescaled to [0, 1]), ``"geometric"``
        (:math:`\beta_k = 10^{-4(K - k)/(K - 1)}`, dense near 0) or ``"linear"``.
    progress_bar : bool, default False
        Show progress over the temperatures (:func:`pyro_ebm.progress.progress`).

    Returns
    -------
    AISResult
        ``log_Z``, ``stderr``, ``log_weights``, ``ess``, ``acceptance_rate``, ``samples``,
        ``betas`` and ``step_sizes``.

    Raises
    ------
    ValueError
        For invalid arguments, an unknown event shape, a base whose shape does not match, or
        an energy that returns the wrong shape.

    Notes
    -----
    Energies are evaluated in the dtype of the energy's parameters (else of the base's
    samples, else torch's default dtype); weights accumulate in float64. A proposal whose
    energy or gradient is not finite is rejected by the Metropolis-Hastings step; a chain
    whose starting point has infinite (or NaN) energy gets weight zero. The cost is
    :math:`1 + (K - 1)\,\times` ``num_mcmc_steps`` batched energy+gradient evaluations for
    MALA (each call caches the energy, the base log density and both gradients).

    References
    ----------
    - R. M. Neal (2001), "Annealed importance sampling", Statistics and Computing 11, 125-139.
    - R. B. Grosse, Z. Ghahramani and R. P. Adams (2015), "Sandwiching the marginal likelihood
      using bidirectional Monte Carlo", arXiv:1511.02543.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> energy = GaussianEnergy(torch.ones(2), 0.25 * torch.eye(2), dtype=torch.float64)
    >>> result = ais_log_partition(energy, num_temperatures=50, num_chains=128, seed=0)
    >>> truth = energy.log_partition()  # log(2 pi) + log(0.25)
    >>> bool(abs(result.log_Z - truth) < 4 * result.stderr + 1e-3)
    True
    >>> result.log_weights.shape
    torch.Size([128])
    """
    fn, own_shape = resolve_energy(energy)
    check_choice("kernel", kernel, tuple(_AIS_KERNELS))
    check_choice("schedule", schedule, _SCHEDULES)
    num_temperatures = check_int("num_temperatures", num_temperatures, 1)
    num_chains = check_int("num_chains", num_chains, 2)
    num_mcmc_steps = check_int("num_mcmc_steps", num_mcmc_steps, 1)
    if step_size is not None:
        step_size = check_positive_float("step_size", step_size)
    if not isinstance(adapt_step_size, bool):
        raise ValueError(f"adapt_step_size must be True or False; got {adapt_step_size!r}")
    if base is not None and not isinstance(base, Distribution):
        raise ValueError(
            f"base must be a torch.distributions.Distribution; got {type(base).__name__}"
        )
    if event_shape is None:
        event_shape = own_shape if own_shape is not None else getattr(base, "event_shape", None)
    if event_shape is None:
        raise ValueError(
            "event_shape is unknown: pass event_shape=, a base distribution, or give the energy "
            "an `event_shape` attribute"
        )
    event_shape = torch.Size(event_shape)

    found = module_dtype_device(fn)
    device = found[1] if found is not None else torch.device("cpu")
    if isinstance(seed, torch.Generator):
        generator: torch.Generator | None = seed
    elif seed is None:
        generator = None
    else:
        generator = torch.Generator(device=device).manual_seed(check_int("seed", seed, 0))

    if base is None:
        dtype = found[0] if found is not None else torch.get_default_dtype()
        zeros = torch.zeros(event_shape, dtype=dtype, device=device)
        base = Normal(zeros, torch.ones_like(zeros), validate_args=False)
        if event_shape:
            base = Independent(base, len(event_shape), validate_args=False)
    elif tuple(base.event_shape) != tuple(event_shape) or tuple(base.batch_shape) != ():
        raise ValueError(
            f"base must have event_shape {tuple(event_shape)} and batch_shape (); got "
            f"event_shape {tuple(base.event_shape)} and batch_shape {tuple(base.batch_shape)}"
        )
    x = _sample_base(base, num_chains, generator, device)
    dtype = found[0] if found is not None else x.dtype
    size = event_shape.numel()
    x = x.detach().to(device=device, dtype=dtype).reshape(num_chains, size)

    step_module = _AIS_KERNELS[kernel]
    target_accept = step_module.TARGET_ACCEPT
    kwargs = dict(kernel_kwargs or {})
    metric = Metric(torch.Size([size]), _flat_inv_mass(inv_mass, event_shape, x))
    annealed = AnnealedEnergy(fn, base, event_shape)
    betas = _schedule(schedule, num_temperatures)

    with torch.no_grad():
        parts = annealed.components(x)
    log_w = torch.zeros(num_chains, dtype=torch.float64, device=device)
    eps = None if step_size is None else torch.tensor(float(step_size), dtype=dtype, device=device)
    step_sizes: list[float] = []
    acceptances: list[float] = []
    bar = progress(desc="AIS", total=num_temperatures, enabled=progress_bar)
    for k in range(1, num_temperatures + 1):
        bar.update()
        # log f_k(x) - log f_{k-1}(x) = (beta_k - beta_{k-1}) (-E(x) - log p0(x))
        increment = (-parts.e - parts.l0).to(torch.float64)
        increment = torch.where(torch.isnan(increment), -math.inf, increment)  # NaN: zero density
        log_w = log_w + (betas[k] - betas[k - 1]).item() * increment
        if k == num_temperatures:
            break
        beta = betas[k].item()
        annealed.beta = beta
        state = parts.state(x, beta)
        if eps is None:
            eps = _initial_step_size(step_module, annealed, state, metric, generator, kwargs)
        for _ in range(num_mcmc_steps):
            annealed.evaluations.clear()
            new, info = step_module.step(annealed, state, eps, metric, generator, 1, **kwargs)
            parts = annealed.parts_at(new.position, info.is_accepted, parts)
            x = new.position
            state = parts.state(x, beta)
            rate = _mean_acceptance(info.acceptance_rate, torch.isfinite(state.energy))
            acceptances.append(rate)
            step_sizes.append(float(eps))
            if adapt_step_size:
                eps = eps * math.exp(rate - target_accept)
    bar.close()

    log_z = torch.logsumexp(log_w, dim=0) - math.log(num_chains)
    return AISResult(
        log_Z=log_z,
        stderr=_delta_method_stderr(log_w),
        log_weights=log_w,
        ess=_weights_ess(log_w),
        acceptance_rate=sum(acceptances) / len(acceptances) if acceptances else math.nan,
        samples=x.reshape(num_chains, *event_shape),
        betas=betas,
        step_sizes=torch.tensor(step_sizes, dtype=torch.float64),
    )


def _flat_inv_mass(inv_mass: Tensor | None, event_shape: torch.Size, x: Tensor) -> Tensor | None:
    """An inverse mass matrix for flat chains: a diagonal of ``event_shape`` is flattened."""
    if inv_mass is None:
        return None
    inv_mass = torch.as_tensor(inv_mass).to(x)
    if inv_mass.shape == event_shape:
        return inv_mass.reshape(-1)
    return inv_mass  # Metric checks the dense shape (D, D)


def _initial_step_size(
    step_module: Any,
    energy_fn: EnergyFn,
    state: State,
    metric: Metric,
    generator: torch.Generator | None,
    kwargs: dict[str, Any],
) -> Tensor:
    """A shared step size where the mean acceptance of the live chains crosses the target.

    The engine's one doubling search; proposals are evaluated, never taken.
    """
    target = step_module.TARGET_ACCEPT
    live = torch.isfinite(state.energy)
    eps = torch.tensor(1.0, dtype=state.energy.dtype, device=state.energy.device)

    def accept(e: Tensor) -> float:
        _, info = step_module.step(energy_fn, state, e, metric, generator, 1, **kwargs)
        if isinstance(energy_fn, AnnealedEnergy):
            energy_fn.evaluations.clear()  # trial proposals, never taken
        return _mean_acceptance(info.acceptance_rate, live)

    return find_initial_step_size(accept, target, eps, max_rounds=30)


def _delta_method_stderr(log_w: Tensor) -> float:
    """``sd(w) / (sqrt(N) mean(w))`` from log weights, shifted by their maximum."""
    top = log_w.max()
    if not bool(torch.isfinite(top)):
        return math.nan
    w = torch.exp(log_w - top)
    return float(w.std(correction=1) / (math.sqrt(log_w.numel()) * w.mean()))


def _weights_ess(log_w: Tensor) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``."""
    if not bool(torch.isfinite(log_w.max())):
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))
