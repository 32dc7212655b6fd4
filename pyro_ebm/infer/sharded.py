"""sample_parallel(): the vectorized runner spread over worker processes on one machine.

Each of ``num_processes`` workers joins a ``gloo`` process group and runs
:func:`~pyro_ebm.infer.sample` on its share of the chains (seed ``seed + rank``); the chains
are gathered into one :class:`~pyro_ebm.infer.Samples`. Under ``torchrun`` call
:func:`~pyro_ebm.infer.sample` directly: it shards by itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .run import Samples, sample

__all__ = ["sample_parallel"]


def _worker(rank: int, world: int, rendezvous: str, out: str, target, num_samples, kwargs):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        result = sample(target, num_samples, **kwargs)
        if rank == 0:
            result._target = None  # the parent holds the target; no cross-process resume
            result._checkpoint = {}
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def sample_parallel(target, num_samples: int, *, num_processes: int = 2, **kwargs) -> Samples:
    """Run :func:`~pyro_ebm.infer.sample` with its chains split over ``num_processes`` CPU
    worker processes and return all chains (``num_chains`` must divide evenly).

    ``target`` must be picklable (an ``nn.Module`` or a module-level function, not a lambda).
    The result holds every chain, in rank order; it cannot be resumed.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> from pyro_ebm.infer import sample_parallel
    >>> out = sample_parallel(GaussianEnergy(torch.zeros(2), torch.eye(2)), 10, num_chains=4,
    ...                       num_processes=2, seed=0, progress_bar=False)  # doctest: +SKIP
    >>> out.samples.shape  # doctest: +SKIP
    torch.Size([4, 10, 2])
    """
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be a positive int; got {num_processes!r}")
    if num_processes == 1:
        return sample(target, num_samples, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        rendezvous, out = str(Path(tmp) / "rendezvous"), str(Path(tmp) / "samples.pt")
        mp.spawn(_worker, args=(num_processes, rendezvous, out, target, num_samples, kwargs),
                 nprocs=num_processes, join=True)  # fmt: skip
        return torch.load(out, weights_only=False)
