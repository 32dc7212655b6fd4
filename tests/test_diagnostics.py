"""The ArviZ bridge: Samples and pyro.infer.MCMC (ours, Pyro's HMC, NUTS, random walk) to ArviZ.

Every test runs on both ArviZ lines (0.2x on Python 3.11, 1.x on Python >= 3.12: ``make
test-py312``) and checks behaviour through what both share (``data.posterior["x"]``, dims,
values) or through the version-neutral helpers of :mod:`pyro_ebm.diagnostics`."""

from __future__ import annotations

import math
import pickle
import warnings
from types import SimpleNamespace

import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import HMC, MCMC, NUTS, Predictive
from pyro.infer.mcmc import RandomWalkKernel
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from pyro_ebm import EnergyDistribution, diagnostics
from pyro_ebm.diagnostics import (
    MissingEnergyWarning,
    StatsRecorder,
    bfmi,
    concat_chains,
    group_names,
    loo,
    model_run_to_arviz,
    plot_energy,
    plot_ppc,
    plot_rank,
    plot_trace,
    to_arviz,
    write_netcdf,
)
from pyro_ebm.infer import HMC as EbmHMC
from pyro_ebm.infer import MALA, ULA, RandomWalkMH, sample

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

az = diagnostics.az  # ArviZ as the bridge imports it (its once-a-day FutureWarning silenced)

F64 = torch.float64
NUM_CHAINS, NUM_DRAWS = 4, 100


