"""The objective interface: a loss of the energy on a data batch, plus the objective's own state.

An objective is an ``nn.Module``: its parameters (a learned log normalizer, a noise flow) and
buffers (a replay buffer) are saved in checkpoints with it. :func:`pyro_ebm.fit` minimizes
``objective(energy, batch).loss`` over the energy's parameters and the objective's
:meth:`~Objective.primary_parameters`; an adversarial objective (FCE) also names
:meth:`~Objective.adversary_parameters`, minimized by their own optimizer on
:meth:`~Objective.adversary_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["DIAGNOSIS_WINDOW", "LossOutput", "Objective", "Phase", "log_z_runaway"]

DIAGNOSIS_WINDOW = 200
"""Steps over which :meth:`Objective.diagnose` averages a metric before judging it."""

LOG_Z_WINDOW = 1000
"""Steps over which :func:`log_z_runaway` measures the drift of a learned log Z."""


def _recent_mean(values: Sequence[float], n: int = DIAGNOSIS_WINDOW) -> float | None:
    """Mean of the last ``n`` values, or ``None`` while fewer than ``n`` were recorded."""
    if len(values) < n:
        return None
    tail = values[-n:]
    return math.fsum(tail) / n


def log_z_runaway(log_z: Sequence[float], lr: Sequence[float]) -> str | None:
    """A message when the learned log Z runs away, else ``None``.

    Adam moves a parameter by at most about ``lr`` per step, so over the last
    :data:`LOG_Z_WINDOW` steps :math:`|\\Delta c| \\le \\sum_t \\mathrm{lr}_t`. A log Z that
    still moves at half that top speed, by more than a nat, once the first
    ``2 * LOG_Z_WINDOW`` steps are over is not converging: the estimate chases a model whose
    normalization the classifier no longer pins down (noise or a flow that stopped covering
    the model's mass). A log Z that is not finite is reported too.
    """
    if log_z and not math.isfinite(log_z[-1]):
        return f"the learned log Z is {log_z[-1]}: training diverged"
    n = LOG_Z_WINDOW
    if len(log_z) < 2 * n or len(lr) < n:
        return None
    drift = log_z[-1] - log_z[-n]
    top = math.fsum(lr[-n:])
    if abs(drift) > max(1.0, 0.5 * top):
        return (
            f"the learned log Z moved {drift:+.2f} nats over the last {n} steps, at "
            f"{abs(drift) / top:.0%} of the optimizer's top speed: log Z is running away"
        )
    return None


@dataclass
class LossOutput:
    """A scalar ``loss`` to minimize and per-step ``metrics`` for the progress bar and History.

    Metrics are detached scalar tensors (no host synchronization until they are read); common
    keys are ``energy_pos``/``energy_neg`` (mean energies of data and negatives),
    ``accuracy`` (NCE/FCE classifier) and ``acceptance_rate`` (MALA negatives).
    """

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Phase:
    """A later stretch of a :func:`pyro_ebm.fit` run with its own learning rate.

    From step ``start`` on, the schedule restarts (a warm restart, Loshchilov & Hutter 2017,
    "SGDR", ICLR): a linear warm-up over the ``warmup`` share of the phase's steps to the peak
    rate ``lr`` (``None``: ``fit``'s ``lr``), then ``fit``'s ``schedule`` over the rest of
    the phase. ``reset_optimizer`` clears the optimizer's state (Adam's moment estimates) as
    the phase starts, for a phase whose loss is a different one (FCE's refinement). See
    :meth:`Objective.phases`.

    ``trial > 0`` makes the phase's first ``trial`` steps a trial: after them ``fit`` asks
    :meth:`Objective.abandon_phase`, and on a reason to abandon it rolls the run back to the
    phase's start (the energy, the objective, the optimizers and the EMA as they were there),
    drops this phase and the later ones, and lets the phase before it run to the end. A phase
    on trial does not reshape the schedule before it (that phase's schedule is laid out to
    the next phase not on trial, or to the end of the run), so after a rollback it goes on
    where it was: the run is the one without the phase, paused for the trial's steps (spent,
    and recorded in the ``History``).
    """

    start: int
    lr: float | None = None
    warmup: float = 0.0
    reset_optimizer: bool = False
    trial: int = 0


DEFAULT_LR = 2e-3
"""Adam's learning rate that :func:`pyro_ebm.fit` uses for an objective that sets none."""


class Objective(nn.Module):
    """Base class of training objectives (subclasses implement :meth:`forward`).

    Attributes
    ----------
    default_lr:
        The learning rate :func:`pyro_ebm.fit` uses with this objective when its ``lr`` is
        ``None`` (the default): the rate measured best for the objective across the training
        battery (``bench/training.py``), :data:`DEFAULT_LR` unless a subclass sets its own.
    default_adversary_lr:
        The constant learning rate of the adversary's optimizer (an adversarial objective's
        :meth:`adversary_parameters`, FCE's flow) when ``fit``'s ``adversary_lr`` is ``None``;
        ``None`` (the base class) means the primary rate ``lr``.
    default_lr_warmup:
        The linear learning-rate warm-up :func:`pyro_ebm.fit` uses when its ``lr_warmup`` is
        ``None`` (the default), as a fraction of the run's ``steps``: 0 (none) unless a
        subclass sets its own. It goes with :attr:`default_lr`: NCE, trained at a large rate
        (5e-2), warms up over its first 5% of steps, which the large rate needs
        (Adam's second-moment estimate is noisy over its first steps; Liu et al. 2020, "On the
        variance of the adaptive learning rate and beyond", ICLR); measured, a warm-up made
        contrastive divergence and score matching at their smaller rates worse.
    """

    default_lr: float = DEFAULT_LR
    default_adversary_lr: float | None = None
    default_lr_warmup: float = 0.0

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

    def diagnose(
        self, metrics: Mapping[str, Sequence[float]], lr: Sequence[float]
    ) -> dict[str, str]:
        """Signs of a failing run in the per-step record so far: ``{kind: message}``.

        :func:`pyro_ebm.fit` calls it every few steps with ``History.metrics`` and
        ``History.lr``; each kind found is recorded once in ``History.warnings`` and shown in
        the progress bar. The default finds nothing.
        """
        return {}

    def phases(self, steps: int) -> tuple[Phase, ...]:
        """The later phases of a ``fit`` run of ``steps`` steps (default: none).

        The first phase starts at step 0 with ``fit``'s ``lr`` and ``lr_warmup``; each
        :class:`Phase` returned starts a new one (strictly increasing starts in
        ``(0, steps)``). ``fit`` calls :meth:`enter_phase` with the phase's index (0 for the
        first) before the first step it runs in it, also when resuming, so the objective's
        behaviour is a function of the step and a resumed run continues exactly.
        """
        return ()

    def enter_phase(self, index: int) -> None:
        """Called by ``fit`` before the first step of phase ``index`` (default: nothing)."""

    def abandon_phase(self, index: int, metrics: Mapping[str, Sequence[float]]) -> str | None:
        """After the ``trial`` steps of phase ``index`` (:class:`Phase`): a reason to abandon
        it (``fit`` rolls back to the phase's start and goes on without it), or ``None`` to
        keep it (the default). ``metrics`` is ``History.metrics``, the trial's steps last."""
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
