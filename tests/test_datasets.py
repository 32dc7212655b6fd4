"""Tests for pyro_ebm.datasets: shapes, seeding, FFJORD-faithful toys, exact densities, digits."""

import doctest
import math

import numpy as np
import pytest
import sklearn.datasets
import torch
from scipy import stats

from pyro_ebm import datasets
from pyro_ebm.datasets import (
    DENSITY_NAMES,
    NAMES,
    TOY_NAMES,
    load,
    load_digits_with_labels,
    oracle_nll,
    true_log_prob,
)

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# FFJORD's toy generators (lib/toy_data.py), restated with an explicit NumPy RandomState so that
# our torch samplers can be compared with the originals in distribution.
# --------------------------------------------------------------------------------------------


def _ffjord_reference(name: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    if name == "8gaussians":
        s = 1.0 / np.sqrt(2.0)
        unit = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
        points = rng.randn(n, 2) * 0.5 + 4.0 * unit[rng.randint(8, size=n)]
        return points / 1.414
    if name == "checkerboard":
        x1 = rng.rand(n) * 4 - 2
        x2 = rng.rand(n) - rng.randint(0, 2, n) * 2 + np.floor(x1) % 2
        return np.stack([x1, x2], 1) * 2
    if name == "rings":
        counts = [n // 4] * 3 + [n - 3 * (n // 4)]
        radii = [1.0, 0.75, 0.5, 0.25]
        parts = []
        for count, radius in zip(counts, radii, strict=True):
            angle = np.linspace(0, 2 * np.pi, count, endpoint=False)
            parts.append(np.stack([np.cos(angle), np.sin(angle)], 1) * radius)
        points = rng.permutation(np.concatenate(parts) * 3.0)
        return points + rng.normal(scale=0.08, size=points.shape)
    if name == "circles":
        x = sklearn.datasets.make_circles(n, factor=0.5, noise=0.08, random_state=seed)[0]
        return x * 3
    if name == "moons":
        x = sklearn.datasets.make_moons(n, noise=0.1, random_state=seed)[0]
        return x * 2 + np.array([-1, -0.2])
    if name == "swissroll":
        x = sklearn.datasets.make_swiss_roll(n, noise=1.0, random_state=seed)[0]
        return x[:, [0, 2]] / 5
    if name == "pinwheel":
        per_arm = n // 5
        rads = np.linspace(0, 2 * np.pi, 5, endpoint=False)
        features = rng.randn(5 * per_arm, 2) * np.array([0.3, 0.1])
        features[:, 0] += 1.0
        labels = np.repeat(np.arange(5), per_arm)
        angles = rads[labels] + 0.25 * np.exp(features[:, 0])
        rot = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)])
        rot = rot.T.reshape(-1, 2, 2)
        return 2 * rng.permutation(np.einsum("ti,tij->tj", features, rot))
    if name == "2spirals":
        half = n // 2
        s = np.sqrt(rng.rand(half, 1)) * 540 * (2 * np.pi) / 360
        d1x = -np.cos(s) * s + rng.rand(half, 1) * 0.5
        d1y = np.sin(s) * s + rng.rand(half, 1) * 0.5
        x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
        return x + rng.randn(*x.shape) * 0.1
    raise AssertionError(name)


def _summaries(x: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "x1": x[:, 0],
        "x2": x[:, 1],
        "radius": np.hypot(x[:, 0], x[:, 1]),
        "angle": np.arctan2(x[:, 1], x[:, 0]),
    }


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toys_match_ffjord_in_distribution(name):
    n = 4000
    ours = _summaries(load(name, n, seed=11, dtype=F64).numpy())
    reference = _summaries(_ffjord_reference(name, n, seed=5))
    for key in ours:
        p_value = stats.ks_2samp(ours[key], reference[key]).pvalue
        assert p_value > 1e-4, (name, key, p_value)
    # The comparison has power: a 10% change of scale is detected.
    assert stats.ks_2samp(1.1 * ours["radius"], reference["radius"]).pvalue < 1e-4