def iso_energy(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x.square().sum(-1)


@pytest.fixture(scope="module")
def runs() -> dict:
    return {
        kernel: sample(
            iso_energy,
            NUM_DRAWS,
            num_chains=NUM_CHAINS,
            kernel=kernel,
            event_shape=(2,),
            warmup_steps=100,
            seed=1,
            progress_bar=False,
            dtype=F64,
        )
        for kernel in ("rwmh", "mala", "hmc")
    }


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def assert_drawn(fig, num_panels: int | None = None, *, at_least: int = 1) -> None:
    """A matplotlib figure with ``num_panels`` axes (or ``at_least``), each with a drawing."""
    assert isinstance(fig, matplotlib.figure.Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    if num_panels is None:
        assert len(axes) >= at_least
    else:
        assert len(axes) == num_panels
    for ax in axes:
        assert ax.lines or ax.collections or ax.patches, ax


def quietly(mcmc, **kwargs):
    """``to_arviz`` of a Pyro HMC/NUTS run without a recorder, its MissingEnergyWarning off."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingEnergyWarning)
        return to_arviz(mcmc, **kwargs)


def expected_stats(kernel: str) -> set[str]:
    names = {"lp", "acceptance_rate", "step_size", "diverging"}
    return names | {"energy", "n_steps"} if kernel == "hmc" else names


# ---------------------------------------------------------------- Samples -> ArviZ


@pytest.mark.parametrize("kernel", ["rwmh", "mala", "hmc"])
def test_samples_groups_dims_and_stat_names(runs, kernel):
    out = runs[kernel]
    idata = to_arviz(out)
    x = idata.posterior["x"]
    assert x.dims == ("chain", "draw", "x_dim_0")
    assert x.shape == (NUM_CHAINS, NUM_DRAWS, 2)
    np.testing.assert_array_equal(x.coords["chain"].values, np.arange(NUM_CHAINS))
    np.testing.assert_array_equal(x.coords["draw"].values, np.arange(NUM_DRAWS))
    np.testing.assert_array_equal(x.values, out.samples.numpy())
    stats = idata.sample_stats
    assert set(stats.data_vars) == expected_stats(kernel)
    for name, value in stats.data_vars.items():
        assert value.dims == ("chain", "draw"), name
        np.testing.assert_array_equal(value.values, out.stats[name].numpy())
    assert stats["diverging"].dtype == bool
    if kernel == "hmc":
        assert stats["n_steps"].dtype.kind == "i"
    assert out.to_arviz(var_name="theta").posterior["theta"].shape == (NUM_CHAINS, NUM_DRAWS, 2)


def test_samples_batch_dims_are_named_and_shared_with_stats():
    target = EnergyDistribution(iso_energy, (2,), batch_shape=(3,))
    out = sample(target, 20, num_chains=2, warmup_steps=20, seed=0, progress_bar=False, dtype=F64)
    idata = to_arviz(out)
    assert idata.posterior["x"].dims == ("chain", "draw", "batch_dim_0", "x_dim_0")
    assert idata.posterior["x"].shape == (2, 20, 3, 2)
    assert idata.sample_stats["lp"].dims == ("chain", "draw", "batch_dim_0")
    np.testing.assert_array_equal(idata.sample_stats["lp"].values, out.stats["lp"].numpy())


@pytest.mark.parametrize("kernel", ["rwmh", "mala", "hmc"])
def test_summary_rhat_ess(runs, kernel):
    out = runs[kernel]
    idata = to_arviz(out)
    summary = az.summary(idata, round_to="none")
    assert list(summary.index) == ["x[0]", "x[1]"]
    assert np.isfinite(summary[["mean", "sd", "ess_bulk", "ess_tail", "r_hat"]].values).all()
    np.testing.assert_allclose(summary["mean"].values, out.samples.mean((0, 1)).numpy())
    rhat = az.rhat(idata)["x"].values
    ess = az.ess(idata)["x"].values
    assert np.isfinite(rhat).all() and (rhat < 1.2).all()
    assert np.isfinite(ess).all() and (ess > 10).all()


@pytest.mark.parametrize("kernel", ["rwmh", "mala", "hmc"])
def test_plots_render(runs, kernel):
    idata = to_arviz(runs[kernel])
    assert_drawn(plot_trace(idata), 2)  # a density and a trace panel (compact)
    assert_drawn(plot_trace(idata, compact=False, figsize=(8, 4)), 4)  # a row per component
    assert_drawn(plot_rank(idata), 2)  # one panel per component
    if kernel == "hmc":
        assert_drawn(plot_energy(idata))  # ArviZ 1.x adds a BFMI panel
    else:
        with pytest.raises(ValueError, match="StatsRecorder"):
            plot_energy(idata)
        with pytest.raises(ValueError, match="energy"):
            bfmi(idata)


def test_bfmi_hmc(runs):
    out = runs["hmc"]
    value = bfmi(to_arviz(out))
    energy = out.stats["energy"].numpy()
    by_hand = np.square(np.diff(energy, axis=1)).mean(1) / energy.var(1, ddof=1)
    assert value.shape == (NUM_CHAINS,)
    np.testing.assert_allclose(value, by_hand, rtol=1e-10)
    assert (value > 0.3).all()  # an isotropic Gaussian is the easy case


def test_samples_without_draws_and_bad_objects_raise():
    out = sample(
        iso_energy,
        5,
        num_chains=2,
        event_shape=(2,),
        warmup_steps=5,
        seed=0,
        progress_bar=False,
        keep=False,
    )
    # keep=False: the last draw; more chains than draws, without ArviZ's warning about it
    assert to_arviz(out).posterior["x"].shape == (2, 1, 2)
    out.stats = {}
    with pytest.raises(ValueError, match="no per-draw statistics"):
        to_arviz(out)
    with pytest.raises(ValueError, match=r"Samples, a pyro\.infer\.MCMC"):
        to_arviz({"x": torch.zeros(2, 10)})
    with pytest.raises(ValueError, match="not to a Samples"):
        to_arviz(
            sample(
                iso_energy,
                5,
                num_chains=2,
                event_shape=(2,),
                warmup_steps=5,
                seed=0,
                progress_bar=False,
            ),
            recorder=StatsRecorder(),
        )
    mcmc = MCMC(HMC(model, num_steps=2), num_samples=5, disable_progbar=True)
    with pytest.raises(ValueError, match="run"):
        to_arviz(mcmc)


# ---------------------------------------------------------------- pyro.infer.MCMC -> ArviZ


def model():
    pyro.sample("x", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
    pyro.sample("sigma", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))


def exact_lp(samples: dict) -> np.ndarray:
    """Minus Pyro's potential energy, in closed form: the unconstrained log sigma is N(0, 1)."""
    std = dist.Normal(torch.tensor(0.0, dtype=F64), 1.0)
    lp = std.log_prob(samples["x"]).sum(-1) + std.log_prob(samples["sigma"].log())
    return lp.numpy()


def run_mcmc(kernel, *, num_samples=100, warmup_steps=50, recorder=None, seed=0, **kwargs):
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        hook_fn=recorder,
        disable_progbar=True,
        **kwargs,
    )
    mcmc.run()
    return mcmc


class FinalMeanAcceptance:
    """A hook that runs the recorder and keeps the kernel's running mean acceptance per chain.

    Pyro's MCMC calls ``kernel.cleanup()`` after each chain, which resets that mean. It also
    keeps RandomWalkKernel's proposal scale as warmup leaves it.
    """

    def __init__(self, recorder: StatsRecorder) -> None:
        self.recorder = recorder
        self.means: list[float] = []
        self.warmup_log_step_size = math.nan

    def __call__(self, kernel, params, stage, i):
        self.recorder(kernel, params, stage, i)
        if stage.startswith("Warmup"):
            self.warmup_log_step_size = getattr(kernel, "_log_step_size", math.nan)
        if stage.startswith("Sample"):
            if i == 0:
                self.means.append(math.nan)
            self.means[-1] = kernel._mean_accept_prob


@pytest.fixture(scope="module")
def pyro_runs() -> dict:
    out = {}
    for name, kernel in [("nuts", NUTS(model)), ("hmc", HMC(model, num_steps=5))]:
        hook = FinalMeanAcceptance(StatsRecorder())
        out[name] = (run_mcmc(kernel, recorder=hook), hook)
    return out


@pytest.mark.parametrize("name", ["nuts", "hmc"])
def test_pyro_hmc_nuts_with_recorder(pyro_runs, name):
    mcmc, hook = pyro_runs[name]
    kernel = mcmc.kernel
    idata = to_arviz(mcmc, recorder=hook.recorder)
    assert set(idata.posterior.data_vars) == {"x", "sigma"}
    assert idata.posterior["x"].dims == ("chain", "draw", "x_dim_0")
    assert idata.posterior["x"].shape == (1, 100, 2)
    stats = idata.sample_stats
    expected = {"lp", "acceptance_rate", "step_size", "diverging", "energy", "n_steps"}
    assert set(stats.data_vars) == expected | ({"tree_depth"} if name == "nuts" else set())
    for value in stats.data_vars.values():
        assert value.shape == (1, 100)
    lp = stats["lp"].values
    np.testing.assert_allclose(lp, exact_lp(mcmc.get_samples(group_by_chain=True)), atol=1e-10)
    accept = stats["acceptance_rate"].values
    assert ((accept >= 0) & (accept <= 1)).all()
    assert accept.mean() == pytest.approx(hook.means[0], abs=1e-9)
    np.testing.assert_array_equal(stats["step_size"].values, kernel.step_size)
    diverging = stats["diverging"].values
    assert diverging.dtype == bool
    assert diverging.sum() == len(mcmc._diagnostics[0]["divergences"])
    # energy[k] is U(z_{k-1}) + K(r_k): minus lp[k-1] leaves the kinetic energy of a fresh
    # N(0, I) momentum in 3 dimensions, chi-square(3) / 2 with mean 1.5 and sd 1.22.
    kinetic = stats["energy"].values[:, 1:] + lp[:, :-1]
    assert (kinetic >= -1e-10).all()
    assert abs(kinetic.mean() - 1.5) < 0.6
    n_steps = stats["n_steps"].values
    assert n_steps.dtype.kind == "i"
    if name == "hmc":
        assert (n_steps == kernel.num_steps).all()
    else:
        depth = stats["tree_depth"].values
        assert ((depth >= 0) & (depth <= kernel._max_tree_depth)).all()
        assert ((n_steps >= 2**depth - 1) & (n_steps >= 1) & (n_steps < 2 ** (depth + 1))).all()
    assert_drawn(plot_energy(idata))  # ArviZ 1.x adds a BFMI panel
    assert_drawn(plot_rank(idata), 3)  # one chain: x[0], x[1], sigma
    value = bfmi(idata)
    assert np.isfinite(value).all() and (value > 0.3).all()
    assert np.isfinite(az.summary(idata)[["mean", "sd", "ess_bulk"]].values).all()  # 1 chain


@pytest.mark.parametrize("name", ["nuts", "hmc"])
def test_pyro_fallback_recomputes_lp_exactly(pyro_runs, name):
    mcmc, hook = pyro_runs[name]
    stats = quietly(mcmc).sample_stats
    assert set(stats.data_vars) == {"lp", "diverging"}
    np.testing.assert_allclose(
        stats["lp"].values,
        to_arviz(mcmc, recorder=hook.recorder).sample_stats["lp"].values,
        atol=1e-10,
    )
    np.testing.assert_allclose(
        stats["lp"].values, exact_lp(mcmc.get_samples(group_by_chain=True)), atol=1e-10
    )
    assert_drawn(plot_trace(quietly(mcmc)), 4)  # x and sigma: density and trace each


def test_nuts_tree_depth_when_the_first_step_diverges():
    # A step of 100 throws the first leapfrog step of every trajectory out: that subtree is
    # discarded, so the tree keeps depth 0 after one leapfrog step, and the draw diverges.
    kernel = NUTS(model, step_size=100.0, adapt_step_size=False, adapt_mass_matrix=False)
    recorder = StatsRecorder(kernel)
    mcmc = run_mcmc(kernel, num_samples=10, warmup_steps=0, recorder=recorder)
    stats = to_arviz(mcmc, recorder=recorder).sample_stats
    assert mcmc._diagnostics[0]["divergences"] == list(range(10))
    assert stats["diverging"].values.all()
    np.testing.assert_array_equal(stats["tree_depth"].values, 0)
    np.testing.assert_array_equal(stats["n_steps"].values, 1)


def test_divergences_in_recorder_and_fallback():
    # A leapfrog step of 2.5 is unstable on a unit Gaussian: the energy error explodes.
    kernel = HMC(model, step_size=2.5, num_steps=3, adapt_step_size=False, adapt_mass_matrix=False)
    recorder = StatsRecorder(kernel)  # attached up front: warmup_steps=0 misses nothing
    mcmc = run_mcmc(kernel, num_samples=20, warmup_steps=0, recorder=recorder)
    with_recorder = to_arviz(mcmc, recorder=recorder).sample_stats
    fallback = quietly(mcmc).sample_stats
    expected = np.zeros((1, 20), dtype=bool)
    expected[0, mcmc._diagnostics[0]["divergences"]] = True
    assert expected.any()
    np.testing.assert_array_equal(with_recorder["diverging"].values, expected)
    np.testing.assert_array_equal(fallback["diverging"].values, expected)
    assert with_recorder["energy"].shape == (1, 20)
    np.testing.assert_allclose(fallback["lp"].values, with_recorder["lp"].values, atol=1e-10)


def test_random_walk_with_and_without_recorder():
    kernel = RandomWalkKernel(model, init_step_size=0.5)
    hook = FinalMeanAcceptance(recorder := StatsRecorder())
    mcmc = run_mcmc(kernel, num_samples=200, warmup_steps=100, recorder=hook)
    draws = mcmc.get_samples(group_by_chain=True)
    stats = to_arviz(mcmc, recorder=recorder).sample_stats
    assert set(stats.data_vars) == {"lp", "acceptance_rate", "step_size", "diverging"}
    np.testing.assert_allclose(stats["lp"].values, exact_lp(draws), atol=1e-10)
    assert not stats["diverging"].values.any()
    accept = stats["acceptance_rate"].values
    assert accept.mean() == pytest.approx(hook.means[0], abs=1e-9)
    # Each draw reports the scale its proposal used. The first post-warmup transition still
    # adapts, so draw 0 used the scale warmup left and the later ones the final scale.
    step_size = stats["step_size"].values[0]
    assert step_size[0] == pytest.approx(math.exp(hook.warmup_log_step_size), rel=1e-12)
    assert step_size[0] != pytest.approx(step_size[1], rel=1e-6)
    np.testing.assert_allclose(step_size[1:], math.exp(kernel._log_step_size))
    fallback = to_arviz(mcmc)  # arviz.from_pyro raises KeyError 'divergences' here
    assert set(fallback.sample_stats.data_vars) == {"lp", "diverging"}
    np.testing.assert_allclose(fallback.sample_stats["lp"].values, exact_lp(draws), atol=1e-10)
    assert not fallback.sample_stats["diverging"].values.any()
    assert np.isfinite(az.summary(fallback)["mean"].values).all()


def sequential_chains(monkeypatch):
    """Make Pyro draw num_chains=2 one after the other in this process, as on a 2-core box."""
    monkeypatch.setattr(pyro.infer.mcmc.api.mp, "cpu_count", lambda: 1)
    return pytest.warns(UserWarning, match="Chains will be drawn sequentially")


def test_recorder_separates_sequential_chains(monkeypatch):
    kernel = HMC(model, num_steps=3)
    hook = FinalMeanAcceptance(recorder := StatsRecorder())
    with sequential_chains(monkeypatch):
        mcmc = run_mcmc(kernel, num_samples=30, warmup_steps=30, recorder=hook, num_chains=2)
    assert sorted(recorder.chains) == [0, 1]
    stats = to_arviz(mcmc, recorder=recorder).sample_stats
    assert stats["energy"].shape == (2, 30)
    np.testing.assert_allclose(
        stats["lp"].values, exact_lp(mcmc.get_samples(group_by_chain=True)), atol=1e-10
    )
    np.testing.assert_allclose(stats["acceptance_rate"].values.mean(1), hook.means, atol=1e-9)
    assert bfmi(to_arviz(mcmc, recorder=recorder)).shape == (2,)


def test_recorder_errors_and_detach():
    with pytest.raises(ValueError, match="holds no draws"):
        to_arviz(
            run_mcmc(HMC(model, num_steps=2), num_samples=5, warmup_steps=5),
            recorder=StatsRecorder(),
        )
    recorder = StatsRecorder()
    run_mcmc(HMC(model, num_steps=2), num_samples=5, warmup_steps=5, recorder=recorder)
    other = run_mcmc(HMC(model, num_steps=2), num_samples=6, warmup_steps=5)
    with pytest.raises(ValueError, match="1 chain"):
        to_arviz(other, recorder=recorder)
    with pytest.warns(MissingEnergyWarning):
        to_arviz(other)  # the warning names the recorder; once per run
    with pytest.raises(ValueError, match="StatsRecorder or None"):
        to_arviz(other, recorder=object())
    kernel = NUTS(model)
    recorder = StatsRecorder(kernel)
    taps = {"_sample_r", "_build_tree", "_build_basetree", "diagnostics"}
    assert taps <= set(vars(kernel))
    clone = pickle.loads(pickle.dumps(kernel))  # the kernel stays picklable for workers
    assert clone._sample_r.kernel is clone
    recorder.detach()
    assert not taps & set(vars(kernel))


# ---------------------------------------------------------------- pyro-ebm's kernels' branch


class MiniMH(MCMCKernel):
    """A random-walk MH kernel reporting per-draw stats as pyro-ebm's kernels do."""

    def __init__(self, potential_fn, step_size=0.8):
        self.potential_fn = potential_fn
        self.step_size = step_size
        self.transforms = {}
        self._initial_params = None

    @property
    def initial_params(self):
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params):
        self._initial_params = params

    def setup(self, warmup_steps, *args, **kwargs):
        self._warmup_steps, self._t = warmup_steps, 0
        self._stats = {"lp": [], "acceptance_rate": [], "step_size": []}

    def sample(self, params):
        z = params["z"]
        proposal = z + self.step_size * torch.randn(z.shape, dtype=z.dtype)
        u, u_new = self.potential_fn({"z": z}), self.potential_fn({"z": proposal})
        accept = float((u - u_new).exp().clamp(max=1.0))
        if torch.rand(()) < accept:
            z, u = proposal, u_new
        if self._t >= self._warmup_steps:
            self._stats["lp"].append(-float(u))
            self._stats["acceptance_rate"].append(accept)
            self._stats["step_size"].append(self.step_size + 0.001 * self._t)
        self._t += 1
        return {"z": z}

    def diagnostics(self):
        n = len(self._stats["lp"])
        return {
            "divergences": [3],
            "acceptance rate": 0.5,
            "sample_stats": dict(self._stats),
            "num": n,
        }


