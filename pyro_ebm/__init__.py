"""pyro-ebm: energy-based models as first-class Pyro distributions.

The energy is the negative unnormalized log-density, :math:`p(x) = \\exp(-E(x)) / Z`.
"""

from . import datasets, energies, infer
from .distribution import EnergyDistribution

__version__ = "0.1.0"

__all__ = ["EnergyDistribution", "__version__", "datasets", "energies", "infer"]
