"""The one place that knows which ArviZ line is installed: 0.2x (``InferenceData``) or 1.x.

ArviZ 1.x (Python >= 3.12) is a namespace over arviz-base, arviz-stats and arviz-plots: data is
an ``xarray.DataTree``, ``from_dict`` takes one nested dict, ``plot_trace`` draws only the trace
(``plot_trace_dist`` is 0.2x's ``plot_trace``), ``plot_ppc`` became ``plot_ppc_dist``, plots
return a ``PlotCollection`` (``figsize`` goes through ``figure_kwargs``), ``bfmi`` returns a
DataTree, ``loo`` an ``ELPDDataLOO``, and ``concat``, ``waic`` and ``from_pyro`` are gone.
Everything here answers the same way on both lines: plots return a matplotlib ``Figure``,
statistics return NumPy arrays or floats.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

with warnings.catch_warnings():
    # ArviZ 0.2x announces its 1.0 refactor with a FutureWarning once a day on import.
    warnings.filterwarnings(
        "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
    )
    import arviz as az

__all__ = [
    "ARVIZ_MAJOR",
    "LooResult",
    "az",
    "bfmi",
    "concat_chains",
    "from_groups",
    "group_names",
    "loo",
    "plot_energy",
    "plot_ppc",
    "plot_rank",
    "plot_trace",
    "write_netcdf",
]


def _major(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else 0


#: The installed ArviZ's major version: 0 (``InferenceData``) or 1 (``xarray.DataTree``).
ARVIZ_MAJOR: int = _major(az.__version__)

#: Groups without ``(chain, draw)`` dimensions.
_DATA_GROUPS = ("observed_data", "constant_data")

#: ArviZ's warnings that a layout has more chains than draws (0.2x, 1.x).
_CHAINS_OUTNUMBER_DRAWS = ("More chains", "Found chain dimension to be longer than draw")


def from_groups(
    groups: Mapping[str, Mapping[str, np.ndarray]],
    *,
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
):
    """ArviZ data from ``{group: {variable: array}}``; ``(chain, draw)`` lead in sampled groups.

    ``dims`` names each variable's dimensions after ``(chain, draw)`` (all of them for
    ``observed_data`` and ``constant_data``); unnamed ones become ``{variable}_dim_{i}``.
    ``attrs`` is set on every sampled group (ArviZ 1.x: on every group). Empty groups are left
    out. The layout is explicit, so ArviZ's warning that chains outnumber draws (its guess of
    a transposed array) is silenced.

    Examples
    --------
    >>> import numpy as np
    >>> data = from_groups({"posterior": {"x": np.zeros((2, 10, 3))}}, dims={"x": ["k"]})
    >>> data.posterior["x"].dims
    ('chain', 'draw', 'k')
    """
    groups = {name: dict(values) for name, values in groups.items() if values}
    dims = {name: list(value) for name, value in (dims or {}).items()}
    coords = dict(coords or {})
    attrs = dict(attrs or {})
    with warnings.catch_warnings():
        # ArviZ guesses the layout and warns when chains outnumber draws; ours is explicit.
        for message in _CHAINS_OUTNUMBER_DRAWS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        if ARVIZ_MAJOR >= 1:
            return az.from_dict(
                groups, dims=dims, coords=coords, attrs={group: dict(attrs) for group in groups}
            )
        # 0.2x takes each sampled group's attributes as {group}_attrs (none for the data groups)
        group_attrs = {
            f"{group}_attrs": dict(attrs) for group in groups if group not in _DATA_GROUPS
        }
        return az.from_dict(**groups, dims=dims, coords=coords, **group_attrs)


def group_names(data: Any) -> list[str]:
    """The names of the groups of an ``InferenceData`` or a ``DataTree``.

    Examples
    --------
    >>> import numpy as np
    >>> group_names(from_groups({"posterior": {"x": np.zeros((1, 5))}, "prior": {}}))
    ['posterior']
    """
    if ARVIZ_MAJOR >= 1:
        return list(data.children)
    return list(data.groups())


def write_netcdf(data: Any, path: str | Path) -> Path:
    """Write ArviZ data to netCDF-4 (HDF5) with h5netcdf, the backend both lines can use.

    Read it back with ``az.from_netcdf(path)``. Returns ``path``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "draws.nc"
    >>> write_netcdf(from_groups({"posterior": {"x": np.zeros((2, 5))}}), path).exists()
    True
    """
    path = Path(path)
    data.to_netcdf(str(path), engine="h5netcdf")
    return path


def concat_chains(datas: Sequence[Any]) -> Any:
    """Join runs of the same model along ``chain`` (``az.concat(..., dim="chain")`` in 0.2x).

    Chains are renumbered ``0, 1, ...``; groups without a ``chain`` dimension are taken from
    the first run.

    Examples
    --------
    >>> import numpy as np
    >>> one = from_groups({"posterior": {"x": np.zeros((1, 5))}})
    >>> concat_chains([one, one, one]).posterior["x"].shape
    (3, 5)
    """
    datas = list(datas)
    if not datas:
        raise ValueError("concat_chains needs at least one ArviZ data object; got none")
    if ARVIZ_MAJOR < 1:
        return az.concat(*datas, dim="chain") if len(datas) > 1 else datas[0]
    import xarray as xr

    tree = {}
    for group in group_names(datas[0]):
        parts = [d[group].to_dataset() for d in datas]
        if "chain" not in parts[0].dims:
            tree[group] = parts[0]
            continue
        joined = xr.concat(parts, dim="chain", combine_attrs="override")
        tree[group] = joined.assign_coords(chain=np.arange(joined.sizes["chain"]))
    return xr.DataTree.from_dict(tree)


def _figure(result: Any):
    """The matplotlib figure of a plot's return value (axes array or PlotCollection)."""
    if hasattr(result, "get_viz"):
        return result.get_viz("figure")
    first = np.ravel(np.asarray(result, dtype=object))[0]
    return first.get_figure() if hasattr(first, "get_figure") else first.figure