def gaussian_potential(params):
    return 0.5 * params["z"].square().sum()


def test_own_kernel_sample_stats_are_used(monkeypatch):
    kernel = MiniMH(gaussian_potential)
    init = {"z": torch.tensor([[0.5, -0.5], [-1.0, 1.0]], dtype=F64)}
    with sequential_chains(monkeypatch):
        mcmc = run_mcmc(kernel, num_samples=40, warmup_steps=10, num_chains=2, initial_params=init)
    idata = to_arviz(mcmc)
    stats = idata.sample_stats
    assert set(stats.data_vars) == {"lp", "acceptance_rate", "step_size", "diverging"}
    assert idata.posterior["z"].shape == (2, 40, 2)
    for chain, diag in enumerate(mcmc._diagnostics):
        for name in ("lp", "acceptance_rate", "step_size"):
            np.testing.assert_array_equal(stats[name].values[chain], diag["sample_stats"][name])
    z = mcmc.get_samples(group_by_chain=True)["z"]
    np.testing.assert_allclose(stats["lp"].values, -0.5 * z.square().sum(-1).numpy())
    expected = np.zeros((2, 40), dtype=bool)
    expected[:, 3] = True  # from each chain's "divergences" index list
    np.testing.assert_array_equal(stats["diverging"].values, expected)
    assert_drawn(plot_trace(idata), 2)


