"""Tests of pyro_ebm.evaluation: quadrature and AIS log Z, log-likelihoods, MMD and toy-set KL."""

from __future__ import annotations

import copy
import math
import statistics

import pytest
import torch
from torch.distributions import Independent, Normal

from pyro_ebm import EnergyDistribution, datasets, evaluation
from pyro_ebm.energies import GaussianEnergy, GaussianMixtureEnergy, MLPEnergy
from pyro_ebm.evaluation import (
    AISResult,
    ais_log_partition,
    grid_log_partition,
    kl_to_truth,
    log_likelihood,
    mmd,
)

F64 = torch.float64
Z_CRIT = 3.0  # AIS: |estimate - truth| < Z_CRIT * stderr


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def log_normal_mass(lo: float, hi: float, loc: float = 0.0, scale: float = 1.0) -> float:
    """log of the integral of exp(-(x - loc)^2 / (2 scale^2)) over [lo, hi] (erf formula)."""
    a, b = (lo - loc) / (scale * math.sqrt(2)), (hi - loc) / (scale * math.sqrt(2))
    return math.log(scale * math.sqrt(math.pi / 2) * (math.erf(b) - math.erf(a)))


def gaussian_1d() -> GaussianEnergy:
    return GaussianEnergy(torch.tensor([0.3], dtype=F64), torch.tensor([[0.49]], dtype=F64))


def gaussian_2d() -> GaussianEnergy:
    return GaussianEnergy(
        torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=F64)
    )


def mixture_2d() -> GaussianMixtureEnergy:
    """Two separated modes with unequal, unnormalized weights: log Z = log 4."""
    return GaussianMixtureEnergy(
        torch.tensor([[-3.0, 0.0], [3.0, 0.5]], dtype=F64),
        torch.tensor([0.5, 0.7], dtype=F64),
        torch.tensor([1.0, 3.0], dtype=F64),
    )


def gaussian_10d() -> GaussianEnergy:
    """A correlated 10-d Gaussian (condition number 10, random rotation, shifted mean)."""
    rotated = GaussianEnergy.ill_conditioned(10, 10.0, generator(1), dtype=F64)
    return GaussianEnergy(torch.linspace(-1, 1, 10, dtype=F64), 0.5 * rotated.covariance)


class ScalarEnergy(torch.nn.Module):
    """A standard normal energy on scalars: event_shape ()."""

    event_shape = torch.Size([])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.square()


# --------------------------------------------------------------------------------------------
# grid_log_partition
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, bounds, resolution",
    [
        (gaussian_1d, (-10.0, 10.0), 2001),
        (gaussian_2d, (-10.0, 10.0), 401),
        (mixture_2d, ((-12.0, 12.0), (-12.0, 12.0)), 601),
    ],
    ids=["gaussian_1d", "gaussian_2d", "mixture_2d"],
)
def test_grid_matches_exact_log_partition(make, bounds, resolution):
    energy = make()
    log_z = grid_log_partition(energy, bounds, resolution)
    assert log_z.shape == () and log_z.dtype == F64
    assert abs(log_z.item() - energy.log_partition().item()) < 1e-6


def test_grid_truncated_box_matches_erf_formula():
    energy = GaussianEnergy(
        torch.zeros(2, dtype=F64), torch.diag(torch.tensor([1.0, 4.0], dtype=F64))
    )
    box = ((-1.0, 2.0), (0.0, 3.0))
    expected = log_normal_mass(-1.0, 2.0) + log_normal_mass(0.0, 3.0, scale=2.0)
    log_z = grid_log_partition(energy, box, 201)
    assert abs(log_z.item() - expected) < 1e-7
    assert log_z.item() < energy.log_partition().item() - 0.5  # clearly less than the full Z


