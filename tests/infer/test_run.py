"""The vectorized runner: contract over every kernel, exactness, robustness and bad inputs."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from pyro_ebm import EnergyDistribution
from pyro_ebm.energies import GaussianEnergy
from pyro_ebm.infer import HMC, KERNELS, MALA, ULA, RandomWalkMH, sample
from pyro_ebm.infer.base import energy_and_grad, evaluate_energy, init_state
from pyro_ebm.infer.hmc import leapfrog
from pyro_ebm.infer.metric import Metric

from ..helpers import mcse_zscores

Z_CRIT = 4.5
ALL_KERNELS = sorted(KERNELS)


def iso_energy(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x.square().sum(-1)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract(kernel, dtype):
    energy = GaussianEnergy(torch.zeros(3), torch.eye(3)).to(dtype)
    out = sample(energy, 30, num_chains=5, kernel=kernel, warmup_steps=40, seed=0,
                 progress_bar=False, check_convergence=False)  # fmt: skip
    assert out.samples.shape == (5, 30, 3)
    assert out.samples.dtype == dtype
    assert torch.isfinite(out.samples).all()
    expected = {"lp", "acceptance_rate", "step_size", "diverging"}
    if kernel == "hmc":
        expected |= {"energy", "n_steps"}
    assert set(out.stats) == expected
    for name, value in out.stats.items():
        assert value.shape == (5, 30), name
        assert torch.isfinite(value.double()).all(), name
    assert out.stats["diverging"].dtype == torch.bool
    torch.testing.assert_close(out.stats["lp"], -energy(out.samples))
    assert ((out.stats["acceptance_rate"] >= 0) & (out.stats["acceptance_rate"] <= 1)).all()
    back = pickle.loads(pickle.dumps(out))
    torch.testing.assert_close(back.samples, out.samples)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_seeded_runs_are_identical_and_seeds_differ(kernel):
    kw = dict(num_chains=4, kernel=kernel, warmup_steps=30, event_shape=(2,), progress_bar=False,
              check_convergence=False)  # fmt: skip
    a = sample(iso_energy, 20, seed=7, **kw)
    b = sample(iso_energy, 20, seed=7, **kw)
    c = sample(iso_energy, 20, seed=8, **kw)
    assert torch.equal(a.samples, b.samples)
    for name in a.stats:
        assert torch.equal(a.stats[name], b.stats[name])
    assert not torch.equal(a.samples, c.samples)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_resume_equals_one_long_run(kernel):
    kw = dict(num_chains=3, kernel=kernel, warmup_steps=30, event_shape=(2,), progress_bar=False,
              check_convergence=False)  # fmt: skip
    long = sample(iso_energy, 40, seed=3, **kw)
    first = sample(iso_energy, 20, seed=3, **kw)
    second = first.resume(20)
    assert torch.equal(torch.cat([first.samples, second.samples], 1), long.samples)
    for name in long.stats:
        joined = torch.cat([first.stats[name], second.stats[name]], 1)
        assert torch.equal(joined, long.stats[name]), name


def test_energy_distribution_target_samples_its_batch_shape():
    loc = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 0.0]], dtype=torch.float64)

    def energy(x):
        return 0.5 * (x - loc).square().sum(-1)

    d = EnergyDistribution(energy, event_shape=(2,), batch_shape=(3,))
    out = sample(d, 300, num_chains=8, seed=0, progress_bar=False,
                 init=torch.zeros(8, 3, 2, dtype=torch.float64))  # fmt: skip
    assert out.samples.shape == (8, 300, 3, 2)
    assert out.stats["lp"].shape == (8, 300, 3)
    z_mean, z_var = mcse_zscores(out.samples, loc, torch.ones(3, 2))
    assert z_mean.abs().max() < Z_CRIT and z_var.abs().max() < Z_CRIT


def test_keep_false_keeps_the_last_draw_in_the_same_layout():
    out = sample(iso_energy, 10, num_chains=6, thin=3, keep=False, event_shape=(2,), seed=0,
                 progress_bar=False)  # fmt: skip
    assert out.samples.shape == (6, 1, 2)
    assert set(out.stats) == {"lp", "acceptance_rate", "step_size", "diverging"}
    assert all(v.shape == (6, 1) for v in out.stats.values())
    assert out.convergence is None
    thinned = sample(iso_energy, 10, num_chains=6, thin=3, event_shape=(2,), seed=0,
                     progress_bar=False, check_convergence=False)  # fmt: skip
    assert thinned.samples.shape == (6, 10, 2)
    torch.testing.assert_close(thinned.samples[:, -1:], out.samples)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_thinning_keeps_every_third_transition_of_the_same_run(kernel):
    kw = dict(num_chains=4, kernel=kernel, warmup_steps=30, event_shape=(2,), seed=11,
              progress_bar=False, check_convergence=False)  # fmt: skip
    every = sample(iso_energy, 30, **kw)
    thinned = sample(iso_energy, 10, thin=3, **kw)
    assert torch.equal(thinned.samples, every.samples[:, 2::3])
    assert torch.equal(thinned.stats["lp"], every.stats["lp"][:, 2::3])


def test_numpy_integers_are_accepted_and_bools_are_not():
    np = pytest.importorskip("numpy")
    out = sample(iso_energy, np.int64(6), num_chains=np.int32(2), warmup_steps=np.int64(10),
                 event_shape=(2,), seed=0, progress_bar=False)  # fmt: skip
    assert out.samples.shape == (2, 6, 2)
    with pytest.raises(ValueError, match="num_chains must be an integer"):
        sample(iso_energy, 5, num_chains=True, event_shape=(2,))
    with pytest.raises(ValueError, match="num_samples must be an integer"):
        sample(iso_energy, 5.0, event_shape=(2,))


def test_progress_bar_runs(capsys):
    sample(iso_energy, 5, num_chains=2, event_shape=(2,), warmup_steps=5, progress_bar=True)
    err = capsys.readouterr().err
    assert "divergences" in err and "restarts" in err


# ----------------------------------------------------------------------------- exactness


def test_leapfrog_is_reversible_in_float64():
    energy = GaussianEnergy.ill_conditioned(5, 30.0, generator=torch.Generator().manual_seed(0))
    energy = energy.double()
    x = torch.randn(16, 5, dtype=torch.float64)
    state = init_state(energy, x, 1, with_grad=True)
    p = torch.randn(16, 5, dtype=torch.float64)
    metric = Metric(torch.Size([5]), torch.rand(5, dtype=torch.float64) + 0.5)
    eps = torch.tensor(0.1, dtype=torch.float64)
    end, p_end = leapfrog(energy, state, p, eps, metric, 25, 1)
    back, p_back = leapfrog(energy, end, -p_end, eps, metric, 25, 1)
    torch.testing.assert_close(back.position, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(-p_back, p, rtol=0, atol=1e-10)


class CountingEnergy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return 0.5 * x.square().sum(-1)


@pytest.mark.parametrize("kernel, per_step", [("mala", 1), ("ula", 1), ("rwmh", 1), ("hmc", 7)])
def test_one_energy_evaluation_per_step(kernel, per_step):
    energy = CountingEnergy()
    kernel = HMC(num_steps=7, step_size=0.3) if kernel == "hmc" else KERNELS[kernel](step_size=0.3)
    kw = dict(num_chains=64, kernel=kernel, warmup_steps=0, event_shape=(2,), progress_bar=False,
              check_convergence=False)  # fmt: skip
    sample(energy, 1, **kw)
    base = energy.calls  # initial evaluation + the first transition
    energy.calls = 0
    sample(energy, 51, **kw)
    assert energy.calls - base == 50 * per_step


def test_energy_and_grad_is_one_call():
    energy = CountingEnergy()
    x = torch.randn(10, 3)
    e, g = energy_and_grad(energy, x, 1)
    assert energy.calls == 1
    torch.testing.assert_close(g, x)


# ----------------------------------------------------------------------------- robustness


def box_energy(x: torch.Tensor) -> torch.Tensor:
    """Standard normal restricted to the box [-1.5, 1.5]^2; NaN outside."""
    e = 0.5 * x.square().sum(-1)
    inside = (x.abs() <= 1.5).all(-1)
    return torch.where(inside, e, torch.full_like(e, math.nan))


def truncated_normal_moments(a: float) -> tuple[float, float]:
    phi = math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    return 0.0, 1.0 - 2 * a * phi / mass


@pytest.mark.parametrize("kernel", ["rwmh", "mala", "hmc"])
def test_nan_region_gives_divergences_and_correct_moments(kernel):
    init = torch.zeros(16, 2, dtype=torch.float64)
    kern = KERNELS[kernel](step_size=0.8, adapt_step_size=False)
    out = sample(box_energy, 800, num_chains=16, kernel=kern, init=init, seed=0,
                 progress_bar=False)  # fmt: skip
    assert out.stats["diverging"].any()
    assert torch.isfinite(out.samples).all()
    assert (out.samples.abs() <= 1.5).all()
    mean, var = truncated_normal_moments(1.5)
    z_mean, z_var = mcse_zscores(out.samples, torch.full((2,), mean), torch.full((2,), var))
    assert z_mean.abs().max() < Z_CRIT and z_var.abs().max() < Z_CRIT


def test_energy_raising_is_a_divergence_not_a_crash():
    def fragile(x):
        if (x.abs() > 3).any():
            raise RuntimeError("out of range")
        return 0.5 * x.square().sum(-1)

    out = sample(fragile, 50, num_chains=4, event_shape=(2,), seed=0, progress_bar=False,
                 kernel=MALA(step_size=2.0, adapt_step_size=False),
                 check_convergence=False)  # fmt: skip
    assert out.stats["diverging"].any()
    assert torch.isfinite(out.samples).all()


def test_a_chain_whose_energy_raises_does_not_reject_the_others():
    # a batched Cholesky factor raises for the whole batch when one chain's matrix is singular;
    # only that chain may get a non-finite energy (Stan rejects only the failing chain)
    calls = []

    def fragile(x):
        calls.append(x.shape[0])
        if (x[..., 0] > 3).any():
            raise RuntimeError("linalg.cholesky: not positive-definite")
        return 0.5 * x.square().sum(-1)

    x = torch.zeros(8, 3, 2, dtype=torch.float64)  # chain shape (8, 3): chains x batch
    x[..., 1] = torch.arange(24, dtype=torch.float64).reshape(8, 3) / 10
    x[5, 1, 0] = 4.0
    energy, grad = energy_and_grad(fragile, x, 1)
    bad = torch.zeros(8, 3, dtype=torch.bool)
    bad[5] = True  # the first dimension is bisected: chain 5 with its batch elements
    assert torch.isnan(energy[bad]).all() and torch.isnan(grad[bad]).all()
    assert torch.allclose(energy[~bad], 0.5 * x[~bad].square().sum(-1))
    assert torch.allclose(grad[~bad], x[~bad])
    assert len(calls) <= 1 + 2 * math.ceil(math.log2(8))  # a bisection, not one call per chain
    assert torch.isnan(evaluate_energy(fragile, x, 1)[bad]).all()
    assert torch.isfinite(evaluate_energy(fragile, x, 1)[~bad]).all()
    calls.clear()
    energy, _ = energy_and_grad(fragile, x[:5], 1)
    assert torch.isfinite(energy).all() and calls == [5]  # nothing raised: one call


def test_an_energy_of_the_wrong_shape_is_still_an_error_not_a_rejection():
    with pytest.raises(ValueError, match="energy returned shape"):
        energy_and_grad(lambda x: x.sum(), torch.zeros(4, 2), 1)
    with pytest.raises(ValueError, match="energy returned shape"):
        evaluate_energy(lambda x: x.sum(), torch.zeros(4, 2), 1)


def test_leapfrog_stops_evaluating_a_chain_that_diverged():
    # chain 0 starts where a quartic's leapfrog blows up; once it is lost the energy must never
    # see its runaway position again (each such point would raise for the whole batch)
    raised = []

    def quartic(x):
        if (x.abs() > 1e3).any():
            raised.append(x.shape[0])  # the whole batch, then chain 0 alone (the bisection)
            raise RuntimeError("overflow")
        return 0.25 * x.pow(4).sum(-1)

    start = torch.tensor([[5.0], [0.1]], dtype=torch.float64)
    state = init_state(quartic, start, 1, with_grad=True)
    metric = Metric((1,))
    p = torch.zeros_like(start)
    end, _ = leapfrog(quartic, state, p, torch.tensor(0.5, dtype=torch.float64), metric, 30, 1)
    assert raised in ([], [2, 1])  # at most once
    assert torch.isnan(end.energy[0]) and torch.equal(end.position[0], start[0])
    assert torch.isfinite(end.energy[1]) and end.energy[1] < 1e-3
    # an energy error above the threshold is caught before the chain runs away at all
    raised.clear()
    end, _ = leapfrog(quartic, state, p, torch.tensor(0.5, dtype=torch.float64), metric, 30, 1,
                      max_energy_error=1000.0)  # fmt: skip
    assert not raised and torch.isnan(end.energy[0]) and torch.isfinite(end.energy[1])


def test_step_size_jitter_is_log_uniform_per_chain():
    from pyro_ebm.infer.hmc import jitter_factor

    gen = torch.Generator().manual_seed(0)
    u = jitter_factor(torch.zeros(20000, dtype=torch.float64), 0.5, gen)
    assert u.min() >= 0.5 and u.max() <= 1.0
    # log u = U log(0.5), U ~ U(0, 1): mean log(0.5) / 2, sd |log 0.5| / sqrt(12)
    z = (u.log().mean() - math.log(0.5) / 2) / (abs(math.log(0.5)) / math.sqrt(12 * 20000))
    assert abs(z) < Z_CRIT
    with pytest.raises(ValueError, match="step_size_jitter"):
        HMC(step_size_jitter=1.0)


def test_step_size_jitter_unfreezes_a_step_beyond_the_stability_limit_and_stays_exact():
    # leapfrog on a unit Gaussian is unstable for eps > 2: at 2.5 a chain can never move;
    # a jitter of 0.75 (steps in [0.625, 2.5]) lets it move, and stays exact
    init = torch.randn(32, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kw = dict(num_chains=32, init=init, seed=0, progress_bar=False, check_convergence=False)
    fixed = dict(step_size=2.5, adapt_step_size=False, adapt_mass_matrix=False, num_steps=10)
    frozen = sample(iso_energy, 300, kernel=HMC(step_size_jitter=0.0, **fixed), **kw)
    assert frozen.stats["acceptance_rate"].mean() < 0.02
    out = sample(iso_energy, 1500, kernel=HMC(step_size_jitter=0.75, **fixed), **kw)
    assert out.stats["acceptance_rate"].mean() > 0.2
    z_mean, z_var = mcse_zscores(out.samples, torch.zeros(1), torch.ones(1))
    assert z_mean.abs().max() < Z_CRIT and z_var.abs().max() < Z_CRIT


def funnel_energy(z: torch.Tensor) -> torch.Tensor:
    """Neal's funnel: v ~ N(0, 1.5^2), x_k | v ~ N(0, e^v), 4 x's: the curvature in x grows
    100-fold from the mouth to the neck."""
    v, x = z[..., 0], z[..., 1:]
    return 0.5 * (v / 1.5) ** 2 + 0.5 * (x.square() * torch.exp(-v)[..., None]).sum(-1) + 2 * v


def test_automatic_step_size_jitter_turns_on_where_chains_freeze_and_only_there():
    from pyro_ebm.infer.warmup import frozen_in_window

    rate = torch.full((16,), 0.6, dtype=torch.float64)
    none = torch.zeros(16, dtype=torch.bool)
    assert not frozen_in_window(rate, none)
    rate[3] = 0.01
    assert frozen_in_window(rate, none)
    restarted = none.clone()
    restarted[3] = True
    assert not frozen_in_window(rate, restarted)  # a restarted chain says nothing
    assert not frozen_in_window(torch.full((16,), 0.01, dtype=torch.float64), none)  # all bad
    kw = dict(event_shape=(5,), dtype=torch.float64, seed=0, progress_bar=False,
              check_convergence=False)  # fmt: skip
    smooth = sample(iso_energy, 50, kernel="hmc", num_chains=32, **kw)
    assert smooth.step_size_jitter == 0.0
    funnel = sample(funnel_energy, 50, kernel="hmc", num_chains=64, **kw)
    assert funnel.step_size_jitter == 0.75
    fixed = sample(funnel_energy, 50, kernel=HMC(step_size_jitter=0.0), num_chains=32, **kw)
    assert fixed.step_size_jitter == 0.0


def test_hmc_divergent_trajectories_are_capped():
    kernel = HMC(step_size=50.0, adapt_step_size=False, num_steps=20)
    out = sample(iso_energy, 20, num_chains=4, kernel=kernel, event_shape=(2,), seed=0,
                 progress_bar=False, check_convergence=False)  # fmt: skip
    assert out.stats["diverging"].all()
    assert (out.stats["n_steps"] == 20).all()


def test_nonfinite_initial_energy_is_a_clear_error():
    with pytest.raises(ValueError, match="pass `init=`"):
        sample(box_energy, 5, num_chains=2, init=torch.full((2, 2), 3.0), progress_bar=False)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel": "gibbs"}, "kernel must be one of"),
        ({"kernel": MALA}, "kernel must be one of"),
        ({"num_chains": 0}, "num_chains"),
        ({"thin": 0}, "thin"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"init": torch.zeros(3, 5)}, "init must have shape"),
        ({"kernel": MALA(step_size=torch.ones(3))}, "step_size must be a float or a tensor"),
    ],
)
def test_bad_inputs(kwargs, match):
    kw = {"num_chains": 2, "event_shape": (2,), "progress_bar": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample(iso_energy, 5, **kw)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: MALA(step_size=0.0), "step_size"),
        (lambda: RandomWalkMH(step_size=-1.0), "step_size"),
        (lambda: MALA(target_accept_prob=1.5), "target_accept_prob"),
        (lambda: ULA(dense_mass="yes"), "dense_mass"),
        (lambda: HMC(num_steps=0), "num_steps"),
        (lambda: HMC(trajectory_length=-1.0), "trajectory_length"),
        (lambda: HMC(trajectory_length=1.0, num_steps=3), "at most one"),
        (lambda: MALA(lambda: None, potential_fn=lambda p: 0.0), "at most one"),
    ],
)
def test_bad_kernel_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_num_samples_and_energy_shapes():
    with pytest.raises(ValueError, match="num_samples"):
        sample(iso_energy, 0, event_shape=(2,))
    with pytest.raises(ValueError, match="energy returned shape"):
        sample(lambda x: x.sum(), 5, event_shape=(2,), progress_bar=False)
    with pytest.raises(ValueError, match="event_shape is unknown"):
        sample(iso_energy, 5)
    with pytest.raises(ValueError, match="target must be"):
        sample(3.0, 5)


def test_trajectory_length_sets_and_caps_the_leapfrog_steps():
    kw = dict(num_chains=4, event_shape=(2,), warmup_steps=0, seed=0, progress_bar=False,
              check_convergence=False)  # fmt: skip
    fixed = sample(iso_energy, 5, kernel=HMC(step_size=0.25, num_steps=4), **kw)
    assert (fixed.stats["n_steps"] == 4).all()
    capped = sample(iso_energy, 5, kernel=HMC(step_size=1e-6, trajectory_length=1.0,
                                              max_num_steps=16), **kw)  # fmt: skip
    assert (capped.stats["n_steps"] == 16).all()
    unjittered = HMC(step_size=0.25, trajectory_length=2.0, step_size_jitter=0.0)
    jittered = sample(iso_energy, 60, kernel=unjittered, **kw)
    # time jittered uniformly in (0, T]: ceil(u * 8) steps, all of 1..8 in 60 draws
    steps = jittered.stats["n_steps"]
    assert steps.max() == 8 and steps.min() >= 1 and steps.unique().numel() >= 6
    # with the step-size jitter, steps are counted at the mean jittered step 0.25 E[u]
    mean_u = 0.75 / math.log(4.0)
    both = sample(iso_energy, 60, kernel=HMC(step_size=0.25, trajectory_length=2.0,
                                             step_size_jitter=0.75), **kw)  # fmt: skip
    assert both.stats["n_steps"].max() == math.ceil(2.0 / (0.25 * mean_u))