# --------------------------------------------------------------------------------------------
# shapes, dtypes, seeding
# --------------------------------------------------------------------------------------------


def test_names():
    assert NAMES == (*TOY_NAMES, "digits")
    assert len(TOY_NAMES) == 8
    assert DENSITY_NAMES == TOY_NAMES


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", NAMES)
def test_shape_and_dtype(name, dtype):
    x = load(name, 37, seed=0, dtype=dtype)
    assert x.shape == ((37, 2) if name in TOY_NAMES else (37, 1, 8, 8))
    assert x.dtype == dtype
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_is_identical_and_different_seeds_differ(name):
    a = load(name, 50, seed=3, dtype=F64)
    assert torch.equal(a, load(name, 50, seed=3, dtype=F64))
    b = load(name, 50, seed=4, dtype=F64)
    assert not torch.isclose(a, b).any()


@pytest.mark.parametrize("name", NAMES)
def test_generator_argument(name):
    g = torch.Generator().manual_seed(7)
    first = load(name, 20, generator=g, dtype=F64)
    second = load(name, 20, generator=g, dtype=F64)
    assert torch.equal(first, load(name, 20, seed=7, dtype=F64))
    assert not torch.equal(first, second)  # the generator was advanced


@pytest.mark.parametrize("name", NAMES)
def test_no_seed_is_fresh_and_leaves_global_state_alone(name):
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()  # noqa: NPY002 (checking that it is left alone)
    a, b = load(name, 30, dtype=F64), load(name, 30, dtype=F64)
    load(name, 30, seed=1)
    assert not torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()  # noqa: NPY002
    assert np.array_equal(after[1], numpy_state[1]) and after[2] == numpy_state[2]


def test_unknown_name_raises():
    with pytest.raises(ValueError, match=r"unknown data set name 'mnist'.*8gaussians.*digits"):
        load("mnist", 10, seed=0)


@pytest.mark.parametrize("n", [0, -3, 2.5, None, "10", True])
def test_bad_n_raises(n):
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1; got"):
        load("moons", n, seed=0)
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1"):
        load_digits_with_labels(n, seed=0)


def test_numpy_int_n_is_accepted():
    assert load("rings", np.int64(5), seed=0).shape == (5, 2)


def test_bad_seed_generator_and_dtype_raise():
    with pytest.raises(ValueError, match="either seed or generator"):
        load("moons", 5, seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="seed must be an int"):
        load("moons", 5, seed="0")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        load("moons", 5, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match="dtype must be a floating-point"):
        load("moons", 5, seed=0, dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# exact densities and oracle entropies
# --------------------------------------------------------------------------------------------


def _trapezoid_2d(log_p: torch.Tensor, step: float) -> float:
    w = torch.ones(log_p.shape[0], dtype=F64)
    w[0] = w[-1] = 0.5
    return float((w[:, None] * w[None, :] * log_p.exp()).sum() * step**2)


def test_eight_gaussians_integrates_to_one():
    grid = torch.linspace(-6.0, 6.0, 481, dtype=F64)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)
    mass = _trapezoid_2d(true_log_prob("8gaussians", points), (grid[1] - grid[0]).item())
    assert abs(mass - 1.0) < 1e-3


def test_eight_gaussians_matches_scipy_mixture():
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 3
    s = 0.5 / 1.414
    angles = np.arange(8) * np.pi / 4
    centers = 4.0 / 1.414 * np.stack([np.cos(angles), np.sin(angles)], 1)
    expected = np.log(
        sum(stats.multivariate_normal(c, s * s * np.eye(2)).pdf(x.numpy()) for c in centers) / 8
    )
    np.testing.assert_allclose(true_log_prob("8gaussians", x).numpy(), expected, rtol=1e-10)


