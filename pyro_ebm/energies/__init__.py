"""Energy models: neural networks to train, and analytic energies with known answers.

Every energy maps a tensor of shape ``batch_shape + event_shape`` to shape ``batch_shape`` and
follows the sign convention :math:`E(x) = -\\log \\tilde p(x)`, i.e. :math:`p(x) = e^{-E(x)}/Z`.

Examples
--------
>>> import torch
>>> from pyro_ebm.energies import GaussianEnergy, MLPEnergy
>>> MLPEnergy(2, hidden=(16,))(torch.zeros(7, 2)).shape
torch.Size([7])
>>> GaussianEnergy(torch.zeros(2), torch.eye(2)).event_shape
torch.Size([2])
"""

from ._log_z import LearnedLogZ
from .analytic import AnalyticEnergy, GaussianEnergy, GaussianMixtureEnergy
from .geometry import BananaEnergy, DoubleWellEnergy, FunnelEnergy
from .neural import ConvEnergy, MLPEnergy

__all__ = [
    "AnalyticEnergy",
    "BananaEnergy",
    "ConvEnergy",
    "DoubleWellEnergy",
    "FunnelEnergy",
    "GaussianEnergy",
    "GaussianMixtureEnergy",
    "LearnedLogZ",
    "MLPEnergy",
]