def _figure_kwargs(figsize: tuple[float, float] | None) -> dict[str, Any]:
    if figsize is None:
        return {}
    if ARVIZ_MAJOR >= 1:
        return {"figure_kwargs": {"figsize": tuple(figsize)}}
    return {"figsize": tuple(figsize)}


def plot_trace(
    data: Any,
    *,
    var_names: Sequence[str] | None = None,
    coords: Mapping[str, Any] | None = None,
    compact: bool = True,
    figsize: tuple[float, float] | None = None,
):
    """Marginal densities (left) and traces (right) of each posterior variable; the Figure.

    ``compact=False`` gives every coordinate its own row (``plot_trace_dist`` in ArviZ 1.x).

    Examples
    --------
    >>> import numpy as np
    >>> data = from_groups({"posterior": {"x": np.random.default_rng(0).normal(size=(2, 50))}})
    >>> fig = plot_trace(data, figsize=(6, 2))
    >>> len(fig.axes)
    2
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    kwargs = dict(var_names=var_names, coords=coords, compact=compact, **_figure_kwargs(figsize))
    if ARVIZ_MAJOR >= 1:
        return _figure(az.plot_trace_dist(data, **kwargs))
    return _figure(az.plot_trace(data, **kwargs))


def plot_rank(
    data: Any,
    *,
    var_names: Sequence[str] | None = None,
    coords: Mapping[str, Any] | None = None,
    figsize: tuple[float, float] | None = None,
):
    """Rank plots of each coordinate (chains that mix well look alike); returns the Figure.

    Histograms of ranks with ArviZ 0.2x, rank ECDFs with their band with ArviZ 1.x.

    Examples
    --------
    >>> import numpy as np
    >>> data = from_groups({"posterior": {"x": np.random.default_rng(0).normal(size=(4, 50, 2))}})
    >>> fig = plot_rank(data)
    >>> len(fig.axes)
    2
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    kwargs = dict(var_names=var_names, coords=coords, **_figure_kwargs(figsize))
    if ARVIZ_MAJOR >= 1 and data["posterior"].sizes.get("chain", 1) < 2:
        kwargs["method"] = "envelope"  # the multi-chain test (the default) needs two chains
    return _figure(az.plot_rank(data, **kwargs))


def _require_energy(data: Any, what: str) -> None:
    stats = data["sample_stats"] if "sample_stats" in group_names(data) else None
    if stats is None or "energy" not in stats.data_vars:
        raise ValueError(
            f"{what} needs the Hamiltonian 'energy' in sample_stats, which this data lacks: "
            "pyro-ebm's HMC records it; for Pyro's HMC or NUTS pass a StatsRecorder as "
            "MCMC(..., hook_fn=recorder) and to_arviz(mcmc, recorder=recorder); MALA, ULA and "
            "random-walk kernels have no Hamiltonian"
        )


