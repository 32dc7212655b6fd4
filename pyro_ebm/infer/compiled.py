"""The compiled sampler path: one fused, ``torch.compile``-d transition per kernel.

Eager steps dispatch a few dozen small tensor operations per transition; compiling the whole
transition (proposal, energy, its gradient through :func:`torch.func.grad_and_value`, the
Metropolis-Hastings test and the per-chain selection) lets the compiler fuse them. The compiled
transition calls the same proposal and log-ratio functions as the eager steps
(:func:`pyro_ebm.infer.mala.proposal`, :func:`pyro_ebm.infer.mala.log_ratio`,
:func:`pyro_ebm.infer.base.acceptance_probability`): there is one copy of each algorithm's math.
Random numbers are drawn outside the compiled region from the same generator and in the same
order as the eager step, so both paths agree up to floating-point rounding. Supported for MALA,
ULA and RWMH with any metric (identity, diagonal, dense); HMC, or a platform where compilation
fails, falls back to the eager step with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from . import mala, rwmh
from .base import Info, State, acceptance_probability, select
from .metric import Metric

__all__ = ["COMPILABLE", "CompiledStep", "compiled_or_eager"]

COMPILABLE = ("mala", "ula", "rwmh")


def _metric_from(kind: str, event_shape: torch.Size, tensors: tuple) -> Metric:
    """Rebuild a metric inside the compiled region from its tensors (no data-dependent checks)."""
    metric = Metric(event_shape)
    if kind == "diag":
        return Metric.diagonal(event_shape, tensors[0])
    if kind == "dense":
        metric.set_dense_factors(*tensors)
    return metric


def _make_transition(energy_fn: Callable, kernel: str, event_shape: torch.Size, kind: str):
    event_dim = len(event_shape)

    def value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        def total(z):
            e = energy_fn(z)
            return e.sum(), e

        grad, (_, energy) = torch.func.grad_and_value(total, has_aux=True)(x)
        return energy, grad

    def transition(x, energy, grad, eps, metric_tensors, xi, u):
        metric = _metric_from(kind, event_shape, metric_tensors)
        current = State(x, energy, grad)
        if kernel == "rwmh":
            y = rwmh.proposal(current, eps, metric, xi)
            with torch.no_grad():
                proposed = State(y, energy_fn(y), grad)
            ratio = energy - proposed.energy
        else:
            root = mala.step_root(eps, metric.event_dim)
            y = mala.proposal(current, eps, metric, xi, root)
            proposed = State(y, *value_and_grad(y))
            ratio = mala.log_ratio(current, proposed, eps, metric, xi, root)
        accept_prob, diverging = acceptance_probability(ratio)
        accepted = ~diverging if kernel == "ula" else u < accept_prob
        new = select(accepted, proposed, current, event_dim)
        return new.position, new.energy, new.grad, accept_prob, accepted, diverging

    return transition


class CompiledStep:
    """A drop-in for a kernel's ``step`` running the fused, compiled transition.

    Parameters
    ----------
    kernel:
        ``"mala"``, ``"ula"`` or ``"rwmh"``.
    energy_fn:
        The energy (traced by ``torch.compile``).
    event_shape:
        Shape of one chain's position.
    """

    def __init__(self, kernel: str, energy_fn: Callable, event_shape: torch.Size) -> None:
        self.kernel, self.event_shape = kernel, torch.Size(event_shape)
        self.energy_fn = energy_fn
        self._fns: dict[str, Callable] = {}  # one compiled transition per metric kind
        self.failed = False

    @staticmethod
    def supports(kernel: str) -> bool:
        return kernel in COMPILABLE

    def step(
        self, energy_fn, state: State, step_size: Tensor, metric: Metric, generator, event_dim
    ) -> tuple[State, Info]:
        """Same signature and random-number use as the eager ``step`` functions."""
        x = state.position
        xi = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        if self.kernel == "ula":  # ULA draws no uniform: the same stream use as the eager step
            u = torch.zeros(state.energy.shape, dtype=x.dtype, device=x.device)
        else:
            u = torch.rand(state.energy.shape, dtype=x.dtype, device=x.device, generator=generator)
        if metric.kind not in self._fns:
            fn = _make_transition(self.energy_fn, self.kernel, self.event_shape, metric.kind)
            self._fns[metric.kind] = torch.compile(fn, dynamic=False)
        tensors = {
            "identity": (),
            "diag": (metric.inv_mass,),
            "dense": (metric.inv_mass, metric._scale, metric._scale_inv),
        }[metric.kind]
        grad = state.grad if state.grad is not None else torch.zeros_like(x)
        eps = step_size.expand(state.energy.shape) if step_size.dim() == 0 else step_size
        with torch.no_grad():  # gradients in x come from torch.func inside; no parameter graph
            out = self._fns[metric.kind](x, state.energy, grad, eps, tensors, xi, u)
        new_x, new_e, new_g, accept, accepted, diverging = out
        new_state = State(new_x, new_e, None if self.kernel == "rwmh" else new_g)
        return new_state, Info(acceptance_rate=accept, is_accepted=accepted, diverging=diverging)


def compiled_or_eager(kernel, energy_fn, event_shape: torch.Size) -> Callable:
    """The compiled step for ``kernel`` (a kernel object, or a name with a module's ``step``)
    if supported and compilable here, else its eager ``step``."""
    name = getattr(kernel, "name", kernel)
    eager = kernel.step
    if not CompiledStep.supports(name):
        warnings.warn(
            f"compile=True supports the kernels {COMPILABLE}; running {name!r} eagerly",
            stacklevel=3,
        )
        return eager
    compiled = CompiledStep(name, energy_fn, torch.Size(event_shape))

    def step(fn, state, step_size, metric, generator, event_dim, **kwargs):
        if not compiled.failed:
            saved = generator.get_state() if generator is not None else torch.get_rng_state()
            try:
                return compiled.step(fn, state, step_size, metric, generator, event_dim)
            except Exception as err:  # noqa: BLE001 - any compiler failure means: fall back
                compiled.failed = True
                if generator is not None:  # the eager step redraws the same numbers
                    generator.set_state(saved)
                else:
                    torch.set_rng_state(saved)
                warnings.warn(
                    f"torch.compile is unavailable here ({type(err).__name__}: {err}); "
                    "falling back to the eager sampler",
                    stacklevel=2,
                )
        return eager(fn, state, step_size, metric, generator, event_dim, **kwargs)

    return step
