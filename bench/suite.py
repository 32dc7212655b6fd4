"""Benchmark suite, part 2: Pyro kernels by ESS/s, fit() overhead, and DDP scaling.

Every figure is a ratio of two things measured side by side in this run. Usage:
``python bench/suite.py [--quick]`` (``make bench`` runs this after ``bench/samplers.py``).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import pyro
import pyro.distributions as dist
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from pyro.infer import HMC, MCMC, NUTS
from pyro.ops.stats import effective_sample_size

from pyro_ebm import fit
from pyro_ebm.energies import MLPEnergy
from pyro_ebm.infer import MALA, RandomWalkMH
from pyro_ebm.objectives import (
    NCE,
    ContrastiveDivergence,
    ScoreMatching,
    fit_gaussian_noise,
)

# ----------------------------------------------------------------------------- Pyro kernels


def _model():
    # a 5-d correlated Gaussian posterior: y ~ N(A x, 1), x ~ N(0, I)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 5, generator=gen)
    y = a @ torch.ones(5) + torch.randn(8, generator=gen)

    def model():
        x = pyro.sample("x", dist.Normal(torch.zeros(5), 1.0).to_event(1))
        pyro.sample("y", dist.Normal(a @ x, 1.0).to_event(1), obs=y)

    return model


def kernel_ess_per_second(num_samples: int, warmup: int) -> dict[str, float]:
    model = _model()
    kernels = {
        "pyro-ebm MALA": lambda: MALA(model),
        "pyro-ebm RandomWalkMH": lambda: RandomWalkMH(model),
        "Pyro HMC (default)": lambda: HMC(model),
        "Pyro NUTS": lambda: NUTS(model),
    }
    out = {}
    for name, make in kernels.items():
        pyro.set_rng_seed(0)
        mcmc = MCMC(make(), num_samples=num_samples, warmup_steps=warmup, disable_progbar=True)
        start = time.perf_counter()
        mcmc.run()
        seconds = time.perf_counter() - start
        draws = mcmc.get_samples(group_by_chain=True)["x"]
        ess = effective_sample_size(draws, chain_dim=0, sample_dim=1).min()
        out[name] = float(ess) / seconds
    return out


# ----------------------------------------------------------------------------- fit overhead


def _hand_written_sm(energy, data, steps, batch):
    opt = torch.optim.Adam(energy.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        x = data[idx].requires_grad_(True)
        e = energy(x)
        (g,) = torch.autograd.grad(e.sum(), x, create_graph=True)
        v = torch.randn(x.shape, generator=gen)
        (hv,) = torch.autograd.grad((g * v).sum(), x, create_graph=True)
        loss = (0.5 * g.square().sum(-1) - (hv * v).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _hand_written_nce(energy, data, steps, batch, noise):
    log_z = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.Adam([*energy.parameters(), log_z], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = data[torch.randint(0, len(data), (batch,), generator=gen)]
        y = noise.sample((4 * batch,))
        gd = -energy(x) - log_z - noise.log_prob(x) - math.log(4)
        gn = -energy(y) - log_z - noise.log_prob(y) - math.log(4)
        loss = -torch.nn.functional.logsigmoid(gd).mean()
        loss = loss - 4 * torch.nn.functional.logsigmoid(-gn).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _hand_written_pcd(energy, data, steps, batch, k=20, eps=0.005):
    opt = torch.optim.Adam(energy.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    buffer = torch.rand(10_000, 2, generator=gen) * 8 - 4
    for _ in range(steps):
        x = data[torch.randint(0, len(data), (batch,), generator=gen)]
        idx = torch.randint(0, len(buffer), (batch,), generator=gen)
        z = buffer[idx]
        for _ in range(k):
            z = z.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(energy(z).sum(), z)
            z = z - eps * g + math.sqrt(2 * eps) * torch.randn(z.shape, generator=gen)
        buffer[idx] = z.detach()
        e_pos, e_neg = energy(x), energy(z.detach())
        loss = e_pos.mean() - e_neg.mean() + 0.01 * (e_pos.square().mean() + e_neg.square().mean())
        opt.zero_grad()
        loss.backward()
        opt.step()


def fit_overhead(steps: int, batch: int = 256) -> list[tuple[str, float, float, float]]:
    data = torch.randn(20_000, 2)
    noise = fit_gaussian_noise(data, 1.25)
    cases = {
        "sm-sliced": (lambda: ScoreMatching("sliced"), lambda e: _hand_written_sm(e, data, steps,
                                                                                  batch)),
        "nce": (lambda: NCE(noise, noise_ratio=4), lambda e: _hand_written_nce(e, data, steps,
                                                                               batch, noise)),
        "pcd": (lambda: ContrastiveDivergence(num_steps=20, step_size=0.005, alpha=0.01),
                lambda e: _hand_written_pcd(e, data, steps, batch)),
    }  # fmt: skip
    rows = []
    for name, (make_objective, hand) in cases.items():
        times = {"fit": [], "hand": []}
        for _ in range(2):  # interleaved repeats; keep the best of each
            energy = MLPEnergy(2, hidden=(128, 128))
            start = time.perf_counter()
            hand(energy)
            times["hand"].append(time.perf_counter() - start)
            energy = MLPEnergy(2, hidden=(128, 128))
            start = time.perf_counter()
            fit(energy, data, make_objective(), steps=steps, batch_size=batch, lr=1e-3, seed=0,
                progress_bar=False, ema=None, schedule="constant")  # fmt: skip
            times["fit"].append(time.perf_counter() - start)
        h, f = min(times["hand"]), min(times["fit"])
        rows.append((name, 1e3 * h / steps, 1e3 * f / steps, f / h))
    return rows


# ----------------------------------------------------------------------------- DDP scaling


def _ddp_worker(rank, world, rendezvous, steps, result):
    tdist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                             world_size=world)  # fmt: skip
    try:
        torch.set_num_threads(1)
        data = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))
        energy = MLPEnergy(2, hidden=(256, 256))
        objective = ScoreMatching("exact")
        fit(energy, data, objective, steps=5, batch_size=512, seed=0, progress_bar=False)
        tdist.barrier()
        start = time.perf_counter()
        fit(energy, data, objective, steps=steps, batch_size=512, seed=0, progress_bar=False)
        if rank == 0:
            with open(result, "w") as fh:
                fh.write(str(steps / (time.perf_counter() - start)))
    finally:
        tdist.destroy_process_group()


def ddp_steps_per_second(world: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        rendezvous, result = os.path.join(tmp, "rdv"), os.path.join(tmp, "rate")
        mp.spawn(_ddp_worker, args=(world, rendezvous, steps, result), nprocs=world, join=True)
        with open(result) as fh:
            return float(fh.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    q = args.quick
    print("\n## Pyro MCMC on a 5-d Gaussian regression posterior: min ESS per second")
    rates = kernel_ess_per_second(200 if q else 1000, 200 if q else 500)
    nuts = rates["Pyro NUTS"]
    for name, rate in rates.items():
        print(f"{name:24s} {rate:9.1f} ESS/s   {rate / nuts:5.2f}x Pyro NUTS")

    print("\n## fit() overhead: time per step vs a hand-written PyTorch loop of the same loss")
    print(f"{'objective':10s} {'hand ms':>8s} {'fit ms':>8s} {'ratio':>6s}  target")
    for name, hand, ours, ratio in fit_overhead(30 if q else 200):
        print(f"{name:10s} {hand:8.2f} {ours:8.2f} {ratio:6.2f}  <= 1.15")

    print("\n## DDP scaling (gloo, CPU): exact score matching, MLP 2-256-256-1, global batch 512")
    one = ddp_steps_per_second(1, 20 if q else 100)
    two = ddp_steps_per_second(2, 20 if q else 100)
    print(f"1 process: {one:.1f} steps/s; 2 processes: {two:.1f} steps/s; speed-up {two / one:.2f}")


if __name__ == "__main__":
    main()
