"""The loop's resumable state: data batches in a reproducible order and the parameter EMA."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from ..energies._log_z import is_log_z_key

__all__ = ["EMA", "LoaderBatches", "LogZHolder", "TensorBatches", "as_tensor_batch", "first_sample"]


class TensorBatches:
    """Shuffled mini-batches of a tensor or Dataset from an explicit generator, resumable.

    Each epoch is a permutation drawn from the generator; the position (epoch permutation and
    offset) is part of the checkpoint, so a resumed run sees the same batches.
    """

    def __init__(
        self, data, batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1
    ) -> None:
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.rank, self.world = rank, world
        self.n = len(data)
        if self.n == 0:
            raise ValueError("data is empty")
        self.perm: Tensor | None = None
        self.offset = 0

    def _take(self, idx: Tensor):
        if torch.is_tensor(self.data):
            return self.data[idx]
        return default_collate([self.data[int(i)] for i in idx])

    def next(self):
        size = min(self.batch_size, self.n)
        if self.perm is None or self.offset + size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.offset = 0
        idx = self.perm[self.offset : self.offset + size]
        self.offset += size
        if self.world > 1:  # this rank's shard of the global batch (DistributedSampler-like)
            idx = idx.chunk(self.world)[self.rank]
        return self._take(idx)

    def state_dict(self) -> dict:
        return {"perm": self.perm, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.offset = state["perm"], state["offset"]


class LoaderBatches:
    """Batches from a user DataLoader, cycling over epochs (resume skips consumed batches)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader, self.consumed = loader, 0
        self._it: Iterator | None = None

    def next(self):
        if self._it is None:
            self._it = iter(self.loader)
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            batch = next(self._it)
        self.consumed += 1
        return batch

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        for _ in range(state["consumed"]):
            self.next()


def as_tensor_batch(batch) -> Tensor:
    if isinstance(batch, (list, tuple)):  # (x, label) datasets: train on x
        batch = batch[0]
    if not torch.is_tensor(batch):
        raise ValueError(f"data batches must be tensors; got {type(batch).__name__}")
    return batch


def first_sample(data, n: int = 4096) -> Tensor:
    if torch.is_tensor(data):
        return data[:n]
    if isinstance(data, DataLoader):
        return as_tensor_batch(next(iter(data)))
    return as_tensor_batch(default_collate([data[i] for i in range(min(n, len(data)))]))


class EMA:
    """Exponential moving average of parameters and buffers (Polyak averaging).

    :math:`\\bar\\theta \\leftarrow d_t \\bar\\theta + (1 - d_t)\\theta` with the warm-up
    :math:`d_t = \\min(d, (1 + t)/(10 + t))` so early averages are not dominated by the
    random initialization.
    """

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        self.decay = decay
        self.shadow = {
            f"{k}.{n}": t.detach().clone() for k, m in modules.items() for n, t in _tensors(m)
        }

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, m in modules.items():
            for n, t in _tensors(m):
                s = self.shadow[f"{k}.{n}"]
                if t.is_floating_point():
                    s.lerp_(t.detach(), 1 - d)
                else:
                    s.copy_(t)

    @torch.no_grad()
    def copy_to(self, modules: dict[str, nn.Module]) -> None:
        for k, m in modules.items():
            for n, t in _tensors(m):
                t.copy_(self.shadow[f"{k}.{n}"])


def _tensors(module: nn.Module):
    yield from module.named_parameters()
    for name, buffer in module.named_buffers():  # a stored log Z is averaged via LogZHolder
        if buffer.is_floating_point() and not is_log_z_key(name):
            yield name, buffer


class LogZHolder(nn.Module):
    """Wraps an objective's learned log Z so the EMA can average it with the energy."""

    def __init__(self, param: nn.Parameter) -> None:
        super().__init__()
        self.log_Z = param
