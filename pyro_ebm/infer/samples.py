"""The result of the many-chain runner: draws, per-draw statistics, adapted settings, checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .convergence import Convergence

__all__ = ["Samples"]


@dataclass
class Samples:
    """Draws of a vectorized run and their per-draw statistics.

    Attributes
    ----------
    samples:
        Tensor of shape ``(num_chains, num_samples, *batch_shape, *event_shape)``. A run with
        ``keep=False`` keeps only the last draw: ``num_samples`` is 1 there.
    stats:
        Per-draw tensors of shape ``(num_chains, num_samples, *batch_shape)``: ``lp``
        (:math:`-E(x)`), ``acceptance_rate``, ``step_size``, ``diverging`` and for HMC
        ``energy`` (Hamiltonian) and ``n_steps``. With ``thin > 1`` a draw's
        ``acceptance_rate`` is the mean over the thinned transitions and ``diverging`` says
        whether any of them diverged.
    step_size:
        The adapted step sizes (shape ``(num_chains, *batch_shape)``, or ``()`` if one given
        step size was shared).
    inv_mass:
        The adapted inverse mass matrix (``None`` for the identity).
    kernel:
        The kernel's name (``"mala"``, ``"hmc"``, ...).
    warmup_divergences:
        Divergent transitions during warmup, per chain.
    warmup_restarts:
        How often each chain was restarted from a healthy chain during warmup.
    trajectory_length:
        HMC's integration time after warmup (ChEES-adapted), else ``None``.
    step_size_jitter:
        HMC's step-size jitter used in sampling (fixed, or turned on by warmup when chains
        froze; see :class:`~pyro_ebm.infer.HMC`), else 0.
    convergence:
        The R-hat/ESS check of the draws (``None`` if not run).
    """

    samples: Tensor
    stats: dict[str, Tensor]
    step_size: Tensor
    inv_mass: Tensor | None
    kernel: str
    warmup_divergences: Tensor
    warmup_restarts: Tensor | None = None
    trajectory_length: float | None = None
    step_size_jitter: float = 0.0
    convergence: Convergence | None = None
    _checkpoint: dict = field(repr=False, default_factory=dict)
    _target: Any = field(repr=False, default=None)

    @property
    def num_chains(self) -> int:
        return self.samples.shape[0]

    def to_arviz(self, var_name: str = "x"):
        """Convert to ArviZ data (see :func:`pyro_ebm.diagnostics.to_arviz`)."""
        from ..diagnostics import to_arviz  # the diagnostics layer owns ArviZ

        return to_arviz(self, var_name=var_name)

    def summary(self, var_name: str = "x", **kwargs):
        """ArviZ's summary table (``arviz.summary``) of the draws: mean, sd, HDI, MCSE, ESS,
        R-hat per coordinate. ``kwargs`` go to ``arviz.summary``."""
        from ..diagnostics import az

        return az.summary(self.to_arviz(var_name), **kwargs)

    def state_dict(self) -> dict:
        """Everything needed to continue the run bitwise exactly (tensors and plain values)."""
        return dict(self._checkpoint)

    def resume(self, num_samples: int, *, progress_bar: bool | None = None) -> Samples:
        """Continue this run for ``num_samples`` more draws (no further warmup).

        ``torch.cat`` of the old and new draws along dim 1 equals one run of the combined
        length with the same seed.
        """
        if self._target is None:
            raise ValueError("this Samples object holds no target; use pyro_ebm.infer.resume")
        from .run import resume

        return resume(self._target, self.state_dict(), num_samples, progress_bar=progress_bar)


def per_draw(value: Tensor, shape: torch.Size) -> Tensor:
    """A per-chain tensor repeated for every draw: shape ``(chains, draws, *batch)``."""
    return value.unsqueeze(1).expand(shape).clone()
