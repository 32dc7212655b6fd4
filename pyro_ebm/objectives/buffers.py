"""Replay buffer of persistent negative samples for contrastive divergence.

Persistent chains (Tieleman 2008) continue from where the previous training step left them;
a fraction ``reinit_prob`` restarts from noise each step so the buffer keeps exploring
(Du & Mordatch 2019, *Implicit generation and generalization in energy-based models*).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_int

__all__ = ["ReplayBuffer", "noise_like_data"]


def noise_like_data(
    low: Tensor, high: Tensor, n: int, kind: str, generator: torch.Generator | None
) -> Tensor:
    """``n`` starting points spread over the data: uniform on the box ``[low, high]`` or a
    Gaussian with mean ``(low+high)/2`` and std ``(high-low)/4`` per coordinate."""
    shape = (n,) + tuple(low.shape)
    if kind == "uniform":
        u = torch.rand(shape, dtype=low.dtype, device=low.device, generator=generator)
        return low + (high - low) * u
    if kind == "gaussian":
        z = torch.randn(shape, dtype=low.dtype, device=low.device, generator=generator)
        return (low + high) / 2 + z * (high - low) / 4
    raise ValueError(f"init must be 'uniform' or 'gaussian'; got {kind!r}")


class ReplayBuffer(nn.Module):
    """A fixed-size store of negative samples, kept on ``device`` (e.g. the CPU).

    Each sample can carry its own log step size (``log_steps``, NaN until the sample is first
    stepped; :meth:`draw_with_steps`), for samplers that adapt a step per chain.

    Parameters
    ----------
    size:
        Number of stored samples.
    reinit_prob:
        Probability that a drawn sample is replaced by fresh noise.
    init:
        ``"uniform"`` on the data's bounding box widened by 25% on each side (so the
        region around the data, where a model can otherwise hide mass, sees negatives too) or
        ``"gaussian"``.
    device:
        Where the buffer lives (``None``: the data's device).
    """

    def __init__(
        self, size: int, reinit_prob: float = 0.05, init: str = "uniform", device=None
    ) -> None:
        super().__init__()
        size = check_int("buffer_size", size, 1)
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob must be in [0, 1]; got {reinit_prob!r}")
        if init not in ("uniform", "gaussian"):
            raise ValueError(f"init must be 'uniform' or 'gaussian'; got {init!r}")
        self.size, self.reinit_prob, self.init, self.device = size, reinit_prob, init, device
        self.register_buffer("samples", torch.empty(0))
        self.register_buffer("low", torch.empty(0))
        self.register_buffer("high", torch.empty(0))
        self.register_buffer("log_steps", torch.empty(0))

    @property
    def ready(self) -> bool:
        return self.samples.numel() > 0

    def setup(self, data: Tensor, generator: torch.Generator | None = None) -> None:
        """Fix the noise box from the data and fill the buffer with noise."""
        device = self.device or data.device
        lo, hi = data.min(0).values, data.max(0).values
        margin = 0.25 * (hi - lo).clamp(min=1e-3)
        self.low, self.high = (lo - margin).to(device), (hi + margin).to(device)
        gen = generator if generator is None or generator.device == torch.device(device) else None
        self.samples = noise_like_data(self.low, self.high, self.size, self.init, gen)
        self.log_steps = torch.full((self.size,), math.nan, device=device)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Fresh noise points (for short-run chains)."""
        return noise_like_data(self.low, self.high, n, self.init, generator)

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` stored samples (a fraction re-initialized) and their indices."""
        x, idx, _ = self.draw_with_steps(n, None, generator)
        return x, idx

    def draw_with_steps(
        self, n: int, fresh_log_step: float | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Like :meth:`draw`, with each sample's stored log step size (``fresh_log_step`` for
        re-initialized and never-stepped samples; ``None``: no steps kept)."""
        device = self.samples.device
        gen = generator if generator is None or generator.device == device else None
        idx = torch.randint(0, self.size, (n,), device=device, generator=gen)
        x = self.samples[idx]
        steps = None
        if fresh_log_step is not None:  # never-stepped samples hold NaN
            steps = self.log_steps[idx].nan_to_num(nan=float(fresh_log_step))
        if self.reinit_prob > 0:
            fresh = torch.rand(n, device=device, generator=gen) < self.reinit_prob
            noise = noise_like_data(self.low, self.high, n, self.init, gen)
            x = torch.where(fresh.reshape((n,) + (1,) * (x.dim() - 1)), noise, x)
            if steps is not None:
                steps = torch.where(fresh, torch.full_like(steps, fresh_log_step), steps)
        return x, idx, steps

    def update(self, idx: Tensor, x: Tensor, log_steps: Tensor | None = None) -> None:
        """Write the advanced chains (and their log step sizes) back."""
        where = idx.to(self.samples.device)
        self.samples[where] = x.detach().to(self.samples)
        if log_steps is not None:
            self.log_steps[where] = log_steps.detach().to(self.log_steps)
