"""ArviZ bridge: :func:`to_arviz` turns Pyro and pyro-ebm runs into ArviZ data, on ArviZ 0.2x
and 1.x alike.

Only the modules of this package import ArviZ (:mod:`~pyro_ebm.diagnostics.conversion`;
:mod:`~pyro_ebm.diagnostics.recorder` holds the Pyro hook; what differs between the two ArviZ
lines sits in ``_compat``). :func:`to_arviz` converts

* a :class:`pyro_ebm.infer.Samples` (the vectorized runner's output),
* a :class:`pyro.infer.MCMC` after ``.run()``, whether driven by pyro-ebm's kernels or by
  Pyro's own :class:`~pyro.infer.HMC`, :class:`~pyro.infer.NUTS` or
  :class:`~pyro.infer.mcmc.RandomWalkKernel`, and
* a :class:`pyro_ebm.infer.VectorizedMCMC` after ``.run()``,

into ``posterior`` and ``sample_stats`` groups named as ArviZ expects (``lp``,
``acceptance_rate``, ``step_size``, ``diverging``, ``energy``, ``n_steps``, ``tree_depth``), so
that ``az.summary``, ``az.rhat``, ``az.ess`` and the trace and rank plots always work, and the
energy plot and BFMI whenever ``energy`` is present. For a model run it adds
``observed_data`` and the pointwise ``log_likelihood`` (so ``az.loo`` works), and, from
:class:`pyro.infer.Predictive` output passed in, ``posterior_predictive``, ``prior`` and
``prior_predictive`` (so the posterior predictive plot works). ArviZ 1.x has no
``from_pyro``: this is the bridge.

Pyro's own kernels keep almost no per-draw statistics, so :class:`StatsRecorder`, passed as
``MCMC(..., hook_fn=recorder)``, records them while the chains run (in worker processes too).
Without it, ``lp`` is recomputed exactly from the draws and ``diverging`` is read from Pyro's
divergence lists, and a Pyro HMC/NUTS run warns once (:class:`MissingEnergyWarning`).

ArviZ 0.2x returns ``arviz.InferenceData`` and ArviZ 1.x (Python >= 3.12) ``xarray.DataTree``;
both index the same way (``data.posterior["x"]``, ``data.sample_stats``). Where the two lines'
plotting and statistics functions differ in name or return type, the functions below answer
the same way on both: :func:`plot_trace`, :func:`plot_rank`, :func:`plot_energy` and
:func:`plot_ppc` return a matplotlib ``Figure``; :func:`bfmi` an array, :func:`loo` a
:class:`LooResult`; :func:`concat_chains` joins runs along ``chain`` and
:func:`write_netcdf` writes netCDF-4 with h5netcdf; :func:`from_groups` builds ArviZ data from
plain arrays (``az.from_dict`` takes different arguments on the two lines). ``ARVIZ_MAJOR``
tells which line is installed.

``az`` is ArviZ as this package imports it (its import-time FutureWarning silenced), for
modules such as :mod:`pyro_ebm.report` that use ArviZ functions common to both lines
(``az.summary``, ``az.ess``, ``az.rhat``).
"""

from . import _compat, conversion, recorder
from ._compat import (
    LooResult,
    bfmi,
    concat_chains,
    from_groups,
    group_names,
    loo,
    plot_energy,
    plot_ppc,
    plot_rank,
    plot_trace,
    write_netcdf,
)
from .conversion import (
    MissingEnergyWarning,
    model_run_to_arviz,
    sample_stats_arrays,
    to_arviz,
    to_arviz_quietly,
)
from .conversion import az as az  # re-exported for the report and the tutorials
from .recorder import StatsRecorder

__all__ = [
    "ARVIZ_MAJOR",
    "SAMPLE_STATS",
    "TESTED_PYRO",
    "LooResult",
    "MissingEnergyWarning",
    "StatsRecorder",
    "bfmi",
    "concat_chains",
    "from_groups",
    "group_names",
    "loo",
    "model_run_to_arviz",
    "plot_energy",
    "plot_ppc",
    "plot_rank",
    "plot_trace",
    "sample_stats_arrays",
    "to_arviz",
    "to_arviz_quietly",
    "write_netcdf",
]

#: The ``sample_stats`` names :func:`to_arviz` produces, as ArviZ spells them.
SAMPLE_STATS: tuple[str, ...] = conversion.SAMPLE_STATS

#: The installed ArviZ's major version: 0 (``arviz.InferenceData``) or 1 (``xarray.DataTree``).
ARVIZ_MAJOR: int = _compat.ARVIZ_MAJOR

#: The Pyro release lines whose kernel internals :class:`StatsRecorder` is tested against.
TESTED_PYRO: tuple[str, ...] = recorder.TESTED_PYRO
