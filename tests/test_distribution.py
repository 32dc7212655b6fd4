"""EnergyDistribution: log_prob, shapes, expand, pickling, validation, and use inside Pyro."""

from __future__ import annotations

import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import HMC, MCMC, NUTS, Predictive, RandomWalkKernel
from pyro.infer.util import torch_item

from pyro_ebm import EnergyDistribution
from pyro_ebm.energies import GaussianEnergy

from .helpers import iid_zscores, mcse_zscores

Z_CRIT = 4.5  # two-sided per test; several coordinates per test stay well below 1e-3 false alarms


class IsoGaussian(torch.nn.Module):
    """E(x) = |x - loc|^2 / (2 scale^2) with a batch of locations ``loc`` (*batch, d)."""

    def __init__(self, loc: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("loc", loc)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.loc) / self.scale).square().sum(-1)


@pytest.fixture(autouse=True)
def _float64_and_clean_store():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    torch.set_default_dtype(old)


def test_log_prob_is_minus_energy_minus_log_z():
    energy = IsoGaussian(torch.tensor([1.0, -2.0]))
    x = torch.randn(7, 2)
    unnorm = EnergyDistribution(energy, event_shape=(2,))
    assert not unnorm.is_normalized
    torch.testing.assert_close(unnorm.log_prob(x), -energy(x))
    for log_z in (1.5, torch.tensor(1.5), torch.nn.Parameter(torch.tensor(1.5))):
        d = EnergyDistribution(energy, event_shape=(2,), log_Z=log_z)
        assert d.is_normalized
        torch.testing.assert_close(d.log_prob(x), -energy(x) - 1.5)


def test_learned_log_z_receives_gradient():
    log_z = torch.nn.Parameter(torch.tensor(0.3))
    d = EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape=(2,), log_Z=log_z)
    d.log_prob(torch.randn(4, 2)).sum().backward()
    assert log_z.grad is not None
    torch.testing.assert_close(log_z.grad, torch.tensor(-4.0))


def test_normalized_gaussian_matches_torch_log_prob():
    loc, cov = torch.tensor([0.5, -1.0]), torch.tensor([[2.0, 0.3], [0.3, 0.5]])
    energy = GaussianEnergy(loc, cov)
    d = EnergyDistribution(energy, event_shape=(2,), log_Z=energy.log_partition())
    x = torch.randn(10, 2)
    ref = torch.distributions.MultivariateNormal(loc, cov).log_prob(x)
    torch.testing.assert_close(d.log_prob(x), ref)


@pytest.mark.parametrize(
    "batch_shape, event_dim, sample_shape",
    [((), 1, ()), ((), 1, (5,)), ((3,), 2, (4,)), ((2, 3), 3, (4, 5)), ((3,), 1, ())],
)
def test_shapes(batch_shape, event_dim, sample_shape):
    loc = torch.randn(batch_shape + (event_dim,))
    d = EnergyDistribution(IsoGaussian(loc), event_shape=(event_dim,), batch_shape=batch_shape)
    x = torch.randn(sample_shape + batch_shape + (event_dim,))
    assert d.log_prob(x).shape == sample_shape + batch_shape
    draws = d.sample(sample_shape)
    assert draws.shape == sample_shape + batch_shape + (event_dim,)
    assert torch.isfinite(draws).all()
    assert d.has_rsample is False


def test_log_prob_broadcasts_a_single_event_over_the_batch():
    d = EnergyDistribution(IsoGaussian(torch.randn(3, 2)), event_shape=(2,), batch_shape=(3,))
    assert d.log_prob(torch.zeros(2)).shape == (3,)


def test_expand():
    d = EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape=(2,), log_Z=0.5)
    e = d.expand((4, 3))
    assert isinstance(e, EnergyDistribution)
    assert e.batch_shape == (4, 3) and e.event_shape == (2,)
    assert e.log_prob(torch.zeros(2)).shape == (4, 3)
    torch.testing.assert_close(e.log_prob(torch.zeros(4, 3, 2)), torch.full((4, 3), -0.5))
    assert e.sample((2,)).shape == (2, 4, 3, 2)
    assert e.is_normalized