def test_the_layering_only_diagnostics_imports_arviz_and_not_the_engine():
    """Only pyro_ebm/diagnostics/ imports ArviZ, and nothing of pyro_ebm.infer (no circle)."""
    import ast
    from pathlib import Path

    import pyro_ebm

    root = Path(pyro_ebm.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            in_diagnostics = path.parent.name == "diagnostics"
            if any(n.split(".")[0] == "arviz" for n in names):
                assert in_diagnostics, f"{path} imports arviz"
            if in_diagnostics and node.col_offset == 0:
                assert not any("infer" in n and not n.startswith("pyro.") for n in names), path


def test_to_arviz_accepts_anything_shaped_like_samples():
    from types import SimpleNamespace

    draws = torch.randn(2, 30, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = {"lp": torch.zeros(2, 30), "diverging": torch.zeros(2, 30, dtype=torch.bool)}
    idata = to_arviz(SimpleNamespace(samples=draws, stats=stats, kernel="custom"))
    assert idata.posterior["x"].shape == (2, 30, 3)
    assert sorted(idata.sample_stats.data_vars) == ["diverging", "lp"]


# ---------------------------------------------------------------- every kernel, both runners


def ebm_kernels() -> dict:
    return {
        "MALA": lambda: MALA(model),
        "ULA": lambda: ULA(model),
        "RandomWalkMH": lambda: RandomWalkMH(model),
        "HMC": lambda: EbmHMC(model),
        "pyro NUTS": lambda: NUTS(model),
        "pyro HMC": lambda: HMC(model, num_steps=4),
        "pyro RandomWalkKernel": lambda: RandomWalkKernel(model),
    }


@pytest.mark.parametrize("name", list(ebm_kernels()))
def test_every_kernel_in_pyro_mcmc_gives_data_every_diagnostic_accepts(monkeypatch, name):
    kernel = ebm_kernels()[name]()
    pyro_hmc = name in ("pyro NUTS", "pyro HMC")
    recorder = StatsRecorder() if pyro_hmc else None
    with sequential_chains(monkeypatch):
        mcmc = run_mcmc(kernel, num_samples=60, warmup_steps=60, num_chains=2, recorder=recorder)
    data = to_arviz(mcmc, recorder=recorder)
    assert set(data.posterior.data_vars) == {"x", "sigma"}
    assert data.posterior["x"].dims == ("chain", "draw", "x_dim_0")
    assert data.posterior["sigma"].dims == ("chain", "draw")
    stats = data.sample_stats
    assert {"lp", "diverging"} <= set(stats.data_vars) <= set(diagnostics.SAMPLE_STATS)
    for value in stats.data_vars.values():
        assert value.dims == ("chain", "draw")
    np.testing.assert_allclose(
        stats["lp"].values, exact_lp(mcmc.get_samples(group_by_chain=True)), atol=1e-8
    )
    summary = az.summary(data, round_to="none")
    assert list(summary.index) == ["sigma", "x[0]", "x[1]"]
    assert np.isfinite(summary[["mean", "sd", "ess_bulk", "ess_tail", "r_hat"]].values).all()
    assert_drawn(plot_trace(data), 4)
    assert_drawn(plot_rank(data), 3)
    if "energy" in stats:
        assert name in ("HMC", "pyro NUTS", "pyro HMC")
        assert_drawn(plot_energy(data))
        assert bfmi(data).shape == (2,) and np.isfinite(bfmi(data)).all()
    else:
        assert name not in ("HMC", "pyro NUTS", "pyro HMC")
    assert "log_likelihood" not in group_names(data)  # the model observes nothing


# ---------------------------------------------------------------- model data and predictive


N_OBS = 12
X_OBS = torch.linspace(-1.0, 1.0, N_OBS, dtype=F64)
Y_OBS = 0.5 + 2.0 * X_OBS + 0.3 * torch.randn(N_OBS, generator=torch.Generator().manual_seed(3))


def regression(x, y=None):
    """A linear regression with one observed site ``y`` in a plate."""
    a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=F64), 5.0))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), 5.0))
    noise = pyro.sample("noise", dist.HalfNormal(torch.tensor(1.0, dtype=F64)))
    pyro.deterministic("mean", a + b * x)
    with pyro.plate("data", len(x)):
        return pyro.sample("y", dist.Normal(a + b * x, noise), obs=y)


