"""The vectorized many-chain runner: :func:`sample` drives a step function and returns Samples.

Thousands of independent chains advance together as one batch (the leftmost dimension), each
with its own Metropolis-Hastings decision. Warmup adapts the step size by dual averaging and the
mass matrix by pooled Welford estimates; both are frozen once warmup ends. A seeded run is
bitwise reproducible, and :meth:`Samples.resume` continues a run exactly where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..parallel import rank_and_world
from . import hmc, langevin, mala, rwmh
from .adaptation import WarmupAdapter, find_initial_step_size
from .base import State, init_state, module_dtype_device
from .compiled import compiled_or_eager
from .metric import Metric

__all__ = ["KERNELS", "Samples", "resume", "sample"]

KERNELS = {"rwmh": rwmh, "ula": langevin, "mala": mala, "hmc": hmc}
_HMC_STATS = ("energy", "n_steps")


@dataclass
class _Target:
    energy_fn: Callable[[Tensor], Tensor]
    event_shape: torch.Size
    batch_shape: torch.Size
    dtype: torch.dtype
    device: torch.device


@dataclass
class _Config:
    kernel: str
    num_steps: int
    trajectory_length: float | None
    max_num_steps: int
    jitter: float
    max_energy_error: float
    thin: int
    sample_device: torch.device | None
    keep: bool
    progress_bar: bool
    compile: bool = False


@dataclass
class Samples:
    """Draws of a vectorized run and their per-draw statistics.

    Attributes
    ----------
    samples:
        Tensor of shape ``(num_chains, num_samples, *batch_shape, *event_shape)`` (with
        ``keep=False``: only the final states, ``(num_chains, *batch_shape, *event_shape)``).
    stats:
        Per-draw tensors of shape ``(num_chains, num_samples, *batch_shape)``: ``lp``
        (:math:`-E(x)`), ``acceptance_rate``, ``step_size``, ``diverging`` and for HMC
        ``energy`` (Hamiltonian) and ``n_steps``. With ``thin > 1`` a draw's
        ``acceptance_rate`` is the mean over the thinned transitions and ``diverging`` says
        whether any of them diverged.
    step_size:
        The adapted step size (shape ``()`` if shared, else ``(num_chains, *batch_shape)``).
    inv_mass:
        The adapted inverse mass matrix (``None`` for the identity).
    kernel:
        The kernel's name.
    warmup_divergences:
        Number of divergent transitions during warmup, per chain.
    """

    samples: Tensor
    stats: dict[str, Tensor]
    step_size: Tensor
    inv_mass: Tensor | None
    kernel: str
    warmup_divergences: Tensor
    _checkpoint: dict = field(repr=False, default_factory=dict)
    _target: Any = field(repr=False, default=None)

    @property
    def num_chains(self) -> int:
        return self.samples.shape[0]

    def to_arviz(self, var_name: str = "x"):
        """Convert to ``arviz.InferenceData`` (see :func:`pyro_ebm.diagnostics.to_arviz`)."""
        from ..diagnostics import to_arviz  # the one module that imports arviz

        return to_arviz(self, var_name=var_name)

    def state_dict(self) -> dict:
        """Everything needed to continue the run bitwise exactly (tensors and plain values)."""
        return {k: v for k, v in self._checkpoint.items()}

    def resume(self, num_samples: int, *, progress_bar: bool | None = None) -> Samples:
        """Continue this run for ``num_samples`` more draws (no further warmup).

        ``torch.cat`` of the old and new draws along dim 1 equals one run of the combined
        length with the same seed.
        """
        if self._target is None:
            raise ValueError("this Samples object holds no target; use pyro_ebm.infer.resume")
        return resume(self._target, self.state_dict(), num_samples, progress_bar=progress_bar)


def _resolve_target(target, event_shape, init) -> _Target:
    """Accept an EnergyDistribution-like object (``energy``, ``event_shape``) or an energy."""
    batch_shape = torch.Size()
    if hasattr(target, "energy") and hasattr(target, "event_shape") and callable(target.energy):
        energy_fn = target.energy
        event_shape = target.event_shape if event_shape is None else event_shape
        batch_shape = torch.Size(getattr(target, "batch_shape", ()))
        found = module_dtype_device(energy_fn)
    elif callable(target):
        energy_fn = target
        if event_shape is None:
            event_shape = getattr(target, "event_shape", None)
        found = module_dtype_device(target)
    else:
        raise ValueError(
            f"target must be an energy (a callable or nn.Module) or an EnergyDistribution; got "
            f"{type(target).__name__}"
        )
    if event_shape is None:
        if init is None:
            raise ValueError(
                "event_shape is unknown: pass event_shape= or init= (shape (num_chains, "
                "*event_shape)), or give the energy an `event_shape` attribute"
            )
        event_shape = torch.as_tensor(init).shape[1 + len(batch_shape) :]
    event_shape = torch.Size(event_shape)
    if init is not None and torch.is_tensor(init) and init.is_floating_point():
        dtype, device = init.dtype, init.device
    elif found is not None:
        dtype, device = found
    else:
        dtype, device = torch.get_default_dtype(), torch.device("cpu")
    return _Target(energy_fn, event_shape, batch_shape, dtype, device)


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def _make_generator(seed, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _initial_step_size(
    kernel, energy_fn, state, metric, gen, event_dim, cfg_kwargs, target_accept
) -> Tensor:
    """Shared starting step size: proposals are evaluated but never taken."""

    def mean_accept(e):
        _, info = kernel.step(energy_fn, state, e, metric, gen, event_dim, **cfg_kwargs)
        return float(info.acceptance_rate.mean())

    start = torch.tensor(1.0, dtype=state.energy.dtype, device=state.energy.device)
    return find_initial_step_size(mean_accept, target_accept, start)


def _leapfrog_steps(cfg: _Config, eps: Tensor) -> int:
    """Leapfrog steps per transition: fixed, or ``trajectory_length / step size`` (capped)."""
    if cfg.trajectory_length is None:
        return cfg.num_steps
    steps = math.ceil(cfg.trajectory_length / float(eps.mean()))
    return max(1, min(steps, cfg.max_num_steps))


def _kernel_kwargs(cfg: _Config, host_gen, eps: Tensor) -> dict:
    if cfg.kernel != "hmc":
        return {}
    return {
        "num_steps": _leapfrog_steps(cfg, eps),
        "jitter": cfg.jitter,
        "max_energy_error": cfg.max_energy_error,
        "host_generator": host_gen,
    }


def sample(
    target,
    num_samples: int,
    *,
    num_chains: int = 4,
    kernel: str = "mala",
    warmup_steps: int | None = None,
    step_size: float | Tensor | None = None,
    init: Tensor | None = None,
    thin: int = 1,
    seed: int | torch.Generator | None = None,
    progress_bar: bool = True,
    event_shape: tuple[int, ...] | None = None,
    adapt_step_size: bool = True,
    per_chain_step_size: bool = False,
    adapt_mass_matrix: bool = True,
    dense_mass: bool = False,
    inv_mass: Tensor | None = None,
    num_steps: int | None = None,
    trajectory_length: float | None = None,
    max_num_steps: int = 1024,
    jitter: float | None = None,
    max_energy_error: float = 1000.0,
    keep: bool = True,
    sample_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    shard_chains: bool = True,
    compile: bool = False,
) -> Samples:
    """Sample :math:`p(x) \\propto \\exp(-E(x))` with many vectorized chains.

    Parameters
    ----------
    target:
        An energy (callable or ``nn.Module`` mapping ``batch + event_shape`` to ``batch``) or
        an :class:`~pyro_ebm.EnergyDistribution` (its ``batch_shape`` is sampled too: every
        batch element of every chain is an independent chain).
    num_samples:
        Draws kept per chain (after thinning).
    num_chains:
        Independent chains run as one batch.
    kernel:
        ``"rwmh"``, ``"ula"``, ``"mala"`` or ``"hmc"``.
    warmup_steps:
        Adaptation steps, discarded (default ``max(num_samples, 100)``).
    step_size:
        Initial step size (a float, or a tensor of shape ``(num_chains, *batch_shape)``);
        found by a doubling heuristic when ``None``.
    init:
        Starting points of shape ``(num_chains, *batch_shape, *event_shape)``; standard normal
        when ``None``.
    thin:
        Keep every ``thin``-th transition.
    seed:
        An int or a ``torch.Generator``: a seeded run is bitwise reproducible. ``None`` uses
        torch's global generator (so ``pyro.set_rng_seed`` applies).
    progress_bar:
        Show a tqdm bar with the acceptance rate and divergence count.
    event_shape:
        Needed when neither the target nor ``init`` tells it.
    adapt_step_size, per_chain_step_size:
        Dual averaging during warmup; one step size per chain or one shared.
    adapt_mass_matrix, dense_mass, inv_mass:
        Welford estimation of a diagonal (or dense) inverse mass matrix during warmup; or a
        fixed ``inv_mass``.
    num_steps, trajectory_length, max_num_steps, jitter, max_energy_error:
        HMC leapfrog steps per transition, or instead a trajectory length (integration time;
        steps = length / step size, at most ``max_num_steps``, so a collapsing step size can
        never make a transition hang), the random reduction fraction of the steps, and the
        energy error beyond which a trajectory counts as divergent. Default: trajectory
        length :math:`\\pi/2` (a quarter period at the unit scale the mass matrix adapts to)
        with jitter 0.5; an explicit ``num_steps`` means exactly that many (jitter 0).
    keep:
        ``False`` returns only the final states (for training loops): no draw history.
    sample_device:
        Where kept draws are stored (e.g. ``"cpu"`` while chains run on a GPU).
    device, dtype:
        Where and in which precision the chains run (default: from ``init`` or the energy).
    shard_chains:
        Under ``torch.distributed`` (e.g. ``torchrun``), each rank runs ``num_chains / world``
        of the chains (seed ``seed + rank``, its slice of ``init``) and the draws of all ranks
        are gathered, so every rank returns all chains. See also :func:`sample_parallel`.
    compile:
        Run each transition as one fused ``torch.compile``-d function (MALA, ULA, RWMH with a
        diagonal mass matrix): the same draws up to float rounding, faster once compiled; falls
        back to the eager step with a warning where compilation is unavailable.

    Returns
    -------
    Samples

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.infer import sample
    >>> energy = lambda x: 0.5 * x.pow(2).sum(-1)
    >>> out = sample(energy, 200, num_chains=8, event_shape=(2,), seed=0, progress_bar=False)
    >>> out.samples.shape
    torch.Size([8, 200, 2])
    >>> sorted(out.stats)
    ['acceptance_rate', 'diverging', 'lp', 'step_size']
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}; got {kernel!r}")
    _check_positive_int("num_samples", num_samples)
    _check_positive_int("num_chains", num_chains)
    _check_positive_int("thin", thin)
    if num_steps is None and trajectory_length is None:
        # after mass-matrix adaptation the target has roughly unit scale: a quarter period of
        # a unit Gaussian, randomized, decorrelates without the periodicity of fixed lengths
        trajectory_length = math.pi / 2
    if jitter is None:
        jitter = 0.0 if num_steps is not None else 0.5
    num_steps = 10 if num_steps is None else num_steps
    _check_positive_int("num_steps", num_steps)
    _check_positive_int("max_num_steps", max_num_steps)
    if trajectory_length is not None and not (0 < trajectory_length < math.inf):
        raise ValueError(f"trajectory_length must be positive; got {trajectory_length!r}")
    if warmup_steps is None:
        warmup_steps = max(num_samples, 100)
    _check_positive_int("warmup_steps", warmup_steps, minimum=0)
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1); got {jitter!r}")
    rank, world = rank_and_world()
    shard = world > 1 and shard_chains
    if shard and num_chains % world:
        raise ValueError(
            f"num_chains ({num_chains}) must be divisible by the world size {world} to shard "
            "chains across ranks (or pass shard_chains=False)"
        )
    tgt = _resolve_target(target, event_shape, init)
    if device is not None:
        tgt.device = torch.device(device)
    if dtype is not None:
        tgt.dtype = dtype
    chain_shape = torch.Size((num_chains,)) + tgt.batch_shape
    if init is None:
        position = torch.randn(
            chain_shape + tgt.event_shape,
            dtype=tgt.dtype,
            device=tgt.device,
            generator=_make_generator(seed, tgt.device),
        )
    else:
        position = torch.as_tensor(init).to(dtype=tgt.dtype, device=tgt.device)
        if position.shape != chain_shape + tgt.event_shape:
            raise ValueError(
                f"init must have shape (num_chains, *batch_shape, *event_shape) = "
                f"{tuple(chain_shape + tgt.event_shape)}; got {tuple(position.shape)}"
            )
    if shard:  # this rank's chains, and a seed of its own
        local = num_chains // world
        position = position[rank * local : (rank + 1) * local]
        chain_shape = torch.Size((local,)) + tgt.batch_shape
        if isinstance(seed, int):
            seed = seed + rank
    gen = _make_generator(seed, tgt.device)
    cfg = _Config(
        kernel=kernel,
        num_steps=num_steps,
        trajectory_length=None if trajectory_length is None else float(trajectory_length),
        max_num_steps=max_num_steps,
        jitter=float(jitter),
        max_energy_error=float(max_energy_error),
        thin=thin,
        sample_device=None if sample_device is None else torch.device(sample_device),
        keep=keep,
        progress_bar=progress_bar,
        compile=bool(compile),
    )
    module = KERNELS[kernel]
    event_dim = len(tgt.event_shape)
    state = init_state(tgt.energy_fn, position, event_dim, with_grad=module.NEEDS_GRAD)
    metric = Metric(tgt.event_shape, None if inv_mass is None else torch.as_tensor(inv_mass))
    metric = metric.to(dtype=tgt.dtype, device=tgt.device)
    host_gen = _host_generator(gen)
    kwargs = _kernel_kwargs(cfg, host_gen, torch.ones(()))
    if step_size is None:
        eps = _initial_step_size(
            module, tgt.energy_fn, state, metric, gen, event_dim, kwargs, module.TARGET_ACCEPT
        )
    else:
        eps = torch.as_tensor(step_size, dtype=tgt.dtype, device=tgt.device)
        if not bool((eps > 0).all()) or not bool(torch.isfinite(eps).all()):
            raise ValueError(f"step_size must be positive and finite; got {step_size!r}")
        if eps.dim() and eps.shape != chain_shape:
            raise ValueError(
                f"step_size must be a float or a tensor of shape {tuple(chain_shape)}; "
                f"got shape {tuple(eps.shape)}"
            )
    kwargs = _kernel_kwargs(cfg, host_gen, eps)
    if per_chain_step_size and adapt_step_size and eps.dim() == 0:
        eps = eps.expand(chain_shape).clone()
    warm_div = torch.zeros(chain_shape, dtype=torch.long, device=tgt.device)
    if warmup_steps:
        state, eps, warm_div = _warmup(
            module, tgt, state, eps, metric, gen, kwargs, cfg, warmup_steps,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            dense_mass=dense_mass,
        )  # fmt: skip
    out = _draw(module, tgt, state, eps, metric, gen, host_gen, cfg, num_samples, warm_div)
    return _gather(out) if shard else out