def test_checkerboard_integrates_to_one_exactly():
    # The density is constant on squares with edges on even integers, so the midpoint rule on
    # a grid aligned with them is exact.
    step = 0.25
    mid = torch.arange(-5.0 + step / 2, 5.0, step, dtype=F64)
    points = torch.stack(torch.meshgrid(mid, mid, indexing="ij"), dim=-1)
    log_p = true_log_prob("checkerboard", points)
    assert int(torch.isfinite(log_p).sum()) == round(32 / step**2)
    assert float(log_p.exp().sum() * step**2) == pytest.approx(1.0, abs=1e-12)


def test_checkerboard_pointwise():
    x = torch.tensor(
        [[1.0, 1.0], [1.0, -1.0], [-3.0, -3.0], [-3.0, 3.0], [5.0, 1.0], [2.0, 2.0], [4.0, 4.0]],
        dtype=F64,
    )
    inside = torch.isfinite(true_log_prob("checkerboard", x))
    assert inside.tolist() == [True, False, True, False, False, True, True]
    assert torch.isnan(true_log_prob("checkerboard", torch.tensor([math.nan, 0.0]))).item()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_checkerboard_samples_lie_in_support_evenly(dtype):
    x = load("checkerboard", 200_000, seed=2, dtype=dtype)
    assert torch.isfinite(true_log_prob("checkerboard", x)).all()
    cells = torch.floor(x.double() / 2.0).clamp(-2, 1)
    counts = torch.bincount(((cells[:, 0] + 2) * 4 + cells[:, 1] + 2).long(), minlength=16)
    occupied = counts[counts > 0].numpy()
    assert len(occupied) == 8
    assert stats.chisquare(occupied).pvalue > 1e-4


def test_eight_gaussians_samples_match_entropy():
    n = 20_000
    nll = -true_log_prob("8gaussians", load("8gaussians", n, seed=9, dtype=F64))
    z = (nll.mean().item() - oracle_nll("8gaussians")) / (nll.std().item() / math.sqrt(n))
    assert abs(z) < 4.0


def test_oracle_nll_values():
    assert oracle_nll("checkerboard") == math.log(32)
    # Independent quadrature on a coarser grid of another extent.
    grid = torch.linspace(-7.0, 7.0, 401, dtype=F64)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)
    log_p = true_log_prob("8gaussians", points)
    w = torch.ones(401, dtype=F64)
    w[0] = w[-1] = 0.5
    entropy = float(-(w[:, None] * w[None, :] * log_p.exp() * log_p).sum() * (14 / 400) ** 2)
    assert oracle_nll("8gaussians") == pytest.approx(entropy, abs=1e-8)
    # Slightly below the entropy of 8 disjoint Gaussians, since neighbours overlap a little.
    disjoint = math.log(8) + math.log(2 * math.pi * math.e * (0.5 / 1.414) ** 2)
    assert disjoint - 0.01 < oracle_nll("8gaussians") < disjoint


@pytest.mark.parametrize("name", ["digits"])
def test_unknown_density_raises(name):
    match = rf"true density of '{name}' is unknown.*8gaussians, checkerboard, rings"
    with pytest.raises(ValueError, match=match):
        true_log_prob(name, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=match):
        oracle_nll(name)
    with pytest.raises(ValueError, match="unknown data set name"):
        oracle_nll("nope")


def test_true_log_prob_rejects_bad_x():
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        true_log_prob("8gaussians", torch.zeros(4, 3))
    with pytest.raises(ValueError, match="x must be a floating-point"):
        true_log_prob("checkerboard", torch.zeros(4, 2, dtype=torch.int64))


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_digits():
    bunch = sklearn.datasets.load_digits()
    return bunch.data, bunch.target


