"""Tests of the analytic energies: shapes, dtypes, exact log Z, exact samples and moments."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from pyro_ebm.energies import (
    AnalyticEnergy,
    BananaEnergy,
    DoubleWellEnergy,
    FunnelEnergy,
    GaussianEnergy,
    GaussianMixtureEnergy,
)

F64 = torch.float64
Z_CRIT = 4.5  # two-sided z threshold; false-alarm rate ~7e-6 per comparison


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def covariance_3d() -> torch.Tensor:
    a = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.5, 0.4]], dtype=F64)
    return a @ a.mT + 0.1 * torch.eye(3, dtype=F64)


CASES: dict[str, Callable[[], AnalyticEnergy]] = {
    "gaussian": lambda: GaussianEnergy(torch.tensor([1.0, -0.5, 2.0], dtype=F64), covariance_3d()),
    "gaussian_ill": lambda: GaussianEnergy.ill_conditioned(4, 100.0, generator(1), dtype=F64),
    "mixture_iso": lambda: GaussianMixtureEnergy(
        torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -3.0]], dtype=F64),
        torch.tensor([0.5, 1.0, 0.7], dtype=F64),
        torch.tensor([1.0, 3.0, 0.5], dtype=F64),
    ),
    "mixture_diag": lambda: GaussianMixtureEnergy(
        torch.tensor([[-1.0, 0.0, 2.0], [1.5, 1.0, -1.0]], dtype=F64),
        torch.tensor([[0.5, 2.0, 1.0], [1.0, 0.3, 0.8]], dtype=F64),
        torch.tensor([2.0, 5.0], dtype=F64),
    ),
    "banana": lambda: BananaEnergy(dim=3, dtype=F64),
    "funnel": lambda: FunnelEnergy(dim=4, dtype=F64),
    "double_well": lambda: DoubleWellEnergy(dim=3, dtype=F64),
}

# For moment z-tests the fourth moments must be moderate: the default funnel's x_k have
# E x^4 = 3 exp(2 * 9), so use scale 1 there (its own structure is tested separately below).
MOMENT_CASES: dict[str, Callable[[], AnalyticEnergy]] = {
    **{name: make for name, make in CASES.items() if name != "funnel"},
    "funnel_scale1": lambda: FunnelEnergy(dim=4, scale=1.0, dtype=F64),
    "banana_strong": lambda: BananaEnergy(dim=2, scale=2.0, curvature=0.5, dtype=F64),
    "double_well_high": lambda: DoubleWellEnergy(dim=2, barrier=20.0, dtype=F64),
    "double_well_low": lambda: DoubleWellEnergy(dim=1, barrier=0.05, dtype=F64),
}


@pytest.fixture(params=sorted(CASES))
def energy(request: pytest.FixtureRequest) -> AnalyticEnergy:
    return CASES[request.param]()


# --------------------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("batch_shape", [(), (5,), (3, 4), (0,)])
def test_output_shape(energy: AnalyticEnergy, batch_shape: tuple[int, ...]) -> None:
    x = torch.randn(*batch_shape, *energy.event_shape, dtype=F64, generator=generator(0))
    out = energy(x)
    assert out.shape == batch_shape
    assert torch.isfinite(out).all()
    assert energy.log_prob(x).shape == batch_shape


def test_batched_equals_unbatched(energy: AnalyticEnergy) -> None:
    x = torch.randn(3, 4, *energy.event_shape, dtype=F64, generator=generator(0))
    batched = energy(x)
    looped = torch.stack([torch.stack([energy(row) for row in block]) for block in x])
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved(energy: AnalyticEnergy, dtype: torch.dtype) -> None:
    energy = energy.to(dtype)
    x = torch.randn(5, *energy.event_shape, dtype=dtype, generator=generator(0))
    assert energy(x).dtype == dtype
    log_z = energy.log_partition()
    assert log_z.dtype == dtype and log_z.shape == ()
    samples = energy.sample(7, generator=generator(0))
    assert samples.dtype == dtype and samples.shape == (7, *energy.event_shape)
    assert torch.isfinite(samples).all()
    for moment in (energy.mean(), energy.variance()):
        assert moment.dtype == dtype and moment.shape == energy.event_shape


def test_energy_computes_in_input_dtype(energy: AnalyticEnergy) -> None:
    x = torch.randn(5, *energy.event_shape, dtype=torch.float32, generator=generator(0))
    out = energy(x)  # float64 buffers, float32 input
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), energy(x.double()), rtol=1e-4, atol=1e-4)


def test_log_partition_survives_dtype_round_trip() -> None:
    reference = DoubleWellEnergy(dim=2, barrier=3.0, dtype=F64).log_partition()
    round_trip = DoubleWellEnergy(dim=2, barrier=3.0, dtype=torch.float32).double()
    assert abs(round_trip.log_partition().item() - reference.item()) < 1e-13


def test_wrong_event_shape_raises(energy: AnalyticEnergy) -> None:
    bad = torch.zeros(5, energy.event_shape[0] + 1, dtype=F64)
    with pytest.raises(ValueError, match="event shape"):
        energy(bad)
    with pytest.raises(ValueError, match="event shape"):
        energy(torch.tensor(0.0, dtype=F64))


def test_gradcheck(energy: AnalyticEnergy) -> None:
    x = torch.randn(3, *energy.event_shape, dtype=F64, generator=generator(2))
    x = x.clamp(-2.0, 2.0).requires_grad_()
    assert torch.autograd.gradcheck(energy, (x,))


# --------------------------------------------------------------------------- exact log Z


def test_gaussian_matches_torch_multivariate_normal() -> None:
    energy = CASES["gaussian"]()
    reference = torch.distributions.MultivariateNormal(energy.loc, energy.covariance)
    x = 3.0 * torch.randn(50, 3, dtype=F64, generator=generator(3))
    torch.testing.assert_close(energy.log_prob(x), reference.log_prob(x), rtol=0, atol=1e-10)
    # and no constant in E: the energy at the mean is exactly zero
    assert energy(energy.loc).item() == 0.0


def test_gaussian_gradient_is_precision_times_offset() -> None:
    energy = CASES["gaussian"]()
    x = torch.randn(6, 3, dtype=F64, generator=generator(4)).requires_grad_()
    (grad,) = torch.autograd.grad(energy(x).sum(), x)
    expected = (x - energy.loc).detach() @ torch.linalg.inv(energy.covariance)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)


def test_mixture_matches_torch_mixture_same_family() -> None:
    energy = CASES["mixture_diag"]()
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=energy.log_weights),
        torch.distributions.Independent(torch.distributions.Normal(energy.locs, energy.scales), 1),
    )
    x = 3.0 * torch.randn(50, 3, dtype=F64, generator=generator(5))
    torch.testing.assert_close(energy.log_prob(x), reference.log_prob(x), rtol=0, atol=1e-10)
    assert abs(energy.log_partition().item() - math.log(7.0)) < 1e-14


def test_mixture_isotropic_scales_equal_repeated_diagonal() -> None:
    locs = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=F64)
    iso = GaussianMixtureEnergy(locs, torch.tensor([0.5, 2.0], dtype=F64))
    diag = GaussianMixtureEnergy(locs, torch.tensor([[0.5, 0.5], [2.0, 2.0]], dtype=F64))
    x = torch.randn(10, 2, dtype=F64, generator=generator(6))
    torch.testing.assert_close(iso(x), diag(x), rtol=0, atol=0)


def normal(loc: float | torch.Tensor, scale: float | torch.Tensor) -> torch.distributions.Normal:
    as64 = [torch.as_tensor(value, dtype=F64) for value in (loc, scale)]
    return torch.distributions.Normal(*as64)


def test_banana_and_funnel_match_their_generative_factorization() -> None:
    x = torch.randn(40, 3, dtype=F64, generator=generator(7))

    banana = BananaEnergy(dim=3, scale=1.5, curvature=0.7, dtype=F64)
    s, b = 1.5, 0.7
    expected = (
        normal(0.0, s).log_prob(x[:, 0])
        + normal(b * (x[:, 0] ** 2 - s**2), 1.0).log_prob(x[:, 1])
        + normal(0.0, 1.0).log_prob(x[:, 2])
    )
    torch.testing.assert_close(banana.log_prob(x), expected, rtol=0, atol=1e-10)

    funnel = FunnelEnergy(dim=3, scale=3.0, dtype=F64)
    v = x[:, 0]
    expected = normal(0.0, 3.0).log_prob(v) + normal(0.0, torch.exp(v / 2)[:, None]).log_prob(
        x[:, 1:]
    ).sum(-1)
    torch.testing.assert_close(funnel.log_prob(x), expected, rtol=0, atol=1e-10)


def grid_integral(values: torch.Tensor, *axes: torch.Tensor) -> torch.Tensor:
    """Trapezoid integral of ``values`` (grid shape, then any trailing dims) over the axes."""
    for dim in reversed(range(len(axes))):
        values = torch.trapezoid(values, axes[dim], dim=dim)
    return values


def grid_log_z_and_moments(
    log_integrand: torch.Tensor, points: torch.Tensor, *axes: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """log Z, mean and variance of exp(log_integrand) (w.r.t. the grid's measure) at ``points``."""
    peak = log_integrand.max()
    weights = torch.exp(log_integrand - peak)
    mass = grid_integral(weights, *axes)
    mean = grid_integral(weights[..., None] * points, *axes) / mass
    variance = grid_integral(weights[..., None] * (points - mean).square(), *axes) / mass
    return (mass.log() + peak).item(), mean, variance


def assert_matches_grid(
    energy: AnalyticEnergy, log_integrand: torch.Tensor, points: torch.Tensor, *axes: torch.Tensor
) -> None:
    log_z, mean, variance = grid_log_z_and_moments(log_integrand, points, *axes)
    assert abs(log_z - energy.log_partition().item()) < 1e-9
    torch.testing.assert_close(mean, energy.mean(), rtol=0, atol=1e-8)
    torch.testing.assert_close(variance, energy.variance(), rtol=1e-8, atol=0)


# Trapezoid quadrature of smooth, rapidly decaying integrands converges geometrically; the
# bounds leave tail masses far below the 1e-9 tolerance.
GRID_CASES = {
    "gaussian": (
        lambda: GaussianEnergy(
            torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=F64)
        ),
        ((-12.0, 13.0), (-10.0, 8.0)),
        1201,
    ),
    "mixture": (
        lambda: GaussianMixtureEnergy(
            torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=F64),
            torch.tensor([[0.5, 0.8], [1.0, 1.2]], dtype=F64),
            torch.tensor([1.0, 3.0], dtype=F64),
        ),
        ((-10.0, 10.0), (-10.0, 12.0)),
        1201,
    ),
    "banana": (lambda: BananaEnergy(dim=2, dtype=F64), ((-8.0, 8.0), (-10.0, 75.0)), 2401),
    "double_well": (lambda: DoubleWellEnergy(dim=2, dtype=F64), ((-3.0, 3.0), (-10, 10)), 1201),
}


