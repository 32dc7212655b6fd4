"""Flow contrastive estimation: NCE whose noise is a normalizing flow trained against the EBM.

The discriminator :math:`D(x) = \\sigma(G(x))` with :math:`G(x) = -E_\\theta(x) - c - \\log(\\nu
\\,q_\\phi(x))` plays the game

.. math::
    \\max_{\\theta, c}\\,\\min_\\phi\\; \\mathbb{E}_{p}[\\log D(x)] + \\nu\\,
    \\mathbb{E}_{q_\\phi}[\\log(1 - D(y))]

(section 3.4 of 'Energy Based Models' (June 2024); Gao, Nijkamp, Kingma, Xu, Dai & Wu 2020,
CVPR). The EBM step is NCE with the flow as noise; the flow step minimizes the same value with
gradients through :math:`\\log q_\\phi` and reparameterized flow samples.

**Balancing rule.** The EBM updates every step. The flow updates only when the classifier's
accuracy at the last EBM step exceeds ``flow_update_threshold`` (default 0.6): while the EBM
cannot tell data from flow samples, the flow waits; when the EBM wins, the flow moves closer
to the data, so neither side runs away. The flow can first be fit to the data by maximum
likelihood (:meth:`FCE.pretrain_flow`).

**The flow works on standardized data.** With ``standardize=True`` (the default) the noise
is :math:`q(x) = q_\\phi((x - m)/s) / \\prod_i s_i` with the per-coordinate mean :math:`m` and
standard deviation :math:`s` of the data, fixed at :meth:`FCE.setup`: an untrained flow is
then the diagonal Gaussian fitted to the data (the noise NCE starts from) whatever the data's
location and scale, not a standard normal that the classifier separates from the data at
once. Without it, FCE on ``digits`` (pixels in [-1, 1], border pixels with standard deviation
0.03) starts with the classifier's accuracy at 1, where the flow gets no gradient.

**Refinement, on trial (the default).** With ``refine=r > 0`` (default 0.7) the game runs for
the first ``1 - r`` of ``fit``'s steps; then the flow is frozen and the energy is refined by NCE
against it for the rest, at ``refine_lr`` (NCE's rate, 5e-2) after a warm-up (a
:class:`~pyro_ebm.objectives.Phase`: ``fit`` restarts its schedule there). Against a fixed noise
NCE is consistent (Gutmann & Hyvärinen 2012), so the energy can learn at a rate the game does
not allow (a fast energy loses the flow, see :class:`FCE`'s notes). The refinement's noise is
the defensive mixture :math:`(1 - w)\\,q_\\phi + w\\,N(m, \\mathrm{diag}(1.25 s)^2)` (``w =
refine_noise_share``; :math:`m, s` the data's per-coordinate mean and standard deviation): a
flow fitted to the data has light tails, and NCE against it alone lets the energy put mass where
neither data nor noise fall (Hesterberg 1995, "Weighted average importance sampling and
defensive mixture distributions", Technometrics). Where the frozen flow is far from the data
(64-d ``digits``) the classifier separates the two and the refinement loses, so it starts as a
trial: after :data:`REFINE_TRIAL` steps, a mean accuracy of :data:`REFINE_ABANDON` or more over
the trial's second half abandons it, ``fit`` rolls the run back to the switch and the game goes
on to the end (``History.events`` says so). ``refine=0`` plays the game to the end
(docs/theory/fce.md, bench/README).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .._validation import check_int, check_positive_float
from ..progress import progress
from .base import DIAGNOSIS_WINDOW, LossOutput, Objective, Phase, _recent_mean, log_z_runaway
from .nce import _check_data, nce_loss

__all__ = ["FCE", "FLOW_KINDS", "default_flow_kind", "make_flow"]

ACCURACY_STUCK = 0.99
"""Mean classifier accuracy (over the diagnosis window) that :meth:`FCE.diagnose` calls stuck."""
FLOW_NLL_RISE = 5.0
"""Rise (nats) of the flow's data NLL above its best window that :meth:`FCE.diagnose` flags."""

