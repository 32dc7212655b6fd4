"""ArviZ bridge: :func:`to_arviz` turns draws and sampler statistics into ArviZ data.

Only the modules of this package import ArviZ (:mod:`~pyro_ebm.diagnostics.conversion`;
:mod:`~pyro_ebm.diagnostics.recorder` holds the Pyro hook). It converts

* a :class:`pyro_ebm.infer.Samples` (the vectorized runner's output), and
* a :class:`pyro.infer.MCMC` after ``.run()``, whether driven by pyro-ebm's kernels or by
  Pyro's own :class:`~pyro.infer.HMC`, :class:`~pyro.infer.NUTS` or
  :class:`~pyro.infer.mcmc.RandomWalkKernel`,

into ``posterior`` and ``sample_stats`` groups named as ArviZ expects (``lp``,
``acceptance_rate``, ``step_size``, ``diverging``, ``energy``, ``n_steps``, ``tree_depth``), so
that ``az.summary``, ``az.rhat``, ``az.ess``, ``az.plot_trace`` and ``az.plot_rank`` always work
and ``az.plot_energy`` and ``az.bfmi`` work whenever ``energy`` is present.

Pyro's own kernels keep almost no per-draw statistics, so :class:`StatsRecorder`, passed as
``MCMC(..., hook_fn=recorder)``, records them while the chains run. Without it, ``lp`` is
recomputed exactly from the draws and ``diverging`` is read from Pyro's divergence lists.

``az`` is ArviZ as this package imports it (its import-time FutureWarning silenced), for
modules such as :mod:`pyro_ebm.report` that draw ArviZ plots.

Both ArviZ 0.2x (``InferenceData``, ``az.from_dict(posterior=..., sample_stats=...)``) and ArviZ
1.x (``xarray.DataTree``, ``az.from_dict({"posterior": ..., "sample_stats": ...})``) are
supported.
"""

from . import conversion
from .conversion import az as az  # re-exported for the report's plots
from .conversion import to_arviz, to_arviz_quietly
from .recorder import StatsRecorder

__all__ = ["SAMPLE_STATS", "StatsRecorder", "to_arviz", "to_arviz_quietly"]

#: The ``sample_stats`` names :func:`to_arviz` produces, as ArviZ spells them.
SAMPLE_STATS: tuple[str, ...] = conversion.SAMPLE_STATS
