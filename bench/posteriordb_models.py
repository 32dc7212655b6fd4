"""The four shared posteriordb posteriors, each written twice: a batched energy and a Pyro model.

Each energy is the Stan model's negative log density on the unconstrained space (``log`` for
``<lower=0>`` parameters, with Stan's log-Jacobian), batched over chains (input ``(..., D)``,
output ``(...)``). The Pyro model of the same posterior is written independently with
``pyro.distributions``; :func:`check_energy` compares the two (up to a constant) before any
sampler is trusted on them. ``constrain`` maps unconstrained points to the reference's named
quantities (``theta``, ``f``, ...) so draws can be scored against ``reference.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "posteriordb"


@dataclass
class Posterior:
    name: str
    dim: int
    energy: object  # callable (..., D) -> (...)
    constrain: object  # callable (..., D) -> dict name -> (...)
    model: object  # Pyro model (no arguments)
    unconstrained_from_pyro: object  # dict of pyro unconstrained sites (..., *) -> (..., D)
    reference: dict
    sites: dict  # Pyro latent site name -> shape, in the order of the flat vector
    init_values: dict | None = None  # for sites Pyro cannot sample (ImproperUniform)

    def init_strategy(self):
        from pyro.infer.autoguide.initialization import init_to_uniform, init_to_value

        if not self.init_values:
            return init_to_uniform
        return init_to_value(values=self.init_values, fallback=init_to_uniform)


def _load(name: str) -> tuple[dict, dict]:
    folder = ROOT / name
    data = json.loads((folder / "data.json").read_text())
    ref = json.loads((folder / "reference.json").read_text())["params"]
    return data, ref


def _t(values) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _normal_lp(x: Tensor, loc, scale) -> Tensor:
    z = (x - loc) / scale
    return (
        -0.5 * z * z
        - torch.log(torch.as_tensor(scale, dtype=x.dtype))
        - 0.5 * math.log(2 * math.pi)
    )


def eight_schools() -> Posterior:
    data, ref = _load("eight_schools-eight_schools_noncentered")
    y, sigma = _t(data["y"]), _t(data["sigma"])
    J = len(data["y"])

    def split(x):
        return x[..., :J], x[..., J], x[..., J + 1]

    def energy(x):
        theta_trans, mu, log_tau = split(x)
        tau = log_tau.exp()
        theta = theta_trans * tau.unsqueeze(-1) + mu.unsqueeze(-1)
        lp = (-0.5 * theta_trans.square()).sum(-1)
        lp = lp + _normal_lp(y, theta, sigma).sum(-1)
        lp = lp - 0.5 * (mu / 5).square()
        lp = lp - torch.log1p((tau / 5).square()) + log_tau  # cauchy(0, 5) + log-Jacobian
        return -lp

    def constrain(x):
        theta_trans, mu, log_tau = split(x)
        tau = log_tau.exp()
        theta = theta_trans * tau.unsqueeze(-1) + mu.unsqueeze(-1)
        out = {f"theta[{j + 1}]": theta[..., j] for j in range(J)}
        out.update({"mu": mu, "tau": tau})
        return out

    def model():
        theta_trans = pyro.sample(
            "theta_trans", dist.Normal(torch.zeros(J, dtype=torch.float64), 1.0).to_event(1)
        )
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=torch.float64)))
        pyro.sample("y", dist.Normal(theta_trans * tau + mu, sigma).to_event(1), obs=y)

    def from_pyro(u):
        return torch.cat([u["theta_trans"], u["mu"].unsqueeze(-1), u["tau"].unsqueeze(-1)], -1)

    sites = {"theta_trans": (J,), "mu": (), "tau": ()}
    return Posterior("eight_schools-eight_schools_noncentered", J + 2, energy, constrain, model,
                     from_pyro, ref, sites)  # fmt: skip


def kidiq() -> Posterior:
    data, ref = _load("kidiq-kidscore_momiq")
    kid, mom = _t(data["kid_score"]), _t(data["mom_iq"])

    def energy(x):
        b1, b2, log_sigma = x[..., 0:1], x[..., 1:2], x[..., 2]
        sigma = log_sigma.exp()
        lp = _normal_lp(kid, b1 + b2 * mom, sigma.unsqueeze(-1)).sum(-1)
        lp = lp - torch.log1p((sigma / 2.5).square()) + log_sigma
        return -lp

    def constrain(x):
        return {"beta[1]": x[..., 0], "beta[2]": x[..., 1], "sigma": x[..., 2].exp()}

    def model():
        beta = pyro.sample("beta", dist.ImproperUniform(dist.constraints.real, (), (2,)))
        sigma = pyro.sample("sigma", dist.HalfCauchy(torch.tensor(2.5, dtype=torch.float64)))
        pyro.sample("y", dist.Normal(beta[0] + beta[1] * mom, sigma).to_event(1), obs=kid)

    def from_pyro(u):
        return torch.cat([u["beta"], u["sigma"].unsqueeze(-1)], -1)

    sites = {"beta": (2,), "sigma": ()}
    init = {"beta": torch.zeros(2, dtype=torch.float64)}
    return Posterior(
        "kidiq-kidscore_momiq", 3, energy, constrain, model, from_pyro, ref, sites, init
    )


def sblrc() -> Posterior:
    data, ref = _load("sblrc-blr")
    X, y = _t(data["X"]), _t(data["y"])
    D = int(data["D"])

    def energy(x):
        beta, log_sigma = x[..., :D], x[..., D]
        sigma = log_sigma.exp()
        lp = _normal_lp(beta, 0.0, 10.0).sum(-1) + _normal_lp(sigma, 0.0, 10.0) + log_sigma
        lp = lp + _normal_lp(y, beta @ X.T, sigma.unsqueeze(-1)).sum(-1)
        return -lp

    def constrain(x):
        out = {f"beta[{j + 1}]": x[..., j] for j in range(D)}
        out["sigma"] = x[..., D].exp()
        return out

    def model():
        beta = pyro.sample(
            "beta", dist.Normal(torch.zeros(D, dtype=torch.float64), 10.0).to_event(1)
        )
        sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(10.0, dtype=torch.float64)))
        pyro.sample("y", dist.Normal(X @ beta, sigma).to_event(1), obs=y)

    def from_pyro(u):
        return torch.cat([u["beta"], u["sigma"].unsqueeze(-1)], -1)

    sites = {"beta": (D,), "sigma": ()}
    return Posterior("sblrc-blr", D + 1, energy, constrain, model, from_pyro, ref, sites)


def gp_pois_regr() -> Posterior:
    data, ref = _load("gp_pois_regr-gp_pois_regr")
    xs, k = _t(data["x"]), _t(data["k"])
    N = len(data["x"])
    sqdist = (xs[:, None] - xs[None, :]).square()
    eye = torch.eye(N, dtype=torch.float64)

    def latent_f(log_rho, log_alpha, f_tilde):
        rho, alpha = log_rho.exp(), log_alpha.exp()
        r2 = (rho * rho)[..., None, None]
        cov = (alpha * alpha)[..., None, None] * torch.exp(-0.5 * sqdist / r2) + 1e-10 * eye
        chol = torch.linalg.cholesky(cov)
        return (chol @ f_tilde.unsqueeze(-1)).squeeze(-1)

    def energy(x):
        log_rho, log_alpha, f_tilde = x[..., 0], x[..., 1], x[..., 2:]
        rho, alpha = log_rho.exp(), log_alpha.exp()
        f = latent_f(log_rho, log_alpha, f_tilde)
        lp = 24.0 * log_rho - 4.0 * rho + log_rho  # gamma(25, 4) + log-Jacobian
        lp = lp - 0.5 * (alpha / 2).square() + log_alpha  # half-normal(0, 2) + log-Jacobian
        lp = lp - 0.5 * f_tilde.square().sum(-1)
        lp = lp + (k * f - f.exp()).sum(-1)  # poisson_log without the constant -log k!
        return -lp

    def constrain(x):
        f = latent_f(x[..., 0], x[..., 1], x[..., 2:])
        out = {"rho": x[..., 0].exp(), "alpha": x[..., 1].exp()}
        out.update({f"f[{j + 1}]": f[..., j] for j in range(N)})
        return out

    def model():
        rho = pyro.sample("rho", dist.Gamma(torch.tensor(25.0, dtype=torch.float64), 4.0))
        alpha = pyro.sample("alpha", dist.HalfNormal(torch.tensor(2.0, dtype=torch.float64)))
        f_tilde = pyro.sample(
            "f_tilde", dist.Normal(torch.zeros(N, dtype=torch.float64), 1.0).to_event(1)
        )
        cov = alpha**2 * torch.exp(-0.5 * sqdist / rho**2) + 1e-10 * eye
        f = torch.linalg.cholesky(cov) @ f_tilde
        pyro.sample("k", dist.Poisson(f.exp()).to_event(1), obs=k)

    def from_pyro(u):
        return torch.cat([u["rho"].unsqueeze(-1), u["alpha"].unsqueeze(-1), u["f_tilde"]], -1)

    sites = {"rho": (), "alpha": (), "f_tilde": (N,)}
    return Posterior("gp_pois_regr-gp_pois_regr", N + 2, energy, constrain, model, from_pyro, ref,
                     sites)  # fmt: skip


ALL = (eight_schools, kidiq, sblrc, gp_pois_regr)


def check_energy(post: Posterior, num_points: int = 8, seed: int = 0) -> float:
    """Spread of ``energy - Pyro's potential`` over random points (0 when they agree).

    Both are evaluated at the same unconstrained points; a correct energy differs from Pyro's
    potential only by the normalizing constants Stan drops, the same at every point.
    """
    from pyro.infer.mcmc.util import initialize_model

    pyro.clear_param_store()
    _, potential_fn, _, _ = initialize_model(
        post.model, max_plate_nesting=0, init_strategy=post.init_strategy()
    )
    gen = torch.Generator().manual_seed(seed)
    diffs = []
    for _ in range(num_points):
        x = 0.5 * torch.randn(post.dim, dtype=torch.float64, generator=gen) + 0.1
        params = unflatten(post, x)
        if not torch.equal(post.unconstrained_from_pyro(params), x):
            raise RuntimeError(f"{post.name}: site order of from_pyro and sites disagree")
        diffs.append(float(post.energy(x) - potential_fn(params)))
    return max(diffs) - min(diffs)


def unflatten(post: Posterior, x: Tensor) -> dict:
    """Split flat unconstrained points ``(..., D)`` into Pyro's unconstrained sites."""
    params, start = {}, 0
    for name, shape in post.sites.items():
        size = int(torch.Size(shape).numel())
        params[name] = x[..., start : start + size].reshape(x.shape[:-1] + tuple(shape))
        start += size
    return params


if __name__ == "__main__":
    for make in ALL:
        p = make()
        print(f"{p.name:42s} dim {p.dim:3d}  spread of E - U = {check_energy(p):.2e}")