def test_pickle_round_trip_carries_the_energy_module():
    energy = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    wrapped = _SqueezeLast(energy)
    d = EnergyDistribution(wrapped, event_shape=(2,), log_Z=torch.tensor(0.7))
    back = pickle.loads(pickle.dumps(d))
    x = torch.randn(5, 2)
    torch.testing.assert_close(back.log_prob(x), d.log_prob(x))
    assert back.energy is not d.energy


class _SqueezeLast(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def test_sample_moments_of_a_gaussian_energy():
    loc, cov = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 0.6], [0.6, 2.0]])
    d = EnergyDistribution(GaussianEnergy(loc, cov), event_shape=(2,))
    draws = d.sample((2000,))
    z_mean, z_var = iid_zscores(draws, loc, cov.diagonal())
    assert z_mean.abs().max() < Z_CRIT, z_mean
    assert z_var.abs().max() < Z_CRIT, z_var


def test_sample_moments_can_fail_for_the_wrong_truth():
    # The same z-test rejects a slightly wrong mean: the test above has power.
    d = EnergyDistribution(GaussianEnergy(torch.zeros(2), torch.eye(2)), event_shape=(2,))
    draws = d.sample((2000,))
    z_mean, _ = iid_zscores(draws, torch.full((2,), 0.2), torch.ones(2))
    assert z_mean.abs().min() > Z_CRIT


@pytest.mark.parametrize("sampler", ["mala", "hmc", "rwmh", "ula"])
def test_sampler_option(sampler):
    d = EnergyDistribution(
        IsoGaussian(torch.zeros(3)),
        event_shape=(3,),
        sampler=sampler,
        sampler_kwargs={"warmup_steps": 50, "num_transitions": 10},
    )
    assert d.sample((6,)).shape == (6, 3)


def test_seeded_sampler_kwargs_are_reproducible():
    kw = {"seed": 3}
    a = EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape=(2,), sampler_kwargs=kw)
    b = EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape=(2,), sampler_kwargs=kw)
    first, second = a.sample((4,)), a.sample((4,))
    torch.testing.assert_close(first, b.sample((4,)), rtol=0, atol=0)
    torch.testing.assert_close(second, b.sample((4,)), rtol=0, atol=0)
    assert not torch.equal(first, second)  # the pool moves on between calls


# ------------------------------------------------------------------------ warm-chain pool


class _Counting(torch.nn.Module):
    """A Gaussian energy with a learnable location that counts its evaluations."""

    def __init__(self, loc) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.as_tensor(loc, dtype=torch.float64))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return 0.5 * (x - self.loc).square().sum(-1)


def test_warm_pool_repeated_calls_are_cheap_and_have_the_right_moments():
    energy = _Counting([1.0, -1.0])
    d = EnergyDistribution(energy, event_shape=(2,))
    d.sample()  # the first call warms the pool up
    before = energy.calls
    draws = torch.stack([d.sample() for _ in range(600)])
    per_call = (energy.calls - before) / 600
    assert per_call <= 10 + 1, per_call  # num_transitions evaluations, no warmup
    z_mean, z_var = iid_zscores(draws, energy.loc.detach(), torch.ones(2))
    assert z_mean.abs().max() < Z_CRIT and z_var.abs().max() < Z_CRIT
    # a new distribution over the same energy (as a Pyro model builds one per run) shares it
    again = EnergyDistribution(energy, event_shape=(2,))
    before = energy.calls
    again.sample()
    assert energy.calls - before <= 11


def test_warm_pool_resets_when_the_parameters_change():
    energy = _Counting([0.0, 0.0])
    d = EnergyDistribution(energy, event_shape=(2,))
    d.sample((8,))
    opt = torch.optim.SGD(energy.parameters(), lr=1.0)
    energy.loc.grad = torch.tensor([-4.0, -4.0], dtype=torch.float64)
    opt.step()  # loc -> (4, 4), in place
    before = energy.calls
    draws = torch.stack([d.sample() for _ in range(400)])
    assert energy.calls - before > 400  # a new warmup ran
    z_mean, _ = iid_zscores(draws, torch.full((2,), 4.0), torch.ones(2))
    assert z_mean.abs().max() < Z_CRIT
    with torch.no_grad():
        energy.loc.data.fill_(-3.0)  # through .data: no version bump, still detected
    draws = torch.stack([d.sample() for _ in range(400)])
    z_mean, _ = iid_zscores(draws, torch.full((2,), -3.0), torch.ones(2))
    assert z_mean.abs().max() < Z_CRIT