@pytest.mark.parametrize("name", sorted(GRID_CASES))
def test_log_partition_and_moments_match_grid_quadrature(name: str) -> None:
    make, bounds, num = GRID_CASES[name]
    energy = make()
    axes = [torch.linspace(lo, hi, num, dtype=F64) for lo, hi in bounds]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    assert_matches_grid(energy, -energy(points), points, *axes)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_funnel_log_partition_and_moments_match_grid_quadrature(scale: float) -> None:
    # The neck is too thin for a rectangular grid, so integrate over (v, u) with x = u e^{v/2}
    # (dx = e^{v/2} du); the energy itself is still evaluated at the points x.
    energy = FunnelEnergy(dim=2, scale=scale, dtype=F64)
    v = torch.linspace(-12.0 * scale, 12.0 * scale, 2001, dtype=F64)
    u = torch.linspace(-12.0, 12.0, 1201, dtype=F64)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    points = torch.stack([vv, uu * torch.exp(vv / 2)], dim=-1)
    assert_matches_grid(energy, -energy(points) + vv / 2, points, v, u)


@pytest.mark.parametrize("barrier", [1e-3, 0.05, 1.0, 3.0, 20.0, 1e3, 1e5])
def test_double_well_log_partition_matches_bessel_closed_form(barrier: float) -> None:
    # int exp(-b (t^2 - 1)^2) dt = (pi / 2) e^{-b/2} [I_{-1/4}(b/2) + I_{1/4}(b/2)]
    closed_form = 0.5 * math.pi * (special.ive(-0.25, barrier / 2) + special.ive(0.25, barrier / 2))
    energy = DoubleWellEnergy(dim=1, barrier=barrier, dtype=F64)
    assert abs(energy.log_partition().item() - math.log(closed_form)) < 1e-12

    def density(t: float) -> float:
        return math.exp(-barrier * (t * t - 1.0) ** 2)

    half_width = math.sqrt(1.0 + math.sqrt(60.0 / barrier))
    quad = {"epsabs": 0.0, "epsrel": 1e-13, "limit": 500, "points": [-1.0, 1.0]}
    mass = integrate.quad(density, -half_width, half_width, **quad)[0]
    second = integrate.quad(lambda t: t * t * density(t), -half_width, half_width, **quad)[0]
    assert abs(energy.variance().item() - second / mass) < 1e-11 * max(1.0, second / mass)