def regression_log_lik(samples: dict) -> np.ndarray:
    """The pointwise log-likelihood in closed form, (chains, draws, N_OBS)."""
    mean = samples["a"][..., None] + samples["b"][..., None] * X_OBS
    return dist.Normal(mean, samples["noise"][..., None]).log_prob(Y_OBS).numpy()


@pytest.fixture(scope="module")
def regression_run():
    kernel = NUTS(regression)
    recorder = StatsRecorder()
    pyro.set_rng_seed(5)
    mcmc = MCMC(kernel, num_samples=100, warmup_steps=100, hook_fn=recorder, disable_progbar=True)
    mcmc.run(X_OBS, Y_OBS)
    predictive = Predictive(regression, posterior_samples=mcmc.get_samples())(X_OBS)
    prior = Predictive(regression, num_samples=40)(X_OBS)
    data = to_arviz(mcmc, recorder=recorder, posterior_predictive=predictive, prior=prior)
    return mcmc, data


def test_model_groups_dims_and_coords(regression_run):
    mcmc, data = regression_run
    groups = set(group_names(data))
    assert groups == {
        "posterior",
        "sample_stats",
        "observed_data",
        "log_likelihood",
        "posterior_predictive",
        "prior",
        "prior_predictive",
    }
    assert set(data.posterior.data_vars) == {"a", "b", "noise"}
    np.testing.assert_array_equal(data.observed_data["y"].values, Y_OBS.numpy())
    assert data.observed_data["y"].dims == ("y_dim_0",)
    np.testing.assert_array_equal(data.observed_data.coords["y_dim_0"].values, np.arange(N_OBS))
    assert set(data.observed_data.data_vars) == {"y"}  # not the deterministic "mean"
    loglik = data.log_likelihood["y"]
    assert loglik.dims == ("chain", "draw", "y_dim_0") and loglik.shape == (1, 100, N_OBS)
    np.testing.assert_allclose(
        loglik.values, regression_log_lik(mcmc.get_samples(group_by_chain=True)), atol=1e-10
    )
    predictive = data.posterior_predictive
    assert predictive["y"].dims == ("chain", "draw", "y_dim_0")
    assert predictive["y"].shape == (1, 100, N_OBS)
    assert predictive["mean"].shape == (1, 100, N_OBS)
    assert set(data.prior.data_vars) == {"a", "b", "noise", "mean"}
    assert data.prior["a"].dims == ("chain", "draw") and data.prior["a"].shape == (1, 40)
    assert set(data.prior_predictive.data_vars) == {"y"}
    assert data.prior_predictive["y"].shape == (1, 40, N_OBS)
    for group in groups - {"observed_data"}:
        np.testing.assert_array_equal(data[group].coords["chain"].values, [0])