def plot_energy(data: Any, *, figsize: tuple[float, float] | None = None):
    """ArviZ's energy plot (marginal vs. transition energy, with BFMI); returns the Figure.

    ``data`` needs ``energy`` in ``sample_stats``; without it the ``ValueError`` says how to
    record it (ArviZ's own message is only "Energy variable was not found").

    Examples
    --------
    >>> import numpy as np
    >>> energy = np.random.default_rng(0).normal(size=(2, 100))
    >>> data = from_groups({"posterior": {"x": energy}, "sample_stats": {"energy": energy}})
    >>> fig = plot_energy(data, figsize=(5, 3))
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    >>> plot_energy(from_groups({"posterior": {"x": energy}}))
    Traceback (most recent call last):
    ...
    ValueError: plot_energy needs the Hamiltonian 'energy' in sample_stats, ...
    """
    _require_energy(data, "plot_energy")
    return _figure(az.plot_energy(data, **_figure_kwargs(figsize)))


def plot_ppc(
    data: Any,
    *,
    var_names: Sequence[str] | None = None,
    num_samples: int = 50,
    figsize: tuple[float, float] | None = None,
):
    """Posterior predictive densities against the observed data; returns the Figure.

    ``plot_ppc`` in ArviZ 0.2x, ``plot_ppc_dist`` in 1.x; ``num_samples`` predictive draws.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> data = from_groups({
    ...     "posterior": {"mu": rng.normal(size=(2, 50))},
    ...     "posterior_predictive": {"y": rng.normal(size=(2, 50, 20))},
    ...     "observed_data": {"y": rng.normal(size=20)},
    ... })
    >>> fig = plot_ppc(data, num_samples=20)
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    kwargs = dict(var_names=var_names, **_figure_kwargs(figsize))
    if ARVIZ_MAJOR >= 1:
        return _figure(az.plot_ppc_dist(data, num_samples=num_samples, **kwargs))
    return _figure(az.plot_ppc(data, num_pp_samples=num_samples, random_seed=0, **kwargs))


def bfmi(data: Any) -> np.ndarray:
    """Bayesian fraction of missing information per chain, shape ``(chains,)``.

    ``data`` needs ``energy`` in ``sample_stats`` (``ValueError`` otherwise).

    Examples
    --------
    >>> import numpy as np
    >>> energy = np.random.default_rng(0).normal(size=(2, 200))
    >>> data = from_groups({"posterior": {"x": energy}, "sample_stats": {"energy": energy}})
    >>> bfmi(data).shape
    (2,)
    """
    _require_energy(data, "bfmi")
    value = az.bfmi(data)
    if ARVIZ_MAJOR >= 1:
        value = value["energy"].values
    return np.asarray(value, dtype=np.float64)


@dataclass(frozen=True)
class LooResult:
    """PSIS leave-one-out cross-validation, the same fields on both ArviZ lines.

    ``elpd`` is the expected log pointwise predictive density (log scale), ``se`` its standard
    error, ``p`` the effective number of parameters and ``pareto_k`` the shape estimate per
    observation (flattened).
    """

    elpd: float
    se: float
    p: float
    pareto_k: np.ndarray


def loo(data: Any, *, var_name: str | None = None) -> LooResult:
    """``az.loo`` of ``data``'s ``log_likelihood`` (of ``var_name`` when there are several).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> data = from_groups({
    ...     "posterior": {"mu": rng.normal(size=(2, 100))},
    ...     "log_likelihood": {"y": rng.normal(-1.0, 0.1, size=(2, 100, 8))},
    ... })
    >>> result = loo(data)
    >>> result.pareto_k.shape, bool(np.isfinite(result.elpd))
    ((8,), True)
    """
    with warnings.catch_warnings():
        # few draws give unreliable Pareto k; the result says so in pareto_k
        warnings.filterwarnings("ignore", message=".*[Ee]stimated shape parameter of Pareto")
        result = az.loo(data, var_name=var_name)
    if ARVIZ_MAJOR >= 1:
        return LooResult(
            float(result.elpd),
            float(result.se),
            float(result.p),
            np.ravel(np.asarray(result.pareto_k)),
        )
    return LooResult(
        float(result["elpd_loo"]),
        float(result["se"]),
        float(result["p_loo"]),
        np.ravel(np.asarray(result["pareto_k"])),
    )
