"""Kernels as objects: MALA, ULA, RandomWalkMH and HMC, each owning its parameters.

One class per algorithm serves both runners. Built bare (``MALA(step_size=0.1)``) a kernel
configures the vectorized many-chain runner :func:`~pyro_ebm.infer.sample`; built on a Pyro
``model=`` or a ``potential_fn=`` it is a :class:`pyro.infer.mcmc.MCMCKernel` that runs in
:class:`pyro.infer.MCMC` (see :mod:`pyro_ebm.infer.pyro_adapter`). The string names ``"mala"``,
``"ula"``, ``"rwmh"`` and ``"hmc"`` are aliases for the default objects.

The protocol the runner uses (the BlackJAX/NumPyro pattern, see :class:`Kernel`):
``needs_grad``, ``target_accept_prob``, ``init(energy_fn, position, event_dim) -> State``,
``step(energy_fn, state, step_size, metric, generator, event_dim, **tuning) -> (State, Info)``
and ``warmup_kernel`` (the kernel that runs during warmup: ULA warms up as MALA).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from torch import Tensor

from .._validation import check_int, check_positive_float
from . import hmc, langevin, mala, rwmh
from .base import EnergyFn, Info, State, init_state
from .metric import Metric
from .pyro_adapter import PyroKernelAdapter

__all__ = ["HMC", "KERNELS", "MALA", "ULA", "Kernel", "RandomWalkMH", "as_kernel"]


def _check_probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}")
    return float(value)


def _check_positive(name: str, value) -> float | None:
    return None if value is None else check_positive_float(name, value)


class Kernel(PyroKernelAdapter):
    """Base of pyro-ebm's kernels: parameters, the vectorized protocol and the Pyro adapter.

    Parameters
    ----------
    model, potential_fn:
        At most one. Give one to run the kernel in :class:`pyro.infer.MCMC` (a Pyro model, or
        a potential energy of a dict of tensors with ``MCMC(..., initial_params=...)``); give
        neither to pass the kernel to :func:`~pyro_ebm.infer.sample`.
    step_size:
        Initial step size (default: a doubling search). In :func:`~pyro_ebm.infer.sample` a
        tensor of shape ``(num_chains, *batch_shape)`` gives one per chain.
    target_accept_prob:
        Acceptance probability the step size is adapted towards (Pyro's name). Defaults:
        RWMH 0.234, MALA/ULA 0.574, HMC 0.65.
    adapt_step_size, adapt_mass_matrix:
        Warmup adaptation switches.
    dense_mass:
        ``True`` for a dense mass matrix, ``False`` for a diagonal one; ``None`` (default) lets
        the runner choose: dense up to :data:`DENSE_MAX_DIM` dimensions in the many-chain
        runner (many chains make the estimate cheap and well conditioned), diagonal in
        ``pyro.infer.MCMC`` (one chain per estimate, as Stan).
    inv_mass:
        A fixed inverse mass matrix (diagonal of the event shape, or dense ``(D, D)``); turns
        off its adaptation.
    transforms, max_plate_nesting, init_strategy:
        As in :class:`pyro.infer.HMC` (used with ``model=``).
    """

    name = "kernel"
    needs_grad = True
    #: Whether the many-chain warmup may replace a slow window's covariance by the Laplace
    #: metric (:mod:`pyro_ebm.infer.curvature`); set for the diffusive kernels.
    curvature_metric = False
    default_target_accept = 0.5
    #: Per-draw statistics the kernel's ``Info`` adds to ``lp``, ``acceptance_rate``,
    #: ``step_size`` and ``diverging``.
    extra_stats: tuple[str, ...] = ()
    _module = mala

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        *,
        step_size: float | Tensor | None = None,
        target_accept_prob: float | None = None,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        dense_mass: bool | None = None,
        inv_mass: Tensor | None = None,
        transforms: dict | None = None,
        max_plate_nesting: int | None = None,
        init_strategy: Callable = init_to_uniform,
    ) -> None:
        if model is not None and potential_fn is not None:
            raise ValueError("pass at most one of `model` or `potential_fn`")
        if step_size is not None:
            values = torch.as_tensor(step_size)
            if not bool(torch.isfinite(values).all()) or not bool((values > 0).all()):
                raise ValueError(f"step_size must be positive and finite; got {step_size!r}")
        if target_accept_prob is None:
            target_accept_prob = self.default_target_accept
        self.target_accept_prob = _check_probability("target_accept_prob", target_accept_prob)
        if dense_mass not in (None, True, False):
            raise ValueError(f"dense_mass must be True, False or None (auto); got {dense_mass!r}")
        self.step_size = step_size
        self.adapt_step_size = bool(adapt_step_size)
        self.adapt_mass_matrix = bool(adapt_mass_matrix) and inv_mass is None
        self.dense_mass = dense_mass
        self.inv_mass = None if inv_mass is None else torch.as_tensor(inv_mass)
        super().__init__(model, potential_fn, transforms, max_plate_nesting, init_strategy)

    # -- the vectorized protocol -------------------------------------------------------------
    @property
    def warmup_kernel(self) -> Kernel:
        """The kernel that runs during warmup (itself, except ULA's Metropolis-adjusted twin)."""
        return self

    @property
    def trajectory(self) -> float | None:
        """The integration time the runner jitters per transition (``None``: no trajectory)."""
        return None

    @property
    def adapts_trajectory(self) -> bool:
        """Whether warmup adapts :attr:`trajectory` (ChEES)."""
        return False

    def tuning(
        self, trajectory: float | None, step_size: float, *, fraction: float = 1.0,
        early: bool = False, jitter: float = 0.0,
    ) -> dict:  # fmt: skip
        """Per-transition settings passed to :meth:`step` (none for a kernel without a
        trajectory; HMC: the leapfrog steps for time ``fraction * trajectory`` and the
        step-size ``jitter`` in force)."""
        return {}

    def resolved_jitter(self, auto_on: bool) -> float:
        """The step-size jitter in force (0 for kernels without one; see :class:`HMC`)."""
        return 0.0

    def probe_tuning(self) -> dict:
        """Settings for proposals that only probe the acceptance (the step-size search)."""
        return {}

    def init(self, energy_fn: EnergyFn, position: Tensor, event_dim: int) -> State:
        """The starting :class:`~pyro_ebm.infer.base.State` (energy, and gradient if needed)."""
        return init_state(energy_fn, position, event_dim, with_grad=self.needs_grad)

    def step(
        self,
        energy_fn: EnergyFn,
        state: State,
        step_size: Tensor,
        metric: Metric,
        generator: torch.Generator | None,
        event_dim: int,
        **tuning,
    ) -> tuple[State, Info]:
        """One transition of every chain (``tuning``: HMC's ``num_steps``)."""
        return self._module.step(energy_fn, state, step_size, metric, generator, event_dim)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_accept_prob={self.target_accept_prob})"


class MALA(Kernel):
    """Metropolis-adjusted Langevin kernel.

    Proposal :math:`y = x - \\epsilon M^{-1}\\nabla E(x) + \\sqrt{2\\epsilon} L\\xi`, corrected by
    Metropolis-Hastings; one energy+gradient evaluation per step. Warmup adapts the step size
    towards acceptance 0.574 (Roberts & Rosenthal 1998) and the mass matrix. Arguments as
    :class:`Kernel`.

    Examples
    --------
    Bare, it configures the many-chain runner:

    >>> import torch
    >>> from pyro_ebm.infer import MALA, sample
    >>> out = sample(lambda x: 0.5 * x.pow(2).sum(-1), 100, kernel=MALA(target_accept_prob=0.6),
    ...              num_chains=8, event_shape=(2,), seed=0, progress_bar=False)
    >>> out.samples.shape
    torch.Size([8, 100, 2])

    On a Pyro model it runs in ``pyro.infer.MCMC``:

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> from pyro.infer import MCMC
    >>> def model():
    ...     pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    >>> mcmc = MCMC(MALA(model), num_samples=100, warmup_steps=100, disable_progbar=True)
    >>> mcmc.run()
    >>> mcmc.get_samples()["z"].shape
    torch.Size([100, 2])
    >>> potential = lambda p: 0.5 * p["z"].pow(2).sum()
    >>> mcmc = MCMC(MALA(potential_fn=potential), num_samples=50, warmup_steps=50,
    ...             initial_params={"z": torch.zeros(3)}, disable_progbar=True)
    >>> mcmc.run()
    >>> sorted(mcmc.diagnostics()["divergences"])
    ['chain 0']
    """

    name = "mala"
    needs_grad = True
    curvature_metric = True  # diffusive: warmup may use the Laplace metric (infer.curvature)
    default_target_accept = mala.TARGET_ACCEPT
    _module = mala


class ULA(Kernel):
    """Unadjusted Langevin kernel (biased by :math:`O(\\epsilon)`).

    :math:`x \\leftarrow x - \\epsilon M^{-1}\\nabla E(x) + \\sqrt{2\\epsilon} L\\xi`, every finite
    move taken. Warmup runs the Metropolis-adjusted move of the same proposal (MALA) to adapt the
    step size towards ``target_accept_prob`` (default MALA's 0.574), so that a step that is
    still too large cannot blow the chains up; sampling is unadjusted. The reported acceptance
    is the would-be MALA acceptance, a bias diagnostic. Arguments as :class:`Kernel`.

    Examples
    --------
    >>> import torch
    >>> from pyro.infer import MCMC
    >>> from pyro_ebm.infer import ULA
    >>> mcmc = MCMC(ULA(potential_fn=lambda p: 0.5 * p["z"].pow(2).sum(), step_size=0.1),
    ...             num_samples=20, warmup_steps=0, initial_params={"z": torch.zeros(2)},
    ...             disable_progbar=True)
    >>> mcmc.run()
    >>> mcmc.get_samples()["z"].shape
    torch.Size([20, 2])
    """

    name = "ula"
    needs_grad = True
    curvature_metric = True
    default_target_accept = langevin.TARGET_ACCEPT
    _module = langevin

    @property
    def warmup_kernel(self) -> Kernel:
        twin = MALA(target_accept_prob=self.target_accept_prob)
        return twin

    def step(self, energy_fn, state, step_size, metric, generator, event_dim, **tuning):
        """One ULA move; ``with_acceptance=False`` skips the would-be acceptance (NaN)."""
        with_acceptance = tuning.get("with_acceptance", True)
        return langevin.step(
            energy_fn, state, step_size, metric, generator, event_dim, with_acceptance
        )


class RandomWalkMH(Kernel):
    """Gaussian random-walk Metropolis-Hastings kernel (no gradients).

    :math:`y = x + \\epsilon L\\xi`, accepted with probability :math:`\\min(1, e^{E(x)-E(y)})`.
    Warmup adapts the scale towards acceptance 0.234 (Roberts, Gelman & Gilks 1997) and the
    mass matrix. Honours ``initial_params`` in ``pyro.infer.MCMC`` (Pyro's own
    ``RandomWalkKernel`` does not). Arguments as :class:`Kernel`.

    Examples
    --------
    >>> import torch
    >>> from pyro.infer import MCMC
    >>> from pyro_ebm.infer import RandomWalkMH
    >>> mcmc = MCMC(RandomWalkMH(potential_fn=lambda p: 0.5 * p["z"].pow(2).sum()),
    ...             num_samples=20, warmup_steps=20, initial_params={"z": torch.ones(2)},
    ...             disable_progbar=True)
    >>> mcmc.run()
    >>> mcmc.get_samples()["z"].shape
    torch.Size([20, 2])
    """

    name = "rwmh"
    needs_grad = False
    default_target_accept = rwmh.TARGET_ACCEPT
    _module = rwmh


class HMC(Kernel):
    """Hamiltonian Monte Carlo with a ChEES-adapted trajectory length (or a fixed step count).

    Each transition draws a momentum :math:`p \\sim N(0, M)`, integrates Hamilton's equations
    with the leapfrog integrator and accepts the end point by Metropolis-Hastings (one
    energy+gradient evaluation per leapfrog step).

    Parameters
    ----------
    trajectory_length:
        Integration time :math:`T`. ``None`` (default): adapted during the many-chain warmup
        by the ChEES criterion (Hoffman, Radul & Sountsov 2021), with every transition's time
        jittered uniformly in :math:`(0, T]`; in ``pyro.infer.MCMC`` (one chain, no ChEES)
        :data:`SINGLE_CHAIN_TRAJECTORY` in the units of the adapted mass matrix, jittered the
        same way.
    num_steps:
        A fixed number of leapfrog steps per transition instead (no trajectory jitter, no
        ChEES; the step-size jitter below still applies unless ``step_size_jitter=0``).
    max_num_steps:
        Cap on the leapfrog steps of one transition, so a small step size can never make a
        transition hang. While the mass matrix is not yet estimated (early warmup) the cap is
        :data:`EARLY_MAX_STEPS`.
    max_energy_error:
        A trajectory whose Hamiltonian error exceeds this is rejected and counted divergent.
    step_size_jitter:
        Each transition of each chain uses the step size :math:`\\epsilon u` with :math:`u`
        drawn log-uniformly in :math:`[1 - j, 1]` (Neal 2011, sec. 5.4, randomizes the step
        the same way; Stan's ``stepsize_jitter`` draws it uniformly in :math:`[1 - j, 1 + j]`).
        A mixture of reversible kernels, so it leaves the target invariant. It is for
        posteriors whose curvature changes from region to region (a Gaussian process's length
        scale and amplitude, a hierarchical scale): a chain that enters a region stiffer than
        the adapted step allows (beyond the leapfrog's stability limit) rejects nearly every
        proposal and can stay there for the whole run, while with the jitter it moves on its
        shorter steps. ``None`` (default): automatic in the many-chain runner. Warmup runs
        without it; at the end of each slow adaptation window from the second on, if a chain
        that was not restarted accepted under 5% of its proposals over the window while the
        median chain accepted at least 30% (one step size cannot suit every region), the
        jitter :data:`~pyro_ebm.infer.hmc.STEP_SIZE_JITTER` (0.75, a factor of four) is turned
        on for the rest of warmup and for sampling (``Samples.step_size_jitter`` says which).
        Measured (``bench/posteriors.py``, 128 chains): on ``gp_pois_regr`` (seeds 0-3)
        without jitter 2 of 128 chains froze at acceptance 0.01 and min ESS was 1,100-1,800;
        with 0.5 one seed of four still froze 2 chains; with 0.75 none froze and min ESS was
        6,900-8,300. On smooth targets it costs: ESS per gradient on a 10-d Gaussian 0.27
        with it, 0.35 without, which is why it is not always on. A number fixes it (``0``:
        off) in every runner; in ``pyro.infer.MCMC`` ``None`` means off.
    target_accept_prob:
        Default 0.65 (Beskos et al. 2013). Other arguments as :class:`Kernel`.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.infer import HMC, sample
    >>> out = sample(lambda x: 0.5 * x.pow(2).sum(-1), 50, kernel=HMC(num_steps=5),
    ...              num_chains=4, event_shape=(3,), seed=0, progress_bar=False)
    >>> sorted(out.stats)
    ['acceptance_rate', 'diverging', 'energy', 'lp', 'n_steps', 'step_size']
    """

    name = "hmc"
    needs_grad = True
    default_target_accept = hmc.TARGET_ACCEPT
    extra_stats = ("energy", "n_steps")
    _module = hmc
    EARLY_MAX_STEPS = 10
    SINGLE_CHAIN_TRAJECTORY = 2.0

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        *,
        trajectory_length: float | None = None,
        num_steps: int | None = None,
        max_num_steps: int = 1024,
        max_energy_error: float = 1000.0,
        step_size_jitter: float | None = None,
        **kwargs,
    ) -> None:
        if trajectory_length is not None and num_steps is not None:
            raise ValueError("pass at most one of `trajectory_length` or `num_steps`")
        self.trajectory_length = _check_positive("trajectory_length", trajectory_length)
        self.num_steps = None if num_steps is None else check_int("num_steps", num_steps, 1)
        self.max_num_steps = check_int("max_num_steps", max_num_steps, 1)
        self.max_energy_error = _check_positive("max_energy_error", max_energy_error)
        if step_size_jitter is not None and (
            isinstance(step_size_jitter, bool)
            or not isinstance(step_size_jitter, int | float)
            or not 0 <= step_size_jitter < 1
        ):
            raise ValueError(
                f"step_size_jitter must be None (automatic) or a number in [0, 1); "
                f"got {step_size_jitter!r}"
            )
        self.step_size_jitter = None if step_size_jitter is None else float(step_size_jitter)
        super().__init__(model, potential_fn, **kwargs)

    @property
    def adapts_trajectory(self) -> bool:
        """Whether warmup adapts the trajectory length (ChEES)."""
        return self.num_steps is None and self.trajectory_length is None

    @property
    def trajectory(self) -> float | None:
        if self.num_steps is not None:
            return None
        return self.trajectory_length or self.SINGLE_CHAIN_TRAJECTORY

    def resolved_jitter(self, auto_on: bool) -> float:
        """The step-size jitter in force: the fixed one, else (automatic) ``STEP_SIZE_JITTER``
        once warmup turned it on (``auto_on``) and 0 before."""
        if self.step_size_jitter is not None:
            return self.step_size_jitter
        return hmc.STEP_SIZE_JITTER if auto_on else 0.0

    def tuning(self, trajectory, step_size, *, fraction=1.0, early=False, jitter=0.0) -> dict:
        if self.num_steps is not None or trajectory is None:
            return {"num_steps": self.num_steps or 10, "step_size_jitter": jitter}
        steps = self.leapfrog_steps(fraction * trajectory, step_size, early, jitter)
        return {"num_steps": steps, "step_size_jitter": jitter}

    def probe_tuning(self) -> dict:
        return {"num_steps": 1}  # one leapfrog step: the acceptance at a step size, cheaply

    def step(self, energy_fn, state, step_size, metric, generator, event_dim, **tuning):
        """One HMC transition with ``tuning["num_steps"]`` leapfrog steps (default: fixed) and
        the step-size jitter ``tuning["step_size_jitter"]`` (default: the fixed one, else 0)."""
        num_steps = tuning.get("num_steps") or self.num_steps or 10
        jitter = tuning.get("step_size_jitter", self.resolved_jitter(False))
        if jitter > 0:
            step_size = step_size * hmc.jitter_factor(state.energy, jitter, generator)
        return hmc.step(
            energy_fn, state, step_size, metric, generator, event_dim,
            num_steps=int(num_steps), max_energy_error=self.max_energy_error,
        )  # fmt: skip

    def leapfrog_steps(
        self, trajectory: float, step_size: float, early: bool, jitter: float = 0.0
    ) -> int:
        """Steps for integration time ``trajectory`` at ``step_size``, within the caps.

        With step-size ``jitter`` the steps are counted at the mean jittered step, so the mean
        integration time is ``trajectory`` (each chain's time varies with its factor).
        """
        if self.num_steps is not None:
            return self.num_steps
        step_size = step_size * hmc.mean_jitter_factor(jitter)
        cap = min(self.EARLY_MAX_STEPS, self.max_num_steps) if early else self.max_num_steps
        if not math.isfinite(trajectory / step_size):
            return cap
        return max(1, min(math.ceil(trajectory / step_size), cap))

    def __repr__(self) -> str:
        fixed = f", num_steps={self.num_steps}" if self.num_steps else ""
        return f"HMC(target_accept_prob={self.target_accept_prob}{fixed})"


KERNELS: dict[str, type[Kernel]] = {"rwmh": RandomWalkMH, "ula": ULA, "mala": MALA, "hmc": HMC}


def as_kernel(kernel: str | Kernel, name: str = "kernel") -> Kernel:
    """A kernel object from an alias (``"mala"`` ...) or a kernel object itself.

    ``name`` is the argument named in the error message.
    """
    if isinstance(kernel, Kernel):
        return kernel
    if isinstance(kernel, str) and kernel in KERNELS:
        return KERNELS[kernel]()
    raise ValueError(
        f"{name} must be one of {sorted(KERNELS)} or a kernel object (MALA(), HMC(), ...); "
        f"got {kernel!r}"
    )
