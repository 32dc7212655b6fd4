"""The objective interface: a loss of the energy on a data batch, plus the objective's own state.

An objective is an ``nn.Module``: its parameters (a learned log normalizer, a noise flow) and
buffers (a replay buffer) are saved in checkpoints with it. :func:`pyro_ebm.fit` minimizes
``objective(energy, batch).loss`` over the energy's parameters and the objective's
:meth:`~Objective.primary_parameters`; an adversarial objective (FCE) also names
:meth:`~Objective.adversary_parameters`, minimized by their own optimizer on
:meth:`~Objective.adversary_loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["LossOutput", "Objective"]


@dataclass
class LossOutput:
    """A scalar ``loss`` to minimize and per-step ``metrics`` for the progress bar and History.

    Metrics are detached scalar tensors (no host synchronization until they are read); common
    keys are ``energy_pos``/``energy_neg`` (mean energies of data and negatives),
    ``accuracy`` (NCE/FCE classifier) and ``acceptance_rate`` (MALA negatives).
    """

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class of training objectives (subclasses implement :meth:`forward`)."""

    def forward(
        self, energy: nn.Module, data: Tensor, generator: torch.Generator | None = None
    ) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def log_Z(self) -> Tensor | None:
        """The learned log normalizer, if the objective learns one (NCE, FCE)."""
        return None

    def primary_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters minimized together with the energy's (default: all of them)."""
        adversary = {id(p) for p in self.adversary_parameters()}
        return (p for p in self.parameters() if id(p) not in adversary)

    def adversary_parameters(self) -> list[nn.Parameter]:
        """Parameters of an adversary trained against the energy (default: none)."""
        return []

    def adversary_loss(
        self, energy: nn.Module, data: Tensor, generator: torch.Generator | None = None
    ) -> LossOutput | None:
        """Loss minimized by the adversary; ``None`` when it skips this step."""
        return None

    def setup(self, data: Tensor) -> None:
        """Called once by ``fit`` with a data sample before training (e.g. buffer bounds)."""

    def synchronize(self, mean: Callable[[Tensor], Tensor]) -> None:
        """Make state set by :meth:`forward` agree across processes (default: nothing to do).

        :func:`pyro_ebm.fit` calls it after every :meth:`forward` with ``mean``, the average of
        a tensor over the training processes (the identity in a single process), before any
        decision that every process must take alike: FCE's choice of whether the flow trains
        this step. Devices and processes stay the training loop's business.
        """
