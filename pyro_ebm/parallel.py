"""torch.distributed helpers: rank/world discovery, parameter broadcast and gradient averaging.

pyro-ebm does not wrap energies in ``DistributedDataParallel``: samplers and score matching
differentiate the energy with respect to its *input* (``autograd.grad``), which DDP's
reduction hooks do not expect. Instead each rank computes its loss on its shard of the global
batch and the training loop averages the parameter gradients with one coalesced all-reduce,
which is what DDP does, for any objective. Works with the ``gloo`` (CPU) and ``nccl`` (GPU)
backends under ``torchrun``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_reduce_mean",
    "average_gradients",
    "broadcast_parameters",
    "is_distributed",
    "rank_and_world",
]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``, ``(0, 1)`` outside a process group."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_parameters(tensors: Iterable[Tensor], src: int = 0) -> None:
    """Copy rank ``src``'s values of ``tensors`` to every rank (identical starting points)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src)


def average_gradients(params: Iterable[Tensor]) -> None:
    """Average ``.grad`` over ranks with one flattened all-reduce (missing grads count as 0).

    Parameters of several dtypes (a double energy with an objective's float log Z) are reduced
    in the promoted dtype and each gradient is cast back to its parameter's."""
    if not is_distributed():
        return
    params = [p for p in params]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(dtype=p.dtype, copy=True)
        offset += n


def all_reduce_mean(value: Tensor) -> Tensor:
    """Mean of a tensor over ranks (returned as a new tensor; identity outside a group)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    if not out.is_floating_point():
        out = out.double()
    dist.all_reduce(out)
    return out / dist.get_world_size()
