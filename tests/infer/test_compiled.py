"""The compiled sampler path: same draws as eager up to rounding; clean fallbacks."""

from __future__ import annotations

import pytest
import torch

from pyro_ebm.energies import GaussianEnergy
from pyro_ebm.infer import HMC, MALA, mala, sample


def _gaussian():
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    return GaussianEnergy(torch.tensor([0.5, -1.0], dtype=torch.float64), cov)


@pytest.mark.parametrize("kernel", ["mala", "ula", "rwmh"])
def test_compiled_path_matches_eager(kernel):
    kw = dict(num_chains=16, kernel=kernel, warmup_steps=40, seed=0, progress_bar=False)
    eager = sample(_gaussian(), 30, **kw)
    compiled = sample(_gaussian(), 30, compile=True, **kw)
    torch.testing.assert_close(compiled.samples, eager.samples, rtol=1e-7, atol=1e-9)
    for name in eager.stats:
        torch.testing.assert_close(compiled.stats[name], eager.stats[name], rtol=1e-7, atol=1e-9)
    assert compiled.step_size.grad_fn is None


@pytest.mark.parametrize("dense", [True, False])
def test_both_paths_call_the_one_mala_log_ratio(monkeypatch, dense):
    calls = {"n": 0}
    original = mala.log_ratio

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(mala, "log_ratio", counted)
    kw = dict(num_chains=8, kernel=MALA(dense_mass=dense), warmup_steps=60, seed=1,
              progress_bar=False)  # fmt: skip
    eager = sample(_gaussian(), 10, **kw)
    eager_calls, calls["n"] = calls["n"], 0
    assert eager_calls >= 70  # every warmup and sampling transition
    compiled = sample(_gaussian(), 10, compile=True, **kw)
    assert calls["n"] >= 1  # traced into each compiled transition (one per metric kind)
    torch.testing.assert_close(compiled.samples, eager.samples, rtol=1e-7, atol=1e-9)


def test_unsupported_kernel_warns_and_runs_eagerly():
    with pytest.warns(UserWarning, match="running 'hmc' eagerly"):
        out = sample(_gaussian(), 5, num_chains=4, kernel=HMC(step_size=0.3), warmup_steps=0,
                     seed=0, progress_bar=False, compile=True)  # fmt: skip
    assert out.samples.shape == (4, 5, 2)


def test_compiler_failure_falls_back_with_a_warning(monkeypatch):
    def broken(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    kw = dict(num_chains=4, warmup_steps=10, seed=0, progress_bar=False)
    with pytest.warns(UserWarning, match="falling back to the eager sampler"):
        fallback = sample(_gaussian(), 10, compile=True, **kw)
    eager = sample(_gaussian(), 10, **kw)
    assert torch.equal(fallback.samples, eager.samples)  # the generator was rewound


@pytest.mark.slow  # compiles an MLP's transition: about 40 s on 2 cores
def test_compiled_cd_negatives_match_eager():
    from pyro_ebm import fit
    from pyro_ebm.energies import MLPEnergy
    from pyro_ebm.objectives import ContrastiveDivergence

    data = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    results = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        energy = MLPEnergy(2, hidden=(16,)).double()
        cd = ContrastiveDivergence(sampler="mala", num_steps=5, buffer_size=128, compile=compile_)
        fit(energy, data, cd, steps=5, batch_size=64, seed=0, progress_bar=False)
        results.append(cd.buffer.samples.clone())
    torch.testing.assert_close(results[1], results[0], rtol=1e-6, atol=1e-8)
