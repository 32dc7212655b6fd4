"""Argument and input-shape checks shared by the energy modules."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_event_shape",
    "check_nonnegative_int",
    "check_positive_float",
    "check_positive_int",
    "check_positive_int_sequence",
    "resolve_float_dtype",
]


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1, else raise ``ValueError``.

    Examples
    --------
    >>> check_positive_int(3, "dim")
    3
    """
    if not _is_integer(value) or int(value) < 1:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def check_nonnegative_int(value: object, name: str) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 0, else raise ``ValueError``.

    Examples
    --------
    >>> check_nonnegative_int(0, "n")
    0
    """
    if not _is_integer(value) or int(value) < 0:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def check_positive_int_sequence(value: object, name: str) -> tuple[int, ...]:
    """Return ``value`` as a non-empty tuple of positive ints, else raise ``ValueError``.

    Examples
    --------
    >>> check_positive_int_sequence([64, 32], "hidden")
    (64, 32)
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {value!r}")
    if not all(_is_integer(v) and int(v) >= 1 for v in value):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {value!r}")
    return tuple(int(v) for v in value)


def check_positive_float(value: object, name: str) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number > 0, else raise ``ValueError``.

    Examples
    --------
    >>> check_positive_float(2, "scale")
    2.0
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    result = float(value)
    if not (math.isfinite(result) and result > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return result


def resolve_float_dtype(dtype: torch.dtype | None, *values: object) -> torch.dtype:
    """Pick the floating dtype for buffers built from ``values``.

    An explicit ``dtype`` wins; otherwise the promoted dtype of the floating-point tensors among
    ``values``; otherwise ``torch.get_default_dtype()``.

    Examples
    --------
    >>> resolve_float_dtype(None, torch.zeros(2, dtype=torch.float64), [1.0])
    torch.float64
    """
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    found: torch.dtype | None = None
    for value in values:
        if isinstance(value, Tensor) and value.is_floating_point():
            found = value.dtype if found is None else torch.promote_types(found, value.dtype)
    return torch.get_default_dtype() if found is None else found


def check_event_shape(x: Tensor, event_shape: torch.Size) -> torch.Size:
    """Check that ``x`` has shape ``batch_shape + event_shape`` and return ``batch_shape``.

    Examples
    --------
    >>> check_event_shape(torch.zeros(3, 4, 2), torch.Size([2]))
    torch.Size([3, 4])
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}")
    n_event = len(event_shape)
    if x.dim() < n_event or x.shape[x.dim() - n_event :] != event_shape:
        raise ValueError(
            f"expected input of shape batch_shape + {tuple(event_shape)} "
            f"(event shape {tuple(event_shape)}), got shape {tuple(x.shape)}"
        )
    return x.shape[: x.dim() - n_event]