def _quantize(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    scaled = (x.reshape(len(x), 64).double().numpy() + 1.0) / 2.0 * 17.0
    levels = np.floor(scaled)
    return levels, scaled - levels


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return np.lexsort(a.T[::-1])


def test_digits_range_and_shapes():
    for dtype in (torch.float32, F64):
        x = load("digits", 1797, seed=0, dtype=dtype)
        assert x.shape == (1797, 1, 8, 8)
        assert x.min() >= -1.0 and x.max() < 1.0
    flat = load("digits", 300, seed=0, flatten=True, dtype=F64)
    assert flat.shape == (300, 64)
    assert torch.equal(flat, load("digits", 300, seed=0, dtype=F64).reshape(300, 64))


def test_digits_are_dequantized_sklearn_images(sklearn_digits):
    data, _ = sklearn_digits
    x0 = load("digits", 1797, seed=0, dtype=F64)
    x1 = load("digits", 1797, seed=1, dtype=F64)
    q0, u0 = _quantize(x0)
    q1, _ = _quantize(x1)
    o0, o1, od = _sorted_rows(q0), _sorted_rows(q1), _sorted_rows(data)
    # Without replacement every image appears exactly once, whatever the seed ...
    np.testing.assert_array_equal(q0[o0], data[od])
    np.testing.assert_array_equal(q1[o1], data[od])
    # ... while the dequantization noise differs everywhere and is uniform on [0, 1).
    flat0, flat1 = x0.reshape(1797, 64).numpy(), x1.reshape(1797, 64).numpy()
    assert (flat0[o0] != flat1[o1]).all()
    assert stats.kstest(u0.ravel()[:20_000], "uniform").pvalue > 1e-4


def test_digits_mean_image(sklearn_digits):
    data, _ = sklearn_digits
    mean = load("digits", 1797, seed=3, flatten=True, dtype=F64).mean(0).numpy()
    expected = 2.0 * (data.mean(0) + 0.5) / 17.0 - 1.0
    # Only the noise differs: its mean over 1797 rows has sd 2 / 17 / sqrt(12 * 1797) ~ 8e-4.
    np.testing.assert_allclose(mean, expected, atol=5e-3)
    assert np.abs(mean - expected).max() > 0  # the noise is there


def test_digits_with_and_without_replacement(sklearn_digits):
    data, _ = sklearn_digits
    known = {row.tobytes() for row in data}
    few, _ = _quantize(load("digits", 1000, seed=0, dtype=F64))
    many, _ = _quantize(load("digits", 2500, seed=0, dtype=F64))
    assert all(row.tobytes() in known for row in np.concatenate([few, many]))
    assert len(np.unique(few, axis=0)) == 1000
    assert len(np.unique(many, axis=0)) < 1797


def test_digits_with_labels(sklearn_digits):
    data, target = sklearn_digits
    label_of = {row.tobytes(): int(t) for row, t in zip(data, target, strict=True)}
    x, y = load_digits_with_labels(200, seed=5, dtype=F64, flatten=True)
    assert x.shape == (200, 64) and y.shape == (200,) and y.dtype == torch.int64
    assert torch.equal(x, load("digits", 200, seed=5, dtype=F64, flatten=True))
    levels, _ = _quantize(x)
    assert [label_of[row.tobytes()] for row in levels] == y.tolist()


# --------------------------------------------------------------------------------------------
# documentation
# --------------------------------------------------------------------------------------------


def test_docstring_examples_run():
    result = doctest.testmod(datasets, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------------------------
# the curve toys (pyro_ebm.datasets.densities)
# --------------------------------------------------------------------------------------------
CURVES = ("rings", "circles", "moons", "swissroll", "pinwheel", "2spirals")


@pytest.mark.parametrize("name", CURVES)
def test_curve_density_matches_a_histogram_of_draws(name):
    # expected counts per bin from the density (midpoint rule on 6 x 6 sub-cells per bin)
    # against the sampler's counts: a density off by a few percent anywhere fails this
    n, bins, sub = 40_000, 12, 6
    x = load(name, n, seed=11, dtype=F64)
    edges = torch.linspace(-4.8, 4.8, bins + 1, dtype=F64)
    fine = torch.linspace(-4.8, 4.8, bins * sub + 1, dtype=F64)
    mid = (fine[:-1] + fine[1:]) / 2
    cell = (fine[1] - fine[0]).item() ** 2
    points = torch.stack(torch.meshgrid(mid, mid, indexing="ij"), dim=-1)
    mass = true_log_prob(name, points).exp() * cell
    expected = mass.reshape(bins, sub, bins, sub).sum((1, 3)) * n
    observed = torch.histogramdd(x, bins=[edges, edges]).hist
    keep = expected > 20
    z = (observed - expected)[keep] / expected[keep].sqrt()
    assert float(z.abs().max()) < 5.0
    assert float(mass.sum()) == pytest.approx(1.0, abs=2e-3)  # all the mass is in the box


@pytest.mark.parametrize("name", CURVES)
def test_curve_entropy_matches_draws(name):
    n = 4000
    nll = -true_log_prob(name, load(name, n, seed=12, dtype=F64))
    assert torch.isfinite(nll).all()
    z = (nll.mean().item() - oracle_nll(name)) / (nll.std().item() / math.sqrt(n))
    assert abs(z) < 4.5


def test_rings_closed_form_equals_quadrature_over_the_angle():
    from pyro_ebm.datasets.densities import _on_curve

    angle = 2 * math.pi * (torch.arange(4000, dtype=F64) + 0.5) / 4000
    circle = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    nodes = torch.cat([r * circle for r in (3.0, 2.25, 1.5, 0.75)])
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=F64) * 2
    torch.testing.assert_close(true_log_prob("rings", x), _on_curve(x, nodes, 0.08))


def test_pinwheel_inverse_map_equals_direct_integration():
    # p(x) = sum_k 1/5 int int N(r) N(tau) delta(x - F_k(r, tau)): the delta smoothed by a
    # Gaussian of width 0.01 and integrated on a grid; agrees to the smoothing's bias
    r = torch.linspace(-0.8, 2.8, 1801, dtype=F64)
    tau = torch.linspace(-0.6, 0.6, 721, dtype=F64)
    dr, dt = (r[1] - r[0]).item(), (tau[1] - tau[0]).item()
    rr, tt = torch.meshgrid(r, tau, indexing="ij")
    log_w = -0.5 * ((rr - 1) / 0.3) ** 2 - 0.5 * (tt / 0.1) ** 2 - math.log(2 * math.pi * 0.03)
    width = 0.01
    for point in ([1.1, 3.2], [0.0, 2.0], [-1.5, 0.4]):
        total = 0.0
        for k in range(5):
            a = 2 * math.pi * k / 5 + 0.25 * torch.exp(rr)
            px = 2 * (rr * torch.cos(a) + tt * torch.sin(a))
            py = 2 * (-rr * torch.sin(a) + tt * torch.cos(a))
            d2 = (px - point[0]) ** 2 + (py - point[1]) ** 2
            kernel = torch.exp(log_w - 0.5 * d2 / width**2) / (2 * math.pi * width**2)
            total += float(kernel.sum()) * dr * dt / 5
        exact = float(true_log_prob("pinwheel", torch.tensor([point], dtype=F64)))
        assert exact == pytest.approx(math.log(total), abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", CURVES)
def test_curve_entropies_recomputed_on_the_grid(name):
    grid = torch.linspace(-6.0, 6.0, 301, dtype=F64)
    w = torch.ones(301, dtype=F64)
    w[0] = w[-1] = 0.5
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)
    log_p = true_log_prob(name, points)
    p = log_p.exp()
    integrand = torch.where(p > 0, -p * log_p, torch.zeros_like(p))
    entropy = float((w[:, None] * w[None, :] * integrand).sum() * (12 / 300) ** 2)
    assert oracle_nll(name) == pytest.approx(entropy, abs=2e-6)