def _host_generator(gen):
    if gen is None or gen.device.type == "cpu":
        return gen
    host = torch.Generator()
    host.manual_seed(int(gen.initial_seed()))
    return host


def _warmup(
    module, tgt, state, eps, metric, gen, kwargs, cfg, warmup_steps, *,
    adapt_step_size, adapt_mass_matrix, dense_mass,
):  # fmt: skip
    event_dim = len(tgt.event_shape)
    if module is langevin:
        # ULA warms up with the Metropolis-adjusted move of the same proposal, so that a step
        # size that is still too large cannot throw the chains to infinity before adaptation.
        module = mala
    step = _stepper(module, tgt, metric, cfg)
    adapter = WarmupAdapter(
        warmup_steps, eps, module.TARGET_ACCEPT, metric,
        adapt_step_size=adapt_step_size,
        adapt_mass_matrix=adapt_mass_matrix,
        dense_mass=dense_mass,
    )  # fmt: skip
    diverged = torch.zeros(state.energy.shape, dtype=torch.long, device=state.energy.device)
    bar = tqdm(range(warmup_steps), desc="warmup", disable=not cfg.progress_bar, leave=False)
    for i in bar:
        state, info = step(tgt.energy_fn, state, eps, metric, gen, event_dim, **kwargs)
        diverged += info.diverging
        eps = adapter.update(i, state.position, info.acceptance_rate)
        if cfg.trajectory_length is not None and "num_steps" in kwargs:
            kwargs["num_steps"] = _leapfrog_steps(cfg, eps)
        if cfg.progress_bar and (i % 25 == 0 or i == warmup_steps - 1):
            _postfix(bar, info, diverged)
    return state, adapter.final_step_size(), diverged