@pytest.mark.parametrize("rule, order", [("simpson", 4), ("trapezoid", 2)])
@pytest.mark.parametrize("odd", [True, False], ids=["odd", "even"])
def test_grid_convergence_order(rule, order, odd):
    # On a truncated interval the integrand does not vanish at the ends, so the error decays
    # like h^order (Simpson with an even node count closes with the 3/8 rule: still h^4).
    energy = gaussian_1d()
    expected = log_normal_mass(-1.0, 2.0, loc=0.3, scale=0.7)
    sizes = (41, 81) if odd else (40, 80)
    errors = []
    for n in sizes:
        log_z = grid_log_partition(energy, (-1.0, 2.0), n, rule=rule)
        errors.append(abs(log_z.item() - expected))
    h_ratio = (sizes[1] - 1) / (sizes[0] - 1)
    observed = math.log(errors[0] / errors[1]) / math.log(h_ratio)
    assert abs(observed - order) < 0.3
    assert errors[1] < (1e-7 if rule == "simpson" else 1e-4)


def test_grid_is_chunked_and_stable():
    energy = gaussian_2d()
    reference = grid_log_partition(energy, (-8.0, 8.0), 101)
    chunked = grid_log_partition(energy, (-8.0, 8.0), 101, batch_size=97)
    assert abs(chunked.item() - reference.item()) < 1e-12
    # energies around 1e4 would overflow exp(-E) but not the log-sum-exp
    shifted = grid_log_partition(lambda x: energy(x) + 1e4, (-8.0, 8.0), 101, batch_size=97, dim=2)
    assert abs(shifted.item() - (reference.item() - 1e4)) < 1e-9


def test_grid_float32_mlp_module():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mlp = MLPEnergy(2, hidden=(16, 16))
    mlp64 = copy.deepcopy(mlp).double()
    log_z = grid_log_partition(mlp, (-3.0, 3.0), 101)
    log_z64 = grid_log_partition(mlp64, (-3.0, 3.0), 101)
    assert log_z.dtype == F64 and log_z.shape == ()
    assert torch.isfinite(log_z)
    assert abs(log_z.item() - log_z64.item()) < 1e-4
    assert next(mlp.parameters()).dtype == torch.float32  # the module is left as it was


def test_grid_energy_shapes_and_targets():
    # event_shape (): points of shape (n,); a callable without event_shape: (n, dim)
    expected = 0.5 * math.log(2 * math.pi)
    assert abs(grid_log_partition(ScalarEnergy(), (-10, 10)).item() - expected) < 1e-8
    plain = grid_log_partition(lambda x: 0.5 * x.square().sum(-1), (-10, 10), dim=1)
    assert abs(plain.item() - expected) < 1e-8
    nested = grid_log_partition(lambda x: 0.5 * x.square().sum(-1), ((-10, 10), (-10, 10)))
    assert abs(nested.item() - 2 * expected) < 1e-8
    dist = EnergyDistribution(gaussian_2d(), (2,))
    assert abs(grid_log_partition(dist, (-10, 10)).item() - gaussian_2d().log_partition()) < 1e-6


