"""Scoring energy-based models: partition functions, log-likelihoods and two-sample distances.

An energy defines :math:`p(x) = e^{-E(x)} / Z` with an unknown
:math:`Z = \\int e^{-E(x)}\\,dx`. This module estimates :math:`\\log Z` by quadrature on a box
(:func:`grid_log_partition`, for 1-d and 2-d energies) or by annealed importance sampling
(:func:`ais_log_partition`, any dimension), turns it into log-likelihoods
(:func:`log_likelihood`, :func:`test_nll`, :func:`kl_to_truth`), and compares samples with the
maximum mean discrepancy (:func:`mmd`).

Every function that takes an energy accepts a callable or ``nn.Module`` mapping
``batch + event_shape`` to ``batch``, or any object with a callable ``energy`` attribute and an
``event_shape`` (such as :class:`~pyro_ebm.EnergyDistribution`).

References
----------
- R. M. Neal (2001), "Annealed importance sampling", Statistics and Computing 11, 125-139.
- R. B. Grosse, Z. Ghahramani and R. P. Adams (2015), "Sandwiching the marginal likelihood
  using bidirectional Monte Carlo", arXiv:1511.02543 (the sigmoid schedule).
- A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schoelkopf and A. Smola (2012), "A kernel
  two-sample test", JMLR 13, 723-773.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal
from tqdm.auto import tqdm

from . import datasets
from .infer import hmc, mala
from .infer.base import State, module_dtype_device
from .infer.metric import Metric

__all__ = [
    "AISResult",
    "ais_log_partition",
    "grid_log_partition",
    "kl_to_truth",
    "log_likelihood",
    "mmd",
    "test_nll",
]

EnergyFn = Callable[[Tensor], Tensor]
Bounds = Sequence[float] | Sequence[Sequence[float]] | Tensor

_AIS_KERNELS = {"mala": mala, "hmc": hmc}
_SCHEDULES = ("sigmoid", "geometric", "linear")
_SIGMOID_SHARPNESS = 4.0  # Grosse et al. (2015) use delta = 4
_GEOMETRIC_MIN_BETA = 1e-4


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _resolve_energy(energy: Any) -> tuple[EnergyFn, torch.Size | None]:
    """The energy callable and its event shape (``None`` when it does not say)."""
    inner = getattr(energy, "energy", None)
    if (
        not isinstance(energy, torch.nn.Module)
        and callable(inner)
        and hasattr(energy, "event_shape")
    ):
        return inner, torch.Size(energy.event_shape)  # an EnergyDistribution-like object
    if callable(energy):
        shape = getattr(energy, "event_shape", None)
        return energy, None if shape is None else torch.Size(shape)
    raise ValueError(
        "energy must be a callable (or nn.Module) mapping batch + event_shape to batch, or an "
        f"object with a callable `energy` and an `event_shape`; got {type(energy).__name__}"
    )


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_shape(out: Tensor, expected: tuple[int, ...], what: str) -> None:
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{what} returned {got}; expected shape {expected}")


# --------------------------------------------------------------------------------------------
# quadrature
# --------------------------------------------------------------------------------------------


def _quadrature_weights(n: int, lo: float, hi: float, rule: str) -> tuple[Tensor, Tensor]:
    """Nodes and weights (float64) of a composite rule with ``n`` equally spaced nodes."""
    nodes = torch.linspace(lo, hi, n, dtype=torch.float64)
    h = (hi - lo) / (n - 1)
    weights = torch.full((n,), h, dtype=torch.float64)
    if rule == "trapezoid" or n == 2:
        weights[0] = weights[-1] = h / 2
        return nodes, weights

    def simpson(m: int) -> Tensor:  # Simpson's 1/3 rule on m (odd) nodes
        w = torch.zeros(m, dtype=torch.float64)
        if m > 1:
            w[1:-1:2], w[2:-1:2] = 4.0, 2.0
            w[0] = w[-1] = 1.0
        return w * (h / 3)

    if n % 2 == 1:
        return nodes, simpson(n)
    # An even number of nodes: Simpson's 1/3 rule on the first n - 3 nodes and the 3/8 rule on
    # the last four, so the whole rule keeps its O(h^4) error.
    weights = torch.zeros(n, dtype=torch.float64)
    weights[: n - 3] += simpson(n - 3)
    weights[n - 4 :] += torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) * (3 * h / 8)
    return nodes, weights


def _parse_bounds(bounds: Bounds, dim: int) -> list[tuple[float, float]]:
    try:
        b = torch.as_tensor(bounds, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"bounds must be (lo, hi) or one (lo, hi) pair per axis; got {bounds!r}"
        ) from err
    if b.shape == (2,):
        b = b.expand(dim, 2)
    if b.shape != (dim, 2):
        raise ValueError(
            f"bounds must be (lo, hi) or {dim} (lo, hi) pairs for a {dim}-d energy; got {bounds!r}"
        )
    if not bool(torch.isfinite(b).all()) or not bool((b[:, 0] < b[:, 1]).all()):
        raise ValueError(f"bounds must be finite with lo < hi on every axis; got {bounds!r}")
    return [(float(lo), float(hi)) for lo, hi in b.tolist()]


def grid_log_partition(
    energy: Any,
    bounds: Bounds,
    resolution: int | Sequence[int] = 501,
    *,
    rule: str = "simpson",
    batch_size: int = 65536,
    dim: int | None = None,
) -> Tensor:
    r"""Log-partition function of a 1-d or 2-d energy by quadrature on a box.

    .. math::

        \log Z_B = \log \int_B e^{-E(x)}\,dx
        \approx \operatorname{logsumexp}_i \big(\log w_i - E(x_i)\big),

    with the nodes :math:`x_i` of a tensor-product grid over the box :math:`B` and the
    product weights :math:`w_i` of the composite Simpson rule (the 3/8 rule closes an even
    number of nodes; error :math:`O(h^4)` for smooth integrands, and exponentially small when
    the integrand vanishes at the edges) or the trapezoid rule. The sum is formed as a
    log-sum-exp in float64, one chunk of ``batch_size`` nodes at a time, so neither large
    energies nor large grids overflow. Mass outside ``bounds`` is not counted.

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        Maps points of shape ``(n, *event_shape)`` to energies of shape ``(n,)``. Its event
        shape (``()``, ``(1,)``, ``(2,)`` or any shape with 1 or 2 elements) is read from its
        ``event_shape`` attribute; without one, points have shape ``(n, dim)``. Batched
        energies (a ``batch_shape``) are not supported.
    bounds : (lo, hi) or ((xlo, xhi), (ylo, yhi))
        The box. A single pair is used for every axis.
    resolution : int or sequence of int, default 501
        Nodes per axis (at least 2), one int for all axes or one per axis.
    rule : {"simpson", "trapezoid"}
        The composite quadrature rule (an axis with 2 nodes always uses the trapezoid).
    batch_size : int, default 65536
        Nodes evaluated per call of the energy (bounds memory).
    dim : int, optional
        1 or 2, for energies without an ``event_shape``; by default it is taken from
        ``bounds`` (a pair of pairs is 2-d, a single pair 1-d). For an energy with an
        ``event_shape`` it must agree with it.

    Returns
    -------
    Tensor
        :math:`\log Z_B` as a 0-d float64 tensor on the energy's device. Nodes are cast to the
        dtype of the energy's parameters (float64 for parameter-free callables); an energy of
        ``+inf`` contributes nothing and a NaN energy makes the result NaN.

    Raises
    ------
    ValueError
        For malformed ``bounds``, ``resolution < 2``, an unknown ``rule``, an energy that is
        not 1-d or 2-d, or one that returns the wrong shape.

    Examples
    --------
    >>> import math, torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> energy = GaussianEnergy(torch.zeros(2), torch.eye(2), dtype=torch.float64)
    >>> log_z = grid_log_partition(energy, (-8.0, 8.0), resolution=201)
    >>> abs(log_z.item() - math.log(2 * math.pi)) < 1e-8
    True
    >>> half_line = grid_log_partition(lambda x: 0.5 * x.square().sum(-1), (0, 10), dim=1)
    >>> round(half_line.exp().item(), 6)  # sqrt(pi / 2)
    1.253314
    """
    fn, event_shape = _resolve_energy(energy)
    if rule not in ("simpson", "trapezoid"):
        raise ValueError(f"rule must be 'simpson' or 'trapezoid'; got {rule!r}")
    batch_size = _check_int(batch_size, "batch_size", 1)
    if event_shape is None:
        if dim is None:
            try:
                nested = torch.as_tensor(bounds, dtype=torch.float64).dim() == 2
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(
                    f"bounds must be (lo, hi) or one (lo, hi) pair per axis; got {bounds!r}"
                ) from err
            dim = len(bounds) if nested else 1
        dim = _check_int(dim, "dim", 1)
        event_shape = torch.Size([dim])
    elif dim is not None and dim != event_shape.numel():
        raise ValueError(
            f"dim={dim!r} does not match the energy's event_shape {tuple(event_shape)}"
        )
    ndim = event_shape.numel()
    if ndim not in (1, 2):
        raise ValueError(
            "grid_log_partition integrates 1-d or 2-d energies; this one has event_shape "
            f"{tuple(event_shape)}: use ais_log_partition"
        )
    box = _parse_bounds(bounds, ndim)
    if isinstance(resolution, numbers.Integral):
        resolution = [resolution] * ndim
    if not isinstance(resolution, Sequence) or len(resolution) != ndim:
        raise ValueError(
            f"resolution must be an int or {ndim} ints (one per axis); got {resolution!r}"
        )
    sizes = [_check_int(r, "resolution", 2) for r in resolution]
    found = module_dtype_device(fn)
    dtype, device = found if found is not None else (torch.float64, torch.device("cpu"))

    axes = [_quadrature_weights(n, lo, hi, rule) for n, (lo, hi) in zip(sizes, box, strict=True)]
    nodes = [a[0].to(device) for a in axes]
    log_weights = [a[1].log().to(device) for a in axes]
    total = math.prod(sizes)
    chunks = []
    with torch.no_grad():
        for start in range(0, total, batch_size):
            index = torch.arange(start, min(start + batch_size, total), device=device)
            if ndim == 1:
                points, log_w = nodes[0][index][:, None], log_weights[0][index]
            else:
                i, j = index // sizes[1], index % sizes[1]
                points = torch.stack([nodes[0][i], nodes[1][j]], dim=-1)
                log_w = log_weights[0][i] + log_weights[1][j]
            points = points.to(dtype).reshape(len(index), *event_shape)
            out = fn(points)
            _check_shape(out, (len(index),), f"energy on {len(index)} grid points")
            chunks.append(torch.logsumexp(log_w - out.to(torch.float64), dim=0))
    return torch.logsumexp(torch.stack(chunks), dim=0)


# --------------------------------------------------------------------------------------------
# annealed importance sampling
# --------------------------------------------------------------------------------------------


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


def _grad_or_zeros(out: Tensor, x: Tensor) -> Tensor:
    if not out.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(out.sum(), x, retain_graph=True, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


@dataclass
class _Components:
    """Target energy ``e``, base log density ``l0`` and their gradients, for flat chains.

    ``e`` and ``l0`` have shape ``(N,)``; the gradients ``(N, D)``.
    """

    e: Tensor
    l0: Tensor
    ge: Tensor
    g0: Tensor

    def select(self, mask: Tensor, other: _Components) -> _Components:
        wide = mask[:, None]
        return _Components(
            torch.where(mask, other.e, self.e),
            torch.where(mask, other.l0, self.l0),
            torch.where(wide, other.ge, self.ge),
            torch.where(wide, other.g0, self.g0),
        )

    def state(self, x: Tensor, beta: float, sanitize: bool = True) -> State:
        """The cached state of the annealed energy at inverse temperature ``beta``.

        With ``sanitize``, a non-finite gradient becomes zero: a dead chain (infinite energy,
        zero weight) then proposes finite points, which it always rejects, instead of NaNs.
        """
        energy = -(1 - beta) * self.l0 + beta * self.e
        grad = -(1 - beta) * self.g0 + beta * self.ge
        if sanitize:
            grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))
        return State(x, energy, grad)


class _AnnealedEnergy:
    r""":math:`E_\beta(x) = -(1 - \beta)\log p_0(x) + \beta E(x)` on flat chains, remembering its
    last call.

    Chains are stored flat, shape ``(N, D)``, and reshaped to ``(N, *event_shape)`` for the
    energy and the base, so every event shape (scalars included) runs through the same
    vector-valued step functions. A call computes both parts and both gradients (the backward
    passes of the two disjoint graphs cost what one joint backward costs) and returns a
    surrogate whose value is :math:`E_\beta(x)` and whose gradient is
    :math:`\nabla E_\beta(x)`, so the step functions' own backward pass is trivial. The parts
    of the last call (the proposal, for MALA and HMC) let the next temperature start without
    another evaluation.
    """

    def __init__(self, energy: EnergyFn, base: Distribution, event_shape: torch.Size) -> None:
        self.energy, self.base, self.event_shape = energy, base, event_shape
        self.beta = 0.0
        self.last: tuple[Tensor, _Components] | None = None

    def components(self, x: Tensor) -> _Components:
        x = x.detach()
        n = x.shape[0]
        bad = ~torch.isfinite(x).all(-1)
        if bool(bad.any()):  # never hand non-finite points to the base (it may validate)
            x = torch.where(bad[:, None], torch.zeros_like(x), x)
        x = x.requires_grad_(True)
        with torch.enable_grad():
            points = x.reshape(n, *self.event_shape)
            e = self.energy(points)
            _check_shape(e, (n,), f"energy on points of shape {tuple(points.shape)}")
            l0 = self.base.log_prob(points)
            _check_shape(l0, (n,), f"base.log_prob on points of shape {tuple(points.shape)}")
            l0 = l0.to(x.dtype)
            ge, g0 = _grad_or_zeros(e, x), _grad_or_zeros(l0, x)
        nan = torch.full_like(l0, math.nan)
        e = torch.where(bad, nan, e.detach().to(x.dtype))
        return _Components(e, torch.where(bad, nan, l0.detach()), ge, g0)

    def __call__(self, x: Tensor) -> Tensor:
        parts = self.components(x)
        self.last = (x.detach(), parts)
        # a proposal keeps a non-finite gradient, so the Metropolis-Hastings step rejects it
        state = parts.state(x.detach(), self.beta, sanitize=False)
        # value E_beta(x), gradient grad E_beta(x)
        return state.energy + ((x - x.detach()) * state.grad).sum(-1)


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
        Show a tqdm bar over the temperatures.

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
    fn, own_shape = _resolve_energy(energy)
    if kernel not in _AIS_KERNELS:
        raise ValueError(f"kernel must be one of {sorted(_AIS_KERNELS)}; got {kernel!r}")
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {list(_SCHEDULES)}; got {schedule!r}")
    num_temperatures = _check_int(num_temperatures, "num_temperatures", 1)
    num_chains = _check_int(num_chains, "num_chains", 2)
    num_mcmc_steps = _check_int(num_mcmc_steps, "num_mcmc_steps", 1)
    if step_size is not None:
        if isinstance(step_size, Tensor) and step_size.numel() == 1:
            step_size = step_size.item()
        if not isinstance(step_size, numbers.Real) or not 0 < float(step_size) < math.inf:
            raise ValueError(f"step_size must be a positive finite number; got {step_size!r}")
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
        generator = torch.Generator(device=device).manual_seed(_check_int(seed, "seed", 0))

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
    annealed = _AnnealedEnergy(fn, base, event_shape)
    betas = _schedule(schedule, num_temperatures)

    with torch.no_grad():
        parts = annealed.components(x)
    log_w = torch.zeros(num_chains, dtype=torch.float64, device=device)
    eps = None if step_size is None else torch.tensor(float(step_size), dtype=dtype, device=device)
    step_sizes: list[float] = []
    acceptances: list[float] = []
    bar = tqdm(total=num_temperatures, desc="AIS", disable=not progress_bar)
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
            annealed.last = None
            new, info = step_module.step(annealed, state, eps, metric, generator, 1, **kwargs)
            accepted = info.is_accepted
            if bool(accepted.any()):
                parts = parts.select(accepted, _last_proposal(annealed, accepted, x, new))
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


def _last_proposal(
    annealed: _AnnealedEnergy, accepted: Tensor, current: Tensor, new: State
) -> _Components:
    """The parts of the proposal just evaluated, checked against the accepted positions."""
    if annealed.last is not None:
        position, parts = annealed.last
        if torch.equal(torch.where(accepted[:, None], position, current), new.position):
            return parts
    raise RuntimeError("internal error: the last energy call was not the accepted proposal")


def _initial_step_size(
    step_module: Any,
    energy_fn: EnergyFn,
    state: State,
    metric: Metric,
    generator: torch.Generator | None,
    kwargs: dict[str, Any],
) -> Tensor:
    """Double or halve a shared step size until the mean acceptance crosses the target.

    Proposals are evaluated, never taken, so the chains do not move.
    """
    target = step_module.TARGET_ACCEPT
    live = torch.isfinite(state.energy)
    eps = torch.tensor(1.0, dtype=state.energy.dtype, device=state.energy.device)

    def accept(e: Tensor) -> float:
        _, info = step_module.step(energy_fn, state, e, metric, generator, 1, **kwargs)
        return _mean_acceptance(info.acceptance_rate, live)

    direction = 1.0 if accept(eps) > target else -1.0
    for _ in range(30):
        trial = eps * 2.0**direction
        rate = accept(trial)
        if (rate < target) if direction > 0 else (rate > target):
            return eps if direction > 0 else trial
        eps = trial
    return eps


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


# --------------------------------------------------------------------------------------------
# likelihoods
# --------------------------------------------------------------------------------------------


def log_likelihood(
    energy: Any, data: Tensor, log_Z: Tensor | float, *, reduction: str = "mean"
) -> Tensor:
    r"""Log-likelihood of data under :math:`p(x) = e^{-E(x)} / Z` given an estimate of log Z.

    .. math::

        \frac1n \sum_{i=1}^n \log p(x_i) = \frac1n \sum_{i=1}^n \big(-E(x_i)\big) - \log Z.

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        Maps ``(n, *event_shape)`` to ``(n,)``.
    data : Tensor
        Points of shape ``(n, *event_shape)``, cast to the dtype of the energy's parameters.
    log_Z : Tensor or float
        :math:`\log Z`, e.g. from :func:`grid_log_partition` or :func:`ais_log_partition`.
    reduction : {"mean", "none"}
        The mean (0-d) or the per-point values (shape ``(n,)``).

    Returns
    -------
    Tensor
        In float64; differentiable with respect to the energy's parameters.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> energy = GaussianEnergy(torch.zeros(1), torch.eye(1), dtype=torch.float64)
    >>> log_likelihood(energy, torch.zeros(3, 1), energy.log_partition())  # -log(2 pi) / 2
    tensor(-0.9189, dtype=torch.float64)
    """
    fn, event_shape = _resolve_energy(energy)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
    if not isinstance(data, Tensor) or not data.is_floating_point() or data.dim() == 0:
        raise ValueError("data must be a floating-point tensor of shape (n, *event_shape)")
    if data.shape[0] == 0:
        raise ValueError("data must hold at least one point")
    if event_shape is not None and tuple(data.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"data must have shape (n, *{tuple(event_shape)}); got {tuple(data.shape)}"
        )
    found = module_dtype_device(fn)
    if found is not None:
        data = data.to(dtype=found[0], device=found[1])
    out = fn(data)
    _check_shape(out, (data.shape[0],), f"energy on data of shape {tuple(data.shape)}")
    log_z = torch.as_tensor(log_Z, dtype=torch.float64, device=out.device)
    values = -out.to(torch.float64) - log_z
    return values.mean() if reduction == "mean" else values


def test_nll(
    energy: Any,
    data: Tensor,
    bounds: Bounds = (-4.0, 4.0),
    resolution: int = 401,
    *,
    dim: int | None = None,
) -> dict[str, float]:
    r"""Negative log-likelihood of held-out data with :math:`Z` normalized on a grid.

    .. math::

        \mathrm{NLL} = \frac1n \sum_{i=1}^n E(x_i) + \log Z_B, \qquad
        Z_B = \int_B e^{-E(x)}\,dx \ \text{(by :func:`grid_log_partition`)},

    with Monte-Carlo standard error :math:`\operatorname{sd}_i(\log p(x_i)) / \sqrt n`. Only
    for 1-d and 2-d energies.

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        A 1-d or 2-d energy.
    data : Tensor
        Test points of shape ``(n, *event_shape)``, ``n >= 2``.
    bounds : (lo, hi) or ((xlo, xhi), (ylo, yhi)), default (-4, 4)
        The normalizing box.
    resolution : int, default 401
        Grid nodes per axis.
    dim : int, optional
        1 or 2, for energies without an ``event_shape`` (see :func:`grid_log_partition`).

    Returns
    -------
    dict
        ``{"nll": float, "stderr": float, "log_Z": float}`` in nats.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> energy = GaussianEnergy(torch.zeros(2), torch.eye(2), dtype=torch.float64)
    >>> data = energy.sample(1000, generator=torch.Generator().manual_seed(0))
    >>> out = test_nll(energy, data, bounds=(-8, 8), resolution=101)
    >>> round(out["log_Z"], 4)  # log(2 pi)
    1.8379
    >>> abs(out["nll"] - 2.8379) < 4 * out["stderr"]  # the entropy, 1 + log(2 pi)
    True
    """
    if not isinstance(data, Tensor) or data.dim() == 0 or data.shape[0] < 2:
        raise ValueError("data must be a tensor of shape (n, *event_shape) with n >= 2")
    log_z = grid_log_partition(energy, bounds, resolution, dim=dim)
    with torch.no_grad():
        values = log_likelihood(energy, data, log_z, reduction="none")
    return {
        "nll": float(-values.mean()),
        "stderr": float(values.std(correction=1) / math.sqrt(values.numel())),
        "log_Z": float(log_z),
    }


test_nll.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def kl_to_truth(
    energy: Any,
    name: str,
    *,
    n_test: int = 20000,
    seed: int = 0,
    bounds: Bounds = (-4.0, 4.0),
    resolution: int = 401,
) -> dict[str, float]:
    r"""KL divergence from a 2-d toy data set's true density to a fitted model.

    .. math::

        \mathrm{KL}(p \,\Vert\, q) = \mathbb E_p[-\log q(x)] - H(p)
        \approx \mathrm{NLL}_q - H(p),

    where the model :math:`q = e^{-E}/Z_B` is normalized on the box ``bounds`` by
    :func:`grid_log_partition`, the NLL is averaged over ``n_test`` fresh samples of ``name``
    (:func:`pyro_ebm.datasets.load` with ``seed``) and :math:`H(p)` is the oracle NLL
    (:func:`pyro_ebm.datasets.oracle_nll`). The Monte-Carlo error of the estimate is
    ``stderr``, that of the NLL (the oracle is exact).

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        A 2-d energy.
    name : str
        A data set with a known density: one of :data:`pyro_ebm.datasets.DENSITY_NAMES`.
    n_test : int, default 20000
        Number of test samples, at least 2.
    seed : int, default 0
        Seed of the test samples.
    bounds : (lo, hi) or ((xlo, xhi), (ylo, yhi)), default (-4, 4)
        The normalizing box.
    resolution : int, default 401
        Grid nodes per axis.

    Returns
    -------
    dict
        ``{"kl", "nll", "stderr", "log_Z", "oracle"}`` as floats (nats).

    Examples
    --------
    >>> from pyro_ebm import datasets
    >>> truth = lambda x: -datasets.true_log_prob("8gaussians", x)
    >>> out = kl_to_truth(truth, "8gaussians", n_test=2000, resolution=201)
    >>> abs(out["log_Z"]) < 1e-3, abs(out["kl"]) < 4 * out["stderr"]
    (True, True)
    """
    oracle = datasets.oracle_nll(name)  # rejects names without a known density
    n_test = _check_int(n_test, "n_test", 2)
    data = datasets.load(name, n_test, seed=seed, dtype=torch.float64)
    out = test_nll(energy, data, bounds, resolution, dim=2)
    return {**out, "oracle": oracle, "kl": out["nll"] - oracle}


# --------------------------------------------------------------------------------------------
# two-sample distance
# --------------------------------------------------------------------------------------------


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
        if isinstance(bandwidth, Tensor) and bandwidth.numel() == 1:
            bandwidth = bandwidth.item()
        if not isinstance(bandwidth, numbers.Real) or not 0 < float(bandwidth) < math.inf:
            raise ValueError(f"bandwidth must be a positive finite number; got {bandwidth!r}")
        h = torch.tensor(float(bandwidth), dtype=dtype, device=x.device)
    scale = -0.5 / h.square()
    kxx, kyy, kxy = (scale * dxx).exp(), (scale * dyy).exp(), (scale * dxy).exp()
    sum_xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    sum_yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sum_xx + sum_yy - 2 * kxy.mean()
