"""The checkpoint file of :func:`pyro_ebm.fit`: its name, format, atomic writes and checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..energies._log_z import is_log_z_key

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT",
    "atomic_save",
    "fingerprint",
    "gather_states",
    "load_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "pyro-ebm-fit/1"


def fingerprint(energy: nn.Module, objective: nn.Module) -> dict:
    return {
        "energy": type(energy).__name__,
        "objective": type(objective).__name__,
        "energy_shapes": {
            k: list(v.shape) for k, v in energy.state_dict().items() if not is_log_z_key(k)
        },
    }


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by :func:`fit`; a corrupt or foreign file raises ValueError."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise ValueError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ValueError(f"checkpoint {path} is corrupt or unreadable: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pyro-ebm fit checkpoint (format {FORMAT!r})")
    return ckpt


def gather_states(state: Tensor, world: int) -> list[Tensor]:
    """Every rank's generator state (a byte tensor), for a world-size-aware checkpoint."""
    if world == 1:
        return [state]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, state)
    return gathered
