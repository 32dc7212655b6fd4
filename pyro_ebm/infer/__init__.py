"""Samplers for energy-defined densities: kernel objects, the many-chain runner and checks."""

from . import hmc, langevin, mala, rwmh
from .convergence import ConvergenceWarning, nested_rhat
from .kernels import HMC, KERNELS, MALA, ULA, Kernel, RandomWalkMH
from .run import resume, sample
from .samples import Samples
from .sharded import sample_parallel
from .vectorize import VectorizationWarning
from .vectorized_mcmc import VectorizedMCMC

__all__ = [
    "HMC",
    "KERNELS",
    "MALA",
    "ULA",
    "hmc",
    "langevin",
    "mala",
    "rwmh",
    "ConvergenceWarning",
    "Kernel",
    "RandomWalkMH",
    "Samples",
    "nested_rhat",
    "resume",
    "sample",
    "sample_parallel",
    "VectorizationWarning",
    "VectorizedMCMC",
]