def test_grid_infinite_energy_counts_as_zero_density():
    half = grid_log_partition(
        lambda x: torch.where(x[:, 0] >= 0, 0.5 * x[:, 0] ** 2, math.inf), (-10, 10), 2001, dim=1
    )
    assert abs(half.item() - math.log(math.sqrt(math.pi / 2))) < 5e-3  # O(h) at the jump


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bounds": (-1.0, 1.0, 2.0)}, "bounds"),
        ({"bounds": ((-1.0, 1.0), (0.0, 1.0), (0.0, 1.0))}, "bounds"),
        ({"bounds": (1.0, -1.0)}, "bounds"),
        ({"bounds": (-math.inf, 1.0)}, "bounds"),
        ({"bounds": "box"}, "bounds"),
        ({"resolution": 1}, "resolution"),
        ({"resolution": 10.5}, "resolution"),
        ({"resolution": True}, "resolution"),
        ({"resolution": (11, 11, 11)}, "resolution"),
        ({"rule": "midpoint"}, "rule"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_grid_rejects_bad_arguments(kwargs, match):
    arguments = {"bounds": (-1.0, 1.0), "resolution": 11, **kwargs}
    with pytest.raises(ValueError, match=match):
        grid_log_partition(gaussian_2d(), **arguments)


def test_grid_rejects_bad_energies():
    three_d = GaussianEnergy(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="1-d or 2-d"):
        grid_log_partition(three_d, (-1.0, 1.0))
    with pytest.raises(ValueError, match="expected shape"):
        grid_log_partition(lambda x: x, (-1.0, 1.0), dim=2)
    with pytest.raises(ValueError, match="energy must be"):
        grid_log_partition(3.0, (-1.0, 1.0))
    with pytest.raises(ValueError, match="dim"):
        grid_log_partition(gaussian_1d(), (-1.0, 1.0), dim=2)


# --------------------------------------------------------------------------------------------
# ais_log_partition
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, kwargs",
    [
        (gaussian_2d, {"num_temperatures": 100, "num_chains": 256}),
        (gaussian_10d, {"num_temperatures": 200, "num_chains": 512}),
        (mixture_2d, {"num_temperatures": 200, "num_chains": 256}),
        (mixture_2d, {"num_temperatures": 100, "num_chains": 256, "schedule": "linear"}),
        (
            gaussian_2d,
            {
                "num_temperatures": 50,
                "num_chains": 256,
                "schedule": "geometric",
                "num_mcmc_steps": 2,
            },
        ),
        (
            mixture_2d,
            {
                "num_temperatures": 200,
                "num_chains": 256,
                "kernel": "hmc",
                "kernel_kwargs": {"num_steps": 3},
            },
        ),
    ],
    ids=[
        "gaussian_2d",
        "gaussian_10d",
        "mixture_2d",
        "mixture_linear",
        "gaussian_geometric",
        "mixture_hmc",
    ],
)
def test_ais_log_partition_within_three_standard_errors(make, kwargs):
    energy = make()
    result = ais_log_partition(energy, seed=0, **kwargs)
    truth = energy.log_partition().item()
    assert isinstance(result, AISResult)
    assert result.log_Z.shape == () and result.log_Z.dtype == F64
    assert 0 < result.stderr < 0.05
    assert abs(result.log_Z.item() - truth) < Z_CRIT * result.stderr
    assert result.ess > 0.3 * kwargs["num_chains"]
    target = 0.65 if kwargs.get("kernel") == "hmc" else 0.574
    assert abs(result.acceptance_rate - target) < 0.1


def test_ais_with_a_fitted_base():
    energy = mixture_2d()
    data = energy.sample(2000, generator=generator(3))
    base = Independent(Normal(data.mean(0), data.std(0)), 1)
    # over 40 seeds this configuration gave z-scores with mean 0.15 and sd 0.95
    result = ais_log_partition(energy, base=base, num_temperatures=100, num_chains=256, seed=0)
    assert result.stderr < 0.05
    assert abs(result.log_Z.item() - energy.log_partition().item()) < Z_CRIT * result.stderr


def test_ais_check_has_power():
    # The z-test rejects an answer that is off by 0.2 nats ...
    energy = gaussian_10d()
    result = ais_log_partition(energy, num_temperatures=200, num_chains=512, seed=0)
    wrong = energy.log_partition().item() + 0.2
    assert abs(result.log_Z.item() - wrong) > Z_CRIT * result.stderr
    # ... and fails when the annealing is too short for a target far from the base: the
    # estimate is biased low (Jensen) and the weights collapse onto a few chains.
    hard = GaussianEnergy(torch.full((10,), 2.0, dtype=F64), 0.1 * torch.eye(10, dtype=F64))
    short = ais_log_partition(hard, num_temperatures=3, num_chains=256, seed=0)
    truth = hard.log_partition().item()
    assert short.log_Z.item() < truth - Z_CRIT * short.stderr
    assert short.ess < 10


