"""Noise-contrastive estimation: logistic discrimination of data from known noise, learning log Z.

With model :math:`\\log p_\\theta(x) = -E_\\theta(x) - c` (:math:`c` a learned log normalizer),
noise :math:`p_n` and :math:`\\nu` noise samples per data point, the classifier's logit is
:math:`G(x) = \\log p_\\theta(x) - \\log(\\nu\\, p_n(x))` and NCE minimizes

.. math::
    J = -\\mathbb{E}_{p}[\\log\\sigma(G(x))] - \\nu\\,\\mathbb{E}_{p_n}[\\log(1 - \\sigma(G(y)))].

At the optimum :math:`p_\\theta = p`, so :math:`c` converges to the true log normalizer
(section 3.3 of 'Energy Based Models' (June 2024); Gutmann & Hyvarinen 2010, 2012, JMLR 13).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal, TransformedDistribution
from torch.distributions.transforms import ReshapeTransform

from .._validation import check_positive_float
from .base import LossOutput, Objective, log_z_runaway

__all__ = ["NCE", "NOISE_RATIO", "NOISE_SCALE", "fit_gaussian_noise", "nce_loss"]

NOISE_SCALE = 1.25
"""Widening of the data's Gaussian that :meth:`NCE.for_data` (and score matching's contrastive
term) contrast the data with."""
NOISE_RATIO = 4.0
"""Noise draws per data point of :meth:`NCE.for_data`."""


def _check_data(data: object) -> None:
    if not torch.is_tensor(data) or data.dim() < 2 or data.shape[0] < 2:
        got = tuple(data.shape) if torch.is_tensor(data) else type(data).__name__
        raise ValueError(f"data must be a tensor of shape (n >= 2, *event_shape); got {got}")


def fit_gaussian_noise(data: Tensor, scale: float = 1.0) -> Distribution:
    """A full-covariance Gaussian fitted to ``data`` (covariance times ``scale**2``).

    For image-shaped data the Gaussian lives on the flattened event and is reshaped back, so
    ``sample((n,))`` has shape ``(n, *event_shape)`` and ``log_prob`` returns ``(n,)``.
    """
    flat = data.detach().reshape(data.shape[0], -1).double()
    mean = flat.mean(0)
    centred = flat - mean
    cov = centred.T @ centred / max(flat.shape[0] - 1, 1)
    cov = cov * scale**2 + 1e-6 * torch.eye(flat.shape[1], dtype=cov.dtype, device=cov.device)
    gauss = MultivariateNormal(mean.to(data.dtype), cov.to(data.dtype))
    if data.dim() == 2:
        return gauss
    return TransformedDistribution(gauss, [ReshapeTransform(flat.shape[1:], data.shape[1:])])


def nce_loss(
    log_model_data: Tensor,
    log_noise_data: Tensor,
    log_model_noise: Tensor,
    log_noise_noise: Tensor,
    noise_ratio: float,
) -> tuple[Tensor, Tensor]:
    """The NCE loss :math:`J` and the classifier's accuracy, from the four log densities."""
    log_nu = math.log(noise_ratio)
    logit_data = log_model_data - log_noise_data - log_nu
    logit_noise = log_model_noise - log_noise_noise - log_nu
    loss = -F.logsigmoid(logit_data).mean() - noise_ratio * F.logsigmoid(-logit_noise).mean()
    correct = (logit_data > 0).sum() + (logit_noise < 0).sum()
    accuracy = correct / (logit_data.numel() + logit_noise.numel())
    return loss, accuracy.detach()