def test_fresh_draws_run_a_new_warmup_each_call():
    energy = _Counting([0.0, 0.0])
    d = EnergyDistribution(energy, event_shape=(2,))
    d.sample()
    before = energy.calls
    d.sample(fresh=True)
    assert energy.calls - before > 100
    quick = EnergyDistribution(energy, event_shape=(2,), sampler_kwargs={"fresh": True})
    before = energy.calls
    quick.sample()
    assert energy.calls - before > 100


# ----------------------------------------------------------------------------- validation


def test_value_validation():
    d = EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape=(2,), validate_args=True)
    with pytest.raises(ValueError, match=r"expected event shape \(2,\)"):
        d.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="finite"):
        d.log_prob(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="finite"):
        d.log_prob(torch.tensor([float("inf"), 0.0]))


def test_constructor_validation():
    with pytest.raises(ValueError, match="energy must be a callable"):
        EnergyDistribution(3.0, event_shape=(2,))
    with pytest.raises(ValueError, match="event_shape"):
        EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape=(-1,))
    with pytest.raises(ValueError, match="event_shape"):
        EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape="two")
    with pytest.raises(ValueError, match="sampler must be one of"):
        EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape=(2,), sampler="gibbs")
    with pytest.raises(ValueError, match="log_Z"):
        EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape=(2,), log_Z="big")


def test_energy_output_shape_must_match_batch_shape():
    batched = IsoGaussian(torch.zeros(3, 2))  # has batch (3,)
    with pytest.raises(ValueError, match=r"batch_shape=\(\)"):
        EnergyDistribution(batched, event_shape=(2,), validate_args=True)
    with pytest.raises(ValueError, match="expected output"):
        EnergyDistribution(lambda x: x.sum(), event_shape=(2,), validate_args=True)
    # the right batch_shape is accepted
    EnergyDistribution(batched, event_shape=(2,), batch_shape=(3,), validate_args=True)


# ----------------------------------------------------------------------------- inside Pyro

F64 = torch.float64
PRIOR_LOC = torch.tensor([0.5, -1.0], dtype=F64)
PRIOR_COV = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
NOISE = 0.7
DATA = torch.tensor([[1.2, -0.4], [0.9, -0.8], [1.5, -0.1], [0.4, -0.6]], dtype=F64)


def conjugate_model(data=DATA):
    prior = EnergyDistribution(GaussianEnergy(PRIOR_LOC, PRIOR_COV), event_shape=(2,))
    x = pyro.sample("x", prior)
    with pyro.plate("data", data.shape[0]):
        pyro.sample("y", dist.Normal(x, NOISE).to_event(1), obs=data)
    return x


def analytic_posterior():
    prec = torch.linalg.inv(PRIOR_COV) + DATA.shape[0] / NOISE**2 * torch.eye(2)
    cov = torch.linalg.inv(prec)
    mean = cov @ (torch.linalg.solve(PRIOR_COV, PRIOR_LOC) + DATA.sum(0) / NOISE**2)
    return mean, cov


def _run(kernel, num_samples, warmup, num_chains=1):
    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=warmup,
        num_chains=num_chains,
        disable_progbar=True,
    )
    mcmc.run()
    return mcmc


def test_nuts_recovers_the_conjugate_posterior():
    mcmc = _run(NUTS(conjugate_model), num_samples=400, warmup=200)
    draws = mcmc.get_samples(group_by_chain=True)["x"]
    mean, cov = analytic_posterior()
    z_mean, z_var = mcse_zscores(draws, mean, cov.diagonal())
    assert z_mean.abs().max() < Z_CRIT, z_mean
    assert z_var.abs().max() < Z_CRIT, z_var


