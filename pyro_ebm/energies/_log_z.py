"""A learned log normalizer kept in an energy's ``state_dict``: :class:`LearnedLogZ`."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LOG_Z_BUFFER", "LOG_Z_KNOWN_BUFFER", "LearnedLogZ", "is_log_z_key", "store_log_Z"]

LOG_Z_BUFFER = "learned_log_Z"
"""Name of the buffer holding the learned :math:`\\log Z` (0 while none is known)."""
LOG_Z_KNOWN_BUFFER = "learned_log_Z_known"
"""Name of the boolean buffer that says whether :data:`LOG_Z_BUFFER` holds a learned value.

A flag rather than a NaN value: state dicts of untrained energies compare equal with
``torch.equal`` and pass finiteness checks."""


def is_log_z_key(key: str) -> bool:
    """Whether a ``state_dict`` key (or buffer name) is a stored learned log Z.

    It is no part of the architecture (checkpoint fingerprints leave it out, so checkpoints
    written before it existed resume) and is no weight to average (the EMA leaves it out).
    """
    return key.rsplit(".", 1)[-1] in (LOG_Z_BUFFER, LOG_Z_KNOWN_BUFFER, "log_Z")


def _fill_missing_log_z(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: a state dict saved before the buffer existed loads as 'unknown'."""
    value, known = prefix + LOG_Z_BUFFER, prefix + LOG_Z_KNOWN_BUFFER
    if value not in state_dict and known not in state_dict:
        state_dict[value] = torch.zeros_like(getattr(module, LOG_Z_BUFFER))
        state_dict[known] = torch.zeros_like(getattr(module, LOG_Z_KNOWN_BUFFER))


class LearnedLogZ(nn.Module):
    """Mixin for energies: a learned log normalizer that travels with the weights.

    :func:`pyro_ebm.fit` with NCE or FCE learns :math:`c \\approx \\log Z_\\theta`
    (Gutmann & Hyvarinen 2012) and stores it here, in the buffer ``learned_log_Z``; so
    ``torch.save(energy.state_dict())`` keeps it and ``load_state_dict`` into a freshly built
    energy restores it. The buffer is always registered (NaN while no log Z is known), so the
    keys of a trained and a fresh energy match; a state dict written before the buffer existed
    loads as "unknown". :attr:`log_Z` reads ``None`` while unknown, which is what
    :class:`~pyro_ebm.EnergyDistribution` takes as "not normalized".

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import MLPEnergy
    >>> energy = MLPEnergy(2, hidden=(4,))
    >>> energy.log_Z is None
    True
    >>> energy.log_Z = 1.5
    >>> fresh = MLPEnergy(2, hidden=(4,))
    >>> _ = fresh.load_state_dict(energy.state_dict())
    >>> float(fresh.log_Z)
    1.5
    """

    def _init_learned_log_Z(self) -> None:
        """Register the buffer (call once in ``__init__``, after ``nn.Module.__init__``)."""
        self.register_buffer(LOG_Z_BUFFER, torch.tensor(0.0))
        self.register_buffer(LOG_Z_KNOWN_BUFFER, torch.tensor(False))
        self.register_load_state_dict_pre_hook(_fill_missing_log_z)

    @property
    def log_Z(self) -> Tensor | None:
        """The learned log normalizer (a 0-d tensor), or ``None`` when none is known."""
        if not bool(getattr(self, LOG_Z_KNOWN_BUFFER)):
            return None
        return getattr(self, LOG_Z_BUFFER).detach().clone()

    @log_Z.setter
    def log_Z(self, value: float | Tensor | None) -> None:
        buffer, known = getattr(self, LOG_Z_BUFFER), getattr(self, LOG_Z_KNOWN_BUFFER)
        if value is None:
            buffer.fill_(0.0)
            known.fill_(False)
            return
        if torch.is_tensor(value):
            if value.numel() != 1:
                raise ValueError(f"log_Z must be a scalar; got shape {tuple(value.shape)}")
            value = float(value.detach())
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"log_Z must be a float, a 0-d tensor or None; got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"log_Z must be finite; got {value!r}")
        buffer.fill_(float(value))
        known.fill_(True)


def store_log_Z(energy: nn.Module, value: Tensor | None) -> None:
    """Keep ``value`` as the learned log Z of ``energy`` in its ``state_dict``.

    A :class:`LearnedLogZ` energy stores it in its buffer (``None``: unknown). Any other
    module gets (or updates) a buffer ``log_Z``; ``None`` removes it, so a stale value from an
    earlier training run is not taken for the new model's.
    """
    if isinstance(energy, LearnedLogZ):
        energy.log_Z = value
        return
    if value is None:
        if "log_Z" in energy._buffers:
            delattr(energy, "log_Z")
        return
    value = value.detach().clone().reshape(())
    if "log_Z" not in energy._buffers and hasattr(energy, "log_Z"):
        delattr(energy, "log_Z")  # a plain attribute set before: becomes the buffer
    if "log_Z" in energy._buffers:
        energy._buffers["log_Z"] = value.to(energy._buffers["log_Z"])
    else:
        energy.register_buffer("log_Z", value)
