"""Training benchmark: each method on 2-d toy data under the same time budget, scored the same way.

For every (method, dataset) the same ``MLPEnergy(2, (128, 128))`` is trained for as many steps as
fit in ``--seconds`` (calibrated on a short timed run), then scored as users get it (the final
EMA model, never a best checkpoint): test NLL with log Z from ``grid_log_partition`` on
[-4, 4]^2, KL = NLL - oracle entropy, and MMD between model samples (vectorized MALA) and
held-out data. A second table times exact vs sliced score matching as the dimension grows.

Usage: ``python bench/training.py [--seconds 180] [--methods nce,fce] [--datasets rings]``.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from pyro_ebm import datasets, fit
from pyro_ebm.energies import MLPEnergy
from pyro_ebm.evaluation import grid_log_partition, mmd
from pyro_ebm.infer import sample
from pyro_ebm.objectives import (
    FCE,
    NCE,
    ContrastiveDivergence,
    ScoreMatching,
    fit_gaussian_noise,
    make_flow,
)

# Oracle entropies (nats): computed by pyro_ebm.datasets.oracle_nll where the density is known
# in closed form; rings from DESIGN.md (measured elsewhere).
ORACLE_RINGS = 2.621
METHODS = ("pcd", "sm-exact", "sm-sliced", "sm-denoising", "nce", "fce")
DATASETS = ("8gaussians", "checkerboard", "rings")
BATCH = 256
PRETRAIN = 0  # measured: pre-training the flow makes the EBM learn slower (KL 0.18 vs 0.11)


def make_objective(method: str, train: torch.Tensor):
    if method == "pcd":
        return ContrastiveDivergence("persistent", num_steps=30, step_size=0.005, alpha=0.01,
                                     buffer_size=10_000, reinit_prob=0.05)  # fmt: skip
    if method.startswith("sm-"):
        return ScoreMatching(method[3:], sigma=0.05, num_projections=1)
    if method == "nce":
        return NCE(fit_gaussian_noise(train, 1.25), noise_ratio=4.0)
    if method == "fce":
        fce = FCE(make_flow(2, "realnvp", hidden_features=64, num_layers=6), noise_ratio=1.0)
        fce.pretrain_flow(train, PRETRAIN, generator=torch.Generator().manual_seed(0))
        return fce
    raise ValueError(method)


def oracle(name: str) -> float:
    return ORACLE_RINGS if name == "rings" else float(datasets.oracle_nll(name))


def run_one(method: str, name: str, seconds: float, seed: int = 0) -> dict:
    train = datasets.load(name, 50_000, seed=seed)
    test = datasets.load(name, 20_000, seed=seed + 1)
    torch.manual_seed(seed)
    start = time.perf_counter()
    # calibrate: 60 steps on throw-away copies, timed after the first 10 (warm-up)
    probe = fit(MLPEnergy(2, hidden=(128, 128)), train, make_objective(method, train), steps=60,
                batch_size=BATCH, seed=seed, progress_bar=False, ema=None)  # fmt: skip
    per_step = (probe.wall_time[-1] - probe.wall_time[9]) / 50
    objective = make_objective(method, train)
    remaining = max(seconds - (time.perf_counter() - start), 10 * per_step)
    steps = max(50, int(remaining / per_step * 0.9))
    torch.manual_seed(seed)
    energy = MLPEnergy(2, hidden=(128, 128))
    deadline = start + seconds  # calibration can underestimate (e.g. FCE's flow turns)
    out_of_time = lambda step, metrics: time.perf_counter() > deadline  # noqa: E731
    history = fit(energy, train, objective, steps=steps, batch_size=BATCH, lr=2e-3, seed=seed,
                  progress_bar=False, callbacks=[out_of_time])  # fmt: skip
    steps = len(history.loss)
    wall = time.perf_counter() - start
    log_z = float(grid_log_partition(energy, ((-4.0, 4.0), (-4.0, 4.0)), resolution=400))
    with torch.no_grad():
        inside = (test.abs() <= 4).all(-1)
        nll = float((energy(test[inside]).double() + log_z).mean())
    draws = sample(energy, 1, num_chains=2000, kernel="mala", warmup_steps=300, seed=seed,
                   keep=False, progress_bar=False, event_shape=(2,))  # fmt: skip
    score = float(mmd(draws.samples[:, -1], test[:2000]))
    return {"steps": steps, "seconds": wall, "nll": nll, "kl": nll - oracle(name), "mmd": score}


def sm_scaling(dims=(2, 8, 32, 64), reps: int = 10) -> list[tuple[int, float, float]]:
    rows = []
    for d in dims:
        energy = MLPEnergy(d, hidden=(128, 128))
        x = torch.randn(BATCH, d)
        times = {}
        for method in ("exact", "sliced"):
            obj = ScoreMatching(method)
            obj(energy, x).loss.backward()  # warm up
            t0 = time.perf_counter()
            for _ in range(reps):
                obj(energy, x).loss.backward()
            times[method] = (time.perf_counter() - t0) / reps
        rows.append((d, 1e3 * times["exact"], 1e3 * times["sliced"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=180.0, help="budget per run")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    print(f"# pyro-ebm training benchmark ({platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}); budget {args.seconds:.0f} s per run")  # fmt: skip
    print(f"\n{'method':13s} {'dataset':13s} {'steps':>6s} {'seconds':>8s} {'NLL':>7s} "
          f"{'KL':>7s} {'MMD':>8s}  target")  # fmt: skip
    for name in args.datasets.split(","):
        for method in args.methods.split(","):
            r = run_one(method, name, args.seconds)
            if method.startswith("sm-"):
                target = "KL <= 0.30"
            elif name in ("8gaussians", "rings"):
                target = "KL <= 0.10"
            else:
                target = "-"
            print(f"{method:13s} {name:13s} {r['steps']:6d} {r['seconds']:8.1f} {r['nll']:7.3f} "
                  f"{r['kl']:7.3f} {r['mmd']:8.4f}  {target}", flush=True)  # fmt: skip
    if not args.skip_scaling:
        print("\n## Score matching step time (ms, batch 256, MLP d-128-128-1)")
        print(f"{'d':>4s} {'exact':>9s} {'sliced':>9s} {'exact/sliced':>13s}")
        for d, exact, sliced in sm_scaling():
            print(f"{d:4d} {exact:9.2f} {sliced:9.2f} {exact / sliced:13.1f}")
        print("target: exact/sliced >= 10 at d = 64")


if __name__ == "__main__":
    main()
