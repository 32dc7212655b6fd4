"""MALA's Metropolis-Hastings log ratio against the Gaussian proposal densities it stands for."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from pyro_ebm.infer import mala
from pyro_ebm.infer.base import State
from pyro_ebm.infer.metric import Metric


def _energy(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    return 0.3 * flat.pow(4).sum(-1) + flat.sin().sum(-1)


def _state(x: torch.Tensor) -> State:
    x = x.detach().requires_grad_(True)
    energy = _energy(x)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    return State(x.detach(), energy.detach(), grad)


def _inv_mass(kind: str, event_shape: tuple[int, ...]) -> torch.Tensor | None:
    gen = torch.Generator().manual_seed(1)
    size = torch.Size(event_shape).numel()
    if kind == "identity":
        return None
    if kind == "diag":
        return torch.rand(event_shape, generator=gen, dtype=torch.float64) * 3 + 0.05
    a = torch.randn(size, size, generator=gen, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(size, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["identity", "diag", "dense"])
@pytest.mark.parametrize("event_shape", [(3,), (2, 2)])
@pytest.mark.parametrize("per_chain", [False, True])
def test_log_ratio_equals_the_ratio_of_gaussian_proposal_densities(kind, event_shape, per_chain):
    """E(x) - E(y) + log N(x; y - eps M^-1 g(y), 2 eps M^-1) - log N(y; x - eps M^-1 g(x), ...),
    with the densities from torch.distributions, for every metric and step-size layout."""
    gen = torch.Generator().manual_seed(0)
    chains = 7
    size = torch.Size(event_shape).numel()
    inv = _inv_mass(kind, event_shape)
    metric = Metric(torch.Size(event_shape), inv)
    full = torch.eye(size, dtype=torch.float64) if inv is None else inv
    if full.dim() == len(event_shape) and kind == "diag":
        full = torch.diag(inv.reshape(-1))
    eps = torch.rand(chains, generator=gen, dtype=torch.float64) * 0.5 + 0.05
    if not per_chain:
        eps = eps[0]
    current = _state(torch.randn((chains,) + event_shape, generator=gen, dtype=torch.float64))
    xi = torch.randn(current.position.shape, generator=gen, dtype=torch.float64)
    y = mala.proposal(current, eps, metric, xi)
    proposed = _state(y)

    eps_b = eps.expand(chains)[:, None]
    drift_x = current.grad.flatten(1) @ full.T
    drift_y = proposed.grad.flatten(1) @ full.T
    cov = 2 * eps_b[..., None] * full  # (chains, size, size)
    forward = MultivariateNormal(current.position.flatten(1) - eps_b * drift_x, cov)
    backward = MultivariateNormal(y.flatten(1) - eps_b * drift_y, cov)
    expected = (
        current.energy
        - proposed.energy
        + backward.log_prob(current.position.flatten(1))
        - forward.log_prob(y.flatten(1))
    )
    got = mala.log_ratio(current, proposed, eps, metric, xi)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    direct = (
        current.energy
        - proposed.energy
        + mala.langevin_log_q(current, proposed, eps, metric)
        - mala.langevin_log_q(proposed, current, eps, metric)
    )
    torch.testing.assert_close(got, direct, rtol=1e-9, atol=1e-9)


def test_log_ratio_is_not_finite_when_the_proposal_gradient_is_not():
    metric = Metric(torch.Size((2,)))
    current = _state(torch.zeros(3, 2, dtype=torch.float64))
    xi = torch.ones(3, 2, dtype=torch.float64)
    y = mala.proposal(current, torch.tensor(0.1, dtype=torch.float64), metric, xi)
    proposed = _state(y)
    proposed.grad[1, 0] = float("nan")
    ratio = mala.log_ratio(current, proposed, torch.tensor(0.1, dtype=torch.float64), metric, xi)
    assert torch.isfinite(ratio[[0, 2]]).all() and not torch.isfinite(ratio[1])


def test_acceptance_probability_rejects_every_non_finite_ratio_as_diverging():
    from pyro_ebm.infer.base import acceptance_probability

    inf = float("inf")
    ratio = torch.tensor([0.0, 3.0, -0.5, -800.0, float("nan"), inf, -inf], dtype=torch.float64)
    prob, diverging = acceptance_probability(ratio)
    expected = torch.tensor([1.0, 1.0, math.exp(-0.5), 0.0, 0, 0, 0], dtype=torch.float64)
    assert torch.allclose(prob, expected.to(prob), rtol=1e-12, atol=0)
    assert diverging.tolist() == [False, False, False, False, True, True, True]


@pytest.mark.parametrize("per_chain", [False, True])
def test_a_transition_shares_one_step_root_between_proposal_and_ratio(per_chain):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 2, 2, generator=gen, dtype=torch.float64)
    metric = Metric(torch.Size((2, 2)), _inv_mass("dense", (2, 2)))
    eps = torch.rand(5, generator=gen, dtype=torch.float64) if per_chain else torch.tensor(0.3)
    eps = eps.to(torch.float64)
    xi = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    current = _state(x)
    root = mala.step_root(eps, metric.event_dim)
    assert torch.allclose((4 * root).square(), 2 * eps.reshape(root.shape), rtol=1e-15)
    y = mala.proposal(current, eps, metric, xi, root)
    assert torch.equal(y, mala.proposal(current, eps, metric, xi))
    proposed = _state(y)
    shared = mala.log_ratio(current, proposed, eps, metric, xi, root)
    assert torch.equal(shared, mala.log_ratio(current, proposed, eps, metric, xi))