def test_ais_stderr_matches_spread_over_seeds():
    energy = gaussian_10d()
    truth = energy.log_partition().item()
    runs = [
        ais_log_partition(energy, num_temperatures=30, num_chains=64, seed=seed)
        for seed in range(16)
    ]
    estimates = [r.log_Z.item() for r in runs]
    spread = statistics.stdev(estimates)
    reported = statistics.mean(r.stderr for r in runs)
    # the sd of 16 draws has a relative error of about 18%
    assert 0.6 < spread / reported < 1.6
    assert abs(statistics.mean(estimates) - truth) < 4 * spread / math.sqrt(len(runs))


def test_ais_weights_are_exact_when_the_target_is_the_base():
    # E(x) = |x|^2 / 2 + 3 is the standard normal up to Z = (2 pi)^{d/2} e^{-3}: every
    # weight equals Z, whatever the transitions do.
    d = 3
    result = ais_log_partition(
        lambda x: 0.5 * x.square().sum(-1) + 3.0,
        event_shape=(d,),
        base=Independent(Normal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)), 1),
        num_temperatures=20,
        num_chains=64,
        seed=0,
    )
    expected = 0.5 * d * math.log(2 * math.pi) - 3.0
    torch.testing.assert_close(result.log_weights, torch.full((64,), expected, dtype=F64))
    assert abs(result.log_Z.item() - expected) < 1e-12
    assert result.stderr < 1e-12 and abs(result.ess - 64) < 1e-9


def test_ais_single_temperature_is_importance_sampling():
    energy = gaussian_2d()
    base = Independent(Normal(torch.zeros(2, dtype=F64), 2 * torch.ones(2, dtype=F64)), 1)
    result = ais_log_partition(energy, base=base, num_temperatures=1, num_chains=32, seed=0)
    x = result.samples
    torch.testing.assert_close(result.log_weights, -energy(x) - base.log_prob(x))
    assert result.step_sizes.numel() == 0 and math.isnan(result.acceptance_rate)


