"""The Pyro side of pyro-ebm's kernels: one chain of a kernel object inside ``pyro.infer.MCMC``.

:class:`PyroKernelAdapter` implements :class:`pyro.infer.mcmc.MCMCKernel` (``setup``,
``sample``, ``initial_params``, ``diagnostics``, ``logging``, ``cleanup``) over the kernel's own
vectorized ``step`` with a chain shape of ``()`` on the flattened unconstrained parameters, and
a one-chain warmup (:class:`~pyro_ebm.infer.adaptation.WarmupAdapter`): Stan's windowed
scheme with a damped dual averaging, whose final acceptance lands nearer the target than
Stan's constants do (:data:`~pyro_ebm.infer.adaptation.DAMPED_GAMMA`). Unlike Pyro's
``RandomWalkKernel``, ``MCMC(initial_params=...)`` is honoured, and per-draw statistics are
kept for :func:`pyro_ebm.diagnostics.to_arviz`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model
from torch import Tensor

from .adaptation import WarmupAdapter, find_initial_step_size
from .base import State
from .metric import Metric

__all__ = ["FlatPotential", "PyroKernelAdapter"]


class FlatPotential:
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


class PyroKernelAdapter(MCMCKernel):
    """``MCMCKernel`` methods shared by :class:`~pyro_ebm.infer.MALA` and its siblings."""

    def __init__(self, model, potential_fn, transforms, max_plate_nesting, init_strategy) -> None:
        self.model = model
        self.potential_fn = potential_fn
        self.transforms = transforms
        self._max_plate_nesting = max_plate_nesting
        self._init_strategy = init_strategy
        self._initial_params: dict[str, Tensor] | None = None
        self._reset()
        super().__init__()

    def _reset(self) -> None:
        self._t = 0
        self._warmup_steps = 0
        self._state: State | None = None
        self._flat: FlatPotential | None = None
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
        self._stats.update({name: [] for name in self.extra_stats})
        self._mean_accept = 0.0

    @property
    def initial_params(self) -> dict[str, Tensor] | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor]) -> None:
        self._initial_params = params

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        if self.model is None and self.potential_fn is None:
            raise ValueError(
                f"{type(self).__name__}() was built without `model=` or `potential_fn=`: pass "
                f"{type(self).__name__}(model) to run it in pyro.infer.MCMC (a bare kernel "
                "configures pyro_ebm.infer.sample)"
            )
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
        self._flat = FlatPotential(self.potential_fn, self._initial_params)
        position = self._flat.pack(self._initial_params)
        self._state = self.init(self._flat, position, 1)
        self._metric = Metric(position.shape)
        if self.inv_mass is not None:
            self._metric.set(self.inv_mass.to(position))
        if self.step_size is None:
            eps = self._initial_step_size()
        else:
            eps = torch.as_tensor(self.step_size, dtype=position.dtype, device=position.device)
        self._eps = eps.reshape(())
        self._adapter = WarmupAdapter(
            warmup_steps,
            self._eps,
            self.warmup_kernel.target_accept_prob,
            self._metric,
            adapt_step_size=self.adapt_step_size,
            adapt_mass_matrix=self.adapt_mass_matrix,
            dense_mass=bool(self.dense_mass),
        )

    def _tuning(self, eps: Tensor, warmup: bool) -> dict:
        """One transition's settings: a trajectory's time jittered uniformly in (0, T]."""
        length = self.trajectory  # one chain: no ChEES, a fixed length in the metric's units
        if length is None:
            return self.tuning(None, float(eps), jitter=self.resolved_jitter(False))
        jitter = 1.0 - float(torch.rand(()))
        early = warmup and self._metric.kind == "identity" and self.adapt_mass_matrix
        return self.tuning(
            length, float(eps), fraction=jitter, early=early, jitter=self.resolved_jitter(False)
        )

    def _initial_step_size(self) -> Tensor:
        state, metric, kernel = self._state, self._metric, self.warmup_kernel

        def mean_accept(e: Tensor) -> float:
            # averaged over a few proposals: one chain gives a noisy estimate
            tuning = self._tuning(e, True)  # a full (jittered) transition, as in warmup
            rates = [kernel.step(self._flat, state, e, metric, None, 1, **tuning)[1]
                     for _ in range(4)]  # fmt: skip
            return sum(float(info.acceptance_rate) for info in rates) / 4

        start = torch.tensor(1.0, dtype=state.energy.dtype, device=state.energy.device)
        return find_initial_step_size(mean_accept, kernel.target_accept_prob, start)

    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        flat = self._flat.pack(params)
        if not torch.equal(flat, self._state.position):  # moved by someone else (e.g. Gibbs)
            self._state = self.init(self._flat, flat, 1)
        warmup = self._t < self._warmup_steps
        kernel = self.warmup_kernel if warmup else self
        tuning = self._tuning(self._eps, warmup)
        self._state, info = kernel.step(
            self._flat, self._state, self._eps, self._metric, None, 1, **tuning
        )
        if warmup:
            self._eps = self._adapter.update(self._t, self._state.position, info.acceptance_rate)
            if self._t == self._warmup_steps - 1:
                self._eps = self._adapter.final_step_size()
        else:
            self._record(info)
        self._t += 1
        return self._flat.unpack(self._state.position)

    def _record(self, info) -> None:
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
        for name in self.extra_stats:
            self._stats[name].append(float(getattr(info, name)))

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
