"""Input-shape and dtype checks shared by the energy modules (argument checks: ``_validation``)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_event_shape", "resolve_float_dtype"]


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
