"""How the scoring and plotting functions read a target: its energy callable and event shape.

One rule, the sampler's (:func:`pyro_ebm.infer.sample`): an object with a callable ``energy``
attribute and an ``event_shape`` (an :class:`~pyro_ebm.EnergyDistribution`, or a module
wrapping an energy) is read as that ``energy``; any other callable or ``nn.Module`` is the
energy itself, with its ``event_shape`` attribute if it has one.

Examples
--------
>>> import torch
>>> from pyro_ebm import EnergyDistribution
>>> fn, shape = resolve_energy(EnergyDistribution(lambda x: x.square().sum(-1), (3,)))
>>> shape
torch.Size([3])
>>> resolve_energy(lambda x: x.sum(-1))[1] is None
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["EnergyFn", "check_energy_output", "resolve_energy"]

EnergyFn = Callable[[Tensor], Tensor]


def resolve_energy(target: Any) -> tuple[EnergyFn, torch.Size | None]:
    """The energy callable of ``target`` and its event shape (``None`` when it does not say).

    Parameters
    ----------
    target : callable, nn.Module or EnergyDistribution
        An energy mapping ``batch + event_shape`` to ``batch``, or an object with a callable
        ``energy`` and an ``event_shape``.

    Returns
    -------
    tuple
        ``(energy_fn, event_shape)``.

    Raises
    ------
    ValueError
        When ``target`` is neither.
    """
    inner = getattr(target, "energy", None)
    if callable(inner) and hasattr(target, "event_shape"):
        return inner, torch.Size(target.event_shape)
    if callable(target):
        shape = getattr(target, "event_shape", None)
        return target, None if shape is None else torch.Size(shape)
    raise ValueError(
        "energy must be a callable (or nn.Module) mapping batch + event_shape to batch, or an "
        f"object with a callable `energy` and an `event_shape`; got {type(target).__name__}"
    )


def check_energy_output(out: Any, expected: tuple[int, ...], what: str) -> None:
    """Raise ``ValueError`` unless ``out`` is a tensor of shape ``expected`` (``what`` made it).

    Examples
    --------
    >>> check_energy_output(torch.zeros(3, 1), (3,), "energy on 3 points")
    Traceback (most recent call last):
    ...
    ValueError: energy on 3 points returned (3, 1); expected shape (3,)
    """
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{what} returned {got}; expected shape {expected}")