REFINE_WARMUP = 0.05
"""Warm-up share of FCE's refinement phase (as NCE's ``default_lr_warmup``)."""
REFINE_TRIAL = 200
"""Steps of the refinement's trial (at most a third of the refinement), after which
:meth:`FCE.abandon_phase` judges it."""
REFINE_ABANDON = 0.9
"""Mean classifier accuracy over the second half of the refinement's trial at which FCE
abandons the refinement (the frozen flow is too far from the data for NCE to learn from it)."""
REFINE_WIDEN = 1.25
"""Widening of the Gaussian in the refinement's defensive noise (``NCE.for_data``'s
``noise_scale``)."""

FLOW_KINDS = ("realnvp", "maf")
"""The flows :func:`make_flow` builds."""


def default_flow_kind(dim: int) -> str:
    """The flow :func:`make_flow` builds with ``kind=None``: RealNVP if ``dim >= 2``, else MAF.

    Examples
    --------
    >>> default_flow_kind(2), default_flow_kind(1)
    ('realnvp', 'maf')
    """
    return "realnvp" if check_int("dim", dim, 1) >= 2 else "maf"


def make_flow(
    dim: int, kind: str | None = None, *, hidden_features: int = 64, num_layers: int = 6
) -> nn.Module:
    """An ``nflows`` flow on :math:`\\mathbb{R}^{dim}`: a masked autoregressive flow (MAF,
    Papamakarios et al. 2017) or RealNVP (Dinh et al. 2017), standard-normal base.

    ``kind=None`` takes RealNVP when ``dim >= 2`` (its coupling layers need two coordinates)
    and MAF in one dimension. The defaults (RealNVP, 6 layers of 64 hidden features) are the
    flow of the training benchmark (``bench/training.py``), where FCE reached KL 0.01-0.19 on
    the 2-d toys; the command line reads them from here.

    Examples
    --------
    >>> flow = make_flow(2, "realnvp", hidden_features=8, num_layers=2)
    >>> flow.sample(3).shape
    torch.Size([3, 2])
    >>> type(make_flow(1, num_layers=1)).__name__
    'MaskedAutoregressiveFlow'
    """
    from nflows.flows import MaskedAutoregressiveFlow, SimpleRealNVP

    dim = check_int("dim", dim, 1)
    if kind is None:
        kind = default_flow_kind(dim)
    if kind == "maf":
        return MaskedAutoregressiveFlow(
            features=dim,
            hidden_features=hidden_features,
            num_layers=num_layers,
            num_blocks_per_layer=2,
            batch_norm_between_layers=False,
        )
    if kind == "realnvp":
        if dim < 2:
            raise ValueError("kind='realnvp' needs dim >= 2; use kind='maf'")
        return SimpleRealNVP(
            features=dim,
            hidden_features=hidden_features,
            num_layers=num_layers,
            num_blocks_per_layer=2,
            batch_norm_between_layers=False,
        )
    raise ValueError(f"kind must be one of {FLOW_KINDS} or None; got {kind!r}")


