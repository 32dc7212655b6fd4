"""ArviZ's convergence statistics for the engine's check: rank-normalized R-hat and ESS.

:func:`pyro_ebm.infer.sample` checks its draws with these (through a lazy import, so the
engine never imports ArviZ at load time and this package imports nothing of the engine).
"""

from __future__ import annotations

import warnings

import numpy as np

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
        ds = az.convert_to_dataset({"q": values})
        rhat = np.asarray(az.rhat(ds)["q"].values, dtype=float)
        bulk = np.asarray(az.ess(ds, method="bulk")["q"].values, dtype=float)
        tail = np.asarray(az.ess(ds, method="tail")["q"].values, dtype=float)
    return rhat, bulk, tail
