"""Pyro models on the many-chain engine: ``VectorizedMCMC`` against Pyro's NUTS, side by side.

Three measurements, each in one process so that ratios share the machine's state:

1. **Accuracy and speed on two models**: the eight-schools model (non-centred, written the
   Pyro way with a plate; posteriordb's data and reference draws) and an inverse problem with an
   ``EnergyDistribution`` prior (a banana energy) and a ``HalfNormal`` noise scale, whose
   reference is 3-d grid quadrature of the exact posterior. ``VectorizedMCMC(HMC(model))`` and
   ``VectorizedMCMC(MALA(model))`` at their defaults (64 chains from ``init_to_uniform``, the
   engine's default warmup) against ``pyro.infer.MCMC(NUTS(model))`` (one chain, 500 warmup +
   1000 draws). Criterion (shared README): max z < 5, every sd within 15%, bulk ESS >= 400;
   min-ESS/s includes warmup and set-up.
2. **Cost of the model potential**: energy + gradient of ``ModelPotential`` (eager, and traced
   with ``jit_compile``) relative to a hand-written batched energy of eight schools.
3. **EnergyDistribution.sample under Predictive** (not parallel): seconds per draw with the
   warm-chain pool against the previous behaviour (a fresh 200 + 50-step run per call).

Run: ``python bench/vectorized_models.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from posteriordb_models import _load, eight_schools
from posteriors import score
from pyro.infer import MCMC, NUTS, Predictive

from pyro_ebm import EnergyDistribution
from pyro_ebm.energies import BananaEnergy
from pyro_ebm.infer import HMC, MALA, ConvergenceWarning, VectorizedMCMC
from pyro_ebm.infer.model_potential import ModelPotential
from pyro_ebm.infer.vectorize import JitPotential

F64 = torch.float64


# ----------------------------------------------------------------------------- the models
def eight_schools_model():
    data, ref = _load("eight_schools-eight_schools_noncentered")
    y = torch.tensor(data["y"], dtype=F64)
    sigma = torch.tensor(data["sigma"], dtype=F64)

    def model(y, sigma):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=F64)))
        with pyro.plate("school", len(y)):
            theta_trans = pyro.sample("theta_trans", dist.Normal(torch.tensor(0.0, dtype=F64),
                                                                 1.0))  # fmt: skip
            pyro.deterministic("theta", mu + tau * theta_trans)
            pyro.sample("y", dist.Normal(mu + tau * theta_trans, sigma), obs=y)

    def constrained(samples: dict) -> dict:
        out = {f"theta[{j + 1}]": samples["theta"][..., j] for j in range(len(data["y"]))}
        out.update({"mu": samples["mu"], "tau": samples["tau"]})
        return out

    return model, (y, sigma), ref, constrained


A = torch.tensor([[1.0, 0.5], [0.3, -1.0], [-0.8, 0.6], [1.2, 1.0]], dtype=F64)
Y = torch.tensor([0.9, -1.4, 0.2, 2.3], dtype=F64)
PRIOR = BananaEnergy(curvature=1.0).to(F64)


def ebm_model(y):
    x = pyro.sample("x", EnergyDistribution(PRIOR, event_shape=(2,)))
    noise = pyro.sample("noise", dist.HalfNormal(torch.tensor(1.0, dtype=F64)))
    # y is one event of len(y) observations: written from the right, it vectorizes
    pyro.sample("y", dist.Normal(x @ A.T, noise.unsqueeze(-1)).to_event(1), obs=y)


def ebm_reference(n: int = 161) -> dict:
    """Means, sds of x1, x2, noise by quadrature on a 3-d grid (log-noise coordinates)."""
    g1 = torch.linspace(-4.5, 4.5, n, dtype=F64)
    g2 = torch.linspace(-5.0, 9.0, n, dtype=F64)
    ls = torch.linspace(-4.0, 2.0, n, dtype=F64)
    x = torch.stack(torch.meshgrid(g1, g2, indexing="ij"), -1).reshape(-1, 2)
    prior = -PRIOR(x)
    resid = Y - x @ A.T  # (P, 4)
    sig = ls.exp()  # (S,)
    sse = resid.square().sum(-1)  # (P,)
    lp = (prior.unsqueeze(1) - len(Y) * ls - 0.5 * sse.unsqueeze(1) / sig.square()
          + dist.HalfNormal(torch.tensor(1.0, dtype=F64)).log_prob(sig) + ls)  # fmt: skip
    w = (lp - lp.max()).exp()
    w = w / w.sum()
    out = {}
    for name, value in (("x[0]", x[:, 0:1]), ("x[1]", x[:, 1:2]), ("noise", sig.unsqueeze(0))):
        m = float((w * value).sum())
        sd = math.sqrt(float((w * (value - m).square()).sum()))
        out[name] = {"mean": m, "sd": sd, "mcse_mean": 0.0}
    return out


# ----------------------------------------------------------------------------- runners
def run_vectorized(kernel, model, args, constrained, seed: int) -> tuple[dict, VectorizedMCMC]:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        mcmc = VectorizedMCMC(kernel(model), num_samples=500, seed=seed, disable_progbar=True)
        mcmc.run(*args)
    seconds = time.perf_counter() - start
    draws = {k: v.numpy() for k, v in constrained(mcmc.get_samples(group_by_chain=True)).items()}
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {"draws": draws, "seconds": seconds, "warned": warned}, mcmc


def run_nuts(model, args, constrained, seed: int, warmup: int, num: int) -> dict:
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    mcmc = MCMC(NUTS(model), num_samples=num, warmup_steps=warmup, disable_progbar=True)
    mcmc.run(*args)
    seconds = time.perf_counter() - start
    samples = mcmc.get_samples(group_by_chain=True)
    if "theta" not in samples and "theta_trans" in samples:
        samples["theta"] = samples["mu"][..., None] + samples["tau"][..., None] * samples[
            "theta_trans"]  # fmt: skip
    draws = {k: v.numpy() for k, v in constrained(samples).items()}
    return {"draws": draws, "seconds": seconds, "warned": False}


def ebm_constrained(samples: dict) -> dict:
    return {"x[0]": samples["x"][..., 0], "x[1]": samples["x"][..., 1], "noise": samples["noise"]}


def accuracy(quick: bool) -> None:
    school_model, school_args, school_ref, school_c = eight_schools_model()
    cases = [
        ("eight_schools (plated)", school_model, school_args, school_ref, school_c),
        ("EBM prior + HalfNormal noise", ebm_model, (Y,), ebm_reference(), ebm_constrained),
    ]
    warmup, num = (200, 300) if quick else (500, 1000)
    print(
        "| model | sampler | max z | sd err | min ESS | s | min-ESS/s | vs NUTS | pass | warned |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, model, args, ref, constrained in cases:
        nuts = run_nuts(model, args, constrained, 0, warmup, num)
        base = score(nuts["draws"], ref, nuts["seconds"])
        rows = [("Pyro NUTS (1 chain)", nuts, base)]
        for kernel in (HMC, MALA):
            res, _ = run_vectorized(kernel, model, args, constrained, 0)
            rows.append((f"VectorizedMCMC({kernel.__name__})", res,
                         score(res["draws"], ref, res["seconds"])))  # fmt: skip
        for label, res, sc in rows:
            print(f"| {name} | {label} | {sc['z']:.2f} | {100 * sc['sd']:.1f}% | "
                  f"{sc['ess']:.0f} | {sc['s']:.1f} | {sc['ess_s']:.1f} | "
                  f"{sc['ess_s'] / base['ess_s']:.0f}x | {'yes' if sc['ok'] else 'NO'} | "
                  f"{'yes' if res['warned'] else 'no'} |")  # fmt: skip


# ----------------------------------------------------------------------------- potential cost
def _time(fns: dict, x, repeats: int, blocks: int = 20) -> dict:
    """Seconds per energy+gradient call of each function: the best of ``blocks`` blocks of
    ``repeats // blocks`` calls, the functions interleaved block by block (side by side: a
    load that comes and goes hits all of them alike, and the minimum drops it)."""
    for fn in fns.values():
        for _ in range(5):
            torch.autograd.grad(fn(x).sum(), x)
    best = dict.fromkeys(fns, math.inf)
    per = max(1, repeats // blocks)
    for _ in range(blocks):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(per):
                torch.autograd.grad(fn(x).sum(), x)
            best[name] = min(best[name], (time.perf_counter() - start) / per)
    return best


def potential_cost(quick: bool) -> None:
    model, args, _, _ = eight_schools_model()
    pot = ModelPotential(model, args)
    hand = eight_schools().energy  # theta_trans (8), mu, log tau
    jit = JitPotential(pot)

    def hand_in_model_layout(z):  # the model's layout: mu, log tau, theta_trans
        return hand(torch.cat([z[:, 2:], z[:, :2]], -1))

    print("\n| chains | hand-written ms | ModelPotential ms | ratio | jit_compile ms | ratio |")
    print("|---|---|---|---|---|---|")
    for chains in (256, 1024, 4096):
        z = torch.randn(chains, pot.dim, dtype=F64, requires_grad=True)
        gap = (pot(z) - hand_in_model_layout(z)).detach()  # the same up to a constant
        assert float(gap.std()) < 1e-9, float(gap.std())
        repeats = 100 if quick else 400
        with pyro.validation_enabled(False):
            t = _time({"hand": hand_in_model_layout, "pot": pot, "jit": jit}, z, repeats)
            t_hand, t_pot, t_jit = t["hand"], t["pot"], t["jit"]
        print(f"| {chains} | {1e3 * t_hand:.2f} | {1e3 * t_pot:.2f} | {t_pot / t_hand:.2f} | "
              f"{1e3 * t_jit:.2f} | {t_jit / t_hand:.2f} |")  # fmt: skip


# ----------------------------------------------------------------------------- Predictive
def predictive(quick: bool) -> None:
    def make(**kwargs):
        prior = EnergyDistribution(BananaEnergy(curvature=1.0).to(F64), event_shape=(2,),
                                   sampler_kwargs=kwargs)  # fmt: skip

        def model():
            x = pyro.sample("x", prior)
            pyro.sample("y", dist.Normal(x.sum(-1), 0.5))

        return model

    old = make(fresh=True, warmup_steps=200, num_transitions=50)  # the previous behaviour
    new = make()
    n_old, n_new = (10, 200) if quick else (30, 1000)
    start = time.perf_counter()
    Predictive(old, num_samples=n_old)()
    t_old = (time.perf_counter() - start) / n_old
    start = time.perf_counter()
    out = Predictive(new, num_samples=n_new)()
    t_new = (time.perf_counter() - start) / n_new
    x = out["x"].reshape(n_new, 2)
    ref = BananaEnergy(curvature=1.0).to(F64)
    print("\n| Predictive, not parallel | s per draw | ratio |")
    print("|---|---|---|")
    print(f"| fresh 200 + 50 steps per call (before) | {t_old:.4f} | 1 |")
    print(f"| warm-chain pool (default) | {t_new:.4f} | {t_new / t_old:.4f} |")
    exact = ref.mean() if callable(ref.mean) else ref.mean
    print(f"(pool draws: mean {x.mean(0).tolist()}, exact {exact.tolist()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer draws, for a smoke run")
    parser.add_argument("--only", choices=["accuracy", "potential", "predictive"])
    opts = parser.parse_args()
    torch.set_default_dtype(F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for part, fn in (("accuracy", accuracy), ("potential", potential_cost),
                         ("predictive", predictive)):  # fmt: skip
            if opts.only in (None, part):
                fn(opts.quick)


if __name__ == "__main__":
    main()