def test_loo_and_ppc_run(regression_run):
    mcmc, data = regression_run
    result = loo(data)
    loglik = regression_log_lik(mcmc.get_samples(group_by_chain=True)).reshape(-1, N_OBS)
    lppd = np.log(np.exp(loglik).mean(0)).sum()  # LOO's elpd sits a little below the lppd
    assert np.isfinite(result.elpd) and result.elpd < lppd < result.elpd + 10
    assert 1.0 < result.p < 6.0  # three parameters
    assert result.pareto_k.shape == (N_OBS,)
    assert_drawn(plot_ppc(data, var_names=["y"]))


@pytest.mark.skipif(diagnostics.ARVIZ_MAJOR >= 1, reason="arviz.from_pyro exists in ArviZ 0.2x")
def test_loo_agrees_with_arviz_from_pyro(regression_run):
    mcmc, data = regression_run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # from_pyro's own notes
        reference = az.from_pyro(mcmc)
    np.testing.assert_allclose(
        data.log_likelihood["y"].values, reference.log_likelihood["y"].values, atol=1e-12
    )
    np.testing.assert_array_equal(data.observed_data["y"].values, reference.observed_data["y"])
    # from_pyro also puts the deterministic "mean" into log_likelihood; ours keeps y alone
    ours, theirs = loo(data), az.loo(reference, var_name="y")
    assert ours.elpd == pytest.approx(float(theirs["elpd_loo"]), abs=1e-9)
    assert ours.se == pytest.approx(float(theirs["se"]), abs=1e-9)


