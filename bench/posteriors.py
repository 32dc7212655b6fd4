"""Real posteriors: sample() at its defaults against posteriordb's reference, and Pyro's NUTS.

For each shared posteriordb posterior (``bench/posteriordb_models.py``: a batched energy on the
unconstrained space, checked against Pyro's potential of an independently written model) this
runs, side by side in one process,

* ``sample(energy, ..., kernel="mala")`` and ``kernel="hmc"`` with every sampler setting at its
  default (128 chains started from N(0, I), default warmup),
* Pyro's ``NUTS`` through ``pyro.infer.MCMC`` (one chain, 300 warmup + 500 draws) as the
  incumbent,

and prints, per run, the largest z-score of a posterior mean against the reference
(``|mean - ref| / sqrt(ref_sd^2 / ESS + mcse_ref^2)``), the worst sd ratio, the smallest bulk
ESS, min-ESS per second (warmup included) and that rate relative to Pyro's NUTS. A run passes
when max z < 5, every sd is within 15% and ESS >= 400 (the criterion of the shared README).

Run: ``python bench/posteriors.py [--quick] [--only NAME]``; ``--mala-ceiling`` instead runs
MALA's best case (started at HMC's draws, their covariance as the metric, fixed step sizes): if
no step size passes there, no MALA warmup can.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import arviz as az
import numpy as np
import pyro
import torch
from posteriordb_models import ALL, check_energy
from pyro.infer import MCMC, NUTS

from pyro_ebm.infer import MALA, ConvergenceWarning, sample


def score(draws: dict[str, np.ndarray], reference: dict, seconds: float) -> dict:
    """Max z, worst sd ratio, min ESS and ESS/s of constrained draws ``(chains, draws)``."""
    worst_z, worst_sd, min_ess = 0.0, 0.0, math.inf
    for name, ref in reference.items():
        x = draws[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ess = float(az.ess(x, method="bulk"))
        z = abs(x.mean() - ref["mean"]) / math.sqrt(ref["sd"] ** 2 / ess + ref["mcse_mean"] ** 2)
        worst_z = max(worst_z, z)
        worst_sd = max(worst_sd, abs(x.std() / ref["sd"] - 1))
        min_ess = min(min_ess, ess)
    ok = worst_z < 5 and worst_sd < 0.15 and min_ess >= 400
    return {"z": worst_z, "sd": worst_sd, "ess": min_ess, "ess_s": min_ess / seconds,
            "s": seconds, "ok": ok}  # fmt: skip


def run_ours(post, kernel: str, num_samples: int, seed: int) -> tuple[dict, object]:
    torch.manual_seed(seed)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        out = sample(post.energy, num_samples, kernel=kernel, num_chains=128,
                     event_shape=(post.dim,), dtype=torch.float64, seed=seed,
                     progress_bar=False)  # fmt: skip
    seconds = time.perf_counter() - start
    named = {k: v.numpy() for k, v in post.constrain(out.samples).items()}
    res = score(named, post.reference, seconds)
    res["warned"] = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    res["restarts"] = int(out.warmup_restarts.sum())
    res["accept"] = float(out.stats["acceptance_rate"].mean())
    if "n_steps" in out.stats:
        res["steps"] = float(out.stats["n_steps"].mean())
    return res, out


def run_nuts(post, seed: int, warmup: int = 300, num_samples: int = 500) -> dict:
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    kernel = NUTS(post.model, init_strategy=post.init_strategy(), max_plate_nesting=0)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, disable_progbar=True)
    start = time.perf_counter()
    mcmc.run()
    seconds = time.perf_counter() - start
    samples = mcmc.get_samples(group_by_chain=True)
    from pyro.infer.mcmc.util import initialize_model

    _, _, transforms, _ = initialize_model(
        post.model, max_plate_nesting=0, init_strategy=post.init_strategy()
    )
    unconstrained = {k: transforms[k](v) for k, v in samples.items()}
    flat = post.unconstrained_from_pyro(
        {k: v.reshape(v.shape[:2] + tuple(post.sites[k])) for k, v in unconstrained.items()}
    )
    named = {k: v.numpy() for k, v in post.constrain(flat).items()}
    return score(named, post.reference, seconds)


def mala_ceiling(post, num_samples: int, seed: int) -> None:
    """MALA's best case on ``post``: started at HMC's draws, with their covariance as the
    metric and fixed step sizes (no warmup). If no step size reaches ESS >= 400 and R-hat
    <= 1.01 here, no MALA warmup can reach it within ``num_samples`` draws."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sample(post.energy, num_samples, kernel="hmc", num_chains=128,
                     event_shape=(post.dim,), dtype=torch.float64, seed=seed + 1,
                     progress_bar=False)  # fmt: skip
    cov = torch.cov(ref.samples.reshape(-1, post.dim).T)
    init = ref.samples[:, -1]
    print(f"{post.name}: MALA from HMC's draws, their covariance as metric, no warmup")
    for eps in (0.01, 0.02, 0.04, 0.08, 0.16):
        kern = MALA(step_size=eps, adapt_step_size=False, inv_mass=cov)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = sample(post.energy, num_samples, kernel=kern, num_chains=128, init=init,
                         event_shape=(post.dim,), dtype=torch.float64, seed=seed,
                         warmup_steps=0, restart_chains=False, progress_bar=False)  # fmt: skip
        named = {k: v.numpy() for k, v in post.constrain(out.samples).items()}
        res = score(named, post.reference, 1.0)
        rhat = max(float(az.rhat(v)) for v in named.values())
        accept = float(out.stats["acceptance_rate"].mean())
        print(
            f"  step {eps:5.2f}: accept {accept:.2f}, max z {res['z']:.2f}, sd err "
            f"{res['sd']:.3f}, min ESS {res['ess']:.0f}, max R-hat {rhat:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip Pyro NUTS")
    parser.add_argument("--only", default=None, help="substring of a posterior's name")
    parser.add_argument("--num-samples", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mala-ceiling",
        action="store_true",
        help="only MALA's best case (HMC's draws, their covariance, fixed steps)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.mala_ceiling:
        for make in ALL:
            post = make()
            if not args.only or args.only in post.name:
                mala_ceiling(post, args.num_samples, args.seed)
        return
    header = (f"{'posterior':40s} {'run':10s} {'max z':>6s} {'sd err':>6s} {'min ESS':>8s} "
              f"{'s':>6s} {'ESS/s':>8s} {'vs NUTS':>7s} {'pass':>4s}  notes")  # fmt: skip
    print(header)
    print("-" * len(header))
    summary = []
    for make in ALL:
        post = make()
        if args.only and args.only not in post.name:
            continue
        spread = check_energy(post)
        if spread > 1e-6:
            raise SystemExit(f"{post.name}: energy disagrees with Pyro's potential ({spread:.2e})")
        nuts = None if args.quick else run_nuts(post, args.seed)
        rows = [("nuts (pyro)", nuts)] if nuts else []
        for kernel in ("mala", "hmc"):
            res, _ = run_ours(post, kernel, args.num_samples, args.seed)
            rows.append((kernel, res))
        for name, r in rows:
            ratio = f"{r['ess_s'] / nuts['ess_s']:7.1f}" if nuts else "      -"
            notes = ""
            if "accept" in r:
                notes = f"accept {r['accept']:.2f}, restarts {r['restarts']}"
                notes += f", warned {r['warned']}"
                if "steps" in r:
                    notes += f", leapfrog {r['steps']:.1f}"
            print(f"{post.name:40s} {name:10s} {r['z']:6.2f} {r['sd']:6.3f} {r['ess']:8.0f} "
                  f"{r['s']:6.1f} {r['ess_s']:8.0f} {ratio} {'yes' if r['ok'] else 'NO':>4s}  "
                  f"{notes}", flush=True)  # fmt: skip
            summary.append((post.name, name, r["ok"]))
    failed = [f"{p} ({k})" for p, k, ok in summary if not ok and k != "nuts (pyro)"]
    print(f"\n{sum(ok for *_, ok in summary)} of {len(summary)} runs pass"
          + (f"; failed: {', '.join(failed)}" if failed else ""))  # fmt: skip


if __name__ == "__main__":
    main()