def _stepper(module, tgt, metric, cfg):
    """The kernel's eager step, or its compiled twin when ``compile=True``."""
    if not cfg.compile:
        return module.step
    name = next(k for k, v in KERNELS.items() if v is module)
    return compiled_or_eager(name, module, tgt.energy_fn, metric, len(tgt.event_shape))


def _postfix(bar, info, diverged) -> None:
    bar.set_postfix(
        accept=f"{float(info.acceptance_rate.mean()):.2f}", divergences=int(diverged.sum())
    )


class _Recorder:
    """Per-draw tensors collected in short lists and flushed into preallocated storage.

    Appending costs no tensor operation in the sampling loop; every ``chunk`` draws one stack
    and one copy per quantity move them to ``store`` (e.g. the CPU), so the extra memory is
    bounded by ``chunk`` draws.
    """

    def __init__(self, names, shape, event_shape, dtype, store, chunk: int = 64) -> None:
        self.names, self.store, self.chunk, self.filled = names, store, chunk, 0
        self.out = {"x": torch.empty(shape + event_shape, dtype=dtype, device=store)}
        for name in names:
            self.out[name] = torch.empty(
                shape, dtype=torch.bool if name == "diverging" else dtype, device=store
            )
        self.pending: dict[str, list[Tensor]] = {k: [] for k in self.out}

    def append(self, row: dict[str, Tensor]) -> None:
        for name, value in row.items():
            self.pending[name].append(value)
        if len(self.pending["x"]) == self.chunk:
            self.flush()

    def flush(self) -> None:
        n = len(self.pending["x"])
        if not n:
            return
        for name, items in self.pending.items():
            block = torch.stack(items, 1).to(self.store, non_blocking=True)
            self.out[name][:, self.filled : self.filled + n] = block
            items.clear()
        self.filled += n


