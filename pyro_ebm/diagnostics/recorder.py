"""Per-draw statistics of Pyro's own kernels: :class:`StatsRecorder`, an ``MCMC`` hook.

Pyro's HMC, NUTS and RandomWalkKernel keep almost no per-draw statistics. The recorder reads
them while the chains run, from private attributes of the kernel (``_potential_energy_last``,
``_energy_last``, ``_mean_accept_prob``, ``_t``, ``_warmup_steps``, ``_divergences``,
``_log_step_size``, ``_kinetic_energy``) and by wrapping, on the kernel instance only, its
``_sample_r``, ``_build_tree``, ``_build_basetree`` and ``diagnostics``. Those names are Pyro
1.9's internals: this module is the one place that depends on them, and it refuses to patch a
Pyro outside :data:`TESTED_PYRO` with an error that says so.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pyro.infer
import torch

__all__ = ["RECORDED_STATS_KEY", "TESTED_PYRO", "StatsRecorder", "check_pyro_version"]

#: Pyro release lines whose kernel internals the recorder has been tested against.
TESTED_PYRO: tuple[str, ...] = ("1.9",)

#: The ``kernel.diagnostics()`` entry under which a recorder in a worker process sends back the
#: statistics of its chain (Pyro returns each worker's diagnostics to the main process).
RECORDED_STATS_KEY = "pyro_ebm_recorded_stats"


def check_pyro_version(version: str | None = None) -> None:
    """Raise ``RuntimeError`` unless Pyro ``version`` (default: the installed one) is tested.

    Examples
    --------
    >>> check_pyro_version("1.9.1")
    >>> check_pyro_version("2.0.0")
    Traceback (most recent call last):
    ...
    RuntimeError: StatsRecorder reads and wraps private internals of Pyro's kernels ...
    """
    version = pyro.__version__ if version is None else str(version)
    if any(version == line or version.startswith(line + ".") for line in TESTED_PYRO):
        return
    raise RuntimeError(
        "StatsRecorder reads and wraps private internals of Pyro's kernels (_sample_r, "
        f"_build_tree, _potential_energy_last, ...), tested with Pyro {', '.join(TESTED_PYRO)}.x "
        f"only; this is Pyro {version}. Install pyro-ppl {TESTED_PYRO[-1]}.x, or convert "
        "without a recorder: to_arviz(mcmc) recomputes lp and reads divergences (no energy)"
    )


class _TransitionTap:
    """Stands in for a kernel's ``_sample_r`` and hands each fresh momentum to the recorder.

    Picklable (it calls the class's method, not a bound method that would resolve to itself).
    """

    def __init__(self, kernel, recorder: StatsRecorder) -> None:
        self.kernel = kernel
        self.recorder = recorder

    def __call__(self, name):
        kernel = self.kernel
        r, r_unscaled = type(kernel)._sample_r(kernel, name)
        if str(name).startswith("r_t="):  # a transition, not a step-size search
            self.recorder._start_transition(kernel, r_unscaled)
        return r, r_unscaled


class _LeafCounter:
    """Stands in for NUTS's ``_build_basetree``: one call per leapfrog step."""

    def __init__(self, kernel, recorder: StatsRecorder) -> None:
        self.kernel = kernel
        self.recorder = recorder

    def __call__(self, *args, **kwargs):
        self.recorder._current["n_steps"] += 1
        return type(self.kernel)._build_basetree(self.kernel, *args, **kwargs)


class _TreeDepthCounter:
    """Stands in for NUTS's recursive ``_build_tree`` and counts the valid top-level subtrees.

    Pyro's NUTS doubles the trajectory until a new subtree diverges or turns (then discarded)
    or the whole trajectory turns; the number of subtrees kept is Stan's ``treedepth__``.
    """

    def __init__(self, kernel, recorder: StatsRecorder) -> None:
        self.kernel = kernel
        self.recorder = recorder
        self.level = 0

    def __call__(self, *args, **kwargs):
        self.level += 1
        try:
            tree = type(self.kernel)._build_tree(self.kernel, *args, **kwargs)
        finally:
            self.level -= 1
        if self.level == 0 and not tree.diverging and not tree.turning:
            self.recorder._current["tree_depth"] += 1
        return tree


class _DiagnosticsTap:
    """Stands in for a kernel's ``diagnostics`` and adds the recorder's rows of this chain.

    Pyro sends each chain's ``kernel.diagnostics()`` back from its worker process, so what a
    recorder copy recorded there reaches :func:`~pyro_ebm.diagnostics.to_arviz` this way.
    """

    def __init__(self, kernel, recorder: StatsRecorder) -> None:
        self.kernel = kernel
        self.recorder = recorder

    def __call__(self):
        diagnostics = type(self.kernel).diagnostics(self.kernel)
        rows = self.recorder.chains.get(self.recorder._last_chain)
        if not isinstance(diagnostics, dict) or not rows:
            return diagnostics
        return {**diagnostics, RECORDED_STATS_KEY: {k: list(v) for k, v in rows.items()}}


class StatsRecorder:
    """Records per-draw sampler statistics of Pyro's HMC, NUTS and RandomWalkKernel.

    Pass an instance as ``pyro.infer.MCMC(kernel, ..., hook_fn=recorder)`` and then to
    :func:`to_arviz` as ``recorder=``. Pyro calls the hook after every transition; after each
    post-warmup one the recorder stores:

    ``lp``
        Minus the potential energy of the draw (``kernel._potential_energy_last`` for HMC and
        NUTS, ``kernel._energy_last`` for RandomWalkKernel).
    ``acceptance_rate``
        The transition's Metropolis acceptance probability (NUTS: its mean over the
        trajectory), recovered exactly from the kernel's post-warmup running mean
        ``_mean_accept_prob``: :math:`a_k = k m_k - (k - 1) m_{k-1}`.
    ``step_size``
        The step size the transition used (RandomWalkKernel: the proposal scale).
    ``diverging``
        Whether the kernel appended this draw to its ``_divergences``.
    ``n_steps``
        Leapfrog steps: ``kernel.num_steps`` for HMC, counted for NUTS.
    ``tree_depth``
        NUTS only: subtrees kept by the doubling, as Stan's ``treedepth__``.
    ``energy``
        HMC and NUTS: the Hamiltonian :math:`H = U(z) + K(r)` at the start of the transition,
        the potential of the previous draw plus the kinetic energy of the freshly drawn
        momentum. The kernel's own ``_sample_r`` is wrapped on the instance to see that
        momentum (``_kinetic_energy`` alone cannot tell it apart: NUTS calls it at every
        leaf, and the step-size search calls it too). Stan's ``energy__`` is :math:`H` at the
        end of the transition; as the transition preserves the joint of :math:`(z, r)` and
        the integrator nearly conserves :math:`H`, both have the same marginal up to
        integrator error, which is what ``az.plot_energy`` and ``az.bfmi`` compare.

    Parameters
    ----------
    kernel : pyro.infer.mcmc.MCMCKernel, optional
        Attach to the kernel now rather than at the first hook call. Needed only for
        ``energy``, ``n_steps`` and ``tree_depth`` of the very first transition, i.e. when
        ``warmup_steps=0``.

    Notes
    -----
    With ``num_chains=1`` or chains drawn one after the other, the recorder records in this
    process. When Pyro runs chains in worker processes (``num_chains > 1`` on enough cores,
    any ``mp_context``), each worker records into its own copy and hands its rows back in its
    kernel's ``diagnostics()``, where :func:`to_arviz` finds them. Use :meth:`detach` to
    restore the kernel's methods.

    The recorder depends on private attributes of Pyro's kernels and checks the Pyro version
    (:data:`TESTED_PYRO`) when it is created and attached: an untested Pyro raises a
    ``RuntimeError`` that says so.

    Examples
    --------
    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro.infer import MCMC, NUTS
    >>> from pyro_ebm.diagnostics import StatsRecorder, to_arviz
    >>> def model():
    ...     pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    >>> pyro.set_rng_seed(0)
    >>> recorder = StatsRecorder()
    >>> mcmc = MCMC(NUTS(model), num_samples=20, warmup_steps=20, hook_fn=recorder,
    ...             disable_progbar=True)
    >>> mcmc.run()
    >>> idata = to_arviz(mcmc, recorder=recorder)
    >>> sorted(idata.sample_stats.data_vars)
    ['acceptance_rate', 'diverging', 'energy', 'lp', 'n_steps', 'step_size', 'tree_depth']
    """

    def __init__(self, kernel=None) -> None:
        check_pyro_version()
        #: Per chain id, per statistic name, the list of post-warmup values.
        self.chains: dict[int, dict[str, list[float]]] = {}
        self._last_chain = 0
        self._kernel = None
        self._current: dict[str, float] = {}
        self._before: dict[str, float] = {}
        if kernel is not None:
            self._attach(kernel)

    def __call__(self, kernel, params, stage: str, i: int) -> None:
        if kernel is not self._kernel:
            self._attach(kernel)
        if str(stage).startswith("Sample"):
            match = re.search(r"\[(\d+)\]", str(stage))
            chain = int(match.group(1)) if match else 0
            if i == 0:
                self.chains[chain] = {}
            self._last_chain = chain
            self._record(kernel, self.chains[chain], i)
        self._before = self._snapshot(kernel)

    def _attach(self, kernel) -> None:
        check_pyro_version()
        self._kernel = kernel
        self._before = self._snapshot(kernel)
        self._current = {}
        if callable(getattr(type(kernel), "_sample_r", None)):
            kernel._sample_r = _TransitionTap(kernel, self)
        if callable(getattr(type(kernel), "_build_tree", None)):
            kernel._build_tree = _TreeDepthCounter(kernel, self)
        if callable(getattr(type(kernel), "_build_basetree", None)):
            kernel._build_basetree = _LeafCounter(kernel, self)
        if callable(getattr(type(kernel), "diagnostics", None)):
            kernel.diagnostics = _DiagnosticsTap(kernel, self)

    def detach(self) -> None:
        """Remove the wrappers installed on the kernel's instance."""
        kernel = self._kernel
        if kernel is not None:
            for attr in ("_sample_r", "_build_tree", "_build_basetree", "diagnostics"):
                tap = kernel.__dict__.get(attr)
                if getattr(tap, "recorder", None) is self:
                    del kernel.__dict__[attr]
        self._kernel = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_kernel": None}  # a worker process re-attaches

    @staticmethod
    def _snapshot(kernel) -> dict[str, float]:
        """What the next transition starts from: its step size and the running mean."""
        before = {}
        step_size = _step_size(kernel)
        if step_size is not None:
            before["step_size"] = step_size
        mean = getattr(kernel, "_mean_accept_prob", None)
        if isinstance(mean, (int, float)):
            before["mean_accept_prob"] = float(mean)
        return before

    def _start_transition(self, kernel, r_unscaled) -> None:
        potential = getattr(kernel, "_potential_energy_last", None)
        current = {"n_steps": 0, "tree_depth": 0}
        if potential is not None:
            current["energy"] = float(potential) + float(kernel._kinetic_energy(r_unscaled))
        self._current = current

    def _record(self, kernel, row: dict[str, list[float]], i: int) -> None:
        values: dict[str, float] = {}
        potential = getattr(kernel, "_potential_energy_last", None)
        if potential is None:
            potential = getattr(kernel, "_energy_last", None)  # RandomWalkKernel
        if potential is not None:
            values["lp"] = -float(potential)
        if "step_size" in self._before:
            values["step_size"] = self._before["step_size"]
        accept = self._acceptance(kernel)
        if accept is not None:
            values["acceptance_rate"] = accept
        divergences = getattr(kernel, "_divergences", None)
        if divergences is not None:
            values["diverging"] = bool(divergences) and divergences[-1] == i
        current, self._current = self._current, {}
        if "energy" in current:
            values["energy"] = current["energy"]
        if isinstance(kernel, pyro.infer.NUTS):
            if "energy" in current:
                values["n_steps"] = current["n_steps"]
                values["tree_depth"] = current["tree_depth"]
        elif isinstance(kernel, pyro.infer.HMC):
            values["n_steps"] = kernel.num_steps
        for name, value in values.items():
            row.setdefault(name, []).append(value)

    def _acceptance(self, kernel) -> float | None:
        mean = getattr(kernel, "_mean_accept_prob", None)
        t, warmup = getattr(kernel, "_t", None), getattr(kernel, "_warmup_steps", None)
        if not isinstance(mean, (int, float)) or t is None or warmup is None:
            return None
        k = t - warmup  # the running mean restarts after warmup: m_k over draws 1..k
        if k <= 1:
            accept = float(mean)
        elif "mean_accept_prob" in self._before:
            accept = k * float(mean) - (k - 1) * self._before["mean_accept_prob"]
        else:
            return math.nan
        return min(max(accept, 0.0), 1.0)

    def _arrays(self, num_chains: int, num_samples: int) -> dict[str, np.ndarray]:
        chains = self.chains
        if not chains:
            raise ValueError(
                "the StatsRecorder holds no draws: pass it as MCMC(..., hook_fn=recorder) "
                "before mcmc.run()"
            )
        lengths = {c: len(next(iter(rows.values()), [])) for c, rows in chains.items()}
        if sorted(chains) != list(range(num_chains)) or any(
            n != num_samples for n in lengths.values()
        ):
            raise ValueError(
                f"the StatsRecorder holds draws per chain {lengths}, but the MCMC ran "
                f"{num_chains} chain(s) of {num_samples} draws; was it used with another run?"
            )
        names = set(chains[0]).intersection(*(chains[c] for c in range(1, num_chains)))
        return {
            name: np.asarray([chains[c][name] for c in range(num_chains)])
            for name in sorted(names)
            if all(len(chains[c][name]) == num_samples for c in range(num_chains))
        }


def _step_size(kernel) -> float | None:
    log_step_size = getattr(kernel, "_log_step_size", None)  # RandomWalkKernel
    if isinstance(log_step_size, (int, float)):
        return math.exp(log_step_size)
    try:
        step_size = getattr(kernel, "step_size", None)
    except AttributeError:  # e.g. an adapter not yet set up
        return None
    if torch.is_tensor(step_size) and step_size.numel() == 1:
        return float(step_size)
    if isinstance(step_size, (int, float)):
        return float(step_size)
    return None
