"""ArviZ bridge: :func:`to_arviz` turns draws and sampler statistics into ArviZ data.

This is the only module of the package that imports ArviZ. It converts

* a :class:`pyro_ebm.infer.Samples` (the vectorized runner's output), and
* a :class:`pyro.infer.MCMC` after ``.run()``, whether driven by pyro-ebm's kernels or by
  Pyro's own :class:`~pyro.infer.HMC`, :class:`~pyro.infer.NUTS` or
  :class:`~pyro.infer.mcmc.RandomWalkKernel`,

into ``posterior`` and ``sample_stats`` groups named as ArviZ expects (``lp``,
``acceptance_rate``, ``step_size``, ``diverging``, ``energy``, ``n_steps``, ``tree_depth``), so
that ``az.summary``, ``az.rhat``, ``az.ess``, ``az.plot_trace`` and ``az.plot_rank`` always work
and ``az.plot_energy`` and ``az.bfmi`` work whenever ``energy`` is present.

Pyro's own kernels keep almost no per-draw statistics, so :class:`StatsRecorder`, passed as
``MCMC(..., hook_fn=recorder)``, records them while the chains run. Without it, ``lp`` is
recomputed exactly from the draws and ``diverging`` is read from Pyro's divergence lists.

Both ArviZ 0.2x (``InferenceData``, ``az.from_dict(posterior=..., sample_stats=...)``) and ArviZ
1.x (``xarray.DataTree``, ``az.from_dict({"posterior": ..., "sample_stats": ...})``) are
supported.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyro.infer
import torch
from torch import Tensor

from .infer.run import Samples

with warnings.catch_warnings():
    # ArviZ 0.2x announces its 1.0 refactor with a FutureWarning once a day on import.
    warnings.filterwarnings(
        "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
    )
    import arviz as az

__all__ = ["SAMPLE_STATS", "StatsRecorder", "to_arviz"]

#: The ``sample_stats`` names this module produces, as ArviZ spells them.
SAMPLE_STATS = (
    "lp",
    "acceptance_rate",
    "step_size",
    "diverging",
    "energy",
    "n_steps",
    "tree_depth",
)
_ALIASES = {
    "accept_prob": "acceptance_rate",
    "mean_accept_prob": "acceptance_rate",
    "divergent": "diverging",
    "num_steps": "n_steps",
    "num_leapfrog": "n_steps",
    "treedepth": "tree_depth",
}
_INT_STATS = ("n_steps", "tree_depth")


def _arviz_major() -> int:
    match = re.match(r"\d+", az.__version__)
    return int(match.group()) if match else 0


def _from_dict(
    posterior: dict[str, np.ndarray],
    sample_stats: dict[str, np.ndarray],
    dims: dict[str, list[str]],
    attrs: dict[str, Any],
):
    """``az.from_dict`` for ArviZ 0.2x (keyword groups) and 1.x (one nested dict -> DataTree).

    ``dims`` names the dimensions after ``(chain, draw)``, which both versions prepend.
    """
    if _arviz_major() >= 1:
        groups = {"posterior": posterior}
        if sample_stats:
            groups["sample_stats"] = sample_stats
        return az.from_dict(groups, dims=dims, attrs={group: dict(attrs) for group in groups})
    return az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats or None,
        dims=dims,
        posterior_attrs=dict(attrs),
        sample_stats_attrs=dict(attrs),
    )


def _to_numpy(value: Tensor | np.ndarray | list) -> np.ndarray:
    if torch.is_tensor(value):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            value = value.double()
        return value.numpy()
    return np.asarray(value)


def _stat_array(name: str, value) -> np.ndarray:
    array = _to_numpy(value)
    if name == "diverging":
        return array.astype(bool)
    if name in _INT_STATS:
        return np.rint(array).astype(np.int64)
    return array.astype(np.float64) if array.dtype.kind in "biu" else array


def to_arviz(obj, *, var_name: str = "x", recorder: StatsRecorder | None = None):
    """Convert draws and their sampler statistics to ArviZ data.

    Parameters
    ----------
    obj : Samples or pyro.infer.MCMC
        A :class:`pyro_ebm.infer.Samples` from :func:`pyro_ebm.infer.sample` (run with
        ``keep=True``), or a :class:`pyro.infer.MCMC` after ``.run()``.
    var_name : str
        Name of the posterior variable for a ``Samples`` (an MCMC keeps its site names).
    recorder : StatsRecorder, optional
        The :class:`StatsRecorder` passed as ``hook_fn`` to the MCMC; its per-draw statistics
        take precedence over everything else.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        ``InferenceData`` with ArviZ 0.2x, ``DataTree`` with ArviZ 1.x. Groups:

        ``posterior``
            From a ``Samples``: ``var_name`` with dims ``(chain, draw, *batch, *event)``, the
            batch dims named ``batch_dim_i`` and the event dims ``{var_name}_dim_i``. From an
            MCMC: every saved site under its own name, in the constrained space.
        ``sample_stats``
            Per draw, with dims ``(chain, draw[, *batch])``, whichever of ``lp`` (log density
            up to a constant, :math:`-E(x)` or minus Pyro's potential energy),
            ``acceptance_rate``, ``step_size``, ``diverging`` (bool), ``energy`` (the
            Hamiltonian), ``n_steps`` (leapfrog steps) and ``tree_depth`` are known.

    Notes
    -----
    For an MCMC the statistics come, by precedence, from the ``recorder``; from the
    ``"sample_stats"`` entry of each chain's ``kernel.diagnostics()`` (pyro-ebm's kernels
    provide it, even when chains run in separate processes); and otherwise ``lp`` is
    recomputed exactly by evaluating the kernel's ``potential_fn`` at every draw (mapped back
    to the unconstrained space with ``mcmc.transforms``; left out if ``save_params`` dropped a
    latent site) and ``diverging`` is read from the ``"divergences"`` index lists of Pyro's
    HMC and NUTS (all ``False`` for kernels without them, such as ``RandomWalkKernel``).
    ``energy`` exists only when a recorder or the kernel supplies it.

    Raises
    ------
    ValueError
        For a ``Samples`` run with ``keep=False`` (it holds no draws), an MCMC that has not run,
        a recorder whose draws do not match the MCMC, or any other type of ``obj``.

    Examples
    --------
    >>> from pyro_ebm.infer import sample
    >>> from pyro_ebm.diagnostics import to_arviz
    >>> energy = lambda x: 0.5 * x.pow(2).sum(-1)
    >>> out = sample(energy, 50, num_chains=2, event_shape=(2,), seed=0, progress_bar=False)
    >>> idata = to_arviz(out)
    >>> idata.posterior["x"].shape
    (2, 50, 2)
    >>> sorted(idata.sample_stats.data_vars)
    ['acceptance_rate', 'diverging', 'lp', 'step_size']
    """
    if recorder is not None and not isinstance(recorder, StatsRecorder):
        raise ValueError(f"recorder must be a StatsRecorder or None; got {type(recorder).__name__}")
    if isinstance(obj, Samples):
        if recorder is not None:
            raise ValueError("recorder applies to a pyro.infer.MCMC, not to a Samples")
        return _from_samples(obj, var_name)
    if isinstance(obj, pyro.infer.MCMC):
        return _from_mcmc(obj, recorder)
    raise ValueError(
        "to_arviz accepts a pyro_ebm.infer.Samples or a pyro.infer.MCMC after .run(); got "
        f"{type(obj).__name__}"
    )


def _from_samples(out: Samples, var_name: str):
    if not out.stats:
        raise ValueError(
            "this Samples holds no draws (it was run with keep=False, which keeps only the "
            "final states); run pyro_ebm.infer.sample with keep=True to convert it to ArviZ"
        )
    stat_shape = next(iter(out.stats.values())).shape
    num_batch = len(stat_shape) - 2
    batch_dims = [f"batch_dim_{i}" for i in range(num_batch)]
    num_event = out.samples.dim() - len(stat_shape)
    event_dims = [f"{var_name}_dim_{i}" for i in range(num_event)]
    posterior = {var_name: _to_numpy(out.samples)}
    dims = {var_name: batch_dims + event_dims}
    sample_stats = {}
    for name, value in out.stats.items():
        name = _ALIASES.get(name, name)
        sample_stats[name] = _stat_array(name, value)
        dims[name] = list(batch_dims)
    attrs = {"inference_library": "pyro_ebm", "sampler": out.kernel}
    return _from_dict(posterior, sample_stats, dims, attrs)


def _from_mcmc(mcmc: pyro.infer.MCMC, recorder: StatsRecorder | None):
    if getattr(mcmc, "_samples", None) is None:
        raise ValueError("the MCMC holds no draws yet: call mcmc.run(...) before to_arviz")
    samples = mcmc.get_samples(group_by_chain=True)
    num_chains, num_samples = mcmc.num_chains, mcmc.num_samples
    posterior = {name: _to_numpy(value) for name, value in samples.items()}
    diagnostics = [d if isinstance(d, Mapping) else {} for d in mcmc._diagnostics]

    stats: dict[str, np.ndarray] = {}
    if recorder is not None:
        stats.update(recorder._arrays(num_chains, num_samples))
    for name, value in _kernel_sample_stats(diagnostics, num_samples).items():
        stats.setdefault(name, value)
    if "lp" not in stats:
        lp = _recompute_lp(mcmc, samples)
        if lp is not None:
            stats["lp"] = lp
    if "diverging" not in stats:
        stats["diverging"] = _divergences(diagnostics, num_chains, num_samples)
    stats = {name: _stat_array(name, value) for name, value in stats.items()}
    attrs = {"inference_library": "pyro", "sampler": type(mcmc.kernel).__name__}
    return _from_dict(posterior, stats, {}, attrs)


def _kernel_sample_stats(diagnostics: list[Mapping], num_samples: int) -> dict[str, np.ndarray]:
    """Stack the per-chain ``diagnostics()["sample_stats"]`` of pyro-ebm's kernels."""
    per_chain = [d.get("sample_stats") for d in diagnostics]
    if not per_chain or any(not isinstance(s, Mapping) for s in per_chain):
        return {}
    names = set(per_chain[0]).intersection(*per_chain[1:])
    stacked = {}
    for name in sorted(names):
        rows = [np.asarray(s[name]) for s in per_chain]
        if any(row.shape[:1] != (num_samples,) for row in rows):
            raise ValueError(
                f"kernel diagnostics 'sample_stats'[{name!r}] must hold one value per draw "
                f"({num_samples}); got lengths {[len(row) for row in rows]}"
            )
        stacked[_ALIASES.get(name, name)] = np.stack(rows)
    return stacked