def _draw(module, tgt, state, eps, metric, gen, host_gen, cfg, num_samples, warm_div) -> Samples:
    event_dim = len(tgt.event_shape)
    kwargs = _kernel_kwargs(cfg, host_gen, eps)
    chain_shape = state.energy.shape
    store = cfg.sample_device or tgt.device
    names = ["potential", "acceptance_rate", "diverging"]
    if cfg.kernel == "hmc":
        names += list(_HMC_STATS)
    shape = chain_shape[:1] + (num_samples,) + chain_shape[1:]
    rec = _Recorder(names, shape, tgt.event_shape, tgt.dtype, store) if cfg.keep else None
    eps_full = eps.expand(chain_shape) if eps.dim() == 0 else eps
    diverged = torch.zeros(chain_shape, dtype=torch.long, device=tgt.device)
    bar = tqdm(range(num_samples), desc=f"sample ({cfg.kernel})", disable=not cfg.progress_bar)
    step = _stepper(module, tgt, metric, cfg)
    for j in bar:
        state, info = step(tgt.energy_fn, state, eps, metric, gen, event_dim, **kwargs)
        accept, any_div = info.acceptance_rate, info.diverging
        if cfg.thin > 1:
            for _ in range(cfg.thin - 1):
                state, info = step(tgt.energy_fn, state, eps, metric, gen, event_dim, **kwargs)
                accept = accept + info.acceptance_rate
                any_div = any_div | info.diverging
            accept = accept / cfg.thin
        if rec is not None:
            row = {"x": state.position, "potential": state.energy, "acceptance_rate": accept,
                   "diverging": any_div}  # fmt: skip
            if cfg.kernel == "hmc":
                row["energy"], row["n_steps"] = info.energy, info.n_steps
            rec.append(row)
        if cfg.progress_bar:
            diverged += any_div
            if j % 25 == 0 or j == num_samples - 1:
                _postfix(bar, info, diverged)
    stats: dict[str, Tensor] = {}
    draws = None
    if rec is not None:
        rec.flush()
        draws = rec.out.pop("x")
        stats["lp"] = -rec.out.pop("potential")
        stats["acceptance_rate"] = rec.out.pop("acceptance_rate")
        stats["step_size"] = eps_full.to(store).unsqueeze(1).expand(shape).clone()
        stats["diverging"] = rec.out.pop("diverging")
        stats.update(rec.out)
    if not cfg.keep:
        draws = state.position.to(store)
    checkpoint = {
        "kernel": cfg.kernel,
        "position": state.position,
        "energy": state.energy,
        "grad": state.grad,
        "step_size": eps,
        "metric": metric.state_dict(),
        "generator": None if gen is None else gen.get_state(),
        "host_generator": None if host_gen is None or host_gen is gen else host_gen.get_state(),
        "config": dict(cfg.__dict__),
        "event_shape": tuple(tgt.event_shape),
        "batch_shape": tuple(tgt.batch_shape),
    }
    return Samples(
        samples=draws,
        stats=stats,
        step_size=eps,
        inv_mass=metric.inv_mass,
        kernel=cfg.kernel,
        warmup_divergences=warm_div,
        _checkpoint=checkpoint,
        _target=tgt,
    )


