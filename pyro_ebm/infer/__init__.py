"""Samplers for energy-defined densities: vectorized step functions, a runner and Pyro kernels."""

from .run import KERNELS, Samples, resume, sample

__all__ = ["KERNELS", "Samples", "resume", "sample"]