@pytest.mark.parametrize("name", ["mixture_diag", "double_well", "gaussian"])
def test_log_partition_importance_sampling_3d(name: str) -> None:
    # Z = E_q[exp(-E(x)) / q(x)] with a broad Gaussian q (tails heavier than the target's)
    energy = CASES[name]()
    n = 200_000
    q = torch.distributions.MultivariateNormal(
        energy.mean(), covariance_matrix=4.0 * _covariance(energy)
    )
    x = q.loc + torch.randn(n, 3, dtype=F64, generator=generator(11)) @ q.scale_tril.mT
    log_w = -energy(x) - q.log_prob(x)
    shift = log_w.max()
    w = torch.exp(log_w - shift)
    estimate = w.mean()
    standard_error = w.std() / math.sqrt(n)
    log_z_hat = (estimate.log() + shift).item()
    relative_se = (standard_error / estimate).item()
    assert relative_se < 0.02  # the proposal is reasonable, so the check has power
    assert abs(log_z_hat - energy.log_partition().item()) < Z_CRIT * relative_se


def _covariance(energy: AnalyticEnergy) -> torch.Tensor:
    if isinstance(energy, GaussianEnergy):
        return energy.covariance
    return torch.diag(energy.variance())


# --------------------------------------------------------------------------- exact sampling