def resume(target, state_dict: dict, num_samples: int, *, progress_bar: bool | None = None):
    """Continue a run from :meth:`Samples.state_dict` for ``num_samples`` more draws.

    ``target`` is the energy or distribution sampled originally. The adapted step size and
    mass matrix are reused and the generator state restored, so the continuation is bitwise
    identical to one longer run.
    """
    _check_positive_int("num_samples", num_samples)
    sd = state_dict
    if isinstance(target, _Target):
        energy_fn = target.energy_fn
    else:
        energy_fn = _resolve_target(target, sd["event_shape"], None).energy_fn
    position = sd["position"]
    tgt = _Target(
        energy_fn,
        torch.Size(sd["event_shape"]),
        torch.Size(sd["batch_shape"]),
        position.dtype,
        position.device,
    )
    cfg = _Config(**sd["config"])
    if progress_bar is not None:
        cfg.progress_bar = progress_bar
    module = KERNELS[sd["kernel"]]
    state = State(sd["position"], sd["energy"], sd["grad"])
    metric = Metric(tgt.event_shape)
    metric.load_state_dict(sd["metric"])
    gen, host_gen = None, None
    if sd["generator"] is not None:
        gen = torch.Generator(device=tgt.device)
        gen.set_state(sd["generator"])
        host_gen = gen
        if sd["host_generator"] is not None:
            host_gen = torch.Generator()
            host_gen.set_state(sd["host_generator"])
    warm = torch.zeros(state.energy.shape, dtype=torch.long, device=tgt.device)
    out = _draw(module, tgt, state, sd["step_size"], metric, gen, host_gen, cfg, num_samples, warm)
    return _gather(out) if sd.get("sharded") else out


def _all_gather_chains(t: Tensor) -> Tensor:
    parts = [torch.empty_like(t) for _ in range(rank_and_world()[1])]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts, 0)


def _gather(out: Samples) -> Samples:
    """Join every rank's chains into one Samples (chain order: rank 0's first)."""
    per_chain_eps = out.step_size.dim() > 0
    out.samples = _all_gather_chains(out.samples)
    out.stats = {k: _all_gather_chains(v) for k, v in out.stats.items()}
    out.warmup_divergences = _all_gather_chains(out.warmup_divergences)
    if per_chain_eps:
        out.step_size = _all_gather_chains(out.step_size)
    out._checkpoint["sharded"] = True  # this rank's own state; resume gathers again
    return out
