"""Pyro ``MCMCKernel`` adapters (MALA, ULA, RandomWalkMH) over pyro-ebm's step functions.

Each kernel runs one chain inside :class:`pyro.infer.MCMC` (Pyro runs several chains in
processes), using the same pure step functions, the same Metropolis-Hastings step and the same
warmup adaptation as the vectorized runner :func:`~pyro_ebm.infer.sample`. Unlike Pyro's own
``RandomWalkKernel``, initial parameters given to ``MCMC(initial_params=...)`` are honoured, and
per-draw statistics are kept for :func:`pyro_ebm.diagnostics.to_arviz`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model
from torch import Tensor

from . import langevin, mala, rwmh
from .adaptation import WarmupAdapter, find_initial_step_size
from .base import State, init_state
from .metric import Metric

__all__ = ["MALA", "ULA", "RandomWalkMH"]


class _FlatPotential:
    """Potential energy of a dict of unconstrained sites, as a function of one flat vector."""

    def __init__(self, potential_fn: Callable, template: dict[str, Tensor]) -> None:
        self.potential_fn = potential_fn
        self.names = sorted(template)
        self.shapes = [template[n].shape for n in self.names]
        self.sizes = [s.numel() for s in self.shapes]

    def pack(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unpack(self, flat: Tensor) -> dict[str, Tensor]:
        parts = torch.split(flat, self.sizes, dim=-1)
        return {n: p.reshape(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def __call__(self, flat: Tensor) -> Tensor:
        return self.potential_fn(self.unpack(flat))


class _PyroEbmKernel(MCMCKernel):
    _step = mala
    _warmup_step = mala

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        *,
        step_size: float | None = None,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        dense_mass: bool = False,
        transforms: dict | None = None,
        max_plate_nesting: int | None = None,
        init_strategy: Callable = init_to_uniform,
    ) -> None:
        if (model is None) == (potential_fn is None):
            raise ValueError("pass exactly one of `model` or `potential_fn`")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be positive; got {step_size!r}")
        self.model = model
        self.potential_fn = potential_fn
        self.transforms = transforms
        self.step_size = step_size
        self.adapt_step_size = adapt_step_size
        self.adapt_mass_matrix = adapt_mass_matrix
        self.dense_mass = dense_mass
        self._max_plate_nesting = max_plate_nesting
        self._init_strategy = init_strategy
        self._initial_params: dict[str, Tensor] | None = None
        self._reset()
        super().__init__()

    def _reset(self) -> None:
        self._t = 0
        self._warmup_steps = 0
        self._state: State | None = None
        self._flat: _FlatPotential | None = None
        self._metric: Metric | None = None
        self._adapter: WarmupAdapter | None = None
        self._eps: Tensor | None = None
        self._divergences: list[int] = []
        self._stats: dict[str, list[float]] = {
            "lp": [],
            "acceptance_rate": [],
            "step_size": [],
            "diverging": [],
        }
        self._mean_accept = 0.0

    @property
    def initial_params(self) -> dict[str, Tensor] | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor]) -> None:
        self._initial_params = params

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        self._reset()
        self._warmup_steps = warmup_steps
        if self.model is not None:
            init_params, potential_fn, transforms, _ = initialize_model(
                self.model,
                args,
                kwargs,
                transforms=self.transforms,
                max_plate_nesting=self._max_plate_nesting,
                init_strategy=self._init_strategy,
                initial_params=self._initial_params,
            )
            self.potential_fn = potential_fn
            self.transforms = transforms
            self._initial_params = init_params
        if not self._initial_params:
            raise ValueError(
                "initial_params are required with potential_fn: pass "
                "MCMC(kernel, initial_params={name: tensor}, ...)"
            )
        self._flat = _FlatPotential(self.potential_fn, self._initial_params)
        position = self._flat.pack(self._initial_params)
        self._state = init_state(self._flat, position, 1, with_grad=self._step.NEEDS_GRAD)
        self._metric = Metric(position.shape)
        dtype, device = position.dtype, position.device
        if self.step_size is None:
            eps = self._initial_step_size()
        else:
            eps = torch.tensor(float(self.step_size), dtype=dtype, device=device)
        self._eps = eps
        self._adapter = WarmupAdapter(
            warmup_steps,
            eps,
            self._warmup_step.TARGET_ACCEPT,
            self._metric,
            adapt_step_size=self.adapt_step_size,
            adapt_mass_matrix=self.adapt_mass_matrix,
            dense_mass=self.dense_mass,
        )

    def _initial_step_size(self) -> Tensor:
        state, metric, step = self._state, self._metric, self._warmup_step

        def mean_accept(e: Tensor) -> float:
            # averaged over a few proposals: one chain gives a noisy estimate
            rates = [step.step(self._flat, state, e, metric, None, 1)[1] for _ in range(4)]
            return sum(float(info.acceptance_rate) for info in rates) / 4

        start = torch.tensor(1.0, dtype=state.energy.dtype, device=state.energy.device)
        return find_initial_step_size(mean_accept, step.TARGET_ACCEPT, start)

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        flat = self._flat.pack(params)
        if not torch.equal(flat, self._state.position):  # moved by someone else (e.g. Gibbs)
            self._state = init_state(self._flat, flat, 1, with_grad=self._step.NEEDS_GRAD)
        warmup = self._t < self._warmup_steps
        step = self._warmup_step if warmup else self._step
        self._state, info = step.step(self._flat, self._state, self._eps, self._metric, None, 1)
        if warmup:
            self._eps = self._adapter.update(self._t, self._state.position, info.acceptance_rate)
            if self._t == self._warmup_steps - 1:
                self._eps = self._adapter.final_step_size()
        else:
            n = self._t - self._warmup_steps
            accept = float(info.acceptance_rate)
            diverging = bool(info.diverging)
            if diverging:
                self._divergences.append(n)
            self._mean_accept += (accept - self._mean_accept) / (n + 1)
            self._stats["lp"].append(-float(self._state.energy))
            self._stats["acceptance_rate"].append(accept)
            self._stats["step_size"].append(float(self._eps))
            self._stats["diverging"].append(float(diverging))
        self._t += 1
        return self._flat.unpack(self._state.position)

    def logging(self) -> OrderedDict:
        return OrderedDict(
            [
                ("step size", f"{float(self._eps):.2e}" if self._eps is not None else "-"),
                ("acc. prob", f"{self._mean_accept:.3f}"),
            ]
        )

    def diagnostics(self) -> dict:
        return {
            "divergences": list(self._divergences),
            "acceptance rate": self._mean_accept,
            "sample_stats": {k: list(v) for k, v in self._stats.items()},
        }

    def cleanup(self) -> None:
        # keep the statistics for diagnostics(); drop only what holds the model closure
        self._state = None

    @property
    def inverse_mass_matrix(self) -> Tensor | None:
        return None if self._metric is None else self._metric.inv_mass


class MALA(_PyroEbmKernel):
    """Metropolis-adjusted Langevin kernel for :class:`pyro.infer.MCMC`.

    Proposal :math:`y = x - \\epsilon M^{-1}\\nabla U(x) + \\sqrt{2\\epsilon} L\\xi` on Pyro's
    potential energy :math:`U` (unconstrained space), corrected by Metropolis-Hastings; one
    potential+gradient evaluation per step. Warmup adapts the step size by dual averaging
    towards acceptance 0.574 (Roberts & Rosenthal 1998) and a diagonal (or dense) mass matrix.

    Parameters
    ----------
    model, potential_fn:
        Exactly one: a Pyro model, or a potential energy of a dict of tensors (then give
        ``MCMC(..., initial_params=...)``).
    step_size:
        Initial step size (default: a doubling search).
    adapt_step_size, adapt_mass_matrix, dense_mass:
        Warmup adaptation switches.
    transforms, max_plate_nesting, init_strategy:
        As in :class:`pyro.infer.HMC`.

    Examples
    --------
    >>> import pyro, torch
    >>> import pyro.distributions as dist
    >>> from pyro.infer import MCMC
    >>> from pyro_ebm.infer import MALA
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

    _step = mala
    _warmup_step = mala


class ULA(_PyroEbmKernel):
    """Unadjusted Langevin kernel for :class:`pyro.infer.MCMC` (biased by :math:`O(\\epsilon)`).

    :math:`x \\leftarrow x - \\epsilon M^{-1}\\nabla U(x) + \\sqrt{2\\epsilon} L\\xi`, every finite
    move taken. Warmup uses the Metropolis-adjusted move to adapt the step size towards MALA's
    0.574 so that a too-large step cannot blow up the chain; sampling is unadjusted. Arguments
    as :class:`MALA`.

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

    _step = langevin
    _warmup_step = mala


class RandomWalkMH(_PyroEbmKernel):
    """Gaussian random-walk Metropolis-Hastings kernel for :class:`pyro.infer.MCMC`.

    :math:`y = x + \\epsilon L\\xi`, accepted with probability :math:`\\min(1, e^{U(x)-U(y)})`;
    no gradients. Warmup adapts the scale towards acceptance 0.234 (Roberts, Gelman & Gilks
    1997) and the mass matrix. Honours ``initial_params``. Arguments as :class:`MALA`.

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

    _step = rwmh
    _warmup_step = rwmh
