"""ArviZ conversion: :func:`to_arviz` turns draws and sampler statistics into ArviZ data.

With :mod:`~pyro_ebm.diagnostics.recorder`'s :class:`StatsRecorder` this is the whole bridge;
this module is the only one in the package that imports ArviZ (and re-exports it as ``az``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyro.infer
import torch
from torch import Tensor

from .recorder import StatsRecorder

with warnings.catch_warnings():
    # ArviZ 0.2x announces its 1.0 refactor with a FutureWarning once a day on import.
    warnings.filterwarnings(
        "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
    )
    import arviz as az

__all__ = ["SAMPLE_STATS", "az", "to_arviz", "to_arviz_quietly"]

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


def _arviz_major() -> int:
    match = re.match(r"\d+", az.__version__)
    return int(match.group()) if match else 0


def _from_dict(
    posterior: dict[str, np.ndarray],
    sample_stats: dict[str, np.ndarray],
    dims: dict[str, list[str]],
    attrs: dict[str, Any],
):
    """``az.from_dict`` for ArviZ 0.2x (keyword groups) and 1.x (one nested dict -> DataTree).

    ``dims`` names the dimensions after ``(chain, draw)``, which both versions prepend.
    """
    if _arviz_major() >= 1:
        groups = {"posterior": posterior}
        if sample_stats:
            groups["sample_stats"] = sample_stats
        return az.from_dict(groups, dims=dims, attrs={group: dict(attrs) for group in groups})
    return az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats or None,
        dims=dims,
        posterior_attrs=dict(attrs),
        sample_stats_attrs=dict(attrs),
    )


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


def to_arviz(obj, *, var_name: str = "x", recorder: StatsRecorder | None = None):
    """Convert draws and their sampler statistics to ArviZ data.

    Parameters
    ----------
    obj : Samples or pyro.infer.MCMC
        A :class:`pyro_ebm.infer.Samples` from :func:`pyro_ebm.infer.sample` (run with
        ``keep=True``), or a :class:`pyro.infer.MCMC` after ``.run()``.
    var_name : str
        Name of the posterior variable for a ``Samples`` (an MCMC keeps its site names).
    recorder : StatsRecorder, optional
        The :class:`StatsRecorder` passed as ``hook_fn`` to the MCMC; its per-draw statistics
        take precedence over everything else.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        ``InferenceData`` with ArviZ 0.2x, ``DataTree`` with ArviZ 1.x. Groups:

        ``posterior``
            From a ``Samples``: ``var_name`` with dims ``(chain, draw, *batch, *event)``, the
            batch dims named ``batch_dim_i`` and the event dims ``{var_name}_dim_i``. From an
            MCMC: every saved site under its own name, in the constrained space.
        ``sample_stats``
            Per draw, with dims ``(chain, draw[, *batch])``, whichever of ``lp`` (log density
            up to a constant, :math:`-E(x)` or minus Pyro's potential energy),
            ``acceptance_rate``, ``step_size``, ``diverging`` (bool), ``energy`` (the
            Hamiltonian), ``n_steps`` (leapfrog steps) and ``tree_depth`` are known.

    Notes
    -----
    For an MCMC the statistics come, by precedence, from the ``recorder``; from the
    ``"sample_stats"`` entry of each chain's ``kernel.diagnostics()`` (pyro-ebm's kernels
    provide it, even when chains run in separate processes); and otherwise ``lp`` is
    recomputed exactly by evaluating the kernel's ``potential_fn`` at every draw (mapped back
    to the unconstrained space with ``mcmc.transforms``; left out if ``save_params`` dropped a
    latent site) and ``diverging`` is read from the ``"divergences"`` index lists of Pyro's
    HMC and NUTS (all ``False`` for kernels without them, such as ``RandomWalkKernel``).
    ``energy`` exists only when a recorder or the kernel supplies it.

    Raises
    ------
    ValueError
        For a ``Samples`` without statistics, an MCMC that has not run,
        a recorder whose draws do not match the MCMC, or any other type of ``obj``.

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
    if _is_samples(obj):
        if recorder is not None:
            raise ValueError("recorder applies to a pyro.infer.MCMC, not to a Samples")
        return _from_samples(obj, var_name)
    if isinstance(obj, pyro.infer.MCMC):
        return _from_mcmc(obj, recorder)
    raise ValueError(
        "to_arviz accepts a pyro_ebm.infer.Samples or a pyro.infer.MCMC after .run(); got "
        f"{type(obj).__name__}"
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


def to_arviz_quietly(samples: Any, *, var_name: str = "x"):
    """:func:`to_arviz` of a ``Samples`` without ArviZ's warning that chains outnumber draws.

    ArviZ guesses the (chain, draw) layout and warns when chains > draws; ours is explicit.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        return to_arviz(samples, var_name=var_name)


def _from_samples(out: Any, var_name: str):
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
    posterior = {var_name: _to_numpy(out.samples)}
    dims = {var_name: batch_dims + event_dims}
    sample_stats = {}
    for name, value in out.stats.items():
        name = _ALIASES.get(name, name)
        sample_stats[name] = _stat_array(name, value)
        dims[name] = list(batch_dims)
    attrs = {"inference_library": "pyro_ebm", "sampler": out.kernel}
    return _from_dict(posterior, sample_stats, dims, attrs)


def _from_mcmc(mcmc: pyro.infer.MCMC, recorder: StatsRecorder | None):
    if getattr(mcmc, "_samples", None) is None:
        raise ValueError("the MCMC holds no draws yet: call mcmc.run(...) before to_arviz")
    samples = mcmc.get_samples(group_by_chain=True)
    num_chains, num_samples = mcmc.num_chains, mcmc.num_samples
    posterior = {name: _to_numpy(value) for name, value in samples.items()}
    diagnostics = [d if isinstance(d, Mapping) else {} for d in mcmc._diagnostics]

    stats: dict[str, np.ndarray] = {}
    if recorder is not None:
        stats.update(recorder._arrays(num_chains, num_samples))
    for name, value in _kernel_sample_stats(diagnostics, num_samples).items():
        stats.setdefault(name, value)
    if "lp" not in stats:
        lp = _recompute_lp(mcmc, samples)
        if lp is not None:
            stats["lp"] = lp
    if "diverging" not in stats:
        stats["diverging"] = _divergences(diagnostics, num_chains, num_samples)
    stats = {name: _stat_array(name, value) for name, value in stats.items()}
    attrs = {"inference_library": "pyro", "sampler": type(mcmc.kernel).__name__}
    return _from_dict(posterior, stats, {}, attrs)


def _kernel_sample_stats(diagnostics: list[Mapping], num_samples: int) -> dict[str, np.ndarray]:
    """Stack the per-chain ``diagnostics()["sample_stats"]`` of pyro-ebm's kernels."""
    per_chain = [d.get("sample_stats") for d in diagnostics]
    if not per_chain or any(not isinstance(s, Mapping) for s in per_chain):
        return {}
    names = set(per_chain[0]).intersection(*per_chain[1:])
    stacked = {}
    for name in sorted(names):
        rows = [np.asarray(s[name]) for s in per_chain]
        if any(row.shape[:1] != (num_samples,) for row in rows):
            raise ValueError(
                f"kernel diagnostics 'sample_stats'[{name!r}] must hold one value per draw "
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
