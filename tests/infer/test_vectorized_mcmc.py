"""VectorizedMCMC: Pyro models on the many-chain engine.

* The vectorized joint potential equals Pyro's own ``potential_fn`` (``initialize_model``)
  chain by chain, to 1e-10 in float64, on models with plates, positive, simplex, interval,
  deterministic and EnergyDistribution sites.
* Conjugate models recover their analytic posteriors by MCSE z-tests (``Z_CRIT`` as in
  ``test_correctness``), from the default init strategy (``init_to_uniform``) and the default
  warmup; ``get_samples`` has ``pyro.infer.MCMC``'s shapes.
* A discrete latent site and a model that does not vectorize give the documented error and
  fallback warning (with the right numbers).
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC
from pyro.infer.mcmc.util import initialize_model

from pyro_ebm import EnergyDistribution
from pyro_ebm.infer import HMC, MALA, RandomWalkMH, VectorizationWarning, VectorizedMCMC
from pyro_ebm.infer.model_potential import ModelPotential
from pyro_ebm.infer.vectorize import vectorized_potential
from tests.helpers import mcse_zscores

Z_CRIT = 4.5
F64 = torch.float64


def _t(x):
    return torch.as_tensor(x, dtype=F64)


def model_plate_positive(y):
    loc = pyro.sample("loc", dist.Normal(_t(0.0), 10.0))
    scale = pyro.sample("scale", dist.HalfNormal(_t(5.0)))
    pyro.deterministic("loc2", 2 * loc)
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(loc, scale), obs=y)


def model_simplex_interval(counts):
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(3, dtype=F64)))
    rho = pyro.sample("rho", dist.Uniform(_t(-1.0), _t(2.0)))
    with pyro.plate("groups", 2):
        lam = pyro.sample("lam", dist.Gamma(_t(2.0), _t(1.0)))
    pyro.deterministic("total", lam.sum(-1) * rho)
    pyro.sample("counts", dist.Multinomial(int(counts.sum()), probs), obs=counts)
    with pyro.plate("obs", 2):
        pyro.sample("z", dist.Poisson(lam * (1.5 + rho)), obs=_t([3.0, 5.0]))


def _energy(x):
    return 0.5 * (x - 1.0).pow(2).sum(-1) + 0.1 * x.pow(4).sum(-1)


def model_energy_prior(y):
    x = pyro.sample("x", EnergyDistribution(_energy, event_shape=(2,)))
    noise = pyro.sample("noise", dist.LogNormal(_t(0.0), 0.5))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(x.sum(-1), noise), obs=y)


CASES = [
    (model_plate_positive, (_t([0.3, 1.2, -0.4, 2.0]),)),
    (model_simplex_interval, (_t([4.0, 1.0, 2.0]),)),
    (model_energy_prior, (_t([0.5, 1.5, 0.9]),)),
]


@pytest.mark.parametrize("model,args", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_potential_equals_pyros_potential_fn_chain_by_chain(model, args):
    pot = ModelPotential(model, args)
    _, pyro_potential, transforms, _ = initialize_model(model, args)
    assert set(transforms) == {s.name for s in pot.sites}
    gen = torch.Generator().manual_seed(0)
    flat = torch.randn(16, pot.dim, generator=gen, dtype=F64) * 1.5
    fn, mode = vectorized_potential(pot, pot.single, flat[0])
    assert mode == "vectorized"
    batched = fn(flat)
    assert batched.shape == (16,)
    for i in range(16):
        ref = pyro_potential(pot.unpack(flat[i]))
        assert abs(float(batched[i]) - float(ref)) <= 1e-10 * (1 + abs(float(ref))), i
    # the gradient too (it is what the samplers use)
    x = flat.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x)
    row = {k: v.clone().requires_grad_(True) for k, v in pot.unpack(flat[3]).items()}
    ref_grads = torch.autograd.grad(pyro_potential(row), list(row.values()))
    ref_flat = torch.cat([g.reshape(-1) for g in ref_grads])
    torch.testing.assert_close(grad[3], ref_flat, rtol=1e-10, atol=1e-10)


def test_sites_layout_and_deterministic_values():
    pot = ModelPotential(model_simplex_interval, (_t([4.0, 1.0, 2.0]),))
    shapes = {s.name: (tuple(s.shape), tuple(s.unconstrained_shape), s.dims) for s in pot.sites}
    assert shapes == {
        "probs": ((3,), (2,), ()),
        "rho": ((), (), ()),
        "lam": ((2,), (2,), ("groups",)),
    }
    flat = torch.randn(5, pot.dim, dtype=F64)
    values = pot.constrain(flat)
    det = pot.deterministic_values(flat)
    torch.testing.assert_close(det["total"], values["lam"].sum(-1) * values["rho"])
    assert bool(((values["rho"] > -1) & (values["rho"] < 2)).all())
    torch.testing.assert_close(values["probs"].sum(-1), torch.ones(5, dtype=F64))


def _normal_model(y, prior_sd=2.0, noise_sd=0.5):
    loc = pyro.sample("loc", dist.Normal(_t(1.0), prior_sd))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(loc, noise_sd), obs=y)


def _gamma_poisson(y):
    rate = pyro.sample("rate", dist.Gamma(_t(3.0), _t(0.5)))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Poisson(rate), obs=y)


@pytest.mark.parametrize("kernel", [MALA, HMC, RandomWalkMH], ids=lambda k: k.__name__)
def test_conjugate_normal_posterior(kernel):
    y = _t([2.1, 3.4, 2.8, 3.9, 3.0, 2.2])
    prec = 1 / 2.0**2 + len(y) / 0.5**2
    mean = (1.0 / 2.0**2 + y.sum() / 0.5**2) / prec
    mcmc = VectorizedMCMC(kernel(_normal_model), num_samples=400, num_chains=32, seed=0,
                          disable_progbar=True)  # fmt: skip
    mcmc.run(y)
    draws = mcmc.get_samples(group_by_chain=True)["loc"]
    z_mean, z_var = mcse_zscores(draws, float(mean), 1 / prec)
    assert abs(float(z_mean)) < Z_CRIT and abs(float(z_var)) < Z_CRIT
    assert mcmc.convergence.converged


def test_conjugate_gamma_poisson_posterior_positive_site():
    y = _t([4.0, 7.0, 5.0, 9.0, 6.0])
    a, b = 3.0 + float(y.sum()), 0.5 + len(y)
    mcmc = VectorizedMCMC(HMC(_gamma_poisson), num_samples=400, num_chains=32, seed=1,
                          disable_progbar=True)  # fmt: skip
    mcmc.run(y)
    draws = mcmc.get_samples(group_by_chain=True)["rate"]
    assert bool((draws > 0).all())
    z_mean, z_var = mcse_zscores(draws, a / b, a / b**2)
    assert abs(float(z_mean)) < Z_CRIT and abs(float(z_var)) < Z_CRIT


def test_get_samples_shapes_match_pyro_mcmc():
    args = (_t([4.0, 1.0, 2.0]),)
    ours = VectorizedMCMC(MALA(model_simplex_interval), num_samples=20, warmup_steps=20,
                          num_chains=3, seed=0, disable_progbar=True,
                          check_convergence=False)  # fmt: skip
    ours.run(*args)
    theirs = MCMC(MALA(model_simplex_interval), num_samples=20, warmup_steps=20, num_chains=1,
                  disable_progbar=True)  # fmt: skip
    theirs.run(*args)
    pyro_flat = theirs.get_samples()
    flat = ours.get_samples()
    grouped = ours.get_samples(group_by_chain=True)
    for name, value in pyro_flat.items():
        assert flat[name].shape == (3 * 20,) + value.shape[1:], name
        assert grouped[name].shape == (3, 20) + value.shape[1:], name
    assert flat["total"].shape == (60,)  # deterministic sites are recorded too
    assert ours.get_samples(num_samples=7)["probs"].shape == (7, 3)
    diag = ours.diagnostics()
    assert set(diag["divergences"]) == {"chain 0", "chain 1", "chain 2"}
    assert {"n_eff", "r_hat"} <= set(diag["rho"])


def test_discrete_latent_site_is_refused_by_name():
    def model():
        pyro.sample("k", dist.Categorical(torch.ones(3) / 3))
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'k' is discrete.*enumerate"):
        VectorizedMCMC(MALA(model), num_samples=5, disable_progbar=True).run()


def _unplated(y):
    # broadcasts a (chains,) scale against the data's dimension: not plate-safe
    loc = pyro.sample("loc", dist.Normal(_t(0.0), 3.0))
    scale = pyro.sample("scale", dist.HalfNormal(_t(2.0)))
    pyro.sample("y", dist.Normal(loc * torch.ones_like(y), scale).to_event(1), obs=y)


def _mixing(y):
    loc = pyro.sample("loc", dist.Normal(_t(0.0), 3.0))
    # .sum() over every dimension adds up all chains: wrong numbers if trusted
    pyro.sample("y", dist.Normal(loc.sum() * torch.ones_like(y), 1.0).to_event(1), obs=y)


@pytest.mark.parametrize("model", [_unplated, _mixing], ids=["shape_error", "mixes_chains"])
def test_non_vectorizable_model_falls_back_with_a_warning_and_right_numbers(model):
    y = _t([0.4, 1.1, 0.7])
    pot = ModelPotential(model, (y,))
    _, pyro_potential, _, _ = initialize_model(model, (y,))
    flat = torch.randn(6, pot.dim, dtype=F64)
    with pytest.warns(VectorizationWarning, match="does not vectorize"):
        fn, mode = vectorized_potential(pot, pot.single, flat[0])
    assert mode in ("vmap", "loop")
    ref = torch.stack([pyro_potential(pot.unpack(row)) for row in flat])
    torch.testing.assert_close(fn(flat), ref, rtol=1e-10, atol=1e-10)
    with pytest.warns(VectorizationWarning):
        mcmc = VectorizedMCMC(MALA(model), num_samples=50, warmup_steps=50, num_chains=4,
                              seed=0, disable_progbar=True, check_convergence=False)  # fmt: skip
        mcmc.run(y)
    assert mcmc.mode == mode
    assert mcmc.get_samples()["loc"].shape == (200,)


def test_potential_fn_and_initial_params():
    def potential(params):
        return 0.5 * ((params["a"] - 2.0) / 0.5).pow(2).sum(-1)

    init = {"a": torch.zeros(16, 3, dtype=F64)}
    mcmc = VectorizedMCMC(MALA(potential_fn=potential), num_samples=300, num_chains=16,
                          initial_params=init, seed=0, disable_progbar=True)  # fmt: skip
    mcmc.run()
    assert mcmc.mode == "vectorized"
    draws = mcmc.get_samples(group_by_chain=True)["a"]
    assert draws.shape == (16, 300, 3)
    z_mean, z_var = mcse_zscores(draws, 2.0, 0.25)
    assert float(z_mean.abs().max()) < Z_CRIT and float(z_var.abs().max()) < Z_CRIT


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="kernel must be a pyro-ebm kernel"):
        VectorizedMCMC(pyro.infer.NUTS(_normal_model), num_samples=10)
    with pytest.raises(ValueError, match="neither `model=` nor `potential_fn=`"):
        VectorizedMCMC(MALA(), num_samples=10)
    with pytest.raises(ValueError, match="num_chains"):
        VectorizedMCMC(MALA(_normal_model), num_samples=10, num_chains=0)
    with pytest.raises(ValueError, match="initial_params are required"):
        VectorizedMCMC(MALA(potential_fn=lambda p: p["a"].sum()), num_samples=10).run()
    mcmc = VectorizedMCMC(MALA(_normal_model), num_samples=10)
    with pytest.raises(ValueError, match="call VectorizedMCMC.run"):
        mcmc.get_samples()


def test_dims_name_plates_and_event_dimensions():
    pot = ModelPotential(model_simplex_interval, (_t([4.0, 1.0, 2.0]),))
    assert pot.dims() == {
        "probs": ["probs_dim_0"],
        "rho": [],
        "lam": ["groups"],
        "total": [],
        "z": ["obs"],  # observed, no event dims: its data and log-likelihood are named too
    }


def test_unconverged_run_warns_naming_the_runner():
    from pyro_ebm.infer import ConvergenceWarning

    mcmc = VectorizedMCMC(RandomWalkMH(_normal_model), num_samples=20, warmup_steps=5,
                          num_chains=4, seed=0, disable_progbar=True)  # fmt: skip
    with pytest.warns(ConvergenceWarning, match=r"VectorizedMCMC\.summary\(\)"):
        mcmc.run(_t([2.1, 3.4]))
    assert not mcmc.convergence.converged
    assert mcmc.convergence.worst in ("loc", "lp")


def test_to_arviz_names_sites_and_plates_and_runs_loo():
    from pyro_ebm.diagnostics import group_names, loo, to_arviz

    y = _t([4.0, 1.0, 2.0])
    mcmc = VectorizedMCMC(MALA(model_simplex_interval), num_samples=60, warmup_steps=60,
                          num_chains=4, seed=0, disable_progbar=True,
                          check_convergence=False)  # fmt: skip
    mcmc.run(y)
    data = to_arviz(mcmc)
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood"} <= set(
        group_names(data)
    )
    post = data.posterior
    assert set(post.data_vars) == {"probs", "rho", "lam", "total"}
    assert post["lam"].dims == ("chain", "draw", "groups")
    assert post["probs"].dims == ("chain", "draw", "probs_dim_0")
    np.testing.assert_allclose(post["rho"].values, mcmc.get_samples(group_by_chain=True)["rho"])
    stats = data.sample_stats
    assert {"lp", "acceptance_rate", "step_size", "diverging"} <= set(stats.data_vars)
    assert stats["lp"].shape == (4, 60)
    assert data.log_likelihood["z"].dims == ("chain", "draw", "obs")
    assert np.isfinite(loo(data, var_name="z").elpd)


def test_hot_path_skips_identity_transforms_only():
    from torch.distributions import biject_to, constraints
    from torch.distributions import transforms as T

    from pyro_ebm.infer.model_potential import _hot_transform

    assert _hot_transform(biject_to(constraints.real)) is None
    assert _hot_transform(biject_to(constraints.real_vector)) is None
    assert isinstance(_hot_transform(biject_to(constraints.positive)), T.ExpTransform)
    shifted = _hot_transform(biject_to(constraints.greater_than(2.0)))  # keeps its shift
    assert float(shifted(torch.tensor(0.0))) == 3.0
    unit = _hot_transform(biject_to(constraints.unit_interval))
    assert float(unit(torch.tensor(0.0))) == 0.5
    pot = ModelPotential(model_plate_positive, CASES[0][1])
    assert [t is None for *_, t in pot._hot] == [True, False]


@pytest.mark.parametrize("model,args", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_jit_compiled_potential_equals_the_eager_one(model, args):
    from pyro_ebm.infer.vectorize import JitPotential

    pot = ModelPotential(model, args)
    jit = JitPotential(pot)
    flat = torch.randn(12, pot.dim, generator=torch.Generator().manual_seed(2), dtype=F64)
    with pyro.validation_enabled(False):
        x = flat.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(jit(x).sum(), x)
        y = flat.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(pot(y).sum(), y)
        torch.testing.assert_close(jit(flat), pot(flat), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref, rtol=1e-12, atol=1e-12)
    assert jit.cache[(tuple(flat.shape), flat.dtype, flat.device)] is not pot  # a trace


def _branchy(y):
    scale = pyro.sample("scale", dist.HalfNormal(_t(1.0)))
    scale = scale * 3 if scale.max() > 1.0 else scale  # control flow on a value
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(_t(0.0), scale), obs=y)


def test_jit_compile_falls_back_to_eager_on_control_flow():
    from pyro_ebm.infer.vectorize import JitPotential

    pot = ModelPotential(_branchy, (_t([0.5, -1.0, 2.0]),))
    jit = JitPotential(pot)
    # traced at scale 0.99 (branch not taken); the check points around it cross 1
    x = torch.full((4, 1), -0.01, dtype=F64)
    with pyro.validation_enabled(False):
        with pytest.warns(VectorizationWarning, match="differs from the eager"):
            out = jit(x)
        torch.testing.assert_close(out, pot(x))
        assert jit.cache[(tuple(x.shape), x.dtype, x.device)] is pot  # eager from now on
