"""ArviZ's convergence statistics for the engine's check: rank-normalized R-hat and ESS.

:func:`pyro_ebm.infer.sample` checks its draws with these (through a lazy import, so the
engine never imports ArviZ at load time and this package imports nothing of the engine).
"""

from __future__ import annotations

import warnings

import numpy as np

from ._compat import ARVIZ_MAJOR
from .conversion import az

__all__ = ["rhat_and_ess"]


def rhat_and_ess(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalized split R-hat, bulk ESS and tail ESS of ``values`` ``(chains, draws, k)``.

    Each of the ``k`` columns is one scalar quantity; returns three arrays of shape ``(k,)``
    (Vehtari et al. 2021, via ``arviz.rhat`` and ``arviz.ess``).

    Examples
    --------
    >>> import numpy as np
    >>> rhat, bulk, tail = rhat_and_ess(np.random.default_rng(0).normal(size=(4, 200, 2)))
    >>> bool((rhat < 1.05).all()) and bulk.shape == (2,)
    True
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "more chains than draws" is the many-chain normal case
        if ARVIZ_MAJOR == 0:  # 2-d arrays go straight to ArviZ's array functions
            return _per_column(values)
        ds = az.convert_to_dataset({"q": values})
        rhat = np.asarray(az.rhat(ds)["q"].values, dtype=float)
        bulk = np.asarray(az.ess(ds, method="bulk")["q"].values, dtype=float)
        tail = np.asarray(az.ess(ds, method="tail")["q"].values, dtype=float)
    return rhat, bulk, tail


def _per_column(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ArviZ 0.2x: ``rhat``/``ess`` of each ``(chains, draws)`` column, called on the array
    itself (ArviZ's own array path, the same numbers without building an xarray Dataset: half
    the check's cost, measured in ``bench/samplers.py``)."""
    columns = [np.ascontiguousarray(values[..., k]) for k in range(values.shape[-1])]
    rhat = np.array([az.rhat(c) for c in columns], dtype=float)
    bulk = np.array([az.ess(c, method="bulk") for c in columns], dtype=float)
    tail = np.array([az.ess(c, method="tail") for c in columns], dtype=float)
    return rhat, bulk, tail