class CountingModel:
    """``regression`` that counts its calls, and optionally refuses to broadcast."""

    def __init__(self, broadcasts: bool) -> None:
        self.broadcasts = broadcasts
        self.calls = 0

    def __call__(self, x, y=None):
        self.calls += 1
        a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=F64), 5.0))
        b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), 5.0))
        noise = pyro.sample("noise", dist.HalfNormal(torch.tensor(1.0, dtype=F64)))
        if not self.broadcasts:  # float() works for one draw only
            a, b, noise = float(a), float(b), float(noise)
        with pyro.plate("data", len(x)):
            return pyro.sample("y", dist.Normal(a + b * x, noise), obs=y)


@pytest.mark.parametrize("broadcasts", [True, False])
def test_log_likelihood_vectorized_and_draw_by_draw_agree(regression_run, broadcasts):
    mcmc, _ = regression_run
    samples = mcmc.get_samples(group_by_chain=True)
    counting = CountingModel(broadcasts)
    data = model_run_to_arviz(samples, {}, counting, (X_OBS, Y_OBS))
    np.testing.assert_allclose(
        data.log_likelihood["y"].values, regression_log_lik(samples), atol=1e-10
    )
    # one trace for the observed data, then all draws at once or one trace per draw
    assert counting.calls == (2 if broadcasts else 2 + 100)


def test_log_likelihood_sums_event_dims_and_keeps_batch_dims():
    def mvn_model(y):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(3, dtype=F64), 1.0).to_event(1))
        with pyro.plate("rows", y.shape[0]):
            pyro.sample("y", dist.MultivariateNormal(mu, torch.eye(3, dtype=F64)), obs=y)

    y = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    mu = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    data = model_run_to_arviz({"mu": mu}, {"lp": torch.zeros(2, 7)}, mvn_model, (y,))
    assert data.observed_data["y"].dims == ("y_dim_0", "y_dim_1")
    loglik = data.log_likelihood["y"]
    assert loglik.dims == ("chain", "draw", "y_dim_0") and loglik.shape == (2, 7, 5)
    expected = dist.Normal(mu[:, :, None, :], 1.0).log_prob(y).sum(-1)
    np.testing.assert_allclose(loglik.values, expected.numpy(), atol=1e-10)


def test_log_likelihood_needs_every_latent_site():
    samples = {"a": torch.zeros(1, 5, dtype=F64), "b": torch.zeros(1, 5, dtype=F64)}
    with pytest.warns(UserWarning, match=r"lacks the latent site\(s\) \['noise'\]"):
        data = model_run_to_arviz(samples, {}, regression, (X_OBS, Y_OBS))
    assert "log_likelihood" not in group_names(data)
    assert "observed_data" in group_names(data)
    data = model_run_to_arviz(samples, {}, regression, (X_OBS, Y_OBS), log_likelihood=False)
    assert "log_likelihood" not in group_names(data)


def test_model_arguments_predictive_shapes_and_constant_data(regression_run):
    mcmc, _ = regression_run
    draws = mcmc.get_samples(group_by_chain=True)
    flat = {k: v.reshape(2, 50, *v.shape[2:]) for k, v in draws.items()}  # as 2 chains
    predictive = {"y": torch.zeros(2, 50, N_OBS, dtype=F64)}  # (chains, draws, ...) works too
    data = model_run_to_arviz(
        flat,
        {},
        regression,
        (X_OBS,),
        {"y": Y_OBS},
        posterior_predictive=predictive,
        constant_data={"x": X_OBS},
        dims={"y": ["obs"], "x": ["obs"]},
        coords={"obs": np.arange(100, 100 + N_OBS)},
    )
    assert data.log_likelihood["y"].dims == ("chain", "draw", "obs")
    assert data.posterior_predictive["y"].dims == ("chain", "draw", "obs")
    assert data.constant_data["x"].dims == ("obs",)
    np.testing.assert_array_equal(data.observed_data.coords["obs"].values, 100 + np.arange(N_OBS))
    np.testing.assert_array_equal(data.constant_data["x"].values, X_OBS.numpy())
    with pytest.raises(ValueError, match=r"posterior_predictive\['y'\] must have leading dims"):
        model_run_to_arviz(flat, {}, regression, (X_OBS, Y_OBS), posterior_predictive={
            "y": torch.zeros(7, N_OBS)})  # fmt: skip
    out = sample(iso_energy, 5, num_chains=2, event_shape=(2,), warmup_steps=5, seed=0,
                 progress_bar=False)  # fmt: skip
    with pytest.raises(ValueError, match="model_args apply to a model run"):
        to_arviz(out, model_args=(X_OBS,))
    assert set(group_names(to_arviz(out, constant_data={"c": np.ones(3)}))) == {
        "posterior",
        "sample_stats",
        "constant_data",
    }


