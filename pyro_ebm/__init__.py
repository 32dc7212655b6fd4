"""pyro-ebm: energy-based models as first-class Pyro distributions.

The energy is the negative unnormalized log-density, :math:`p(x) = \\exp(-E(x)) / Z`.
"""

from . import datasets, energies, evaluation, infer, objectives
from .distribution import EnergyDistribution
from .training import History, fit

__version__ = "0.1.0"

__all__ = [
    "EnergyDistribution",
    "History",
    "__version__",
    "datasets",
    "energies",
    "evaluation",
    "fit",
    "infer",
    "objectives",
]
