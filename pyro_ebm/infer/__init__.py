"""Samplers for energy-defined densities: vectorized step functions, a runner and Pyro kernels."""

from .kernels import MALA, ULA, RandomWalkMH
from .run import KERNELS, Samples, resume, sample
from .sharded import sample_parallel

__all__ = [
    "KERNELS",
    "MALA",
    "ULA",
    "RandomWalkMH",
    "Samples",
    "resume",
    "sample",
    "sample_parallel",
]