@pytest.mark.parametrize("custom_base", [False, True], ids=["default_base", "custom_base"])
def test_ais_seeded_determinism_and_global_rng_untouched(custom_base):
    energy = gaussian_2d()
    base = None
    if custom_base:
        base = Independent(Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)), 1)
    kwargs = {"base": base, "num_temperatures": 10, "num_chains": 16}
    state = torch.get_rng_state()
    first = ais_log_partition(energy, seed=7, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    second = ais_log_partition(energy, seed=7, **kwargs)
    third = ais_log_partition(energy, seed=generator(7), **kwargs)
    other = ais_log_partition(energy, seed=8, **kwargs)
    assert torch.equal(first.log_weights, second.log_weights)
    assert torch.equal(first.samples, second.samples)
    assert torch.equal(first.log_weights, third.log_weights)
    assert not torch.equal(first.log_weights, other.log_weights)


def test_ais_infinite_and_nan_energies_have_zero_density():
    # A half-normal: E = x^2 / 2 for x > 0 and +inf (or NaN) elsewhere; Z = sqrt(pi / 2).
    truth = math.log(math.sqrt(math.pi / 2))
    for outside in (math.inf, math.nan):

        def energy(x, outside=outside):
            return torch.where(x[:, 0] > 0, 0.5 * x[:, 0] ** 2, outside)

        result = ais_log_partition(
            energy, event_shape=(1,), num_temperatures=50, num_chains=512, seed=0
        )
        assert abs(result.log_Z.item() - truth) < Z_CRIT * result.stderr
        alive = torch.isfinite(result.log_weights)
        assert 0.3 < alive.double().mean() < 0.7  # dead chains carry weight zero
        assert bool((result.samples[alive] > 0).all())


def test_ais_float32_module_and_other_event_shapes():
    energy = gaussian_2d().float()
    result = ais_log_partition(energy, num_temperatures=50, num_chains=256, seed=0)
    assert result.samples.dtype == torch.float32 and result.log_Z.dtype == F64
    assert abs(result.log_Z.item() - energy.log_partition().item()) < Z_CRIT * result.stderr + 1e-3
    scalar = ais_log_partition(ScalarEnergy(), num_temperatures=20, num_chains=64, seed=0)
    assert scalar.samples.shape == (64,)
    assert abs(scalar.log_Z.item() - 0.5 * math.log(2 * math.pi)) < 1e-6  # the target is the base
    matrix = ais_log_partition(
        lambda x: 0.5 * x.square().sum((-2, -1)) / 0.25,
        event_shape=(2, 3),
        num_temperatures=50,
        num_chains=256,
        seed=0,
        inv_mass=torch.full((2, 3), 0.25),
    )
    assert matrix.samples.shape == (256, 2, 3)
    truth = 3 * math.log(2 * math.pi * 0.25)
    assert abs(matrix.log_Z.item() - truth) < Z_CRIT * matrix.stderr


def test_ais_accepts_an_energy_distribution():
    energy = gaussian_2d()
    kwargs = {"num_temperatures": 10, "num_chains": 16, "seed": 3}
    direct = ais_log_partition(energy, **kwargs)
    wrapped = ais_log_partition(EnergyDistribution(energy, (2,)), **kwargs)
    assert torch.equal(direct.log_weights, wrapped.log_weights)


def test_ais_schedules():
    for schedule in ("sigmoid", "geometric", "linear"):
        result = ais_log_partition(
            gaussian_2d(), num_temperatures=7, num_chains=4, seed=0, schedule=schedule
        )
        betas = result.betas
        assert betas.shape == (8,) and betas[0] == 0 and betas[-1] == 1
        assert bool((betas.diff() > 0).all())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel": "rwmh"}, "kernel"),
        ({"schedule": "cosine"}, "schedule"),
        ({"num_chains": 1}, "num_chains"),
        ({"num_temperatures": 0}, "num_temperatures"),
        ({"num_mcmc_steps": 0}, "num_mcmc_steps"),
        ({"step_size": -0.1}, "step_size"),
        ({"adapt_step_size": "yes"}, "adapt_step_size"),
        ({"base": "normal"}, "base"),
        ({"base": Normal(torch.zeros(2), torch.ones(2))}, "base"),
    ],
)
def test_ais_rejects_bad_arguments(kwargs, match):
    arguments = {"num_temperatures": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        ais_log_partition(gaussian_2d(), **arguments)


def test_ais_needs_an_event_shape_and_the_right_energy_shape():
    with pytest.raises(ValueError, match="event_shape"):
        ais_log_partition(lambda x: x.square().sum(-1), num_temperatures=5)
    with pytest.raises(ValueError, match="expected shape"):
        ais_log_partition(lambda x: x, event_shape=(2,), num_temperatures=5)


# --------------------------------------------------------------------------------------------
# log_likelihood, test_nll, kl_to_truth
# --------------------------------------------------------------------------------------------


def test_log_likelihood_of_a_normalized_gaussian():
    energy = gaussian_2d()
    data = energy.sample(100, generator=generator(0))
    exact = energy.log_prob(data)
    per_point = log_likelihood(energy, data, energy.log_partition(), reduction="none")
    torch.testing.assert_close(per_point, exact)
    mean = log_likelihood(energy, data, energy.log_partition().item())
    assert mean.shape == () and mean.dtype == F64
    torch.testing.assert_close(mean, exact.mean())


def test_log_likelihood_casts_data_and_keeps_gradients():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mlp = MLPEnergy(2, hidden=(8,))
    data = torch.randn(10, 2, dtype=F64, generator=generator(0))
    value = log_likelihood(mlp, data, torch.tensor(1.5, dtype=F64))
    value.backward()
    assert all(p.grad is not None for p in mlp.parameters())
    with pytest.raises(ValueError, match="reduction"):
        log_likelihood(mlp, data, 0.0, reduction="sum")
    with pytest.raises(ValueError, match="data"):
        log_likelihood(mlp, data[:, :1], 0.0)


def test_test_nll_of_a_gaussian_is_its_entropy():
    energy = gaussian_2d()
    data = energy.sample(4000, generator=generator(1))
    out = evaluation.test_nll(energy, data, bounds=(-8.0, 8.0), resolution=201)
    entropy = 1.0 + energy.log_partition().item()  # d/2 + log Z with d = 2
    assert abs(out["log_Z"] - energy.log_partition().item()) < 1e-6
    assert abs(out["nll"] - entropy) < 4 * out["stderr"]


def test_kl_to_truth_of_the_true_density_is_zero():
    def truth(x):
        return -datasets.true_log_prob("8gaussians", x)

    out = kl_to_truth(truth, "8gaussians", n_test=20000, seed=0)
    # all but ~1e-4 of the mass lies in [-4, 4]^2
    assert -1e-3 < out["log_Z"] <= 0.0
    # the oracle is exact; the Monte-Carlo error of the NLL is stderr (about 0.007 here)
    assert out["stderr"] < 0.01
    assert abs(out["kl"]) < 4 * out["stderr"] + 1e-3
    assert out["oracle"] == datasets.oracle_nll("8gaussians")


def test_kl_to_truth_of_a_wrong_model_is_positive():
    broad = GaussianEnergy(torch.zeros(2, dtype=F64), 4.0 * torch.eye(2, dtype=F64))
    out = kl_to_truth(broad, "8gaussians", n_test=5000, seed=1)
    assert out["kl"] > 0.5 and out["kl"] > 20 * out["stderr"]
    assert kl_to_truth(broad, "moons", n_test=5000, seed=1)["kl"] > 0.5  # every toy is known
    with pytest.raises(ValueError, match="digits"):
        kl_to_truth(broad, "digits")


# --------------------------------------------------------------------------------------------
# mmd
# --------------------------------------------------------------------------------------------


def brute_force_mmd(x: torch.Tensor, y: torch.Tensor, h: float) -> float:
    def k(a, b):
        return math.exp(-float((a - b).square().sum()) / (2 * h * h))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_matches_the_unbiased_formula_and_median_heuristic():
    g = generator(0)
    x = torch.randn(7, 3, dtype=F64, generator=g)
    y = torch.randn(5, 3, dtype=F64, generator=g) + 0.5
    assert abs(mmd(x, y, bandwidth=1.3).item() - brute_force_mmd(x, y, 1.3)) < 1e-12
    pooled = torch.cat([x, y])
    median = torch.pdist(pooled).median().item()
    assert abs(mmd(x, y).item() - brute_force_mmd(x, y, median)) < 1e-12


def test_mmd_same_versus_shifted_distributions():
    g = generator(1)
    x = torch.randn(400, 2, dtype=F64, generator=g)
    y = torch.randn(300, 2, dtype=F64, generator=g)
    same = mmd(x, y)
    assert same.shape == () and abs(same.item()) < 0.01  # the null sd is about 0.002
    shifted = mmd(x, y + torch.tensor([1.0, 0.0], dtype=F64))
    assert shifted.item() > 0.05
    torch.testing.assert_close(mmd(y, x), same)
    torch.testing.assert_close(mmd(x.reshape(400, 2, 1), y.reshape(300, 1, 2)), same)


def test_mmd_is_differentiable():
    x = torch.randn(20, 2, dtype=F64, generator=generator(2), requires_grad=True)
    y = torch.randn(20, 2, dtype=F64, generator=generator(3)) + 1.0
    mmd(x, y).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (torch.zeros(5), torch.zeros(5, 1), {}, "x"),
        (torch.zeros(1, 2), torch.zeros(5, 2), {}, "x"),
        (torch.zeros(5, 2), torch.zeros(1, 2), {}, "y"),
        (torch.zeros(5, 2), torch.zeros(5, 3), {}, "features"),
        (torch.zeros(5, 2), torch.zeros(5, 2), {"bandwidth": 0.0}, "bandwidth"),
        (torch.zeros(5, 2, dtype=torch.long), torch.zeros(5, 2), {}, "x"),
    ],
)
def test_mmd_rejects_bad_inputs(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mmd(x, y, **kwargs)


# --------------------------------------------------------------------------------------------
# AIS reads the accepted point's parts by value, not from the step's last energy call
# --------------------------------------------------------------------------------------------


class _ExtraCalls:
    """A step module that evaluates the energy again after each real step (and before it)."""

    def __init__(self, module):
        self.module = module
        self.TARGET_ACCEPT = module.TARGET_ACCEPT

    def step(self, energy_fn, state, step_size, metric, generator, event_dim, **kwargs):
        energy_fn(state.position + 0.5)  # a point no chain moves to
        new, info = self.module.step(
            energy_fn, state, step_size, metric, generator, event_dim, **kwargs
        )
        energy_fn(torch.zeros_like(state.position))  # evaluated last, never accepted
        return new, info


@pytest.mark.parametrize("kernel", ["mala", "hmc"])
def test_ais_does_not_depend_on_the_order_of_energy_calls(monkeypatch, kernel):
    from pyro_ebm.evaluation import ais as ais_module

    energy = GaussianEnergy(torch.ones(2), 0.5 * torch.eye(2), dtype=F64)
    kwargs = dict(num_temperatures=20, num_chains=32, kernel=kernel, seed=3)
    if kernel == "hmc":
        kwargs["kernel_kwargs"] = {"num_steps": 3}
    plain = ais_log_partition(energy, **kwargs)
    patched = dict(ais_module._AIS_KERNELS)
    patched[kernel] = _ExtraCalls(patched[kernel])
    monkeypatch.setattr(ais_module, "_AIS_KERNELS", patched)
    noisy = ais_log_partition(energy, **kwargs)
    torch.testing.assert_close(noisy.log_weights, plain.log_weights, rtol=0, atol=0)
    torch.testing.assert_close(noisy.samples, plain.samples, rtol=0, atol=0)


def test_annealed_energy_evaluates_a_position_no_call_saw():
    from pyro_ebm.evaluation._annealed import AnnealedEnergy

    base = Independent(Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)), 1)
    annealed = AnnealedEnergy(lambda x: x.square().sum(-1), base, torch.Size([2]))
    x = torch.randn(4, 2, dtype=F64, generator=generator(0))
    current = annealed.components(x)
    moved = x + 1.0
    accepted = torch.tensor([True, False, True, False])
    parts = annealed.parts_at(torch.where(accepted[:, None], moved, x), accepted, current)
    expected = annealed.components(torch.where(accepted[:, None], moved, x))
    torch.testing.assert_close(parts.e, expected.e)
    torch.testing.assert_close(parts.ge, expected.ge)
    assert annealed.evaluations == []


class _Wrapper(torch.nn.Module):
    """A module holding an energy, with an event_shape and a forward that is not the energy."""

    def __init__(self):
        super().__init__()
        self.energy = GaussianEnergy(torch.zeros(2), torch.eye(2), dtype=F64)
        self.event_shape = torch.Size([2])

    def forward(self, x):  # pragma: no cover - must not be called
        raise AssertionError("the wrapper's forward is not its energy")


def test_a_module_wrapping_an_energy_is_read_as_its_energy_like_sample_does():
    log_z = grid_log_partition(_Wrapper(), (-8.0, 8.0), resolution=101)
    assert abs(log_z.item() - math.log(2 * math.pi)) < 1e-6
    values = log_likelihood(_Wrapper(), torch.zeros(3, 2, dtype=F64), log_z)
    assert abs(values.item() + math.log(2 * math.pi)) < 1e-6
