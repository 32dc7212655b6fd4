#!/usr/bin/env bash
# GPU check: the sampler and training benchmarks on a CUDA machine, in under 5 minutes.
# Usage (from the repository root, with the package installed): bash bench/gpu_check.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
"$PY" - <<'PY'
import time, torch
assert torch.cuda.is_available(), "no CUDA device"
from pyro_ebm.energies import MLPEnergy, GaussianEnergy
from pyro_ebm.infer import sample
from pyro_ebm import fit, datasets
from pyro_ebm.objectives import NCE, ScoreMatching, ContrastiveDivergence, fit_gaussian_noise
from pyro_ebm.infer.base import energy_and_grad

dev = torch.device("cuda")
print(torch.cuda.get_device_name(0), "torch", torch.__version__)
for chains in (1024, 65536):
    energy = MLPEnergy(2, hidden=(128, 128)).to(dev)
    x = torch.randn(chains, 2, device=dev)
    for _ in range(10):
        energy_and_grad(energy, x, 1)
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(300):
        energy_and_grad(energy, x, 1)
    torch.cuda.synchronize(); bare = time.perf_counter() - t
    for compile_ in (False, True):
        kw = dict(num_chains=chains, warmup_steps=0, step_size=0.1, event_shape=(2,),
                  progress_bar=False, seed=0, compile=compile_)
        sample(energy, 5, **kw)
        torch.cuda.synchronize(); t = time.perf_counter()
        sample(energy, 300, **kw)
        torch.cuda.synchronize(); ours = time.perf_counter() - t
        print(f"MALA {chains} chains compile={compile_}: {ours / bare:.2f}x bare energy+grad, "
              f"{chains * 300 / ours:,.0f} draws/s")
data = datasets.load("8gaussians", 50_000, seed=0).to(dev)
for name, obj in [("sm-sliced", ScoreMatching("sliced")),
                  ("nce", NCE(fit_gaussian_noise(data, 1.25), noise_ratio=4)),
                  ("pcd", ContrastiveDivergence(num_steps=30, step_size=0.005, alpha=0.01))]:
    energy = MLPEnergy(2, hidden=(128, 128)).to(dev)
    t = time.perf_counter()
    fit(energy, data, obj, steps=300, batch_size=1024, seed=0, progress_bar=False, device=dev)
    torch.cuda.synchronize()
    print(f"fit {name}: {(time.perf_counter() - t) / 300 * 1e3:.1f} ms/step (batch 1024)")
PY
