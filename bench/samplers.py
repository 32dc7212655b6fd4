"""Sampler benchmark: overhead, throughput and ESS per gradient, measured side by side in one run.

Prints ratios, not absolute timings, so the figures compare like with like on whatever machine
runs it. Usage: ``python bench/samplers.py [--quick]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import pyro
import torch
from pyro.infer import HMC, MCMC
from pyro.ops.stats import effective_sample_size

from pyro_ebm import EnergyDistribution
from pyro_ebm.energies import GaussianEnergy, MLPEnergy
from pyro_ebm.infer import KERNELS, MALA, sample

REFERENCE_ESS_PER_GRAD = {("mala", 10): 0.27, ("mala", 100): 0.10, ("hmc", 10): 0.41,
                          ("hmc", 100): 0.17}  # fmt: skip


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls (the least disturbed measurement)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bare_energy_grad(energy, x: torch.Tensor, n: int) -> None:
    for _ in range(n):
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(xx).sum(), xx)


def ratios(bare: list[float], ours: list[float]) -> tuple[float, float]:
    """Min over rounds and median over rounds of ours / bare (both timed in every round, in
    turn, so that a busy moment of the machine falls on both): this machine's timings swing by
    +-10% between rounds, so one round, or a min against a min, can mislead."""
    return min(ours) / min(bare), statistics.median(ours) / statistics.median(bare)


def overhead(
    num_chains: int, steps: int, repeats: int
) -> list[tuple[str, float, float, tuple[float, float]]]:
    torch.manual_seed(0)
    rows = []
    cases = [
        ("2-d MLP 2-128-128-1", MLPEnergy(2, hidden=(128, 128)), 2),
        ("100-d Gaussian", GaussianEnergy(torch.zeros(100), torch.eye(100)), 100),
    ]
    for name, energy, dim in cases:
        x = torch.randn(num_chains, dim)
        bare_energy_grad(energy, x, 20)  # warm up allocator and kernels

        def run_bare(energy=energy, x=x):
            bare_energy_grad(energy, x, steps)

        def run_sampler(energy=energy, dim=dim):
            sample(energy, steps, num_chains=num_chains, kernel=MALA(step_size=0.1),
                   warmup_steps=0, event_shape=(dim,), progress_bar=False, seed=0,
                   check_convergence=False)  # fmt: skip

        bare, ours = [], []
        for _ in range(repeats):  # interleaved so both see the same machine state
            bare.append(best_of(run_bare, 1))
            ours.append(best_of(run_sampler, 1))
        b, o = min(bare), min(ours)
        rows.append((name, 1e3 * b / steps, 1e3 * o / steps, ratios(bare, ours)))
    return rows


def with_warmup(
    num_chains: int, warmup: int, draws: int, repeats: int
) -> tuple[float, tuple[float, float]]:
    """``sample()`` at its defaults, warmup and convergence check included, on the 2-d MLP,
    against as many bare batched energy+gradient evaluations as it makes transitions."""
    torch.manual_seed(0)
    mlp = MLPEnergy(2, hidden=(128, 128))
    for p in mlp.parameters():
        p.requires_grad_(False)

    def energy(x):  # an untrained MLP is improper; a weak confinement makes it a density
        return mlp(x) + 0.125 * x.square().sum(-1)

    x = torch.randn(num_chains, 2)
    total = warmup + draws
    bare, ours = [], []
    for _ in range(repeats):
        bare.append(best_of(lambda: bare_energy_grad(energy, x, total), 1))
        ours.append(best_of(lambda: sample(energy, draws, num_chains=num_chains,
                                           warmup_steps=warmup, event_shape=(2,),
                                           progress_bar=False, seed=0), 1))  # fmt: skip
    return 1e3 * min(ours) / total, ratios(bare, ours)


def compiled_ratio(num_chains: int, steps: int, repeats: int) -> tuple[float, float, float]:
    """sample(..., compile=True) on the 2-d MLP against bare eager energy+gradient."""
    torch.manual_seed(0)
    energy = MLPEnergy(2, hidden=(128, 128))
    for p in energy.parameters():
        p.requires_grad_(False)
    x = torch.randn(num_chains, 2)
    kw = dict(num_chains=num_chains, kernel=MALA(step_size=0.1), warmup_steps=0,
              event_shape=(2,), progress_bar=False, seed=0, compile=True,
              check_convergence=False)  # fmt: skip
    sample(energy, 5, **kw)  # compile once, outside the measurement
    bare, ours = [], []
    for _ in range(repeats):
        bare.append(best_of(lambda: bare_energy_grad(energy, x, steps), 1))
        ours.append(best_of(lambda: sample(energy, steps, **kw), 1))
    b, o = min(bare), min(ours)
    return 1e3 * b / steps, 1e3 * o / steps, o / b


def mlp_model_factory():
    torch.manual_seed(1)
    energy = MLPEnergy(2, hidden=(128, 128))
    for p in energy.parameters():
        p.requires_grad_(False)
    target = EnergyDistribution(energy, event_shape=(2,))

    def model():
        pyro.sample("x", target)

    return energy, model


def throughput(num_chains: int, draws: int, pyro_draws: int) -> dict[str, float]:
    energy, model = mlp_model_factory()
    start = time.perf_counter()
    sample(energy, draws, num_chains=num_chains, kernel=MALA(step_size=0.1), warmup_steps=0,
           event_shape=(2,), progress_bar=False, seed=0, check_convergence=False)  # fmt: skip
    vectorized = num_chains * draws / (time.perf_counter() - start)
    rates = {"vectorized MALA (draws/s)": vectorized}
    factories = {
        "pyro MCMC + our MALA kernel": lambda: MALA(model, step_size=0.1, adapt_step_size=False),
        "pyro MCMC + Pyro HMC(num_steps=1)": lambda: HMC(
            model, step_size=0.1, num_steps=1, adapt_step_size=False
        ),
    }
    for label, make_kernel in factories.items():
        pyro.set_rng_seed(0)
        warm = MCMC(make_kernel(), num_samples=20, warmup_steps=0, disable_progbar=True)
        warm.run()  # first-call imports and caches are not part of the measurement
        mcmc = MCMC(make_kernel(), num_samples=pyro_draws, warmup_steps=0, disable_progbar=True)
        start = time.perf_counter()
        mcmc.run()
        rates[label] = pyro_draws / (time.perf_counter() - start)
    return rates


ESS_CASES = [  # (label, kernel alias, settings)
    ("mala", "mala", {}),
    ("hmc", "hmc", {}),  # the default: ChEES-adapted trajectory length, jittered
    ("hmc10", "hmc", {"num_steps": 10, "step_size_jitter": 0.0}),  # fixed 10 steps, no jitter
]


def ess_per_gradient(num_chains: int, draws: int) -> list[tuple[str, int, float, float]]:
    """Mean ESS over coordinates (pooled over chains) per energy+gradient evaluation."""
    rows = []
    for label, kernel, settings in ESS_CASES:
        for dim in (10, 100):
            energy = GaussianEnergy(torch.zeros(dim, dtype=torch.float64),
                                    torch.eye(dim, dtype=torch.float64))  # fmt: skip
            out = sample(energy, draws, num_chains=num_chains, kernel=KERNELS[kernel](**settings),
                         warmup_steps=500, seed=0, progress_bar=False)  # fmt: skip
            ess = effective_sample_size(out.samples, chain_dim=0, sample_dim=1).mean()
            grads = out.stats["n_steps"].sum() if "n_steps" in out.stats else num_chains * draws
            rows.append((label, dim, float(ess / grads), REFERENCE_ESS_PER_GRAD[(kernel, dim)]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = parser.parse_args()
    steps, repeats, draws, pyro_draws = (300, 3, 300, 300) if not args.quick else (50, 1, 50, 50)
    rounds = 15 if not args.quick else 1  # the overhead rows: min and median over rounds
    torch.set_num_threads(torch.get_num_threads())
    print(f"# pyro-ebm sampler benchmark  ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__})")  # fmt: skip

    print("\n## Overhead: sample(kernel='mala', 1024 chains) vs bare batched energy+gradient")
    head = f"{'energy':24s} {'bare ms/eval':>13s} {'runner ms/step':>15s}"
    print(f"{head} {'ratio min / median':>19s}  target")
    for name, bare, ours, (low, mid) in overhead(1024, steps, rounds):
        print(f"{name:24s} {bare:13.3f} {ours:15.3f} {low:10.2f} / {mid:4.2f}  <= 1.3")

    per_step, (low, mid) = with_warmup(1024, 150, 150, rounds)
    print(f"{'2-d MLP, defaults+warmup':24s} {'':13s} {per_step:15.3f} {low:10.2f} / {mid:4.2f}"
          f"  <= 1.4 (150 warmup + 150 draws, check included; {rounds} rounds)")  # fmt: skip
    bare, ours, ratio = compiled_ratio(1024, steps, repeats)
    print(f"{'2-d MLP, compile=True':24s} {bare:13.3f} {ours:15.3f} {ratio:7.2f}  <= 0.6 "
          "(BlackJAX jit+vmap: 0.59)")  # fmt: skip

    print("\n## Throughput on a 2-d MLP energy (draws per second)")
    rates = throughput(1024, draws, pyro_draws)
    vec = rates.pop("vectorized MALA (draws/s)")
    print(f"vectorized MALA, 1024 chains: {vec:,.0f} draws/s")
    for label, rate in rates.items():
        ratio = vec / rate
        print(f"{label:36s}: {rate:,.0f} draws/s; vectorized is {ratio:,.0f}x (target >= 100x)")
    ours = rates["pyro MCMC + our MALA kernel"]
    theirs = rates["pyro MCMC + Pyro HMC(num_steps=1)"]
    print(
        f"per-step time, our MALA kernel / Pyro HMC(num_steps=1): {theirs / ours:.2f} "
        "(target <= 1: no slower)"
    )

    print("\n## ESS per gradient on isotropic Gaussians (mean over coordinates)")
    print(f"{'kernel':6s} {'dim':>4s} {'ours':>7s} {'reference':>10s} {'ours/ref':>9s}  target")
    for kernel, dim, value, ref in ess_per_gradient(256 if not args.quick else 32, draws * 2):
        print(f"{kernel:6s} {dim:4d} {value:7.3f} {ref:10.2f} {value / ref:9.2f}  >= 0.8")
    print("hmc: default ChEES trajectory length, jittered; hmc10: fixed 10 steps, no jitter")


if __name__ == "__main__":
    main()