def z_test_moments(samples: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> None:
    n = samples.shape[0]
    mean_z = (samples.mean(0) - mean) / (variance.sqrt() / math.sqrt(n))
    centred = samples - samples.mean(0)
    sample_variance = centred.square().mean(0) * n / (n - 1)
    fourth = centred.pow(4).mean(0)
    variance_se = ((fourth - sample_variance.square()) / n).sqrt()
    variance_z = (sample_variance - variance) / variance_se
    assert (mean_z.abs() < Z_CRIT).all(), f"mean z-scores {mean_z.tolist()}"
    assert (variance_z.abs() < Z_CRIT).all(), f"variance z-scores {variance_z.tolist()}"


@pytest.mark.parametrize("name", sorted(MOMENT_CASES))
def test_sample_moments(name: str) -> None:
    energy = MOMENT_CASES[name]()
    samples = energy.sample(200_000, generator=generator(12))
    assert samples.shape == (200_000, *energy.event_shape)
    z_test_moments(samples, energy.mean(), energy.variance())


def stein_z_scores(energy: AnalyticEnergy, samples: torch.Tensor) -> torch.Tensor:
    """z-scores of the Stein identity E_p[x_j dE/dx_i] = delta_ij (integration by parts).

    It ties ``sample()`` to ``forward()``: moments alone cannot tell a banana from its mirror.
    """
    x = samples.clone().requires_grad_()
    (score,) = torch.autograd.grad(energy(x).sum(), x)
    products = x.detach()[:, None, :] * score[:, :, None]  # (n, i, j)
    n = samples.shape[0]
    identity = torch.eye(samples.shape[1], dtype=samples.dtype)
    return (products.mean(0) - identity) / (products.std(0) / math.sqrt(n))


@pytest.mark.parametrize("name", sorted({**MOMENT_CASES, **CASES}))
def test_samples_satisfy_stein_identity(name: str) -> None:
    energy = {**MOMENT_CASES, **CASES}[name]()
    z = stein_z_scores(energy, energy.sample(100_000, generator=generator(31)))
    assert (z.abs() < Z_CRIT).all(), f"Stein z-scores {z.tolist()}"


def test_stein_test_has_power() -> None:
    energy = BananaEnergy(dim=2, dtype=F64)
    mirrored = energy.sample(100_000, generator=generator(31)) * torch.tensor([1.0, -1.0])
    z_test_moments(mirrored, energy.mean(), energy.variance())  # same moments...
    assert stein_z_scores(energy, mirrored).abs().max() > 10 * Z_CRIT  # ...wrong density


def test_moment_test_has_power() -> None:
    # the same z-test rejects a banana sampled with the wrong curvature
    energy = BananaEnergy(dim=2, curvature=1.0, dtype=F64)
    wrong = BananaEnergy(dim=2, curvature=0.95, dtype=F64).sample(200_000, generator=generator(12))
    with pytest.raises(AssertionError, match="variance z-scores"):
        z_test_moments(wrong, energy.mean(), energy.variance())


def test_funnel_default_scale_structure() -> None:
    energy = FunnelEnergy(dim=4, dtype=F64)
    samples = energy.sample(200_000, generator=generator(13))
    v = samples[:, :1]
    standardized = samples[:, 1:] * torch.exp(-v / 2)
    z_test_moments(v, torch.zeros(1, dtype=F64), torch.full((1,), 9.0, dtype=F64))
    z_test_moments(standardized, torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
    torch.testing.assert_close(
        energy.variance(), torch.tensor([9.0] + [math.exp(4.5)] * 3, dtype=F64)
    )


@pytest.mark.parametrize("name", ["gaussian", "gaussian_ill"])
def test_gaussian_samples_fit_exp_minus_energy(name: str) -> None:
    # Under exp(-E)/Z, 2 E(x) ~ chi^2_d: check the mean energy (d/2, variance d/2 per draw)
    # and the whole distribution with a Kolmogorov-Smirnov test.
    energy = CASES[name]()
    d = energy.event_shape[0]
    n = 50_000
    energies = energy(energy.sample(n, generator=generator(14)))
    z = (energies.mean().item() - d / 2) / math.sqrt(d / 2 / n)
    assert abs(z) < Z_CRIT
    assert stats.kstest(2.0 * energies.numpy(), stats.chi2(d).cdf).pvalue > 1e-4
    # a sample from a slightly wider Gaussian is rejected by the same checks
    wider = energy.loc + 1.05 * (energy.sample(n, generator=generator(14)) - energy.loc)
    assert stats.kstest(2.0 * energy(wider).numpy(), stats.chi2(d).cdf).pvalue < 1e-4


def test_double_well_samples_fit_exact_cdf() -> None:
    energy = DoubleWellEnergy(dim=1, barrier=3.0, dtype=F64)
    x1 = energy.sample(20_000, generator=generator(15))[:, 0].numpy()
    # CDF of exp(-E)/Z by a cumulative trapezoid rule, normalized with the energy's own log Z
    grid = np.linspace(-3.0, 3.0, 60_001)
    unnormalized = integrate.cumulative_trapezoid(
        np.exp(-3.0 * (grid**2 - 1) ** 2), grid, initial=0
    )
    table = unnormalized / math.exp(energy.log_partition().item())
    assert abs(table[-1] - 1.0) < 1e-10

    def interpolated_cdf(values: np.ndarray) -> np.ndarray:
        return np.interp(values, grid, table, left=0.0, right=1.0)

    assert stats.kstest(x1, interpolated_cdf).pvalue > 1e-4


def test_ill_conditioned_has_requested_condition_number() -> None:
    energy = GaussianEnergy.ill_conditioned(6, 1e4, generator(16), dtype=F64)
    assert abs(torch.linalg.cond(energy.covariance).item() / 1e4 - 1) < 1e-8
    assert abs(torch.linalg.det(energy.covariance).item() - 1) < 1e-8
    torch.testing.assert_close(energy.loc, torch.zeros(6, dtype=F64))
    other = GaussianEnergy.ill_conditioned(6, 1e4, generator(17), dtype=F64)
    assert not torch.allclose(energy.covariance, other.covariance)


# --------------------------------------------------------------------------- determinism


def test_sample_is_deterministic_given_generator(energy: AnalyticEnergy) -> None:
    first = energy.sample(100, generator=generator(21))
    again = energy.sample(100, generator=generator(21))
    other = energy.sample(100, generator=generator(22))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sample_with_generator_leaves_global_rng_alone(energy: AnalyticEnergy) -> None:
    state = torch.get_rng_state()
    energy.sample(50, generator=generator(23))
    assert torch.equal(torch.get_rng_state(), state)


def test_sample_zero_draws(energy: AnalyticEnergy) -> None:
    assert energy.sample(0, generator=generator(0)).shape == (0, *energy.event_shape)


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GaussianEnergy(torch.zeros(2), torch.eye(3)), "covariance"),
        (lambda: GaussianEnergy(torch.zeros(2, 1), torch.eye(2)), "loc"),
        (lambda: GaussianEnergy(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])), "symm"),
        (lambda: GaussianEnergy(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "posit"),
        (lambda: GaussianEnergy(torch.tensor([0.0, math.nan]), torch.eye(2)), "loc"),
        (lambda: GaussianEnergy.ill_conditioned(3, 0.5), "condition_number"),
        (lambda: GaussianEnergy.ill_conditioned(0, 10.0), "dim"),
        (lambda: GaussianMixtureEnergy(torch.zeros(3), torch.ones(3)), "locs"),
        (lambda: GaussianMixtureEnergy(torch.zeros(2, 3), torch.ones(3)), "scales"),
        (lambda: GaussianMixtureEnergy(torch.zeros(2, 3), -torch.ones(2)), "scales"),
        (lambda: GaussianMixtureEnergy(torch.zeros(2, 3), torch.ones(2), torch.ones(3)), "weights"),
        (
            lambda: GaussianMixtureEnergy(torch.zeros(2, 3), torch.ones(2), torch.zeros(2)),
            "weights",
        ),
        (lambda: BananaEnergy(dim=1), "dim"),
        (lambda: BananaEnergy(scale=0.0), "scale"),
        (lambda: BananaEnergy(curvature=math.inf), "curvature"),
        (lambda: FunnelEnergy(dim=1), "dim"),
        (lambda: FunnelEnergy(scale=-1.0), "scale"),
        (lambda: FunnelEnergy(dim=2.5), "dim"),
        (lambda: DoubleWellEnergy(barrier=0.0), "barrier"),
        (lambda: DoubleWellEnergy(dim=True), "dim"),
    ],
)
def test_bad_arguments_raise(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_sample_size_raises(energy: AnalyticEnergy) -> None:
    with pytest.raises(ValueError, match="n must be"):
        energy.sample(-1)
    with pytest.raises(ValueError, match="n must be"):
        energy.sample(2.0)  # type: ignore[arg-type]
