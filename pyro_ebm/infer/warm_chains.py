"""A pool of warm chains, so that repeated draws from one target cost a few transitions each.

``EnergyDistribution.sample`` is called again and again by Pyro: once per model run under
``Predictive``, by init strategies, by guides. A fresh warmup per call (hundreds of
transitions) made ``Predictive(model, num_samples=200)`` with an EBM prior take minutes. The
pool keeps the adapted state (positions, step sizes, mass matrix, generator) of
``pool_size`` chains between calls: each later call advances every chain by
``num_transitions`` transitions from where it stopped (:func:`~pyro_ebm.infer.resume`) and
returns the next chains in rotation.

Correlation. Within one call the draws come from different chains. Across calls, a chain is
handed out again after ``pool_size / num`` calls for ``num`` draws per call, i.e. after
``(pool_size / num) * num_transitions`` transitions, which is well beyond the
autocorrelation time of a mixing sampler for the defaults; draws of consecutive calls that
reuse the same chain (``num >= pool_size``) are ``num_transitions`` transitions apart and may
be correlated. ``fresh=True`` runs a new warmup for every call (independent, slow).

The pool is rebuilt (a new warmup, started from the old positions) when the energy's
parameters or buffers change in place or are replaced (an optimizer step, ``load_state_dict``),
when more draws are asked than the pool holds, or when the sampler settings, dtype or device
change. A plain function whose closure changes cannot be detected: pass ``fresh=True`` then.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from .run import resume, sample

__all__ = ["DEFAULT_NUM_TRANSITIONS", "DEFAULT_POOL_SIZE", "WarmChains", "pool_for"]

#: Transitions every pool chain advances per call (and after the first warmup).
DEFAULT_NUM_TRANSITIONS = 10
#: Chains kept warm per target (more when a call asks for more draws).
DEFAULT_POOL_SIZE = 64

_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fingerprint(energy) -> tuple:
    """What identifies the current values of an energy's tensors.

    ``Tensor._version`` counts in-place updates (optimizer steps, ``load_state_dict``); the
    ``id`` and data pointer change when a tensor is replaced; a sum of each tensor catches
    edits through ``.data``, which bypass the version counter.
    """
    if not isinstance(energy, torch.nn.Module):
        return ()
    tensors = [*energy.parameters(), *energy.buffers()]
    if not tensors:
        return ()
    with torch.no_grad():
        sums = torch.stack([t.detach().double().sum() for t in tensors]).tolist()
    return tuple((id(t), t.data_ptr(), t._version) for t in tensors) + tuple(sums)


@dataclass
class WarmChains:
    """The warm state of ``size`` chains of one target under one sampler configuration."""

    state: dict | None = None
    size: int = 0
    offset: int = 0
    version: tuple = ()

    def draw(
        self,
        target,
        num: int,
        *,
        kernel,
        num_transitions: int,
        pool_size: int,
        fresh: bool,
        version: tuple,
        **sampler_kwargs,
    ) -> Tensor:
        """``num`` draws of shape ``(num, *batch_shape, *event_shape)``."""
        if fresh:
            out = sample(target, num_transitions, num_chains=num, kernel=kernel, keep=False,
                         **sampler_kwargs)  # fmt: skip
            return out.samples[:, -1]
        if self.state is None or version != self.version or num > self.size:
            size = max(num, pool_size)
            init = self._old_positions(size)
            if init is not None and "init" not in sampler_kwargs:
                sampler_kwargs = {**sampler_kwargs, "init": init}
            out = sample(target, num_transitions, num_chains=size, kernel=kernel, keep=False,
                         **sampler_kwargs)  # fmt: skip
            self.size, self.offset, self.version = size, 0, version
        else:
            out = resume(target, self.state, num_transitions, progress_bar=False)
        self.state = out.state_dict()
        index = (torch.arange(num) + self.offset) % self.size
        self.offset = (self.offset + num) % self.size
        return out.samples[index.to(out.samples.device), -1]

    def _old_positions(self, size: int) -> Tensor | None:
        """The pool's last positions (tiled to ``size`` chains): a start inside the bulk."""
        if self.state is None:
            return None
        position = self.state["position"]
        reps = -(-size // position.shape[0])
        return position.repeat((reps,) + (1,) * (position.dim() - 1))[:size].clone()


def pool_for(energy, key: tuple) -> WarmChains:
    """The pool of ``energy`` (shared by every distribution over it) for a configuration."""
    if hasattr(energy, "__self__") and hasattr(energy, "__func__"):  # a bound method
        energy, key = energy.__self__, (energy.__func__,) + key
    try:
        pools = _POOLS.setdefault(energy, {})
    except TypeError:  # not weakly referenceable (e.g. a builtin): no sharing across objects
        pools = {}
    return pools.setdefault(key, WarmChains())
