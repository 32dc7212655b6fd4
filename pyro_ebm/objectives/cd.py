"""Contrastive divergence: maximum likelihood with negative samples from Langevin chains.

With :math:`p_\\theta(x) = e^{-E_\\theta(x)}/Z_\\theta`, the log-likelihood gradient is

.. math::
    \\nabla_\\theta \\mathbb{E}_{p}[\\log p_\\theta(x)]
    = -\\mathbb{E}_{p}[\\nabla_\\theta E_\\theta(x)]
    + \\mathbb{E}_{p_\\theta}[\\nabla_\\theta E_\\theta(x)],

so minimizing the surrogate :math:`L = \\overline{E_\\theta(x^+)} - \\overline{E_\\theta(x^-)}`
(data :math:`x^+`, model samples :math:`x^-` held fixed) follows the maximum-likelihood gradient
(section 3.1 of 'Energy Based Models' (June 2024), with our sign). Negatives come from
pyro-ebm's samplers (ULA by default, MALA optional) started from noise (short-run, Nijkamp et
al. 2019), from the data (CD-k, Hinton 2002) or from a replay buffer (persistent CD, Tieleman
2008; Du & Mordatch 2019).
The regularizer :math:`\\alpha(\\overline{E(x^+)^2} + \\overline{E(x^-)^2})` keeps energies
bounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .._validation import check_choice, check_int, check_positive_float
from ..infer import mala
from ..infer.base import init_state
from ..infer.compiled import compiled_or_eager
from ..infer.kde_jump import kde_jump
from ..infer.kernels import KERNELS
from ..infer.metric import Metric
from .base import DIAGNOSIS_WINDOW, LossOutput, Objective, _recent_mean
from .buffers import ReplayBuffer

__all__ = ["ContrastiveDivergence"]

MODES = ("persistent", "short_run", "data")
SAMPLERS = ("ula", "mala")
ULA_TARGET_ACCEPT = 0.95
"""Would-be MALA acceptance that ULA negatives' step is adapted to keep (below ``step_size``)."""
ACCEPTANCE_COLLAPSED = 0.05
"""Mean (would-be) MALA acceptance of the negatives that :meth:`ContrastiveDivergence.diagnose`
calls collapsed."""
GAP_LIMIT = 20.0
"""Nats by which the negatives' mean energy may exceed the data's before
:meth:`ContrastiveDivergence.diagnose` reports negatives that do not sample the model."""
WELL_DEPTH = 20.0
"""Nats by which the lowest negative energy may sit below the data's mean energy before
:meth:`ContrastiveDivergence.diagnose` reports a well."""
CHAIN_STEP_GAIN = 0.1
"""Gain of the per-chain step adaptation of persistent negatives, applied after every
transition: :math:`\\log\\epsilon_i \\mathrel{+}= 0.1\\,(a_i - a^*)`."""


class _ClampGrad(torch.autograd.Function):
    """Identity whose backward clamps the incoming gradient elementwise to ``[-c, c]``."""

    @staticmethod
    def forward(ctx, x, bound):  # noqa: D102
        ctx.bound = bound
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad.clamp(-ctx.bound, ctx.bound), None


