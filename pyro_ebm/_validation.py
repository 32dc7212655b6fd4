"""Argument checks shared by the package, each with one wording naming argument, value and rule.

Every check returns the value converted to its canonical type (``int``, ``float``, ...) or
raises ``ValueError`` with a message of the form ``"{name} must be {rule}; got {value!r}"``.

Examples
--------
>>> import numpy as np
>>> check_int("num_chains", np.int64(4), 1)
4
>>> check_int("num_chains", 0, 1)
Traceback (most recent call last):
...
ValueError: num_chains must be an integer >= 1; got 0
>>> check_positive_float("step_size", 0.1)
0.1
>>> check_choice("kernel", "gibbs", ("mala", "hmc"))
Traceback (most recent call last):
...
ValueError: kernel must be one of 'mala', 'hmc'; got 'gibbs'
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Collection, Sequence
from typing import TypeVar

import torch
from torch import Tensor

__all__ = [
    "check_bounds",
    "check_choice",
    "check_int",
    "check_int_sequence",
    "check_positive_float",
]

T = TypeVar("T")


def _as_int(value: object) -> int | None:
    """``value`` as an ``int`` if it is integral (numpy and torch integers too, never a bool)."""
    if isinstance(value, bool) or isinstance(value, float):
        return None
    if isinstance(value, Tensor) and (value.dtype.is_floating_point or value.dtype.is_complex):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``, else ``ValueError``.

    Any integral type passes (``int``, numpy integers, 0-d integer tensors); ``bool`` and
    floats do not, even when they hold a whole number.

    Parameters
    ----------
    name : str
        The argument's name, used in the message.
    value : object
        The value received.
    minimum : int, optional
        The smallest allowed value (inclusive); ``None`` allows any integer.

    Returns
    -------
    int

    Examples
    --------
    >>> check_int("resolution", 2.0, 2)
    Traceback (most recent call last):
    ...
    ValueError: resolution must be an integer >= 2; got 2.0
    """
    result = _as_int(value)
    if result is None or (minimum is not None and result < minimum):
        rule = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {rule}; got {value!r}")
    return result


def check_int_sequence(name: str, value: object, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as a non-empty tuple of integers ``>= minimum``, else ``ValueError``.

    Examples
    --------
    >>> check_int_sequence("hidden", [64, 32])
    (64, 32)
    >>> check_int_sequence("hidden", [])
    Traceback (most recent call last):
    ...
    ValueError: hidden must be a non-empty sequence of integers >= 1; got []
    """
    items = None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) > 0:
        items = [_as_int(v) for v in value]
    if items is None or any(v is None or v < minimum for v in items):
        rule = f"a non-empty sequence of integers >= {minimum}"
        raise ValueError(f"{name} must be {rule}; got {value!r}")
    return tuple(items)  # type: ignore[arg-type]


def _finite_real(value: object) -> float | None:
    """``value`` as a finite ``float`` (reals, one-element real tensors; not ``bool``)."""
    number = value
    if isinstance(number, Tensor) and number.numel() == 1 and not number.is_complex():
        number = number.item()
    if isinstance(number, numbers.Real) and not isinstance(number, bool):
        result = float(number)
        if math.isfinite(result):
            return result
    return None


def check_positive_float(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a finite real number ``> 0``, else ``ValueError``.

    Integers pass (``2`` is ``2.0``), as do one-element real tensors; ``bool`` does not.

    Examples
    --------
    >>> check_positive_float("scale", 2)
    2.0
    >>> check_positive_float("scale", float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: scale must be a positive finite number; got inf
    """
    result = _finite_real(value)
    if result is not None and result > 0:
        return result
    raise ValueError(f"{name} must be a positive finite number; got {value!r}")


def check_nonnegative_float(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a finite real number ``>= 0``, else ``ValueError``.

    Examples
    --------
    >>> check_nonnegative_float("weight", 0)
    0.0
    >>> check_nonnegative_float("weight", -1)
    Traceback (most recent call last):
    ...
    ValueError: weight must be a finite number >= 0; got -1
    """
    result = _finite_real(value)
    if result is not None and result >= 0:
        return result
    raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")


def check_choice(name: str, value: T, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them.

    Examples
    --------
    >>> check_choice("rule", "simpson", ("simpson", "trapezoid"))
    'simpson'
    """
    try:
        ok = value in choices
    except TypeError:  # an unhashable value tested against a set or dict
        ok = False
    if not ok:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
    return value


def check_bounds(name: str, bounds: object, dim: int) -> list[tuple[float, float]]:
    """A box as ``dim`` finite ``(lo, hi)`` pairs with ``lo < hi``, else ``ValueError``.

    Accepted forms: one pair ``(lo, hi)`` for every axis, ``dim`` pairs, or the flat list of
    ``2 * dim`` numbers ``[lo_1, hi_1, lo_2, hi_2, ...]`` that configuration files use.

    Examples
    --------
    >>> check_bounds("bounds", (-4, 4), 2)
    [(-4.0, 4.0), (-4.0, 4.0)]
    >>> check_bounds("evaluate.bounds", [0, 1, -2, 2], 2)
    [(0.0, 1.0), (-2.0, 2.0)]
    >>> check_bounds("bounds", (1, -1), 1)
    Traceback (most recent call last):
    ...
    ValueError: bounds must be finite (lo, hi) pairs with lo < hi; got (1, -1)
    """
    rule = f"(lo, hi), {dim} (lo, hi) pairs or {2 * dim} numbers for a {dim}-d box"
    try:
        box = torch.as_tensor(bounds, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be {rule}; got {bounds!r}") from None
    if box.shape == (2,):
        box = box.expand(dim, 2)
    elif box.shape == (2 * dim,):
        box = box.reshape(dim, 2)
    if box.shape != (dim, 2):
        raise ValueError(f"{name} must be {rule}; got {bounds!r}")
    if not bool(torch.isfinite(box).all()) or not bool((box[:, 0] < box[:, 1]).all()):
        raise ValueError(f"{name} must be finite (lo, hi) pairs with lo < hi; got {bounds!r}")
    return [(float(lo), float(hi)) for lo, hi in box.tolist()]