def test_a_vectorized_runner_is_converted_with_its_model():
    """Anything shaped like VectorizedMCMC: get_samples(group_by_chain=True), _samples.stats."""
    g = torch.Generator().manual_seed(0)
    draws = {
        "a": torch.randn(3, 20, generator=g, dtype=F64),
        "b": torch.randn(3, 20, generator=g, dtype=F64),
        "noise": torch.rand(3, 20, generator=g, dtype=F64) + 0.5,
    }
    stats = {"lp": torch.zeros(3, 20), "accept_prob": torch.full((3, 20), 0.5)}
    runner = SimpleNamespace(
        get_samples=lambda group_by_chain=False: draws,
        _samples=SimpleNamespace(stats=stats),
        kernel=SimpleNamespace(model=regression),
        _args=(X_OBS, Y_OBS),
        _kwargs={},
    )
    data = to_arviz(runner)
    assert sorted(data.sample_stats.data_vars) == ["acceptance_rate", "lp"]
    np.testing.assert_allclose(data.log_likelihood["y"].values, regression_log_lik(draws))
    assert data.posterior.attrs["inference_library"] == "pyro_ebm"
    with pytest.raises(ValueError, match="not to a VectorizedMCMC"):
        to_arviz(runner, recorder=StatsRecorder())
    runner._samples = None
    with pytest.raises(ValueError, match=r"holds no draws yet: call \.run"):
        to_arviz(runner)


def test_netcdf_round_trip(regression_run, tmp_path):
    _, data = regression_run
    path = write_netcdf(data, tmp_path / "run.nc")
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # netCDF-4 is HDF5
    back = az.from_netcdf(str(path))
    assert set(group_names(back)) == set(group_names(data))
    for group in group_names(data):
        for name, value in data[group].data_vars.items():
            np.testing.assert_array_equal(back[group][name].values, value.values)


def test_concat_chains_renumbers_chains(regression_run):
    _, data = regression_run
    joined = concat_chains([data, data])
    assert joined.posterior["a"].shape == (2, 100)
    np.testing.assert_array_equal(joined.posterior.coords["chain"].values, [0, 1])
    np.testing.assert_array_equal(joined.log_likelihood["y"].values[1], data.log_likelihood["y"][0])
    assert joined.observed_data["y"].shape == (N_OBS,)
    assert np.isfinite(loo(joined).elpd)
    with pytest.raises(ValueError, match="at least one"):
        concat_chains([])


# ---------------------------------------------------------------- missing energy, recorder


def test_missing_energy_warns_once_per_run_and_names_the_recorder():
    mcmc = run_mcmc(NUTS(model), num_samples=10, warmup_steps=10)
    with pytest.warns(MissingEnergyWarning, match=r"StatsRecorder.*hook_fn=recorder"):
        data = to_arviz(mcmc)
    to_arviz(mcmc)  # no second warning (warnings are errors here)
    with pytest.raises(ValueError, match="needs the Hamiltonian 'energy'.*StatsRecorder"):
        plot_energy(data)
    other = run_mcmc(HMC(model, num_steps=2), num_samples=10, warmup_steps=10)
    with pytest.warns(MissingEnergyWarning, match="Pyro HMC run"):
        to_arviz(other)


def test_recorder_refuses_an_untested_pyro(monkeypatch):
    monkeypatch.setattr(pyro, "__version__", "2.0.0")
    with pytest.raises(RuntimeError, match=r"tested with Pyro 1\.9\.x only; this is Pyro 2\.0\.0"):
        StatsRecorder()
    monkeypatch.setattr(pyro, "__version__", "1.9.2")
    StatsRecorder()


def test_recorder_works_when_chains_run_in_worker_processes(monkeypatch):
    """Pyro runs the chains in spawned processes; each recorder copy reports back."""
    monkeypatch.setattr(pyro.infer.mcmc.api.mp, "cpu_count", lambda: 4)  # enough "cores"
    kernel = HMC(model, num_steps=3)
    recorder = StatsRecorder()
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel, num_samples=40, warmup_steps=30, num_chains=2, hook_fn=recorder,
                mp_context="spawn", disable_progbar=True)  # fmt: skip
    mcmc.run()
    assert recorder.chains == {}  # nothing ran in this process
    data = to_arviz(mcmc, recorder=recorder)
    stats = data.sample_stats
    expected = {"lp", "acceptance_rate", "step_size", "diverging", "energy", "n_steps"}
    assert set(stats.data_vars) == expected
    assert stats["energy"].shape == (2, 40)
    lp = stats["lp"].values
    np.testing.assert_allclose(lp, exact_lp(mcmc.get_samples(group_by_chain=True)), atol=1e-10)
    kinetic = stats["energy"].values[:, 1:] + lp[:, :-1]  # see test_pyro_hmc_nuts_with_recorder
    assert (kinetic >= -1e-10).all() and abs(kinetic.mean() - 1.5) < 0.6
    assert bfmi(data).shape == (2,)


def test_groups_carry_the_library_and_sampler_attributes(runs, regression_run):
    data = to_arviz(runs["mala"])
    for group in ("posterior", "sample_stats"):
        assert data[group].attrs["inference_library"] == "pyro_ebm"
        assert data[group].attrs["sampler"] == "mala"
    _, data = regression_run
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive"):
        assert data[group].attrs["inference_library"] == "pyro", group
        assert data[group].attrs["sampler"] == "NUTS", group
