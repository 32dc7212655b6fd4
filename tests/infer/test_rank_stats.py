"""The engine's R-hat and ESS (pyro_ebm.infer.rank_stats) against ArviZ's own functions.

Run on both ArviZ lines: 0.2x here, 1.x in ``make test-py312``."""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pytest

from pyro_ebm.diagnostics._compat import ARVIZ_MAJOR
from pyro_ebm.infer.rank_stats import rhat_and_ess


def arviz_stats(values: np.ndarray) -> np.ndarray:
    """``(3, k)``: ArviZ's rank R-hat, bulk ESS and tail ESS of each column of ``values``."""
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(values.shape[-1]):
            a = values[..., i]
            rows.append([float(az.rhat(a)), float(az.ess(a, method="bulk")),
                         float(az.ess(a, method="tail", prob=(0.05, 0.95)))])  # fmt: skip
    return np.array(rows).T


def chains(kind: str, c: int, d: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(c, d, 3))
    if kind == "sticky":  # an AR(1) that repeats its value 60% of the time (MCMC rejections)
        for t in range(1, d):
            keep = rng.random((c, 3)) < 0.6
            v[:, t] = np.where(keep, v[:, t - 1], 0.9 * v[:, t - 1] + 0.4 * v[:, t])
    elif kind == "rounded":  # many ties
        v = np.round(v, 1)
    elif kind == "shifted":  # half the chains elsewhere: R-hat far above 1
        v[: c // 2] += 2.0
    elif kind == "heavy":  # Student-t(2) at a tiny scale far from 0
        v = rng.standard_t(2, size=(c, d, 3)) * 1e-3 + 5.0
    elif kind == "ar":  # continuous, strongly autocorrelated: Geyer's truncation matters
        for t in range(1, d):
            v[:, t] = 0.95 * v[:, t - 1] + 0.3 * v[:, t]
    return v


@pytest.mark.parametrize("kind", ["normal", "ar", "shifted", "heavy", "sticky", "rounded"])
def test_equal_to_arviz(kind):
    """Shapes with odd and even draws, 2 to 40 chains, 4 to 120 draws: equal to rounding."""
    rng = np.random.default_rng(0)
    ties = kind in ("sticky", "rounded")
    for _ in range(12):
        c, d = int(rng.integers(2, 41)), int(rng.integers(4, 121))
        v = chains(kind, c, d, rng)
        ours, ref = np.stack(rhat_and_ess(v)), arviz_stats(v)
        rows = slice(None) if (ARVIZ_MAJOR >= 1 or not ties) else slice(0, 2)
        # ArviZ 0.2x takes its tail quantile from scipy's mquantiles, whose (1 - g) a + g b
        # can miss a tied value by one ulp; 1.x (numpy's quantile) is matched exactly
        np.testing.assert_allclose(ours[rows], ref[rows], rtol=1e-9, err_msg=f"{kind} {c}x{d}")


def test_the_many_chain_case_of_the_engine():
    """128 chains x 150 draws, the engine's check size, with one chain far off."""
    v = chains("ar", 128, 150, np.random.default_rng(1))
    v[7] += 5.0
    ours, ref = np.stack(rhat_and_ess(v)), arviz_stats(v)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    assert (ours[0] > 1.01).all()


def test_nan_and_constant_columns_and_bad_shapes():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(4, 50, 3))
    v[1, 3, 0] = np.nan
    v[:, :, 2] = 1.5
    rhat, bulk, tail = rhat_and_ess(v)
    assert np.isnan([rhat[0], bulk[0], tail[0]]).all()
    np.testing.assert_allclose([rhat[1], bulk[1], tail[1]], arviz_stats(v[..., 1:2])[:, 0])
    assert np.isnan(rhat[2]) and bulk[2] == tail[2] == 4 * 50  # a constant: ArviZ's convention
    for shape in [(1, 50, 2), (4, 3, 2), (4, 50)]:
        with pytest.raises(ValueError, match="values must have shape"):
            rhat_and_ess(np.zeros(shape))


def test_sampling_with_its_check_does_not_import_arviz():
    """The check needs no ArviZ: a script that only samples never pays its import."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pyro_ebm.infer import sample\n"
        "out = sample(lambda x: 0.5 * x.square().sum(-1), 20, num_chains=8, event_shape=(2,),\n"
        "             warmup_steps=20, progress_bar=False, seed=0)\n"
        "assert out.convergence is not None\n"
        "print('arviz' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
