"""Score matching: fit the score :math:`s_\\theta = -\\nabla_x E_\\theta` without sampling.

Hyvarinen's objective (section 3.2 of 'Energy Based Models' (June 2024), after integrating by
parts), in our sign convention:

.. math::
    J(\\theta) = \\mathbb{E}_{p}\\Big[\\tfrac12\\lVert\\nabla_x E_\\theta(x)\\rVert^2
    - \\operatorname{tr}\\nabla_x^2 E_\\theta(x)\\Big],

equal to the Fisher divergence :math:`\\tfrac12\\mathbb{E}_p\\lVert\\nabla\\log p +
\\nabla E_\\theta\\rVert^2` up to a constant. Three estimators:

* ``"exact"``: the Hessian trace from all :math:`D` Hessian-vector products at once (one
  batched double-backward over the identity, not a Python loop over dimensions); cost grows
  linearly with :math:`D`. Hyvarinen (2005), JMLR 6.
* ``"sliced"``: :math:`\\operatorname{tr} H \\approx v^\\top H v` with random projections
  :math:`v` (Gaussian or Rademacher); the variance-reduced form keeps
  :math:`\\tfrac12\\lVert\\nabla E\\rVert^2` exact. Song, Garg, Shi & Ermon (2019), UAI.
* ``"denoising"``: match the score of the data blurred by :math:`N(0, \\sigma^2 I)`,
  :math:`\\tfrac12\\mathbb{E}\\lVert\\sigma\\nabla E(x + \\sigma\\varepsilon) - \\varepsilon
  \\rVert^2` (weighted by :math:`\\sigma^2`; several scales are drawn per sample), by default
  with antithetic noise pairs :math:`\\pm\\varepsilon`. It fits the blurred density.
  Vincent (2011), Neural Computation 23(7).

Pure score matching (``nce_weight=0``) is blind to the relative weights of well-separated
modes (Wenliang & Kanagawa
2020, "Blindness of score-based methods to isolated components and mixing proportions"): the
score differs only in the low-density gaps, where there is no data to see it. Measured on the
``rings`` toy (four rings, radial sd 0.08, gaps of 0.75; ``bench/training.py``, 10,000 steps,
defaults): of the KL, the rings' masses alone account for 0.059 of 0.070 (exact, seed 0),
0.162 of 0.178 (exact, seed 1), 0.180 of 0.187 and 0.239 of 0.257 (sliced); the within-ring
remainder is 0.007-0.018. Denoising at sigma 0.1 (its earlier default) got the masses right
(0.001, 0.003) but paid the blur (below); at its default 0.05 the blur costs less and the
masses vary more (0.057 and 0.005 of KL 0.088 and 0.037 at seeds 0 and 1); NCE gets both (KL
0.014-0.015). Denoising is no cure where the gaps are wide against sigma: on the held-out
``mixture3`` of ``bench/training.py`` (three Gaussians, weights 0.6 / 0.3 / 0.1, sds 0.5 / 0.2
/ 0.1, about 3 apart) every estimator left the heaviest mode almost empty (its mass 0.000 exact,
0.000 sliced, 0.001 denoising; KL 6.9, 5.6 and 3.4; denoising at sigma 0.1 3.1), while NCE got
the masses to 0.001 (KL 0.002).

**The contrastive term (the default).** ``nce_weight > 0`` adds NCE's classification loss
(Gutmann & Hyvarinen 2012, JMLR 13) against the data's widened Gaussian, with a learned log
normalizer :math:`c`, to the score-matching loss. Each term alone is minimized by the data
density (NCE with :math:`c = \\log Z`), so their sum is too: the estimator stays consistent.
Where score matching is blind (the masses of separated modes, the constant) the
classification decides; elsewhere its weight is small beside score matching's (the weight is
in score matching's units, :class:`ScoreMatching`'s ``nce_weight``). The denoising estimator
contrasts the blurred points it fits, so both of its terms aim at the blurred density. The
term costs one energy evaluation per data point (:data:`CONTRAST_NOISE_RATIO`) without input
gradients, and gives the energy a learned :math:`\\log Z` (:func:`~pyro_ebm.fit` hands it
over, so :class:`~pyro_ebm.EnergyDistribution` is normalized). Measured figures: bench/README,
"Score matching with a contrastive term"; ``nce_weight=0`` is pure score matching.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .._validation import (
    check_choice,
    check_int,
    check_nonnegative_float,
    check_positive_float,
)
from .base import LossOutput, Objective, log_z_runaway
from .nce import NOISE_SCALE, nce_loss

__all__ = ["CONTRAST_NOISE_RATIO", "DENSE_NOISE_MAX_DIM", "ScoreMatching", "hessian_trace"]

METHODS = ("exact", "sliced", "denoising")

CONTRAST_NOISE_RATIO = 1.0
"""Gaussian draws per data point in the contrastive term (:meth:`NCE.for_data
<pyro_ebm.objectives.NCE.for_data>` draws 4): measured on the 2-d battery, one draw per point
was as good (sliced ``checkerboard`` / ``rings`` / ``mixture3`` 0.059 / 0.008 / 0.001 against
0.067 / 0.017 / 0.001 with 4) at a fraction of the cost."""

DENSE_NOISE_MAX_DIM = 256
"""Largest flat data dimension for which the contrastive term's Gaussian has a full
covariance (above it a diagonal one: a dense factor of a large image costs ``D^2`` memory and
``D^2`` per noise draw, and in such dimensions the Gaussian is far from the data anyway)."""


def _energy_grad(energy: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    e = energy(x)
    (g,) = torch.autograd.grad(e.sum(), x, create_graph=True)
    return x, e, g


def hessian_trace(x: Tensor, grad: Tensor) -> Tensor:
    """Exact :math:`\\operatorname{tr}\\nabla_x^2 E` per sample from ``grad`` = :math:`\\nabla_x E`
    (built with ``create_graph=True`` on ``x``), differentiable in the energy's parameters.

    All :math:`D` Hessian-vector products run as one vmapped backward pass
    (``is_grads_batched``); energies with operations vmap cannot batch fall back to a loop.
    """
    n = x.shape[0]
    flat = grad.reshape(n, -1)
    dim = flat.shape[1]
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)
    basis = eye.unsqueeze(1).expand(dim, n, dim)
    try:
        (rows,) = torch.autograd.grad(
            flat, x, grad_outputs=basis, is_grads_batched=True, create_graph=True
        )
        rows = rows.reshape(dim, n, dim)  # rows[i, b, j] = H_b[i, j]
        return rows.diagonal(dim1=0, dim2=2).sum(-1)
    except RuntimeError:  # pragma: no cover - ops without a batching rule
        total = torch.zeros(n, dtype=x.dtype, device=x.device)
        for i in range(dim):
            (row,) = torch.autograd.grad(flat[:, i].sum(), x, create_graph=True)
            total = total + row.reshape(n, dim)[:, i]
        return total


class ScoreMatching(Objective):
    """Score matching by the exact, sliced or denoising estimator.

    Parameters
    ----------
    method:
        ``"exact"``, ``"sliced"`` or ``"denoising"``.
    num_projections:
        Random projections per sample (sliced).
    projection:
        ``"gaussian"`` or ``"rademacher"`` projection vectors (sliced).
    variance_reduction:
        Use :math:`\\tfrac12\\lVert\\nabla E\\rVert^2` instead of
        :math:`\\tfrac12(v^\\top\\nabla E)^2` (sliced; valid for projections with identity
        covariance).
    sigma:
        Noise scale, or a sequence of scales drawn uniformly per sample (denoising). The
        model fits the data blurred by :math:`N(0, \\sigma^2 I)`; the blur itself costs
        KL(p || p_sigma) = 0.17 on ``rings`` and 0.10 on ``checkerboard`` at 0.1
        (``bench/training.py --methods dsm-floor``), a floor under what denoising can reach,
        and about 0.03 and 0.05 at the default 0.05. Without antithetic pairs a small scale
        learns far slower (below).
    antithetic:
        Draw the noise in antithetic pairs (Hammersley & Morton 1956): every data point is
        blurred by :math:`+\\sigma\\varepsilon` and by :math:`-\\sigma\\varepsilon`, and
        the loss is the mean of the two,

        .. math::
            \\tfrac14\\,\\mathbb{E}\\Big[\\lVert\\sigma\\nabla E(x + \\sigma\\varepsilon)
            - \\varepsilon\\rVert^2 + \\lVert\\sigma\\nabla E(x - \\sigma\\varepsilon)
            + \\varepsilon\\rVert^2\\Big].

        Both halves have the plain loss's expectation (:math:`-\\varepsilon` has the law of
        :math:`\\varepsilon`), so the minimizer is unchanged. Divided by :math:`\\sigma^2`
        the plain loss holds :math:`-\\varepsilon^\\top\\nabla E(x+\\sigma\\varepsilon)/\\sigma`,
        whose gradient in :math:`\\theta` has a variance growing like :math:`1/\\sigma^2`;
        in the pair it becomes :math:`-\\varepsilon^\\top(\\nabla E(x+\\sigma\\varepsilon)
        - \\nabla E(x-\\sigma\\varepsilon))/(2\\sigma) \\to -\\varepsilon^\\top\\nabla^2
        E(x)\\,\\varepsilon`, bounded as :math:`\\sigma \\to 0` (the limit is sliced score
        matching with Gaussian projections; for a quadratic energy the odd terms cancel
        exactly). Each step costs two energy+gradient evaluations per data point. Measured
        with ``bench/training.py`` (10,000 steps, ``fit``'s defaults, ``MLPEnergy(2, (128,
        128))``, KL): plain at 0.1 (the earlier default) has its worst cell 0.178 on
        ``rings`` and 0.121 on ``checkerboard``; plain at 0.05 gives ``checkerboard`` 0.374;
        antithetic at 0.05 gives worst cells 0.088 (seed 0, ``rings``) and 0.062 (seed 1,
        ``checkerboard``), ``8gaussians`` 0.034 to 0.003 and ``2spirals`` 0.101 to 0.067.
        At equal evaluations, plain at 0.07 with batches of 512 gives ``checkerboard`` 0.126
        against 0.071 antithetic at 256. Smaller scales bring score matching's blindness to
        the weights of separated modes back (the limit above is sliced score matching):
        antithetic at 0.03 gives ``rings`` 0.161 and ``checkerboard`` 0.148.
    nce_weight:
        Weight :math:`\\lambda` of a noise-contrastive term that heals score matching's
        blindness to the weights of separated modes and learns :math:`\\log Z` (module
        docstring, "The contrastive term"); 0 is pure score matching. The loss is

        .. math::
            J_{\\mathrm{SM}}(\\theta) + \\frac{\\lambda\\,\\overline{\\sigma^2}}
            {\\operatorname{tr}\\Sigma}\\,\\sqrt{\\frac{2}{\\max(d, 2)}}\\,
            J_{\\mathrm{NCE}}(\\theta, c),

        with :math:`\\operatorname{tr}\\Sigma` the data's total variance (score matching's
        loss is a sum over the coordinates, each scaling as one over its variance when the
        data are rescaled; the classification loss is one number, unchanged),
        :math:`\\overline{\\sigma^2}` the mean squared noise scale for the denoising
        estimator (1 otherwise; its loss is :math:`\\sigma^2` times a score matching loss)
        and :math:`d` the number of coordinates of a point. :math:`\\lambda = 8` was set on
        the 2-d battery; the factor :math:`\\sqrt{2/d}` was measured above it (bench/README,
        "The contrastive term's weight above two dimensions"): on ``digits`` (64
        coordinates, AIS test NLL, 1,000 steps, three seeds) :math:`\\lambda = 8` without it
        cost sliced score matching 1.6 nats against pure score matching (mean -24.7 against
        -26.3) where with it the model is 1.5 better (-27.8), and denoising is within 0.2 of
        pure (-31.9 against -32.1; -30.9 without it); on two Gaussians weighted 0.75 / 0.25
        in 16 dimensions the heavier mode's weight is 0.72-0.735 with it, 0.74-0.745 without
        and 0.95-0.97 with pure score matching.
        :math:`J_{\\mathrm{NCE}}` is :class:`~pyro_ebm.objectives.NCE`'s loss against
        one draw per point (:data:`CONTRAST_NOISE_RATIO`) of the data's Gaussian widened by
        1.25 (as
        :meth:`NCE.for_data <pyro_ebm.objectives.NCE.for_data>`; fitted in :meth:`setup`,
        diagonal above :data:`DENSE_NOISE_MAX_DIM` dimensions), with a learned log normalizer
        :math:`c` that :func:`~pyro_ebm.fit` hands to the energy.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import MLPEnergy
    >>> from pyro_ebm.objectives import ScoreMatching
    >>> energy, data = MLPEnergy(3, hidden=(16,)), torch.randn(32, 3)
    >>> [ScoreMatching(m)(energy, data).loss.shape for m in ("exact", "sliced", "denoising")]
    [torch.Size([]), torch.Size([]), torch.Size([])]
    """

    def __init__(
        self,
        method: str = "exact",
        *,
        num_projections: int = 1,
        projection: str = "gaussian",
        variance_reduction: bool = True,
        sigma: float | Sequence[float] = 0.05,
        antithetic: bool = True,
        nce_weight: float = 8.0,
    ) -> None:
        super().__init__()
        check_choice("method", method, METHODS)
        check_choice("projection", projection, ("gaussian", "rademacher"))
        num_projections = check_int("num_projections", num_projections, 1)
        if isinstance(sigma, Sequence) and not isinstance(sigma, str):
            if not sigma:
                raise ValueError(f"sigma must be a number or a non-empty sequence; got {sigma!r}")
            sigmas = [check_positive_float("sigma", s) for s in sigma]
        else:
            sigmas = [check_positive_float("sigma", sigma)]
        self.method, self.num_projections, self.projection = method, num_projections, projection
        self.variance_reduction = variance_reduction
        if not isinstance(antithetic, bool):
            raise ValueError(f"antithetic must be True or False; got {antithetic!r}")
        self.antithetic = antithetic
        self.register_buffer("sigmas", torch.tensor(sigmas, dtype=torch.float64))
        self.nce_weight = check_nonnegative_float("nce_weight", nce_weight)
        # the contrastive term's Gaussian (set by :meth:`setup`) and learned log normalizer
        self.register_buffer("noise_loc", torch.zeros(0))
        self.register_buffer("noise_scale", torch.zeros(0))
        self.register_buffer("total_variance", torch.zeros(0))
        self.log_Z_param = nn.Parameter(torch.zeros(())) if self.nce_weight else None

    @property
    def log_Z(self) -> Tensor | None:
        """The learned log normalizer of the contrastive term (``None`` with
        ``nce_weight=0``); :func:`~pyro_ebm.fit` hands it to the energy."""
        return self.log_Z_param

    def setup(self, data: Tensor) -> None:
        """Fit the contrastive term's Gaussian to ``data`` (once: a resumed run keeps it).

        The data's mean and covariance, widened by :data:`~pyro_ebm.objectives.nce.NOISE_SCALE`
        (a lower-triangular factor; a diagonal one above :data:`DENSE_NOISE_MAX_DIM`
        dimensions), as :meth:`NCE.for_data <pyro_ebm.objectives.NCE.for_data>`.
        """
        if not self.nce_weight or self.noise_loc.numel():
            return
        flat = data.detach().reshape(data.shape[0], -1).double()
        if flat.shape[0] < 2:
            raise ValueError(
                "ScoreMatching's contrastive term (nce_weight > 0) fits a Gaussian to the data: "
                f"it needs at least 2 points, got {flat.shape[0]}"
            )
        loc = flat.mean(0)
        centred = flat - loc
        dim = flat.shape[1]
        if dim <= DENSE_NOISE_MAX_DIM:
            cov = centred.T @ centred / (flat.shape[0] - 1)
            jitter = 1e-6 * max(float(cov.diagonal().max()), 1e-12)
            eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
            scale = torch.linalg.cholesky(cov + jitter * eye)
        else:
            scale = centred.std(0).clamp(min=1e-6 * max(float(centred.std(0).max()), 1e-12))
        self.noise_loc = loc.to(data.dtype)
        self.noise_scale = (NOISE_SCALE * scale).to(data.dtype)
        self.total_variance = centred.square().sum(-1).mean().clamp(min=1e-12).to(data.dtype)

    def contrast_weight(self) -> Tensor:
        """The contrastive term's weight in the loss, in the score-matching loss's units:
        ``nce_weight`` divided by the data's total variance :math:`\\operatorname{tr}\\Sigma`
        (score matching's loss sums over the coordinates and scales as one over their variance
        when the data are rescaled, the classification loss not at all), times
        :math:`\\sqrt{2/d}` above two dimensions and the mean squared noise scale
        :math:`\\overline{\\sigma^2}` for the denoising estimator (whose loss is
        :math:`\\sigma^2` times a score matching loss)."""
        weight = self.nce_weight / self.total_variance
        dim = self.noise_loc.numel()
        if dim > 2:  # the 2-d calibration, falling as one over the root of the dimension
            weight = weight * math.sqrt(2.0 / dim)
        if self.method == "denoising":
            weight = weight * self.sigmas.square().mean().to(weight)
        return weight

    def _noise_log_prob(self, z: Tensor) -> Tensor:
        """:math:`\\log q` of the points whose whitened coordinates are ``z`` (flat)."""
        scale = self.noise_scale.to(z)
        log_det = (scale.diagonal() if scale.dim() == 2 else scale).log().sum()
        return -0.5 * z.square().sum(-1) - log_det - 0.5 * z.shape[-1] * math.log(2 * math.pi)

    def _whiten(self, flat: Tensor) -> Tensor:
        scale, loc = self.noise_scale.to(flat), self.noise_loc.to(flat)
        if scale.dim() == 1:
            return (flat - loc) / scale
        return torch.linalg.solve_triangular(scale, (flat - loc).T, upper=False).T

    def _contrast(
        self, energy: nn.Module, points: Tensor, e_points: Tensor, num_data: int, generator
    ) -> tuple[Tensor, Tensor]:
        """NCE's loss (with the learned log Z) of the energy's ``e_points`` at ``points`` (the
        data, or the blurred data the denoising estimator fits) against
        :data:`CONTRAST_NOISE_RATIO` Gaussian draws per data point, and the
        classifier's accuracy."""
        dim = self.noise_loc.numel()
        z = torch.randn(
            (max(1, round(CONTRAST_NOISE_RATIO * num_data)), dim),
            dtype=points.dtype, device=points.device, generator=generator,
        )  # fmt: skip
        scale, loc = self.noise_scale.to(points), self.noise_loc.to(points)
        noise = loc + (z * scale if scale.dim() == 1 else z @ scale.T)
        e_noise = energy(noise.reshape((-1,) + tuple(points.shape[1:])))
        log_q_points = self._noise_log_prob(self._whiten(points.detach().reshape(-1, dim)))
        log_z = self.log_Z_param.to(points)
        return nce_loss(
            -e_points - log_z,
            log_q_points,
            -e_noise - log_z,
            self._noise_log_prob(z),
            z.shape[0] / points.shape[0],
        )

    def diagnose(
        self, metrics: Mapping[str, Sequence[float]], lr: Sequence[float]
    ) -> dict[str, str]:
        """A learned log Z that runs away (:func:`~pyro_ebm.objectives.base.log_z_runaway`)."""
        message = log_z_runaway(metrics.get("log_Z", []), lr)
        return {} if message is None else {"log_Z": message}

    def forward(
        self, energy: nn.Module, data: Tensor, generator: torch.Generator | None = None
    ) -> LossOutput:
        if self.method == "exact":
            per_sample, x, e = self._exact(energy, data)
        elif self.method == "sliced":
            per_sample, x, e = self._sliced(energy, data, generator)
        else:
            per_sample, x, e = self._denoising(energy, data, generator)
        loss = per_sample.mean()
        metrics = {"energy_pos": e.mean().detach()}
        if self.nce_weight:
            if not self.noise_loc.numel():  # called outside fit(): the first batch fits it
                self.setup(data)
            contrast, accuracy = self._contrast(energy, x, e, data.shape[0], generator)
            loss = loss + self.contrast_weight() * contrast
            metrics.update(accuracy=accuracy, log_Z=self.log_Z_param.detach().clone())
        return LossOutput(loss, metrics)

    def _exact(self, energy, data):
        x, e, g = _energy_grad(energy, data)
        sq = g.reshape(len(x), -1).square().sum(-1)
        trace = hessian_trace(x, g)
        return 0.5 * sq - trace, x, e

    def _sliced(self, energy, data, generator):
        m = self.num_projections
        x = data.repeat_interleave(m, dim=0) if m > 1 else data
        x, e, g = _energy_grad(energy, x)
        v = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        if self.projection == "rademacher":
            v = v.sign()
        (hv,) = torch.autograd.grad((g * v).sum(), x, create_graph=True)
        n = x.shape[0]
        vhv = (hv * v).reshape(n, -1).sum(-1)
        if self.variance_reduction:
            first = 0.5 * g.reshape(n, -1).square().sum(-1)
        else:
            first = 0.5 * (g * v).reshape(n, -1).sum(-1).square()
        return first - vhv, x, e

    def _denoising(self, energy, data, generator):
        n = data.shape[0]
        sigmas = self.sigmas.to(data)
        pick = torch.randint(0, len(sigmas), (n,), device=data.device, generator=generator)
        sigma = sigmas[pick].reshape((n,) + (1,) * (data.dim() - 1))
        eps = torch.randn(data.shape, dtype=data.dtype, device=data.device, generator=generator)
        if self.antithetic:  # the pair (+eps, -eps) in one batch of 2n evaluations
            x, e, g = _energy_grad(energy, torch.cat([data + sigma * eps, data - sigma * eps]))
            g_plus, g_minus = g[:n], g[n:]
            plus = (sigma * g_plus - eps).reshape(n, -1).square().sum(-1)
            minus = (sigma * g_minus + eps).reshape(n, -1).square().sum(-1)
            return 0.25 * (plus + minus), x, e
        x, e, g = _energy_grad(energy, data + sigma * eps)
        residual = (sigma * g - eps).reshape(n, -1)
        return 0.5 * residual.square().sum(-1), x, e
