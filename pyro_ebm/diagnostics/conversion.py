"""ArviZ conversion: :func:`to_arviz` turns draws, sampler statistics and a model's data into
ArviZ data with every group ArviZ's own converters produce.

With :mod:`~pyro_ebm.diagnostics.recorder`'s :class:`StatsRecorder` this is the whole bridge;
what differs between ArviZ 0.2x and 1.x lives in :mod:`~pyro_ebm.diagnostics._compat`.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.infer
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from .._traces import plate_depth
from . import _compat
from ._compat import az
from .recorder import RECORDED_STATS_KEY, StatsRecorder

__all__ = [
    "SAMPLE_STATS",
    "MissingEnergyWarning",
    "az",
    "model_run_to_arviz",
    "to_arviz",
    "to_arviz_quietly",
]

#: The ``sample_stats`` names this module produces, as ArviZ spells them.
SAMPLE_STATS = (
    "lp",
    "acceptance_rate",
    "step_size",
    "diverging",
    "energy",
    "n_steps",
    "tree_depth",
)
_ALIASES = {
    "accept_prob": "acceptance_rate",
    "mean_accept_prob": "acceptance_rate",
    "divergent": "diverging",
    "num_steps": "n_steps",
    "num_leapfrog": "n_steps",
    "treedepth": "tree_depth",
}
_INT_STATS = ("n_steps", "tree_depth")


class MissingEnergyWarning(UserWarning):
    """A Pyro HMC or NUTS run was converted without its per-draw Hamiltonian ``energy``."""


#: MCMC runs already warned about (the warning comes once per run, not at every conversion).
_WARNED_RUNS: weakref.WeakSet = weakref.WeakSet()


def _to_numpy(value: Tensor | np.ndarray | list) -> np.ndarray:
    if torch.is_tensor(value):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            value = value.double()
        return value.numpy()
    return np.asarray(value)


def _stat_array(name: str, value) -> np.ndarray:
    array = _to_numpy(value)
    if name == "diverging":
        return array.astype(bool)
    if name in _INT_STATS:
        return np.rint(array).astype(np.int64)
    return array.astype(np.float64) if array.dtype.kind in "biu" else array


Groups = dict[str, dict[str, np.ndarray]]


def to_arviz(
    obj: Any,
    *,
    var_name: str = "x",
    recorder: StatsRecorder | None = None,
    model_args: Sequence[Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    log_likelihood: bool = True,
    posterior_predictive: Mapping[str, Any] | None = None,
    prior: Mapping[str, Any] | None = None,
    constant_data: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Any] | None = None,
):
    """Convert draws, their sampler statistics and the model's data to ArviZ data.

    Parameters
    ----------
    obj : Samples, pyro.infer.MCMC or VectorizedMCMC
        A :class:`pyro_ebm.infer.Samples` from :func:`pyro_ebm.infer.sample` (run with
        ``keep=True``), a :class:`pyro.infer.MCMC` after ``.run()`` (pyro-ebm's kernels or
        Pyro's HMC, NUTS, RandomWalkKernel), or a :class:`pyro_ebm.infer.VectorizedMCMC`.
    var_name : str
        Name of the posterior variable for a ``Samples`` (a model run keeps its site names).
    recorder : StatsRecorder, optional
        The :class:`StatsRecorder` passed as ``hook_fn`` to the MCMC; its per-draw statistics
        take precedence over everything else.
    model_args, model_kwargs : optional
        The model's arguments, by default those the run was given (``mcmc.run(*args,
        **kwargs)``). They define ``observed_data`` and ``log_likelihood``.
    log_likelihood : bool
        Whether to compute the ``log_likelihood`` group (one model trace per draw at worst).
    posterior_predictive, prior : dict, optional
        Output of :class:`pyro.infer.Predictive`: ``{site: tensor}`` with leading dims
        ``(chains * draws,)`` or ``(chains, draws)`` for the posterior predictive, and
        ``(draws,)`` for the prior (one chain). Prior draws of observed sites go to
        ``prior_predictive``, the others to ``prior``.
    constant_data : dict, optional
        Data that is neither observed nor sampled (covariates): ``{name: array}``.
    dims, coords : dict, optional
        ArviZ's ``dims`` (a variable's dimension names after ``chain`` and ``draw``) and
        ``coords`` (a dimension's labels). Unnamed dimensions are ``{name}_dim_{i}``.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        ``InferenceData`` with ArviZ 0.2x, ``DataTree`` with ArviZ 1.x. Groups:

        ``posterior``
            From a ``Samples``: ``var_name`` with dims ``(chain, draw, *batch, *event)``, the
            batch dims named ``batch_dim_i`` and the event dims ``{var_name}_dim_i``. From a
            model run: every saved site under its own name, in the constrained space.
        ``sample_stats``
            Per draw, with dims ``(chain, draw[, *batch])``, whichever of ``lp`` (log density
            up to a constant, :math:`-E(x)` or minus Pyro's potential energy),
            ``acceptance_rate``, ``step_size``, ``diverging`` (bool), ``energy`` (the
            Hamiltonian), ``n_steps`` (leapfrog steps) and ``tree_depth`` are known.
        ``observed_data``, ``log_likelihood``
            For a model run whose model has observed sites: each observed value, and the
            pointwise log-likelihood of each observed site at every draw, dims
            ``(chain, draw, *batch_shape)`` (the site's event dims summed), so that
            ``az.loo`` works. See :func:`model_run_to_arviz`.
        ``posterior_predictive``, ``prior``, ``prior_predictive``, ``constant_data``
            When given.

    Notes
    -----
    For an MCMC the statistics come, by precedence, from the ``recorder`` (or what it
    recorded in worker processes); from the ``"sample_stats"`` entry of each chain's
    ``kernel.diagnostics()`` (pyro-ebm's kernels provide it, even when chains run in separate
    processes); and otherwise ``lp`` is recomputed exactly by evaluating the kernel's
    ``potential_fn`` at every draw (mapped back to the unconstrained space with
    ``mcmc.transforms``; left out if ``save_params`` dropped a latent site) and ``diverging``
    is read from the ``"divergences"`` index lists of Pyro's HMC and NUTS (all ``False`` for
    kernels without them, such as ``RandomWalkKernel``). ``energy`` exists only when a
    recorder or the kernel supplies it; a Pyro HMC or NUTS run without it warns once
    (:class:`MissingEnergyWarning`) that ``plot_energy`` and ``bfmi`` need a recorder.

    Raises
    ------
    ValueError
        For a ``Samples`` without statistics or given model arguments, an MCMC that has not
        run, a recorder whose draws do not match the MCMC, or any other type of ``obj``.

    Examples
    --------
    >>> from pyro_ebm.infer import sample
    >>> from pyro_ebm.diagnostics import to_arviz
    >>> energy = lambda x: 0.5 * x.pow(2).sum(-1)
    >>> out = sample(energy, 50, num_chains=2, event_shape=(2,), seed=0, progress_bar=False)
    >>> idata = to_arviz(out)
    >>> idata.posterior["x"].shape
    (2, 50, 2)
    >>> sorted(idata.sample_stats.data_vars)
    ['acceptance_rate', 'diverging', 'lp', 'step_size']
    """
    if recorder is not None and not isinstance(recorder, StatsRecorder):
        raise ValueError(f"recorder must be a StatsRecorder or None; got {type(recorder).__name__}")
    model_options = dict(
        model_args=model_args,
        model_kwargs=model_kwargs,
        log_likelihood=log_likelihood,
        posterior_predictive=posterior_predictive,
        prior=prior,
        constant_data=constant_data,
        dims=dims,
        coords=coords,
    )
    if _is_samples(obj):
        if recorder is not None:
            raise ValueError("recorder applies to a pyro.infer.MCMC, not to a Samples")
        given = [
            name
            for name in ("model_args", "model_kwargs", "posterior_predictive", "prior")
            if model_options[name] is not None
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)} apply to a model run (pyro.infer.MCMC or VectorizedMCMC), "
                "not to a Samples, which has no model"
            )
        return _from_samples(obj, var_name, constant_data=constant_data, dims=dims, coords=coords)
    if isinstance(obj, pyro.infer.MCMC):
        return _from_mcmc(obj, recorder, **model_options)
    if _is_vectorized_mcmc(obj):
        if recorder is not None:
            raise ValueError("recorder applies to a pyro.infer.MCMC, not to a VectorizedMCMC")
        return _from_vectorized_mcmc(obj, **model_options)
    raise ValueError(
        "to_arviz accepts a pyro_ebm.infer.Samples, a pyro.infer.MCMC after .run() or a "
        f"pyro_ebm.infer.VectorizedMCMC after .run(); got {type(obj).__name__}"
    )


def _is_samples(obj: Any) -> bool:
    """Whether ``obj`` looks like a :class:`pyro_ebm.infer.Samples` (duck-typed, so this module
    needs no import of the sampler engine): draws, per-draw statistics and a kernel name."""
    return (
        not isinstance(obj, pyro.infer.MCMC)
        and torch.is_tensor(getattr(obj, "samples", None))
        and isinstance(getattr(obj, "stats", None), Mapping)
        and hasattr(obj, "kernel")
    )


def _is_vectorized_mcmc(obj: Any) -> bool:
    """Whether ``obj`` looks like a :class:`pyro_ebm.infer.VectorizedMCMC` (duck-typed)."""
    return callable(getattr(obj, "get_samples", None)) and hasattr(obj, "_samples")


def to_arviz_quietly(samples: Any, *, var_name: str = "x"):
    """:func:`to_arviz` of a ``Samples``, kept for callers that predate the silencing.

    ArviZ guesses the (chain, draw) layout and warns when chains > draws; ours is explicit, so
    :func:`to_arviz` itself no longer passes that warning on.
    """
    return to_arviz(samples, var_name=var_name)


def _from_samples(
    out: Any,
    var_name: str,
    *,
    constant_data: Mapping[str, Any] | None,
    dims: Mapping[str, Sequence[str]] | None,
    coords: Mapping[str, Any] | None,
):
    if not out.stats:
        raise ValueError(
            "this Samples holds no per-draw statistics (samples.stats is empty); pass the "
            "output of pyro_ebm.infer.sample"
        )
    stat_shape = next(iter(out.stats.values())).shape
    num_batch = len(stat_shape) - 2
    batch_dims = [f"batch_dim_{i}" for i in range(num_batch)]
    num_event = out.samples.dim() - len(stat_shape)
    event_dims = [f"{var_name}_dim_{i}" for i in range(num_event)]
    all_dims = {var_name: batch_dims + event_dims}
    stats = sample_stats_arrays(out.stats)
    all_dims.update({name: list(batch_dims) for name in stats})
    all_dims.update(dims or {})
    groups: Groups = {
        "posterior": {var_name: _to_numpy(out.samples)},
        "sample_stats": stats,
        "constant_data": _arrays(constant_data),
    }
    attrs = {"inference_library": "pyro_ebm", "sampler": str(out.kernel)}
    return _compat.from_groups(groups, dims=all_dims, coords=coords, attrs=attrs)


def sample_stats_arrays(stats: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-draw statistics as NumPy arrays under ArviZ's names and dtypes.

    Aliases are renamed (``accept_prob`` to ``acceptance_rate``, ``num_steps`` to ``n_steps``,
    ...), ``diverging`` becomes bool and ``n_steps``/``tree_depth`` integers.
    """
    arrays = {}
    for name, value in stats.items():
        name = _ALIASES.get(name, name)
        arrays[name] = _stat_array(name, value)
    return arrays


def _arrays(values: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    return {name: _to_numpy(value) for name, value in (values or {}).items()}


# ---------------------------------------------------------------- model runs


def model_run_to_arviz(
    posterior: Mapping[str, Any],
    sample_stats: Mapping[str, Any],
    model: Callable | None,
    model_args: Sequence[Any] = (),
    model_kwargs: Mapping[str, Any] | None = None,
    *,
    log_likelihood: bool = True,
    posterior_predictive: Mapping[str, Any] | None = None,
    prior: Mapping[str, Any] | None = None,
    constant_data: Mapping[str, Any] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
):
    """ArviZ data of a run of a Pyro model: the shared back end of every model runner.

    Parameters
    ----------
    posterior : dict
        ``{site: tensor}`` of shape ``(chains, draws, *site_shape)``, constrained values
        (``mcmc.get_samples(group_by_chain=True)``).
    sample_stats : dict
        ``{name: tensor}`` of shape ``(chains, draws[, ...])``; names as in
        :data:`SAMPLE_STATS` or their aliases (see :func:`sample_stats_arrays`).
    model : callable or None
        The Pyro model with its ``model_args`` and ``model_kwargs``. With ``None`` (a bare
        ``potential_fn``) there is no ``observed_data`` or ``log_likelihood``.
    log_likelihood, posterior_predictive, prior, constant_data, dims, coords :
        As in :func:`to_arviz`.
    attrs : dict, optional
        Attributes set on every group (e.g. ``inference_library``, ``sampler``).

    Notes
    -----
    The model is traced once with the first draw substituted for its latent sites; every
    observed sample site (``obs=``; not ``pyro.deterministic`` nor ``pyro.factor``) gives its
    value to ``observed_data``. The pointwise log-likelihood ``site.fn.log_prob(obs)`` is
    computed for all draws in one trace of the model inside an extra ``pyro.plate`` over the
    draws, left of the model's own batch dims; a model that does not broadcast over it (its
    result would differ from the single trace, or it raises) is traced draw by draw instead.
    When a latent site is missing from ``posterior`` (``save_params``), there is no
    ``log_likelihood`` and a warning says so.

    Examples
    --------
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> draws = {"mu": torch.randn(2, 30)}
    >>> stats = {"lp": torch.zeros(2, 30)}
    >>> data = model_run_to_arviz(draws, stats, model, (torch.tensor([0.1, -0.3, 0.5]),))
    >>> data.log_likelihood["y"].dims
    ('chain', 'draw', 'y_dim_0')
    >>> data.observed_data["y"].shape
    (3,)
    """
    samples = {name: torch.as_tensor(value) for name, value in posterior.items()}
    if not samples:
        raise ValueError("posterior holds no sites: nothing to convert")
    shapes = {tuple(value.shape[:2]) for value in samples.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(
            f"every posterior site must have leading dims (chains, draws); got {sorted(shapes)}"
        )
    num_chains, num_draws = next(iter(shapes))
    args, kwargs = tuple(model_args or ()), dict(model_kwargs or {})
    groups: Groups = {
        "posterior": _arrays(samples),
        "sample_stats": sample_stats_arrays(sample_stats),
    }
    observed_names: set[str] = set()
    site_shapes: dict[str, tuple[int, ...]] = {}
    if model is not None:
        observed, log_lik, site_shapes = _observed_and_log_likelihood(
            model, args, kwargs, samples, compute=log_likelihood
        )
        observed_names = set(observed)
        groups["observed_data"] = _arrays(observed)
        groups["log_likelihood"] = _arrays(log_lik)
    if posterior_predictive is not None:
        groups["posterior_predictive"] = {
            name: _site_shaped(
                _by_chain(name, value, num_chains, num_draws, "posterior_predictive"),
                site_shapes.get(name),
            )
            for name, value in posterior_predictive.items()
        }
    if prior is not None:
        for name, value in prior.items():
            group = "prior_predictive" if name in observed_names else "prior"
            draws = _to_numpy(value)
            if draws.ndim == 0:
                raise ValueError(f"prior[{name!r}] must have a leading draws dim; got a scalar")
            groups.setdefault(group, {})[name] = _site_shaped(
                draws[np.newaxis], site_shapes.get(name)
            )
    groups["constant_data"] = _arrays(constant_data)
    return _compat.from_groups(groups, dims=dims, coords=coords, attrs=attrs)


def _by_chain(name: str, value: Any, num_chains: int, num_draws: int, group: str) -> np.ndarray:
    """``(chains * draws, ...)`` or ``(chains, draws, ...)`` to ``(chains, draws, ...)``."""
    array = _to_numpy(value)
    if array.ndim >= 1 and array.shape[0] == num_chains * num_draws:
        return array.reshape(num_chains, num_draws, *array.shape[1:])
    if array.shape[:2] == (num_chains, num_draws):
        return array
    raise ValueError(
        f"{group}[{name!r}] must have leading dims ({num_chains * num_draws},) or "
        f"({num_chains}, {num_draws}) to match the posterior; got shape {array.shape}"
    )


def _site_shaped(array: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    """Drop the singleton dims that ``Predictive``'s vectorization leaves left of a site's own
    shape (a deterministic site of shape ``(n,)`` comes back as ``(draws, 1, n)``)."""
    if shape is None:
        return array
    extra = array.shape[2:]
    if extra != shape and len(extra) > len(shape) and extra[len(extra) - len(shape) :] == shape:
        if all(size == 1 for size in extra[: len(extra) - len(shape)]):
            return array.reshape(*array.shape[:2], *shape)
    return array


def _is_observed(site: Mapping[str, Any], latent: Sequence[str]) -> bool:
    return (
        site["type"] == "sample"
        and site["is_observed"]
        and site["name"] not in latent
        and not site["infer"].get("_deterministic", False)
        and not isinstance(site["fn"], dist.Unit)  # pyro.factor
    )


def _trace(model: Callable, values: Mapping[str, Tensor], args: tuple, kwargs: dict):
    with torch.no_grad(), poutine.block():
        return poutine.trace(poutine.condition(model, data=dict(values))).get_trace(*args, **kwargs)


def _observed_and_log_likelihood(
    model: Callable,
    args: tuple,
    kwargs: dict,
    samples: Mapping[str, Tensor],
    *,
    compute: bool,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, tuple[int, ...]]]:
    """Observed values, pointwise log-likelihoods ``(chains, draws, *batch)`` per observed
    site, and the shape of every sample site in one trace of the model."""
    first = {name: value[0, 0] for name, value in samples.items()}
    trace = _trace(model, first, args, kwargs)
    shapes = {
        name: tuple(site["value"].shape)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and torch.is_tensor(site["value"])
    }
    observed_sites = [s for s in trace.nodes.values() if _is_observed(s, list(samples))]
    observed = {s["name"]: s["value"].detach() for s in observed_sites}
    if not compute or not observed_sites:
        return observed, {}, shapes
    missing = [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]
    if missing:
        warnings.warn(
            f"no log_likelihood: the posterior lacks the latent site(s) {missing} (dropped by "
            "save_params?), so the likelihood at each draw is unknown",
            UserWarning,
            stacklevel=4,
        )
        return observed, {}, shapes
    single = {s["name"]: s["fn"].log_prob(s["value"]).detach() for s in observed_sites}
    try:
        log_lik = _vectorized_log_likelihood(model, args, kwargs, samples, trace, single)
    except Exception:  # the model does not broadcast over an extra batch dim: draw by draw
        log_lik = None
    if log_lik is None:
        log_lik = _draw_by_draw_log_likelihood(model, args, kwargs, samples, list(single))
    return observed, log_lik, shapes


def _vectorized_log_likelihood(
    model: Callable,
    args: tuple,
    kwargs: dict,
    samples: Mapping[str, Tensor],
    trace,
    single: Mapping[str, Tensor],
) -> dict[str, Tensor] | None:
    """All draws in one trace, under a plate over draws at dim ``-(batch dims + 1)``."""
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    n = num_chains * num_draws
    k = plate_depth(trace)  # plates and implicit broadcasting alike
    values = {}
    for name, value in samples.items():
        batch = len(trace.nodes[name]["fn"].batch_shape)
        values[name] = value.reshape(n, *([1] * (k - batch)), *value.shape[2:])

    def batched(*a: Any, **kw: Any) -> Any:
        with pyro.plate("_pyro_ebm_draws", n, dim=-k - 1):
            return model(*a, **kw)

    vectorized = _trace(batched, values, args, kwargs)
    log_lik = {}
    for name, reference in single.items():
        site = vectorized.nodes[name]
        lp = site["fn"].log_prob(site["value"]).detach()
        target = (n, *([1] * (k - reference.dim())), *reference.shape)
        if tuple(lp.shape) != target:
            return None
        lp = lp.reshape(num_chains, num_draws, *reference.shape)
        if not torch.allclose(lp[0, 0], reference, rtol=1e-5, atol=1e-6, equal_nan=True):
            return None
        log_lik[name] = lp
    return log_lik


def _draw_by_draw_log_likelihood(
    model: Callable,
    args: tuple,
    kwargs: dict,
    samples: Mapping[str, Tensor],
    names: Sequence[str],
) -> dict[str, Tensor]:
    num_chains, num_draws = next(iter(samples.values())).shape[:2]
    rows: dict[str, list[Tensor]] = {name: [] for name in names}
    for c in range(num_chains):
        for d in range(num_draws):
            trace = _trace(model, {k: v[c, d] for k, v in samples.items()}, args, kwargs)
            for name in names:
                site = trace.nodes[name]
                rows[name].append(site["fn"].log_prob(site["value"]).detach())
    return {
        name: torch.stack(values).reshape(num_chains, num_draws, *values[0].shape)
        for name, values in rows.items()
    }


# ---------------------------------------------------------------- pyro.infer.MCMC


def _from_mcmc(mcmc: pyro.infer.MCMC, recorder: StatsRecorder | None, **options: Any):
    if getattr(mcmc, "_samples", None) is None:
        raise ValueError("the MCMC holds no draws yet: call mcmc.run(...) before to_arviz")
    samples = mcmc.get_samples(group_by_chain=True)
    num_chains, num_samples = mcmc.num_chains, mcmc.num_samples
    diagnostics = [d if isinstance(d, Mapping) else {} for d in mcmc._diagnostics]

    stats: dict[str, np.ndarray] = {}
    if recorder is not None:
        recorded = _stacked_diagnostics(diagnostics, RECORDED_STATS_KEY, num_samples)
        if recorder.chains or not recorded:
            stats.update(recorder._arrays(num_chains, num_samples))
        else:  # the chains ran in worker processes; each recorder copy left its draws here
            stats.update(recorded)
    for name, value in _stacked_diagnostics(diagnostics, "sample_stats", num_samples).items():
        stats.setdefault(name, value)
    if "lp" not in stats:
        lp = _recompute_lp(mcmc, samples)
        if lp is not None:
            stats["lp"] = lp
    if "diverging" not in stats:
        stats["diverging"] = _divergences(diagnostics, num_chains, num_samples)
    _warn_if_energy_missing(mcmc, stats)
    kernel = mcmc.kernel
    args = mcmc._args if options["model_args"] is None else options["model_args"]
    kwargs = mcmc._kwargs if options["model_kwargs"] is None else options["model_kwargs"]
    attrs = {"inference_library": "pyro", "sampler": type(kernel).__name__}
    return model_run_to_arviz(
        samples,
        stats,
        getattr(kernel, "model", None),
        args or (),
        kwargs or {},
        log_likelihood=options["log_likelihood"],
        posterior_predictive=options["posterior_predictive"],
        prior=options["prior"],
        constant_data=options["constant_data"],
        dims=options["dims"],
        coords=options["coords"],
        attrs=attrs,
    )


def _from_vectorized_mcmc(runner: Any, **options: Any):
    # VectorizedMCMC keeps the engine's Samples (with .stats) as .result; a stand-in may
    # carry it as ._samples
    out = getattr(runner, "result", None)
    if out is None and not isinstance(getattr(runner, "_samples", None), Mapping):
        out = runner._samples
    if out is None:
        raise ValueError("the VectorizedMCMC holds no draws yet: call .run(...) before to_arviz")
    samples = runner.get_samples(group_by_chain=True)
    kernel = getattr(runner, "kernel", None)
    model = getattr(runner, "model", None) or getattr(kernel, "model", None)
    args = options["model_args"]
    kwargs = options["model_kwargs"]
    attrs = {"inference_library": "pyro_ebm", "sampler": type(kernel).__name__}
    return model_run_to_arviz(
        samples,
        dict(getattr(out, "stats", {}) or {}),
        model,
        getattr(runner, "_args", ()) if args is None else args,
        getattr(runner, "_kwargs", {}) if kwargs is None else kwargs,
        log_likelihood=options["log_likelihood"],
        posterior_predictive=options["posterior_predictive"],
        prior=options["prior"],
        constant_data=options["constant_data"],
        dims=_site_dims(runner, options["dims"]),
        coords=options["coords"],
        attrs=attrs,
    )


def _site_dims(runner: Any, given: Mapping[str, Sequence[str]] | None) -> dict | None:
    """Plate names as dims of each site (from the runner's model potential), then ``given``."""
    potential = getattr(runner, "potential", None)
    found = potential.dims() if callable(getattr(potential, "dims", None)) else {}
    merged = {name: list(d) for name, d in found.items() if d}
    merged.update(given or {})
    return merged or None


def _warn_if_energy_missing(mcmc: pyro.infer.MCMC, stats: Mapping[str, Any]) -> None:
    kernel = mcmc.kernel
    if not isinstance(kernel, pyro.infer.HMC) or "energy" in stats or mcmc in _WARNED_RUNS:
        return
    _WARNED_RUNS.add(mcmc)
    name = type(kernel).__name__
    warnings.warn(
        f"this Pyro {name} run kept no per-draw Hamiltonian 'energy', so az.plot_energy and "
        "az.bfmi cannot use it: pass a pyro_ebm.diagnostics.StatsRecorder as "
        f"MCMC({name}(...), ..., hook_fn=recorder) before mcmc.run(), then "
        "to_arviz(mcmc, recorder=recorder)",
        MissingEnergyWarning,
        stacklevel=4,  # the caller of to_arviz
    )


def _stacked_diagnostics(
    diagnostics: list[Mapping], key: str, num_samples: int
) -> dict[str, np.ndarray]:
    """Stack the per-chain ``diagnostics()[key]`` dicts of per-draw lists (one per chain)."""
    per_chain = [d.get(key) for d in diagnostics]
    if not per_chain or any(not isinstance(s, Mapping) for s in per_chain):
        return {}
    names = set(per_chain[0]).intersection(*per_chain[1:])
    stacked = {}
    for name in sorted(names):
        rows = [np.asarray(s[name]) for s in per_chain]
        if any(row.shape[:1] != (num_samples,) for row in rows):
            raise ValueError(
                f"kernel diagnostics {key!r}[{name!r}] must hold one value per draw "
                f"({num_samples}); got lengths {[len(row) for row in rows]}"
            )
        stacked[_ALIASES.get(name, name)] = np.stack(rows)
    return stacked


def _divergences(diagnostics: list[Mapping], num_chains: int, num_samples: int) -> np.ndarray:
    diverging = np.zeros((num_chains, num_samples), dtype=bool)
    for chain, diag in enumerate(diagnostics):
        index = np.asarray(diag.get("divergences", []), dtype=np.int64)
        diverging[chain, index[(index >= 0) & (index < num_samples)]] = True
    return diverging


def _potential_fn(mcmc: pyro.infer.MCMC) -> Callable | None:
    kernel = mcmc.kernel
    potential_fn = getattr(kernel, "potential_fn", None)
    if potential_fn is None and getattr(kernel, "model", None) is not None:
        # Nothing set up this process's kernel (e.g. its chains ran in worker processes).
        from pyro.infer.mcmc.util import initialize_model

        _, potential_fn, _, _ = initialize_model(
            kernel.model, mcmc._args or (), mcmc._kwargs or {}, transforms=mcmc.transforms
        )
    return potential_fn


def _recompute_lp(mcmc: pyro.infer.MCMC, samples: dict[str, Tensor]) -> np.ndarray | None:
    """``lp = -potential_fn(z)`` at every draw, ``z`` the unconstrained value of each site."""
    potential_fn = _potential_fn(mcmc)
    if potential_fn is None or not samples:
        return None
    transforms = mcmc.transforms or {}
    unconstrained = {
        name: transforms[name](value) if name in transforms else value
        for name, value in samples.items()
    }
    num_chains, num_samples = mcmc.num_chains, mcmc.num_samples
    lp = np.empty((num_chains, num_samples), dtype=np.float64)
    with torch.no_grad():
        for c in range(num_chains):
            for d in range(num_samples):
                try:
                    potential = potential_fn({k: v[c, d] for k, v in unconstrained.items()})
                except KeyError:  # not every latent site was saved (save_params)
                    return None
                lp[c, d] = -float(potential)
    return lp