class ContrastiveDivergence(Objective):
    """Contrastive divergence with Langevin negatives.

    The defaults (20 ULA steps, ``alpha=0.1``; the step then fixed at 0.01) were measured side
    by side with the earlier command-line recipe (30 steps of 0.005, ``alpha=0.01``), 4,000 steps of
    persistent CD with ``fit``'s defaults, ``MLPEnergy(2, (128, 128))``: KL 0.77 / 0.27 / 0.09
    on ``rings`` / ``checkerboard`` / ``8gaussians`` against 0.73 / 0.32 / 0.06, at two thirds
    of the sampler's cost; the other recipe, trained longer, grew the narrow well on ``rings``
    (KL 38, ``bench/README.md``). ``grad_clip=20`` changed nothing with these defaults (the
    regularizer keeps the energy smooth), and ``alpha=0.01`` with the default steps gave KL
    1.66 on ``rings``. ``History.warnings`` reports a collapsing acceptance, a well, or
    negatives far above the data (:meth:`diagnose`).

    **Adaptive ULA step.** Unadjusted Langevin is biased: on a Gaussian of variance
    :math:`\\sigma^2` its stationary variance is :math:`\\sigma^2 / (1 - \\epsilon / (2\\sigma^2))`,
    so a fixed step that is fine on a wide mode inflates a narrow one (``rings``' radial sd is
    0.08: a step of 0.01 makes the negatives 4.5 times as wide as the model). CD then sees
    negatives wider than its model and sharpens it until the two match: the learned density
    is too narrow. The step is therefore adapted once per training step so that the would-be
    MALA acceptance of the negatives (the Metropolis ratio ULA skips, a measure of its
    discretization error; Roberts & Tweedie 1996) stays at ``target_accept_prob`` = 0.95,
    and ``step_size`` is its upper bound (and start). Measured on the eight 2-d sets of
    ``bench/training.py`` (3,000 steps, defaults otherwise, seed 0), against the fixed step
    of 0.01: worst cell 0.446 -> 0.143 (``rings`` 0.446 -> 0.124, ``checkerboard`` 0.180 ->
    0.143, ``pinwheel`` 0.093 -> 0.087, ``moons`` 0.053 -> 0.039, ``circles`` 0.027 ->
    0.013, ``swissroll`` 0.033 -> 0.024, ``8gaussians`` 0.055 -> 0.048, ``2spirals`` 0.112 ->
    0.120); seed 1: ``rings`` 0.705 -> 0.142, ``checkerboard`` 0.193 -> 0.157, ``2spirals``
    0.116 -> 0.139. Caps of 0.01 (``rings`` 0.139, ``checkerboard`` 0.180) and 0.1
    (``rings`` 0.222, ``2spirals`` 0.152) and targets 0.9 (``rings`` 0.158) and 0.98
    (``rings`` 0.145) were worse; adaptive MALA negatives at target 0.95 gave ``rings``
    0.277. ``adapt_step_size=False`` keeps the step fixed.

    **Replay restarts.** With the smaller adapted steps a chain restarted from noise needs
    more training steps to reach the data, and about ``reinit_prob`` times that many of the
    negatives are always in transit. ``reinit_prob=0.01`` (Du & Mordatch 2019 use 0.05) was
    measured against 0.05 with the adaptive step, seeds 0 / 1: worst cell 0.143 -> 0.131 /
    0.157 -> 0.147 (``checkerboard``), ``rings`` 0.124 -> 0.109 / 0.142 -> 0.095,
    ``2spirals`` 0.120 -> 0.069 / 0.139 -> 0.095; ``circles`` (0.013 -> 0.022 / 0.013 ->
    0.020) and ``pinwheel`` (0.087 -> 0.095 / 0.083 -> 0.100) lost a little, the other three
    sets moved by 0.011 or less (seed 0).

    **Per-chain steps and mode jumps (persistent mode).** One shared step adapted on the mean
    acceptance suits the bulk of the negatives, and ULA's bias then inflates a narrow mode
    that holds few of them; Langevin chains also never cross the gaps between separated
    modes, so the negatives' share per mode is set by where restarts land, not by the model.
    On ``mixture3`` of ``bench/training.py`` (weights 0.6 / 0.3 / 0.1, sds 0.5 / 0.2 / 0.1)
    that gave KL 0.639 with mode masses 0.29 / 0.10 / 0.61, where exact maximum likelihood
    reaches 0.004 in the same 3,000 steps. Two changes, both on by default:

    * ``per_chain_step_size=True``: every chain of the replay buffer keeps its own step,
      adapted after every transition, :math:`\\log\\epsilon_i \\mathrel{+}= 0.1\\,(a_i -
      a^*)` on its own (would-be) acceptance (:data:`CHAIN_STEP_GAIN`; capped at
      ``step_size`` for ULA); a restarted chain starts at the cap. Alone it gave ``mixture3``
      0.207 (masses 0.78 / 0.19 / 0.03: the chains' shares are still wrong).
    * ``jump_prob=0.1``: that share of the drawn negatives tries one mode-jumping move per
      training step, an independence Metropolis-Hastings proposal from a kernel density
      estimate over the previous data batch (:func:`~pyro_ebm.infer.kde_jump.kde_jump`,
      exact for the current model; Tjelmeland & Hegstad 2001). A KDE over the current batch
      (the positives) measured worse on ``rings`` (0.198 against 0.142), and so did jumps for
      every drawn negative (``rings`` 0.142 against 0.084 with 0.1, seed 0). Jumps alone, with
      the shared step, leave ``mixture3`` at 0.631 / 0.601 (seeds 0 / 1): both are needed.

    With both (3,000 steps, seeds 0 / 1): ``mixture3`` 0.639 / 0.693 -> 0.083 / 0.085
    (masses 0.66 / 0.26 / 0.08); on the eight toys within the seed spread (worst cell 0.131 /
    0.147 -> 0.128 / 0.150, ``checkerboard``; ``rings`` 0.109 / 0.095 -> 0.100 / 0.116,
    ``2spirals`` 0.069 / 0.095 -> 0.053 / 0.062; ``bench/README.md`` has every set), at 1.17x
    the time per training step. ``jump_prob=0`` and ``per_chain_step_size=False`` restore
    the earlier behaviour.

    **Learning rate.** :func:`~pyro_ebm.fit` trains CD at :attr:`default_lr` = 5e-3 unless
    given one. At ``fit``'s old common 2e-3 the ``rings`` KL (0.589) sat at what exact maximum
    likelihood itself reaches in the same 3,000 steps (0.596): CD was limited by the
    optimizer's speed, not by its negatives. Measured on the eight 2-d sets of
    ``bench/training.py`` (defaults otherwise, 3,000 steps), 5e-3 lowered the KL on all eight
    (worst cell ``rings`` 0.589 -> 0.446, ``2spirals`` 0.268 -> 0.112, ``checkerboard`` 0.257
    -> 0.180); 1e-2 was worse again on ``rings`` (0.677). MALA negatives (0.536 on ``rings``,
    worse on five sets) and a first-layer gain of 4 (better for CD, far worse for score
    matching) were measured and not made defaults.

    Parameters
    ----------
    mode:
        ``"persistent"`` (replay buffer), ``"short_run"`` (fresh noise each step) or ``"data"``
        (chains start at the data batch: CD-k).
    sampler:
        ``"ula"`` (unadjusted Langevin, the short-run default) or ``"mala"``.
    num_steps:
        Sampler transitions per training step.
    step_size:
        Langevin step :math:`\\epsilon` in :math:`x \\leftarrow x - \\epsilon\\nabla E +
        \\sqrt{2\\epsilon}\\xi`: the start of the adaptation, and for ULA its upper bound.
    target_accept_prob:
        Mean (would-be, for ULA) MALA acceptance the step is adapted to, one multiplicative
        update :math:`\\log\\epsilon \\mathrel{+}= 0.1\\,(\\bar a - a^*)` per training step.
        Default 0.95 for ULA, 0.574 for MALA.
    adapt_step_size:
        Adapt the step (default) or keep ``step_size`` fixed (Pyro's name).
    per_chain_step_size:
        Persistent mode: one step per buffered chain, adapted after every transition
        (default); otherwise (and in the other modes) one shared step adapted once per
        training step.
    jump_prob:
        Persistent mode: the share of drawn negatives that try one mode-jumping move per
        training step (KDE proposal over the previous data batch, accepted by
        Metropolis-Hastings; 0 turns it off). The accepted share is the ``jump_rate`` metric.
    buffer_size, reinit_prob, buffer_device, init:
        Replay buffer size, re-initialization probability, its device (``"cpu"`` keeps it
        off the accelerator) and the noise (``"uniform"`` on the data box or ``"gaussian"``).
    alpha:
        Weight of the energy-magnitude regularizer.
    grad_clip:
        Clamp :math:`\\nabla_x E` elementwise to ``[-grad_clip, grad_clip]`` in the sampler.
    data_noise:
        Standard deviation of Gaussian noise added to the data batch.
    num_negatives:
        Negatives per step (default: the batch size).
    compile:
        Run the sampler's transitions through the compiled path
        (:mod:`pyro_ebm.infer.compiled`; eager fallback with a warning).

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import MLPEnergy
    >>> from pyro_ebm.objectives import ContrastiveDivergence
    >>> energy, data = MLPEnergy(2, hidden=(16,)), torch.randn(64, 2)
    >>> cd = ContrastiveDivergence(num_steps=5, buffer_size=128)
    >>> cd.setup(data)
    >>> out = cd(energy, data)
    >>> out.loss.shape
    torch.Size([])
    >>> sorted(out.metrics)  # doctest: +NORMALIZE_WHITESPACE
    ['acceptance_rate', 'energy_neg', 'energy_neg_min', 'energy_pos',
     'jump_rate', 'step_size']
    """

    default_lr = 5e-3

    def __init__(
        self,
        mode: str = "persistent",
        *,
        sampler: str = "ula",
        num_steps: int = 20,
        step_size: float = 0.03,
        buffer_size: int = 10_000,
        reinit_prob: float = 0.01,
        buffer_device=None,
        init: str = "uniform",
        alpha: float = 0.1,
        grad_clip: float | None = None,
        data_noise: float = 0.0,
        num_negatives: int | None = None,
        compile: bool = False,
        target_accept_prob: float | None = None,
        adapt_step_size: bool = True,
        per_chain_step_size: bool = True,
        jump_prob: float = 0.1,
    ) -> None:
        super().__init__()
        check_choice("mode", mode, MODES)
        check_choice("sampler", sampler, tuple(SAMPLERS))
        num_steps = check_int("num_steps", num_steps, 1)
        step_size = check_positive_float("step_size", step_size)
        if alpha < 0 or data_noise < 0:
            raise ValueError("alpha and data_noise must be non-negative")
        if grad_clip is not None:
            grad_clip = check_positive_float("grad_clip", grad_clip)
        self.mode, self.sampler, self.num_steps = mode, sampler, num_steps
        self.alpha, self.grad_clip, self.data_noise = alpha, grad_clip, data_noise
        self.num_negatives = num_negatives
        self.compile = compile
        if target_accept_prob is None:
            target_accept_prob = ULA_TARGET_ACCEPT if sampler == "ula" else mala.TARGET_ACCEPT
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must lie in (0, 1); got {target_accept_prob!r}")
        self.target_accept_prob = float(target_accept_prob)
        self.adapt_step_size = bool(adapt_step_size)
        self.per_chain_step_size = bool(per_chain_step_size)
        if not 0.0 <= jump_prob <= 1.0:
            raise ValueError(f"jump_prob must lie in [0, 1]; got {jump_prob!r}")
        self.jump_prob = float(jump_prob)
        self._jump_centers: Tensor | None = None  # the previous data batch
        self._jump_rate: Tensor | None = None
        self.max_log_step_size = math.log(step_size)
        self._compiled: dict = {}
        self.buffer = ReplayBuffer(buffer_size, reinit_prob, init, buffer_device)
        self.register_buffer("log_step_size", torch.tensor(math.log(step_size)))

    def setup(self, data: Tensor, generator: torch.Generator | None = None) -> None:
        self.buffer.setup(data, generator)

    def get_extra_state(self) -> dict:  # noqa: D102 (checkpoints: the jump centers)
        return {"jump_centers": self._jump_centers}

    def set_extra_state(self, state: dict) -> None:  # noqa: D102
        self._jump_centers = state.get("jump_centers")

    def _jump(self, fn, start: Tensor, data: Tensor, generator) -> Tensor:
        """Mode-jumping moves for a ``jump_prob`` share of the negatives (persistent mode).

        The proposal is a KDE over the *previous* data batch: independent of the current
        positives (a KDE over them put negatives next to the very points the loss pushes
        down, and measured worse on ``rings``: 0.198 against 0.142).
        """
        centers = self._jump_centers
        if centers is None or centers.shape[1:] != data.shape[1:]:
            centers = data
        self._jump_centers = data.detach().clone()
        n = start.shape[0]
        tries = torch.rand(n, device=start.device, generator=generator) < self.jump_prob
        pick = tries.nonzero().squeeze(1)
        jumped = torch.zeros((), dtype=data.dtype, device=data.device)
        if pick.numel():
            moved, _, accepted = kde_jump(fn, start[pick], centers.to(start), generator)
            start = start.clone()
            start[pick] = moved
            jumped = accepted.to(data.dtype).sum()
        self._jump_rate = jumped / n
        return start

    def _sampling_energy(self, energy: nn.Module):
        if self.grad_clip is None:
            return energy
        bound = self.grad_clip
        return lambda x: energy(_ClampGrad.apply(x, bound))

    def negatives(
        self, energy: nn.Module, data: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the chains; returns negatives and the mean acceptance (MALA's, or would-be)."""
        if not self.buffer.ready:
            self.setup(data, generator)
        n = self.num_negatives or data.shape[0]
        idx = log_eps = None
        persistent = self.mode == "persistent"
        if persistent:
            fresh = self.max_log_step_size if self.per_chain_step_size else None
            start, idx, log_eps = self.buffer.draw_with_steps(n, fresh, generator)
        elif self.mode == "short_run":
            start = self.buffer.noise(n, generator)
        else:
            start = data[torch.arange(n, device=data.device) % data.shape[0]]
        start = start.to(data)
        event_dim = data.dim() - 1
        fn = self._sampling_energy(energy)
        if persistent and self.jump_prob > 0:
            start = self._jump(fn, start, data, generator)
        kernel = KERNELS[self.sampler]()  # a kernel object: ULA() or MALA()
        eps = self.log_step_size.exp().to(data)
        metric = Metric(data.shape[1:])
        step = kernel.step
        if self.compile:  # one compiled transition per energy, kept across training steps
            key = id(energy)
            if key not in self._compiled:
                self._compiled[key] = compiled_or_eager(kernel, fn, data.shape[1:])
            step = self._compiled[key]
        state = init_state(fn, start, event_dim, with_grad=True)
        accept = torch.zeros((), dtype=data.dtype, device=data.device)
        per_chain = log_eps is not None
        if per_chain:
            log_eps = log_eps.to(data)
        # with one shared step, ULA's would-be acceptance (the step's adaptation statistic)
        # comes from the last transition only
        lean = self.sampler == "ula" and not self.compile and not per_chain
        for i in range(self.num_steps):
            if per_chain:
                eps = log_eps.exp()
            if lean and i < self.num_steps - 1:
                state, info = step(
                    fn, state, eps, metric, generator, event_dim, with_acceptance=False
                )
                continue
            state, info = step(fn, state, eps, metric, generator, event_dim)
            accept = accept + info.acceptance_rate.mean()
            if per_chain and self.adapt_step_size:  # every chain after every transition
                log_eps = log_eps + CHAIN_STEP_GAIN * (
                    info.acceptance_rate - self.target_accept_prob
                )
                if self.sampler == "ula":
                    log_eps = log_eps.clamp(max=self.max_log_step_size)
        accept = accept / (1 if lean else self.num_steps)
        if per_chain:  # the reported step: the median over this step's chains
            self.log_step_size.copy_(log_eps.median().to(self.log_step_size))
        elif self.adapt_step_size:  # one multiplicative adaptation per training step
            self.log_step_size += 0.1 * (accept.detach() - self.target_accept_prob).to(
                self.log_step_size
            )
            if self.sampler == "ula":  # ULA's step only shrinks below step_size (its bias)
                self.log_step_size.clamp_(max=self.max_log_step_size)
        x = state.position.detach()
        if idx is not None:
            self.buffer.update(idx, x, log_eps)
        return x, accept.detach()

    def forward(
        self, energy: nn.Module, data: Tensor, generator: torch.Generator | None = None
    ) -> LossOutput:
        """Surrogate loss :math:`\\overline{E(x^+)} - \\overline{E(x^-)} + \\alpha(\\dots)`."""
        negatives, accept = self.negatives(energy, data, generator)
        positives = data
        if self.data_noise > 0:
            noise = torch.randn(
                data.shape, dtype=data.dtype, device=data.device, generator=generator
            )
            positives = data + self.data_noise * noise
        e_pos, e_neg = energy(positives), energy(negatives)
        loss = e_pos.mean() - e_neg.mean()
        if self.alpha:
            loss = loss + self.alpha * (e_pos.square().mean() + e_neg.square().mean())
        metrics = {
            "energy_pos": e_pos.mean().detach(),
            "energy_neg": e_neg.mean().detach(),
            "energy_neg_min": e_neg.min().detach(),
            "acceptance_rate": accept,
            "step_size": self.log_step_size.exp().detach(),
        }
        if self._jump_rate is not None:
            metrics["jump_rate"] = self._jump_rate.detach()
        return LossOutput(loss, metrics)

    def diagnose(
        self, metrics: Mapping[str, Sequence[float]], lr: Sequence[float]
    ) -> dict[str, str]:
        """CD's failure modes, from the per-step record (means over the last
        :data:`~pyro_ebm.objectives.base.DIAGNOSIS_WINDOW` steps).

        * ``acceptance``: the negatives' MALA acceptance (for ULA the would-be acceptance of
          its last transition) is below :data:`ACCEPTANCE_COLLAPSED`: the energy has grown
          sharper than the step size can follow, Langevin moves overshoot, and the negatives
          no longer sample the model.
        * ``well``: the lowest negative energy lies :data:`WELL_DEPTH` nats below the data's
          mean energy: a narrow, deep well (the persistent-CD failure on ``rings``).
        * ``gap``: the negatives' mean energy exceeds the data's by :data:`GAP_LIMIT` nats: the
          chains sit where the model has almost no mass, so they do not sample it and the
          gradient estimate is biased (energies then grow without bound).
        * ``energy``: the mean energy of data or negatives is not finite.
        """
        found: dict[str, str] = {}
        accept = _recent_mean(metrics.get("acceptance_rate", []))
        if accept is not None and accept < ACCEPTANCE_COLLAPSED:
            found["acceptance"] = (
                f"negatives' acceptance {accept:.3f} over the last {DIAGNOSIS_WINDOW} steps: "
                "Langevin moves overshoot a sharpening energy (lower step_size or set grad_clip)"
            )
        lowest = _recent_mean(metrics.get("energy_neg_min", []))
        pos = _recent_mean(metrics.get("energy_pos", []))
        if lowest is not None and pos is not None and lowest < pos - WELL_DEPTH:
            found["well"] = (
                f"negatives reach energy {lowest:.1f} against {pos:.1f} on the data: a narrow "
                "well is forming (set grad_clip, or raise alpha)"
            )
        neg = _recent_mean(metrics.get("energy_neg", []))
        if neg is not None and pos is not None and neg - pos > GAP_LIMIT:
            found["gap"] = (
                f"negatives' mean energy {neg:.1f} against {pos:.1f} on the data: the chains "
                "stay where the model puts almost no mass (more num_steps or a larger "
                "step_size, or raise alpha)"
            )
        for key in ("energy_pos", "energy_neg"):
            values = metrics.get(key, [])
            if values and not math.isfinite(values[-1]):
                found["energy"] = f"{key} is {values[-1]}: training diverged"
        return found