class FCE(Objective):
    """Flow contrastive estimation with a learned log normalizer.

    Parameters
    ----------
    flow:
        An ``nflows.flows.Flow`` (see :func:`make_flow`) over flat events of the data.
    noise_ratio:
        :math:`\\nu`, flow samples per data point.
    init_log_Z:
        Starting value of the learned log normalizer.
    flow_update_threshold:
        The flow updates when the last EBM accuracy exceeds this (0 updates always).
    standardize:
        Run the flow on the data standardized per coordinate (see the module docstring); the
        mean and standard deviation are set by :meth:`setup` (``fit`` calls it) from the data.
    refine:
        Share of ``fit``'s steps, at the end, in which the flow is frozen and the energy is
        refined by NCE against it (module docstring, "Refinement"), abandoned after a trial
        where the classifier separates the frozen flow from the data; 0 plays the game to the
        end.
    refine_lr:
        The energy's peak learning rate in the refinement (NCE's 5e-2), after a
        :data:`REFINE_WARMUP` warm-up.
    refine_noise_share:
        Share of the refinement's noise drawn from the widened Gaussian.

    Notes
    -----
    :func:`~pyro_ebm.fit` trains the energy at :attr:`default_lr` = 5e-3 (cosine decay) and the
    flow at :attr:`default_adversary_lr` = 2e-3 (constant) unless given rates. Measured on the
    eight 2-d sets of ``bench/training.py`` (``FCE.for_data``, 10,000 steps,
    ``MLPEnergy(2, (128, 128))``, seed 0), the KL with both at 2e-3 vs energy 5e-3 / flow
    2e-3 was 0.140 / 0.101 on ``checkerboard``, 0.031 / 0.013 on ``rings``, 0.027 / 0.014 on
    ``2spirals``, 0.025 / 0.024 on ``pinwheel`` and no worse by more than 0.001 on the other
    four (0.002-0.004). Both players at 5e-3 was worse (the flow diverged).

    A faster energy (NCE's recipe, 5e-2 with a warm-up) helps the 2-d sets but loses the
    flow: with a 5% warm-up, the energy at 1e-2 / 2e-2 / 5e-2 gave ``checkerboard`` 0.094 /
    0.060 / 0.035 (seed 1: 0.074 at 2e-2, 0.269 at 5e-2), the last with the classifier's
    accuracy stuck at 1 and the flow's NLL rising, and on ``digits`` (``ConvEnergy``, 1,000
    steps) the accuracy stuck at 0.99 at 1e-2 and 2e-2 (test NLL 1.0 against 0.8 at 5e-3,
    where the accuracy stays at 0.92). The flow must keep up in every dimension, so 5e-3
    stays.

    ``refine=0.7`` (the game for 3,000 of 10,000 steps, then NCE against the frozen flow at
    5e-2, module docstring) takes the worst 2-d cell from 0.101 to 0.046 (``checkerboard``;
    ``pinwheel`` 0.024 -> 0.007, every other set within 0.019, ``mixture3`` and ``banana``
    included) at half the step time. On ``digits`` (1,000 steps) the frozen flow is far from
    the data and a refinement run through gave test NLL 23.7 against 4.0 for the game; the
    trial catches it (mean accuracy over trial steps 100-200: 0.997 on ``digits``, at most
    0.711 on the 2-d sets), the game goes on and the test NLL is 7.0 (seed 1: 5.3 against
    1.3; bench/README, "FCE's refinement on trial").

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import MLPEnergy
    >>> from pyro_ebm.objectives import FCE, make_flow
    >>> fce = FCE(make_flow(2, hidden_features=8, num_layers=2))
    >>> data = torch.randn(64, 2)
    >>> sorted(fce(MLPEnergy(2, hidden=(16,)), data).metrics)
    ['accuracy', 'energy_neg', 'energy_pos', 'flow_nll', 'log_Z']
    """

    default_lr = 5e-3
    default_adversary_lr = 2e-3

    def __init__(
        self,
        flow: nn.Module,
        noise_ratio: float = 1.0,
        init_log_Z: float = 0.0,
        flow_update_threshold: float = 0.6,
        standardize: bool = True,
        refine: float = 0.7,
        refine_lr: float = 5e-2,
        refine_noise_share: float = 0.2,
    ) -> None:
        super().__init__()
        for name in ("log_prob", "sample", "sample_and_log_prob"):
            if not hasattr(flow, name):
                raise ValueError(f"flow must be an nflows Flow (missing {name}())")
        noise_ratio = check_positive_float("noise_ratio", noise_ratio)
        if not 0.0 <= flow_update_threshold < 1.0:
            raise ValueError(
                f"flow_update_threshold must be in [0, 1); got {flow_update_threshold}"
            )
        if not 0.0 <= refine < 1.0:
            raise ValueError(f"refine must be in [0, 1) (a share of fit's steps); got {refine}")
        if not 0.0 < refine_noise_share < 1.0:
            raise ValueError(f"refine_noise_share must be in (0, 1); got {refine_noise_share}")
        self.refine = float(refine)
        self.refine_lr = check_positive_float("refine_lr", refine_lr)
        self.refine_noise_share = float(refine_noise_share)
        self.refining = False
        self._trial = 0
        self.flow = flow
        self.noise_ratio = float(noise_ratio)
        self.flow_update_threshold = flow_update_threshold
        self.log_Z_param = nn.Parameter(torch.tensor(float(init_log_Z)))
        self.register_buffer("last_accuracy", torch.tensor(1.0))
        self.register_buffer("flow_updates", torch.tensor(0, dtype=torch.long))
        self.standardize = bool(standardize)
        # per-coordinate data mean and standard deviation; empty until setup()
        self.register_buffer("data_loc", torch.empty(0))
        self.register_buffer("data_scale", torch.empty(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("data_loc", "data_scale"):  # a saved standardization has its own shape
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def setup(self, data: Tensor, generator: torch.Generator | None = None) -> None:
        """Fix the standardization from ``data`` (once: later calls keep it, so a pre-trained
        flow and a resumed run keep the scale they were trained on)."""
        if self.data_loc.numel():
            return
        flat = self._flat(data).detach()
        loc = flat.mean(0)
        scale = flat.std(0) if flat.shape[0] > 1 else torch.ones_like(loc)
        floor = 1e-6 * scale.max().clamp(min=1e-12)  # a constant coordinate: no zero scale
        self.data_loc, self.data_scale = loc, torch.maximum(scale, floor)

    def _standardized(self) -> bool:
        return self.standardize and bool(self.data_loc.numel())

    def _flow_log_q(self, x: Tensor) -> Tensor:
        if not self._standardized():
            return self.flow.log_prob(x)
        loc, scale = self.data_loc.to(x), self.data_scale.to(x)
        return self.flow.log_prob((x - loc) / scale) - scale.log().sum()

    def _defensive(self, like: Tensor) -> torch.distributions.Distribution:
        loc, scale = self.data_loc.to(like), REFINE_WIDEN * self.data_scale.to(like)
        return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)

    def log_q(self, x: Tensor) -> Tensor:
        """The noise log density :math:`\\log q(x)` of flat points ``x``: the (standardized)
        flow, mixed with the widened Gaussian while refining (module docstring)."""
        flow = self._flow_log_q(x)
        if not self.refining:
            return flow
        w = self.refine_noise_share
        gauss = self._defensive(x).log_prob(x)
        return torch.logaddexp(flow + math.log1p(-w), gauss + math.log(w))

    def sample_q(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` flat draws from the noise and their :math:`\\log q` (while refining, a share
        ``refine_noise_share`` of them from the widened Gaussian, stratified)."""
        k = round(self.refine_noise_share * n) if self.refining else 0
        y, log_q = self.flow.sample_and_log_prob(n - k)
        if self._standardized():
            loc, scale = self.data_loc.to(y), self.data_scale.to(y)
            y, log_q = loc + scale * y, log_q - scale.log().sum()
        if not self.refining:
            return y, log_q
        y = torch.cat([y, self._defensive(y).sample((k,))])
        return y, self.log_q(y)

    def phases(self, steps: int) -> tuple[Phase, ...]:
        """With ``refine > 0``: the refinement phase over the last ``refine`` of the steps, at
        ``refine_lr`` after a :data:`REFINE_WARMUP` warm-up, with the optimizer's moments
        cleared as it starts (measured on ``rings``: KL 0.012, against 0.023 when Adam kept the
        game's moments); none when it would be empty."""
        start = steps - round(self.refine * steps)
        if not self.refine or not 0 < start < steps:
            return ()
        self._trial = min(REFINE_TRIAL, (steps - start) // 3)
        return (
            Phase(start, self.refine_lr, REFINE_WARMUP, reset_optimizer=True, trial=self._trial),
        )

    def abandon_phase(self, index: int, metrics: Mapping[str, Sequence[float]]) -> str | None:
        """Abandon the refinement when the classifier's mean accuracy over the second half of
        its trial reaches :data:`REFINE_ABANDON`: NCE against a noise it separates from the
        data learns little about the density (``fit`` then rolls back and the game runs to
        the end)."""
        tail = list(metrics.get("accuracy", []))[-max(1, self._trial // 2) :]
        accuracy = math.fsum(tail) / len(tail) if tail else 0.0
        if accuracy < REFINE_ABANDON:
            return None
        return (
            f"the classifier's accuracy against the frozen flow was {accuracy:.3f} over the "
            f"last {len(tail)} trial steps (>= {REFINE_ABANDON}): the flow is too far from the "
            "data for NCE to learn from it"
        )

    def enter_phase(self, index: int) -> None:
        """Phase 1 is the refinement: the flow is frozen and the noise defensive."""
        self.refining = index >= 1

    @classmethod
    def for_data(
        cls,
        data: Tensor,
        *,
        kind: str | None = None,
        hidden_features: int = 64,
        num_layers: int = 6,
        noise_ratio: float = 1.0,
        pretrain_steps: int = 0,
        refine: float = 0.7,
        generator: torch.Generator | None = None,
        progress_bar: bool = False,
    ) -> FCE:
        """FCE with a :func:`make_flow` flow over the flattened events of ``data``.

        The flow is standardized to ``data`` (``standardize=True``, see the module docstring)
        before anything else. ``pretrain_steps`` steps of maximum-likelihood flow pre-training
        (:meth:`pretrain_flow`) run next; the default is none, as measured in the training
        benchmark (pre-training the flow made the EBM learn slower on the 2-d toys: KL 0.18
        against 0.11; with the standardization the untrained flow already starts at the
        data's Gaussian fit). The command line takes its FCE defaults from this signature.

        Examples
        --------
        >>> fce = FCE.for_data(torch.randn(100, 3), hidden_features=8, num_layers=2)
        >>> type(fce.flow).__name__, fce.noise_ratio
        ('SimpleRealNVP', 1.0)
        """
        _check_data(data)
        pretrain_steps = check_int("pretrain_steps", pretrain_steps, 0)
        flow = make_flow(
            data[0].numel(), kind, hidden_features=hidden_features, num_layers=num_layers
        )
        fce = cls(flow, noise_ratio=noise_ratio, refine=refine)
        fce.setup(data)
        if pretrain_steps:
            fce.pretrain_flow(data, pretrain_steps, generator=generator, progress_bar=progress_bar)
        return fce

    @property
    def log_Z(self) -> Tensor:
        return self.log_Z_param

    def adversary_parameters(self) -> list[nn.Parameter]:
        return list(self.flow.parameters())

    def _num_noise(self, n: int) -> int:
        return max(1, round(self.noise_ratio * n))

    def diagnose(
        self, metrics: Mapping[str, Sequence[float]], lr: Sequence[float]
    ) -> dict[str, str]:
        """FCE's failure modes, from the per-step record (``accuracy``, ``flow_nll``, ``log_Z``).

        * ``accuracy``: the classifier's accuracy averaged over the last
          :data:`~pyro_ebm.objectives.base.DIAGNOSIS_WINDOW` steps is at least
          :data:`ACCURACY_STUCK`: the EBM tells flow samples from data almost perfectly, the
          flow's gradient vanishes and the game has stopped (Gao et al. 2020 keep it near
          the balancing threshold).
        * ``flow_nll``: the flow's NLL on the data, averaged over a window, rose more than
          :data:`FLOW_NLL_RISE` nats above its best window (or is not finite): the flow
          drifts off the data (seen on ``8gaussians``, where the energy still reached KL
          0.003: a flow keeps full support, so one that drops modes is still a usable noise
          while the classifier is not stuck) or diverges, and NCE against it may no longer
          cover the data.
        * ``log_Z``: :func:`~pyro_ebm.objectives.base.log_z_runaway`.
        """
        found: dict[str, str] = {}
        accuracy = _recent_mean(metrics.get("accuracy", []))
        if accuracy is not None and accuracy >= ACCURACY_STUCK and self.refining:
            found["accuracy"] = (
                f"refinement: the classifier's accuracy is {accuracy:.3f} over the last "
                f"{DIAGNOSIS_WINDOW} steps: the frozen flow is far from the data and NCE against "
                "it learns little about the density (refine=0 keeps the game to the end)"
            )
        elif accuracy is not None and accuracy >= ACCURACY_STUCK:
            found["accuracy"] = (
                f"classifier accuracy stuck at {accuracy:.3f} over the last {DIAGNOSIS_WINDOW} "
                "steps: the EBM separates the flow's samples from the data and the flow no "
                "longer learns (pre-train the flow: FCE.for_data(data, pretrain_steps=500))"
            )
        nll = list(metrics.get("flow_nll", []))
        if self.refining:  # the flow is frozen: its NLL no longer moves
            nll = []
        if nll and not math.isfinite(nll[-1]):
            found["flow_nll"] = f"the flow's NLL on the data is {nll[-1]}: the flow diverged"
        elif len(nll) >= 2 * DIAGNOSIS_WINDOW:
            w = DIAGNOSIS_WINDOW
            blocks = [math.fsum(nll[i : i + w]) / w for i in range(0, len(nll) - w + 1, w)]
            now = _recent_mean(nll)
            if now is not None and now > min(blocks) + FLOW_NLL_RISE:
                found["flow_nll"] = (
                    f"the flow's NLL on the data rose from {min(blocks):.2f} to {now:.2f} nats: "
                    "the flow drifts off the data (it may drop modes). The energy can still be "
                    "right while the classifier's accuracy stays below 0.99 (on 8gaussians it "
                    "reached KL 0.003 so); check its fit, and lower adversary_lr if it is not"
                )
        message = log_z_runaway(metrics.get("log_Z", []), lr)
        if message is not None:
            found["log_Z"] = message
        return found

    def _flat(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)

    def _value(self, energy, data, noise, log_q_data, log_q_noise) -> tuple[Tensor, Tensor, dict]:
        e_data = energy(data)
        e_noise = energy(noise.reshape((noise.shape[0],) + data.shape[1:]))
        log_z = self.log_Z_param.to(data)
        ratio = noise.shape[0] / data.shape[0]
        loss, accuracy = nce_loss(
            -e_data - log_z, log_q_data.to(data), -e_noise - log_z, log_q_noise.to(data), ratio
        )
        metrics = {
            "energy_pos": e_data.mean().detach(),
            "energy_neg": e_noise.mean().detach(),
            "accuracy": accuracy,
            "log_Z": self.log_Z_param.detach().clone(),
        }
        return loss, accuracy, metrics

    def forward(
        self, energy: nn.Module, data: Tensor, generator: torch.Generator | None = None
    ) -> LossOutput:
        """The EBM's NCE loss against the (frozen) flow."""
        if not self.data_loc.numel():
            self.setup(data)
        with torch.no_grad():
            noise, log_q_noise = self.sample_q(self._num_noise(data.shape[0]))
            flat = self._flat(data)
        log_q_data = self.log_q(flat)
        loss, accuracy, metrics = self._value(energy, data, noise, log_q_data, log_q_noise)
        flow_q = self._flow_log_q(flat) if self.refining else log_q_data
        metrics["flow_nll"] = -flow_q.mean().detach()  # the flow's fit to the data batch
        self.last_accuracy = accuracy.detach().to(self.last_accuracy)
        return LossOutput(loss, metrics)

    def synchronize(self, mean: Callable[[Tensor], Tensor]) -> None:
        """Every process takes the same turn: the balancing rule reads the mean accuracy."""
        self.last_accuracy = mean(self.last_accuracy).to(self.last_accuracy)

    def adversary_loss(
        self, energy: nn.Module, data: Tensor, generator: torch.Generator | None = None
    ) -> LossOutput | None:
        """The flow's loss :math:`-J` (it maximizes the classifier's loss), or ``None`` when
        the balancing rule skips this step."""
        if self.refining or float(self.last_accuracy) <= self.flow_update_threshold:
            return None
        if not self.data_loc.numel():
            self.setup(data)
        noise, log_q_noise = self.sample_q(self._num_noise(data.shape[0]))
        log_q_data = self.log_q(self._flat(data))
        loss, _, metrics = self._value(energy, data, noise, log_q_data, log_q_noise)
        self.flow_updates += 1
        return LossOutput(-loss, {"flow_loss": (-loss).detach()})

    def pretrain_flow(
        self, data: Tensor, steps: int = 500, *, batch_size: int = 256, lr: float = 1e-3,
        generator: torch.Generator | None = None, progress_bar: bool = False,
    ) -> list[float]:  # fmt: skip
        """Fit the flow to ``data`` by maximum likelihood; returns the per-step NLL.

        ``progress_bar`` shows progress over the steps (:func:`pyro_ebm.progress.progress`).
        """
        self.setup(data)
        flat = self._flat(data)
        opt = torch.optim.Adam(self.flow.parameters(), lr=lr)
        history = []
        for _ in progress(range(steps), desc="flow pre-training", enabled=progress_bar):
            idx = torch.randint(0, flat.shape[0], (min(batch_size, flat.shape[0]),),
                                generator=generator, device=flat.device)  # fmt: skip
            nll = -self.log_q(flat[idx]).mean()
            opt.zero_grad()
            nll.backward()
            opt.step()
            history.append(float(nll.detach()))
            if not math.isfinite(history[-1]):
                raise FloatingPointError("flow pre-training diverged (non-finite NLL)")
        return history