class NCE(Objective):
    """Noise-contrastive estimation with a learned log normalizer.

    Parameters
    ----------
    noise:
        A noise distribution with ``sample`` and ``log_prob`` over the data's event shape
        (e.g. :func:`fit_gaussian_noise` of the data). It should cover the data's support.
    noise_ratio:
        :math:`\\nu`, noise samples per data point.
    init_log_Z:
        Starting value of the learned log normalizer.

    Notes
    -----
    :func:`~pyro_ebm.fit` trains NCE at :attr:`default_lr` = 5e-2 with a linear warm-up over
    the first 5% of the steps (:attr:`default_lr_warmup`) unless given a rate: the
    classification loss is bounded and its gradients are small once the classifier is good,
    so a large step helps the sharp sets, and the warm-up keeps the thin ones. Measured on the
    eight 2-d sets of ``bench/training.py`` (``NCE.for_data``, 10,000 steps,
    ``MLPEnergy(2, (128, 128))``, seed 0), the KL on ``checkerboard`` at 2e-3 / 5e-3 / 1e-2 /
    2e-2 / 3e-2 / 5e-2 was 0.118 / 0.092 / 0.075 / 0.070 / 0.057 / 0.034, and 0.033 with the
    warm-up (seed 1: 0.029); on ``rings`` 0.024 / 0.018 / 0.014 / 0.021 / 0.018 / 0.031, and
    0.016 with the warm-up (seed 1: 0.016); 1e-1 with the warm-up gave 0.027 / 0.059. With
    5e-2 and the warm-up the other six sets were 0.002-0.011.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import MLPEnergy
    >>> from pyro_ebm.objectives import NCE, fit_gaussian_noise
    >>> data = torch.randn(128, 2)
    >>> nce = NCE(fit_gaussian_noise(data, scale=1.5), noise_ratio=2)
    >>> out = nce(MLPEnergy(2, hidden=(16,)), data)
    >>> sorted(out.metrics)
    ['accuracy', 'energy_neg', 'energy_pos', 'log_Z']
    """

    default_lr = 5e-2
    default_lr_warmup = 0.05

    def __init__(self, noise: Distribution, noise_ratio: float = 1.0, init_log_Z: float = 0.0):
        super().__init__()
        if not (hasattr(noise, "sample") and hasattr(noise, "log_prob")):
            raise ValueError("noise must be a distribution with sample() and log_prob()")
        noise_ratio = check_positive_float("noise_ratio", noise_ratio)
        self.noise = noise
        self.noise_ratio = float(noise_ratio)
        self.log_Z_param = nn.Parameter(torch.tensor(float(init_log_Z)))

    @classmethod
    def for_data(
        cls, data: Tensor, *, noise_scale: float = NOISE_SCALE, noise_ratio: float = NOISE_RATIO
    ) -> NCE:
        """NCE against :func:`fit_gaussian_noise` of ``data`` widened by ``noise_scale``.

        A Gaussian a little wider than the data covers its tails, and more noise samples per
        data point lower the estimator's variance (Gutmann & Hyvarinen 2012, section 2.4).
        The defaults are the recipe of the training benchmark (``bench/training.py``: KL
        0.002-0.033 on its eight 2-d sets at ``fit``'s defaults); ``noise_ratio=16`` cost 3x
        and gave 0.033 / 0.013 on ``checkerboard`` / ``rings`` against 0.033 / 0.016. The
        command line takes its NCE defaults from this signature.

        Examples
        --------
        >>> nce = NCE.for_data(torch.randn(100, 2))
        >>> nce.noise_ratio
        4.0
        """
        _check_data(data)
        noise_scale = check_positive_float("noise_scale", noise_scale)
        return cls(fit_gaussian_noise(data, noise_scale), noise_ratio=noise_ratio)

    @property
    def log_Z(self) -> Tensor:
        return self.log_Z_param

    def _num_noise(self, n: int) -> int:
        return max(1, round(self.noise_ratio * n))

    def diagnose(
        self, metrics: Mapping[str, Sequence[float]], lr: Sequence[float]
    ) -> dict[str, str]:
        """A learned log Z that runs away (:func:`~pyro_ebm.objectives.base.log_z_runaway`)."""
        message = log_z_runaway(metrics.get("log_Z", []), lr)
        return {} if message is None else {"log_Z": message}

    def _noise_samples(self, n: int, data: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            y = self.noise.sample((self._num_noise(n),)).to(data)
        return y, self.noise.log_prob(y).to(data)

    def forward(
        self, energy: nn.Module, data: Tensor, generator: torch.Generator | None = None
    ) -> LossOutput:
        noise, log_noise_noise = self._noise_samples(data.shape[0], data)
        with torch.no_grad():
            log_noise_data = self.noise.log_prob(data).to(data)
        return self._loss(energy, data, noise, log_noise_data, log_noise_noise)

    def _loss(self, energy, data, noise, log_noise_data, log_noise_noise) -> LossOutput:
        e_data, e_noise = energy(data), energy(noise)
        log_z = self.log_Z_param.to(data)
        ratio = noise.shape[0] / data.shape[0]
        loss, accuracy = nce_loss(
            -e_data - log_z, log_noise_data, -e_noise - log_z, log_noise_noise, ratio
        )
        metrics = {
            "energy_pos": e_data.mean().detach(),
            "energy_neg": e_noise.mean().detach(),
            "accuracy": accuracy,
            "log_Z": self.log_Z_param.detach().clone(),
        }
        return LossOutput(loss, metrics)
