"""Evaluate a per-chain potential for a batch of chains: in one pass, by ``vmap``, or a loop.

A model (or a potential over a dict of sites) is first tried *batched*, every chain in one
call. That is only trusted after it has been compared with chain-by-chain evaluation on a few
distinct chains: a model whose shapes break under the extra dimension raises, and a model that
mixes chains (say, ``x.sum()`` over every dimension) returns different numbers. Either way the
set-up falls back to ``torch.func.vmap`` of the one-chain potential and, where that fails too
(data-dependent control flow, in-place updates), to a Python loop over chains, with a
:class:`VectorizationWarning` naming the cause. Wrong numbers are never returned silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pyro
import torch
from torch import Tensor

__all__ = ["JitPotential", "VectorizationWarning", "vectorized_potential"]


class VectorizationWarning(UserWarning):
    """The model does not run under an extra chain dimension: chains are evaluated by
    ``torch.func.vmap`` or one by one (correct, slower)."""


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return (1e-9, 1e-9) if dtype == torch.float64 else (1e-4, 1e-4)


def _agrees(batched: Tensor, reference: Tensor) -> bool:
    if batched.shape != reference.shape:
        return False
    both_inf = torch.isinf(batched) & torch.isinf(reference) & (batched == reference)
    rtol, atol = _tolerance(reference.dtype)
    close = (batched - reference).abs() <= atol + rtol * reference.abs()
    return bool((close | both_inf | (torch.isnan(batched) & torch.isnan(reference))).all())


def _agrees_with_grad(fn: Callable, reference: Callable, x: Tensor) -> bool:
    """``fn`` and ``reference`` agree at the points ``x`` in value and in gradient."""
    a, b = x.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
    va, vb = fn(a), reference(b)
    if not _agrees(va.detach(), vb.detach()):
        return False
    finite_a, finite_b = torch.isfinite(va), torch.isfinite(vb)
    (ga,) = torch.autograd.grad(va[finite_a].sum(), a, allow_unused=True)
    (gb,) = torch.autograd.grad(vb[finite_b].sum(), b, allow_unused=True)
    if ga is None or gb is None:
        return ga is None and gb is None
    return _agrees(ga, gb)


class _Looped:
    """Chain by chain, as a last resort."""

    def __init__(self, single: Callable[[Tensor], Tensor]) -> None:
        self.single = single

    def __call__(self, flat: Tensor) -> Tensor:
        return torch.stack([self.single(row) for row in flat])


class _Vmapped:
    def __init__(self, single: Callable[[Tensor], Tensor]) -> None:
        self.single = single
        self.fn = torch.func.vmap(self._quiet, randomness="different")

    def _quiet(self, row: Tensor) -> Tensor:
        with pyro.validation_enabled(False):  # its checks branch on data, which vmap refuses
            return self.single(row)

    def __call__(self, flat: Tensor) -> Tensor:
        return self.fn(flat)


def _probe_points(probe: Tensor) -> Tensor:
    """A few distinct chains around ``probe`` (distinct, so that mixing chains shows)."""
    gen = torch.Generator(device=probe.device).manual_seed(0)
    noise = torch.randn((3,) + probe.shape, generator=gen, dtype=probe.dtype, device=probe.device)
    return probe + 0.3 * noise * torch.arange(1, 4, dtype=probe.dtype, device=probe.device).view(
        3, *([1] * probe.dim())
    )


def vectorized_potential(
    batched: Callable[[Tensor], Tensor],
    single: Callable[[Tensor], Tensor],
    probe: Tensor,
    what: str = "the model",
) -> tuple[Callable[[Tensor], Tensor], str]:
    """The fastest evaluation of ``single`` over chains that agrees with it.

    Parameters
    ----------
    batched:
        Candidate batched potential, ``(C, D) -> (C,)``.
    single:
        The reference one-chain potential, ``(D,) -> ()``.
    probe:
        A point ``(D,)`` inside the support (e.g. an initial position).
    what:
        How the warning names the potential.

    Returns
    -------
    (fn, mode):
        ``mode`` is ``"vectorized"``, ``"vmap"`` or ``"loop"``.
    """
    points = _probe_points(probe.detach())
    with torch.no_grad():
        reference = torch.stack([single(row) for row in points])
    try:
        with torch.no_grad():
            value = batched(points)
        if _agrees(value, reference):
            return batched, "vectorized"
        reason = (
            f"under an outer chain dimension it gave {_short(value)} where chain-by-chain "
            f"evaluation gives {_short(reference)} (it mixes chains or broadcasts wrongly)"
        )
    except Exception as err:  # noqa: BLE001 - any failure means: not vectorizable
        reason = f"it fails under an outer chain dimension ({type(err).__name__}: {_first(err)})"
    fn, mode = _Vmapped(single), "vmap"
    try:
        with torch.no_grad():
            ok = _agrees(fn(points), reference)
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        fn, mode = _Looped(single), "loop"
    how = "torch.func.vmap" if mode == "vmap" else "a loop over chains (slow)"
    warnings.warn(
        f"{what} does not vectorize over chains: {reason}. Chains are evaluated by {how}; "
        "the results are right. To run at full speed, write the model with pyro.plate for its "
        "batch dimensions and index from the right (e.g. x[..., 0], .sum(-1)).",
        VectorizationWarning,
        stacklevel=3,
    )
    return fn, mode


def _short(t: Tensor) -> str:
    values = ", ".join(f"{float(v):.6g}" for v in t.reshape(-1)[:3]) if torch.is_tensor(t) else t
    shape = tuple(t.shape) if torch.is_tensor(t) else "?"
    return f"[{values}] (shape {shape})"


def _first(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def _simplify(graph) -> None:
    """Fold what does not depend on the input (e.g. a broadcast ``log(scale)`` of data), then
    drop common and dead subexpressions: TorchScript's own passes, run on a traced graph.
    Skipped where this torch lacks them (the trace is checked against the eager potential
    either way)."""
    for name in ("_jit_pass_constant_propagation", "_jit_pass_cse", "_jit_pass_dce"):
        fn = getattr(torch._C, name, None)
        if fn is not None:
            fn(graph)


class JitPotential:
    """A batched potential traced by ``torch.jit.trace``, once per input shape (opt-in).

    Tracing records the tensor operations of one call, so the Python overhead of Pyro's
    effect handlers is paid once; constant subexpressions of the trace are then folded
    (:func:`_simplify`). As with Pyro's ``jit_compile``, control flow and random choices
    inside the model (data subsampling) are frozen at the traced values: use it for models
    without them. Every trace is checked against the eager potential, value and gradient, at
    other points; if they differ, a :class:`VectorizationWarning` says so and the eager
    potential is used.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn
        self.cache: dict[tuple, Callable[[Tensor], Tensor]] = {}

    def _trace(self, flat: Tensor) -> Callable[[Tensor], Tensor]:
        def call(x: Tensor) -> Tensor:
            return self.fn(x)

        base = flat.detach()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about Python values
                traced = torch.jit.trace(call, (base,), check_trace=False)
                try:
                    _simplify(traced.graph)
                except RuntimeError:  # a pass this torch cannot run here: the plain trace
                    traced = torch.jit.trace(call, (base,), check_trace=False)
                gen = torch.Generator(device=base.device).manual_seed(1)
                other = base + 0.1 * torch.randn(
                    base.shape, generator=gen, dtype=base.dtype, device=base.device
                )
                ok = _agrees_with_grad(traced, self.fn, other)
        except Exception as err:  # noqa: BLE001
            ok, traced = False, None
            why = f"tracing failed ({type(err).__name__}: {_first(err)})"
        else:
            why = "the traced potential differs from the eager one (control flow on values?)"
        if ok:
            return traced
        warnings.warn(f"jit_compile: {why}; using the eager potential", VectorizationWarning,
                      stacklevel=4)  # fmt: skip
        return self.fn

    def __call__(self, flat: Tensor) -> Tensor:
        key = (tuple(flat.shape), flat.dtype, flat.device)
        fn = self.cache.get(key)
        if fn is None:
            fn = self.cache[key] = self._trace(flat)
        return fn(flat)
