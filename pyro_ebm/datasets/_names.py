"""The names of the built-in data sets and the argument checks every loader shares."""

from __future__ import annotations

import operator

import torch

__all__ = ["DENSITY_NAMES", "NAMES", "TOY_NAMES"]

TOY_NAMES: tuple[str, ...] = (
    "8gaussians",
    "checkerboard",
    "rings",
    "circles",
    "moons",
    "swissroll",
    "pinwheel",
    "2spirals",
)
"""Names of the 2-d toy data sets; each returns samples of shape ``(n, 2)``."""

NAMES: tuple[str, ...] = (*TOY_NAMES, "digits")
"""Every name that :func:`load` accepts."""

DENSITY_NAMES: tuple[str, ...] = TOY_NAMES
"""Names whose exact density and entropy are known (every 2-d toy)."""


def _check_name(name: str, allowed: tuple[str, ...] = NAMES) -> str:
    if not isinstance(name, str) or name not in NAMES:
        raise ValueError(f"unknown data set name {name!r}; valid names are: {', '.join(NAMES)}")
    if name not in allowed:
        raise ValueError(
            f"the true density of {name!r} is unknown; it is known for: {', '.join(allowed)}"
        )
    return name


def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must live on the CPU, got one on {generator.device}")
        return generator
    fresh = torch.Generator()
    if seed is None:
        fresh.seed()  # nondeterministic seed for this generator only; global state untouched
        return fresh
    if isinstance(seed, bool):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be an int or None, got {seed!r}") from None
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must fit in 64 bits, got {seed}")
    fresh.manual_seed(seed)
    return fresh