def test_random_walk_kernel_and_hmc_run_with_default_init():
    mean, cov = analytic_posterior()
    rw = _run(RandomWalkKernel(conjugate_model, target_accept_prob=0.3), 1000, 300)
    draws = rw.get_samples(group_by_chain=True)["x"]
    z_mean, _ = mcse_zscores(draws, mean, cov.diagonal())
    assert z_mean.abs().max() < Z_CRIT, z_mean
    hmc = _run(HMC(conjugate_model, num_steps=5), 200, 100)
    assert hmc.get_samples()["x"].shape == (200, 2)


def test_predictive_prior_and_posterior():
    prior_pred = Predictive(conjugate_model, num_samples=30)()

    def reference_model():  # the same model with Pyro's own Gaussian prior
        x = pyro.sample("x", dist.MultivariateNormal(PRIOR_LOC, PRIOR_COV))
        with pyro.plate("data", DATA.shape[0]):
            pyro.sample("y", dist.Normal(x, NOISE).to_event(1), obs=DATA)

    reference = Predictive(reference_model, num_samples=30)()
    assert prior_pred["x"].shape == reference["x"].shape  # (30, 1, 2): Pyro's plate layout
    assert prior_pred["y"].shape == reference["y"].shape == (30, 4, 2)
    assert torch.isfinite(prior_pred["x"]).all()
    posterior = {"x": torch.randn(25, 2, dtype=F64, generator=torch.Generator().manual_seed(0))}
    # an observed site is returned as its data; the posterior predictive needs obs=None
    post_pred = Predictive(conjugate_model, posterior_samples=posterior)()
    assert torch.equal(post_pred["y"], DATA.expand(25, 4, 2))

    def unobserved_model():
        x = pyro.sample("x", EnergyDistribution(GaussianEnergy(PRIOR_LOC, PRIOR_COV), (2,)))
        with pyro.plate("data", DATA.shape[0]):
            pyro.sample("y", dist.Normal(x, NOISE).to_event(1))

    post_pred = Predictive(unobserved_model, posterior_samples=posterior)()
    assert post_pred["y"].shape == (25, 4, 2)
    residual = post_pred["y"] - posterior["x"].unsqueeze(1)  # y | x ~ N(x, NOISE^2)
    assert abs(float(residual.mean()) / (NOISE / residual.numel() ** 0.5)) < Z_CRIT


def test_poutine_trace_and_plates():
    trace = pyro.poutine.trace(conjugate_model).get_trace()
    trace.compute_log_prob()
    site = trace.nodes["x"]
    assert isinstance(site["fn"], EnergyDistribution)
    expected = -GaussianEnergy(PRIOR_LOC, PRIOR_COV)(site["value"])
    torch.testing.assert_close(site["log_prob"], expected)

    def plated():
        d = EnergyDistribution(IsoGaussian(torch.zeros(2)), event_shape=(2,))
        with pyro.plate("items", 3):
            return pyro.sample("z", d)

    trace = pyro.poutine.trace(plated).get_trace()
    assert trace.nodes["z"]["value"].shape == (3, 2)
    assert trace.nodes["z"]["fn"].batch_shape == (3,)
    log_joint = torch_item(trace.log_prob_sum())
    assert log_joint == pytest.approx(-torch_item(0.5 * trace.nodes["z"]["value"].square().sum()))


@pytest.mark.parametrize("sample_shape", [(0,), (3, 0), (0, 2)])
def test_sampling_no_draws_runs_no_chain(monkeypatch, sample_shape):
    import pyro_ebm.infer

    def no_chain(*args, **kwargs):
        raise AssertionError("an empty sample_shape must not run the sampler")

    monkeypatch.setattr(pyro_ebm.infer, "sample", no_chain)
    d = EnergyDistribution(lambda x: 0.5 * x.square().sum(-1), (2,)).expand((4,))
    draws = d.sample(sample_shape)
    assert draws.shape == (*sample_shape, 4, 2) and draws.numel() == 0
    assert draws.dtype == torch.get_default_dtype()