def _divergences(diagnostics: list[Mapping], num_chains: int, num_samples: int) -> np.ndarray:
    diverging = np.zeros((num_chains, num_samples), dtype=bool)
    for chain, diag in enumerate(diagnostics):
        index = np.asarray(diag.get("divergences", []), dtype=np.int64)
        diverging[chain, index[(index >= 0) & (index < num_samples)]] = True
    return diverging


def _potential_fn(mcmc: pyro.infer.MCMC) -> Callable | None:
    kernel = mcmc.kernel
    potential_fn = getattr(kernel, "potential_fn", None)
    if potential_fn is None and getattr(kernel, "model", None) is not None:
        # Nothing set up this process's kernel (e.g. its chains ran in worker processes).
        from pyro.infer.mcmc.util import initialize_model

        _, potential_fn, _, _ = initialize_model(
            kernel.model, mcmc._args or (), mcmc._kwargs or {}, transforms=mcmc.transforms
        )
    return potential_fn


def _recompute_lp(mcmc: pyro.infer.MCMC, samples: dict[str, Tensor]) -> np.ndarray | None:
    """``lp = -potential_fn(z)`` at every draw, ``z`` the unconstrained value of each site."""
    potential_fn = _potential_fn(mcmc)
    if potential_fn is None or not samples:
        return None
    transforms = mcmc.transforms or {}
    unconstrained = {
        name: transforms[name](value) if name in transforms else value
        for name, value in samples.items()
    }
    num_chains, num_samples = mcmc.num_chains, mcmc.num_samples
    lp = np.empty((num_chains, num_samples), dtype=np.float64)
    with torch.no_grad():
        for c in range(num_chains):
            for d in range(num_samples):
                try:
                    potential = potential_fn({k: v[c, d] for k, v in unconstrained.items()})
                except KeyError:  # not every latent site was saved (save_params)
                    return None
                lp[c, d] = -float(potential)
    return lp


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
    The recorder works in one process: ``num_chains=1``, or several chains drawn one after
    the other. When Pyro runs chains in worker processes, each worker records into its own
    copy and :func:`to_arviz` reports that the recorder holds no draws. Use
    :meth:`detach` to restore the kernel's methods.

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
        #: Per chain id, per statistic name, the list of post-warmup values.
        self.chains: dict[int, dict[str, list[float]]] = {}
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
            self._record(kernel, self.chains[chain], i)
        self._before = self._snapshot(kernel)

    def _attach(self, kernel) -> None:
        self._kernel = kernel
        self._before = self._snapshot(kernel)
        self._current = {}
        if callable(getattr(type(kernel), "_sample_r", None)):
            kernel._sample_r = _TransitionTap(kernel, self)
        if callable(getattr(type(kernel), "_build_tree", None)):
            kernel._build_tree = _TreeDepthCounter(kernel, self)
        if callable(getattr(type(kernel), "_build_basetree", None)):
            kernel._build_basetree = _LeafCounter(kernel, self)

    def detach(self) -> None:
        """Remove the wrappers installed on the kernel's instance."""
        kernel = self._kernel
        if kernel is not None:
            for attr in ("_sample_r", "_build_tree", "_build_basetree"):
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
                "before mcmc.run(); it records only when the chains run in this process "
                "(num_chains=1, or chains drawn sequentially)"
            )
        lengths = {c: len(next(iter(rows.values()), [])) for c, rows in chains.items()}
        if sorted(chains) != list(range(num_chains)) or any(
            n != num_samples for n in lengths.values()
        ):
            raise ValueError(
                f"the StatsRecorder holds draws per chain {lengths}, but the MCMC ran "
                f"{num_chains} chain(s) of {num_samples} draws; was it used with another run, "
                "or did chains run in worker processes?"
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
