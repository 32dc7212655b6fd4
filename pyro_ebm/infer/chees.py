"""ChEES: adapting HMC's trajectory length across many chains during warmup.

The change in the estimator of the expected squared jump distance (ChEES) of a transition from
:math:`x` to :math:`x'` is

.. math::
    \\mathrm{ChEES}(T) = \\tfrac14\\, \\mathbb{E}\\big[(\\lVert x' - \\bar x'\\rVert_M^2
    - \\lVert x - \\bar x\\rVert_M^2)^2\\big],

measured in the metric of the mass matrix (so every parameter counts on its own scale) with the
means taken across chains. With integration time :math:`t = uT` (:math:`u` jittered in
:math:`(0, 1]` by a Halton sequence), :math:`\\mathrm{d}\\lVert x(t) - \\bar x\\rVert_M^2 /
\\mathrm{d}t = 2 (x(t) - \\bar x)^\\top p(t)`, so each chain gives the gradient estimate

.. math::
    g_i = t_i\\, (\\lVert x'_i - \\bar x'\\rVert_M^2 - \\lVert x_i - \\bar x\\rVert_M^2)\\,
    (x'_i - \\bar x')^\\top p'_i

with respect to :math:`\\log T`; the estimates are averaged with the chains' acceptance
probabilities as weights (divergent transitions weigh 0), and :math:`\\log T` follows Adam
without momentum (learning rate 0.025, :math:`\\beta_2 = 0.95`). The length used after warmup
is the average of :math:`\\log T` over the last adaptation steps. For a unit Gaussian the
jittered optimum is :math:`T \\approx 2.25` (where :math:`\\tan 2T = 2T`).

Reference: Hoffman, Radul & Sountsov (2021), *An adaptive MCMC scheme for setting trajectory
lengths in Hamiltonian Monte Carlo*, AISTATS.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Info, State, per_chain
from .metric import Metric

__all__ = ["ChEES", "halton"]


def halton(index: int, base: int = 2) -> float:
    """The ``index``-th element (from 1) of the van der Corput sequence in ``base``: in (0, 1)."""
    result, f, i = 0.0, 1.0 / base, index
    while i > 0:
        result += f * (i % base)
        i //= base
        f /= base
    return result


class ChEES:
    """Adam (no momentum) on :math:`\\log T` towards the ChEES optimum.

    Parameters
    ----------
    trajectory_length:
        The starting integration time :math:`T`.
    learning_rate, beta2:
        Adam's step and second-moment decay.
    max_length:
        Upper bound on :math:`T`.
    """

    def __init__(
        self,
        trajectory_length: float,
        *,
        learning_rate: float = 0.025,
        beta2: float = 0.95,
        max_length: float = math.inf,
    ) -> None:
        self.log_length = math.log(trajectory_length)
        self.learning_rate, self.beta2 = learning_rate, beta2
        self.max_length = max_length
        self.second_moment = 0.0
        self.t = 0
        self.draw = 0
        self._avg_sum, self._avg_count = 0.0, 0

    @property
    def length(self) -> float:
        return math.exp(self.log_length)

    def jitter(self) -> float:
        """The next jitter factor :math:`u` in (0, 1) (Halton, base 2)."""
        self.draw += 1
        return halton(self.draw)

    def gradient(self, start: State, info: Info, metric: Metric, time: Tensor) -> float | None:
        """The acceptance-weighted ChEES gradient estimate with respect to :math:`\\log T`."""
        x0, x1, p1 = start.position, info.proposal.position, info.momentum
        weight = torch.nan_to_num(info.acceptance_rate, nan=0.0) * (~info.diverging)
        ok = torch.isfinite(x1.flatten(weight.dim()).sum(-1)) & torch.isfinite(
            p1.flatten(weight.dim()).sum(-1)
        )
        weight = torch.where(ok, weight, torch.zeros_like(weight))
        if float(weight.sum()) <= 0:
            return None
        x1 = torch.where(per_chain(ok, metric.event_dim), x1, x0)
        p1 = torch.where(per_chain(ok, metric.event_dim), p1, torch.zeros_like(p1))
        flat = tuple(range(weight.dim()))
        c0 = x0 - x0.mean(dim=flat, keepdim=True)
        c1 = x1 - x1.mean(dim=flat, keepdim=True)
        change = metric.mass_norm_sq(c1) - metric.mass_norm_sq(c0)
        g = time * change * metric.dot(c1, p1)
        return float((weight * g).sum() / weight.sum())

    def update(self, start: State, info: Info, metric: Metric, time: Tensor) -> float:
        """One Adam step on :math:`\\log T` (ascent); returns the new :math:`T`."""
        grad = self.gradient(start, info, metric, time)
        if grad is None or not math.isfinite(grad):
            return self.length
        self.t += 1
        self.second_moment = self.beta2 * self.second_moment + (1 - self.beta2) * grad * grad
        v_hat = self.second_moment / (1 - self.beta2**self.t)
        self.log_length += self.learning_rate * grad / (math.sqrt(v_hat) + 1e-8)
        self.log_length = min(self.log_length, math.log(self.max_length))
        return self.length

    def restart(self, trajectory_length: float) -> None:
        """Start again from ``trajectory_length`` with a fresh Adam state.

        Called after each mass-matrix update: a length adapted under a poorer metric (one that
        left a direction with more than unit scale) is far too long under the better one.
        """
        self.log_length = math.log(trajectory_length)
        self.second_moment, self.t = 0.0, 0

    def accumulate(self) -> None:
        """Add the current :math:`\\log T` to the running average used after warmup."""
        self._avg_sum += self.log_length
        self._avg_count += 1

    def final_length(self) -> float:
        """:math:`\\exp` of the averaged :math:`\\log T` (the current one if none averaged)."""
        if not self._avg_count:
            return self.length
        return math.exp(self._avg_sum / self._avg_count)
