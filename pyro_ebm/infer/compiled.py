"""The compiled sampler path: one fused, ``torch.compile``-d transition per kernel.

Eager steps dispatch a few dozen small tensor operations per transition; compiling the whole
transition (proposal, energy, its gradient through :func:`torch.func.grad_and_value`, the
Metropolis-Hastings test and the per-chain selection) lets the compiler fuse them. Random
numbers are drawn outside the compiled region from the same generator and in the same order as
the eager step, so both paths agree up to floating-point rounding. Supported for ``"mala"``,
``"ula"`` and ``"rwmh"`` with an identity or diagonal mass matrix; anything else, or a platform
where compilation fails, falls back to the eager step with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from .base import Info, State
from .metric import Metric

__all__ = ["COMPILABLE", "CompiledStep", "compiled_or_eager"]

COMPILABLE = ("mala", "ula", "rwmh")


def _sum_event(t: Tensor, event_dim: int) -> Tensor:
    return t.sum(dim=tuple(range(-event_dim, 0))) if event_dim else t


def _wide(t: Tensor, event_dim: int) -> Tensor:
    return t.reshape(t.shape + (1,) * event_dim)


def _make_transition(energy_fn: Callable, kernel: str, event_dim: int) -> Callable:
    def value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        def total(z):
            e = energy_fn(z)
            return e.sum(), e

        grad, (_, energy) = torch.func.grad_and_value(total, has_aux=True)(x)
        return energy, grad

    def transition(x, energy, grad, eps, inv_mass, xi, u):
        eps_w = _wide(eps, event_dim)
        if kernel == "rwmh":
            y = x + eps_w * inv_mass.sqrt() * xi
            with torch.no_grad():
                ey = energy_fn(y)
            gy = grad
            log_ratio = energy - ey
        else:
            y = x - eps_w * inv_mass * grad + (2 * eps_w).sqrt() * inv_mass.sqrt() * xi
            ey, gy = value_and_grad(y)
            residual = x - y + eps_w * inv_mass * gy
            log_q_back = _sum_event(residual * residual / inv_mass, event_dim) / (-4 * eps)
            log_ratio = energy - ey + log_q_back + 0.5 * _sum_event(xi * xi, event_dim)
        finite = torch.isfinite(log_ratio)
        accept_prob = log_ratio.nan_to_num(nan=-math.inf, posinf=-math.inf).clamp(max=0).exp()
        accepted = finite if kernel == "ula" else u < accept_prob
        wide = _wide(accepted, event_dim)
        new_x = torch.where(wide, y, x)
        new_e = torch.where(accepted, ey, energy)
        new_g = torch.where(wide, gy, grad)
        return new_x, new_e, new_g, accept_prob, accepted, ~finite

    return transition


class CompiledStep:
    """A drop-in for a kernel module's ``step`` running the fused, compiled transition.

    Parameters
    ----------
    kernel:
        ``"mala"``, ``"ula"`` or ``"rwmh"``.
    energy_fn:
        The energy (traced by ``torch.compile``).
    event_dim:
        Number of event dimensions.
    """

    def __init__(self, kernel: str, energy_fn: Callable, event_dim: int) -> None:
        self.kernel, self.event_dim = kernel, event_dim
        self.fn = torch.compile(_make_transition(energy_fn, kernel, event_dim), dynamic=False)
        self.failed = False

    @staticmethod
    def supports(kernel: str, metric: Metric) -> bool:
        return kernel in COMPILABLE and metric.kind in ("identity", "diag")

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
        inv_mass = metric.inv_mass if metric.kind == "diag" else torch.ones_like(x[0])
        grad = state.grad if state.grad is not None else torch.zeros_like(x)
        eps = step_size.expand(state.energy.shape) if step_size.dim() == 0 else step_size
        with torch.no_grad():  # gradients in x come from torch.func inside; no parameter graph
            out = self.fn(x, state.energy, grad, eps, inv_mass.to(x), xi, u)
        new_x, new_e, new_g, accept, accepted, diverging = out
        new_state = State(new_x, new_e, None if self.kernel == "rwmh" else new_g)
        return new_state, Info(acceptance_rate=accept, is_accepted=accepted, diverging=diverging)


def compiled_or_eager(kernel: str, module, energy_fn, metric: Metric, event_dim: int):
    """The compiled step for ``kernel`` if supported and compilable here, else the eager one."""
    if not CompiledStep.supports(kernel, metric):
        warnings.warn(
            f"compile=True supports kernels {COMPILABLE} with a diagonal mass matrix; running "
            f"{kernel!r} eagerly",
            stacklevel=3,
        )
        return module.step
    compiled = CompiledStep(kernel, energy_fn, event_dim)

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
        return module.step(fn, state, step_size, metric, generator, event_dim, **kwargs)

    return step
