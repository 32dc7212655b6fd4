"""The vectorized many-chain runner: :func:`sample` drives a kernel object and returns Samples.

Thousands of independent chains advance together as one batch (the leftmost dimension), each
with its own Metropolis-Hastings decision and, after warmup, its own step size. Warmup
(:mod:`pyro_ebm.infer.warmup`) survives starts far outside the posterior; the draws are then
checked for convergence (:mod:`pyro_ebm.infer.convergence`). A seeded run is bitwise
reproducible, and :meth:`Samples.resume` continues a run exactly where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._targets import resolve_energy
from .._validation import check_int
from ..parallel import rank_and_world
from ..progress import progress
from .base import State, module_dtype_device
from .compiled import compiled_or_eager
from .convergence import check_convergence, warn_if_unconverged
from .kernels import KERNELS, Kernel, as_kernel
from .metric import Metric
from .samples import Samples, per_draw
from .warmup import probe_acceptance, run_warmup, search_step_size

__all__ = ["KERNELS", "Samples", "resume", "sample"]


@dataclass
class _Target:
    energy_fn: Callable[[Tensor], Tensor]
    event_shape: torch.Size
    batch_shape: torch.Size
    dtype: torch.dtype
    device: torch.device


@dataclass
class _Config:
    thin: int
    sample_device: torch.device | None
    keep: bool
    progress_bar: bool
    compile: bool = False
    check_convergence: bool = True


def _resolve_target(target, event_shape, init) -> _Target:
    """Accept an EnergyDistribution-like object (``energy``, ``event_shape``) or an energy.

    The one rule of :func:`pyro_ebm._targets.resolve_energy`, shared with evaluation and
    plotting; a distribution's ``batch_shape`` is sampled too.
    """
    try:
        energy_fn, own_shape = resolve_energy(target)
    except ValueError:
        raise ValueError(
            f"target must be an energy (a callable or nn.Module) or an EnergyDistribution; got "
            f"{type(target).__name__}"
        ) from None
    batch_shape = torch.Size()
    if energy_fn is not target:  # a distribution (or a module wrapping an energy)
        batch_shape = torch.Size(getattr(target, "batch_shape", ()))
    if event_shape is None:
        event_shape = own_shape
    found = module_dtype_device(energy_fn)
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


def _make_generator(seed, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _host_generator(gen):
    if gen is None or gen.device.type == "cpu":
        return gen
    host = torch.Generator()
    host.manual_seed(int(gen.initial_seed()))
    return host


def sample(
    target,
    num_samples: int,
    *,
    kernel: str | Kernel = "mala",
    num_chains: int = 4,
    warmup_steps: int | None = None,
    init: Tensor | None = None,
    thin: int = 1,
    seed: int | torch.Generator | None = None,
    progress_bar: bool = True,
    event_shape: tuple[int, ...] | None = None,
    keep: bool = True,
    restart_chains: bool = True,
    check_convergence: bool = True,
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
    kernel:
        A kernel object (:class:`~pyro_ebm.infer.MALA`, :class:`~pyro_ebm.infer.HMC`,
        :class:`~pyro_ebm.infer.RandomWalkMH`, :class:`~pyro_ebm.infer.ULA`) carrying its own
        settings (step size, target acceptance, mass matrix, trajectory), or one of the aliases
        ``"mala"``, ``"hmc"``, ``"rwmh"``, ``"ula"`` for the defaults.
    num_chains:
        Independent chains run as one batch.
    warmup_steps:
        Adaptation steps, discarded (default ``max(num_samples, 500)``); see
        :mod:`pyro_ebm.infer.warmup` for what happens in them.
    init:
        Starting points of shape ``(num_chains, *batch_shape, *event_shape)``; standard normal
        when ``None``.
    thin:
        Keep every ``thin``-th transition.
    seed:
        An int or a ``torch.Generator``: a seeded run is bitwise reproducible. ``None`` uses
        torch's global generator (so ``pyro.set_rng_seed`` applies).
    progress_bar:
        Show a tqdm bar with the acceptance rate, divergences and warmup restarts.
    event_shape:
        Needed when neither the target nor ``init`` tells it.
    keep:
        ``False`` keeps only the last draw of each chain (for training loops): ``samples`` has
        ``num_samples`` 1 and no convergence check runs.
    restart_chains:
        Restart lost or stuck chains from healthy ones during warmup (default on).
    check_convergence:
        After sampling, compute R-hat and ESS and warn (:class:`ConvergenceWarning`) when the
        chains have not mixed.
    sample_device:
        Where kept draws are stored (e.g. ``"cpu"`` while chains run on a GPU).
    device, dtype:
        Where and in which precision the chains run (default: from ``init`` or the energy).
    shard_chains:
        Under ``torch.distributed`` (e.g. ``torchrun``), each rank runs ``num_chains / world``
        of the chains (seed ``seed + rank``, its slice of ``init`` and of a per-chain step
        size) and the draws of all ranks are gathered, so every rank returns all chains.
    compile:
        Run each transition as one fused ``torch.compile``-d function (MALA, ULA, RWMH): the
        same draws up to float rounding, faster once compiled; falls back to the eager step
        with a warning where compilation is unavailable.

    Returns
    -------
    Samples

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.infer import MALA, sample
    >>> energy = lambda x: 0.5 * x.pow(2).sum(-1)
    >>> out = sample(energy, 200, num_chains=8, event_shape=(2,), seed=0, progress_bar=False)
    >>> out.samples.shape
    torch.Size([8, 200, 2])
    >>> sorted(out.stats)
    ['acceptance_rate', 'diverging', 'lp', 'step_size']
    >>> out = sample(energy, 50, kernel=MALA(step_size=0.5, adapt_step_size=False),
    ...              num_chains=4, event_shape=(2,), seed=0, progress_bar=False,
    ...              check_convergence=False)
    >>> float(out.step_size)
    0.5
    """
    kern = as_kernel(kernel)
    num_samples = check_int("num_samples", num_samples, 1)
    num_chains = check_int("num_chains", num_chains, 1)
    thin = check_int("thin", thin, 1)
    if warmup_steps is None:
        warmup_steps = max(num_samples, 500)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
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
    position = _initial_positions(init, chain_shape, tgt, seed)
    eps = _given_step_size(kern, chain_shape, tgt)
    if shard:  # this rank's chains, its slice of per-chain settings and a seed of its own
        local = num_chains // world
        position = position[rank * local : (rank + 1) * local]
        if eps is not None and eps.dim():
            eps = eps[rank * local : (rank + 1) * local]
        chain_shape = torch.Size((local,)) + tgt.batch_shape
        if isinstance(seed, int):
            seed = seed + rank
    gen = _make_generator(seed, tgt.device)
    cfg = _Config(
        thin=thin,
        sample_device=None if sample_device is None else torch.device(sample_device),
        keep=bool(keep),
        progress_bar=bool(progress_bar),
        compile=bool(compile),
        check_convergence=bool(check_convergence),
    )
    event_dim = len(tgt.event_shape)
    state = kern.init(tgt.energy_fn, position, event_dim)
    metric = Metric(tgt.event_shape, None if kern.inv_mass is None else kern.inv_mass.to(position))
    if eps is None:
        eps = _search_initial_step_size(kern, tgt, state, metric, gen)
    if eps.dim() == 0 and kern.adapt_step_size and warmup_steps:
        eps = eps.expand(chain_shape).clone()
    host_gen = _host_generator(gen)
    restarts = torch.zeros(chain_shape, dtype=torch.long, device=tgt.device)
    warm_div = torch.zeros_like(restarts)
    length = kern.trajectory
    jitter = kern.resolved_jitter(False)
    if warmup_steps:
        bar = progress(total=warmup_steps, desc="warmup", enabled=cfg.progress_bar)
        result = run_warmup(
            kern, tgt.energy_fn, state, eps, metric, gen, event_dim, warmup_steps,
            restart=restart_chains, progress=_progress(bar, warmup_steps),
            step=_stepper(kern.warmup_kernel, tgt, cfg),
        )  # fmt: skip
        bar.close()
        state, eps, restarts, warm_div = (
            result.state, result.step_size, result.restarts, result.divergences,
        )  # fmt: skip
        if result.trajectory_length is not None:
            length = result.trajectory_length
        jitter = result.step_size_jitter
    out = _draw(kern, tgt, state, eps, metric, gen, host_gen, cfg, num_samples, length, jitter)
    out.warmup_divergences, out.warmup_restarts = warm_div, restarts
    out._checkpoint["warmup_done"] = True
    if shard:
        out = _gather(out)
    _check(out, cfg, event_dim)
    return out


def _initial_positions(init, chain_shape: torch.Size, tgt: _Target, seed) -> Tensor:
    if init is None:
        return torch.randn(
            chain_shape + tgt.event_shape,
            dtype=tgt.dtype,
            device=tgt.device,
            generator=_make_generator(seed, tgt.device),
        )
    position = torch.as_tensor(init).to(dtype=tgt.dtype, device=tgt.device)
    if position.shape != chain_shape + tgt.event_shape:
        raise ValueError(
            f"init must have shape (num_chains, *batch_shape, *event_shape) = "
            f"{tuple(chain_shape + tgt.event_shape)}; got {tuple(position.shape)}"
        )
    return position


def _given_step_size(kern: Kernel, chain_shape: torch.Size, tgt: _Target) -> Tensor | None:
    if kern.step_size is None:
        return None
    eps = torch.as_tensor(kern.step_size, dtype=tgt.dtype, device=tgt.device)
    if eps.dim() and eps.shape != chain_shape:
        raise ValueError(
            f"step_size must be a float or a tensor of shape (num_chains, *batch_shape) = "
            f"{tuple(chain_shape)}; got shape {tuple(eps.shape)}"
        )
    return eps.clone()


def _search_initial_step_size(kern: Kernel, tgt: _Target, state, metric, gen) -> Tensor:
    """A shared start where the median chain accepts at the target (proposals not taken)."""
    warm = kern.warmup_kernel
    accept_at = probe_acceptance(warm, tgt.energy_fn, state, metric, gen, len(tgt.event_shape))
    start = torch.ones((), dtype=state.energy.dtype, device=state.energy.device)
    return search_step_size(accept_at, warm.target_accept_prob, start)


def _stepper(kern: Kernel, tgt: _Target, cfg: _Config):
    """The kernel's eager step, or its compiled twin when ``compile=True``."""
    if not cfg.compile:
        return kern.step
    return compiled_or_eager(kern, tgt.energy_fn, tgt.event_shape)


def _progress(bar, total: int):
    def update(i, info, diverged, restarts) -> None:
        bar.update()
        if bar.disable or not (i % 25 == 0 or i == total - 1):
            return
        bar.set_postfix(
            accept=f"{float(info.acceptance_rate.nanmean()):.2f}",
            divergences=int(diverged.sum()),
            restarts=int(restarts.sum()),
        )

    return update


class _Recorder:
    """Per-draw tensors copied into a preallocated buffer of ``chunk`` draws and flushed into
    the preallocated storage.

    Each draw costs one small copy per quantity into the buffer (on the sampling device, one
    contiguous row per draw); every ``chunk`` draws one copy per quantity moves the block to
    ``store`` (e.g. the CPU), so the extra memory is bounded by ``chunk`` draws. Keeping the
    draws' own tensors alive until a flush instead (an earlier design, no operation per draw)
    made every transition slower by about 390 us on a 2-d MLP with 1024 chains (one thread,
    1.65 ms per step): memory the allocator could no longer reuse.
    """

    def __init__(self, names, shape, event_shape, dtype, store, device, chunk: int = 64) -> None:
        self.store, self.filled, self.pending = store, 0, 0
        chain_shape = shape[:1] + shape[2:]
        self.chunk = min(chunk, shape[1])
        self.out = {"x": torch.empty(shape + event_shape, dtype=dtype, device=store)}
        self.buffer = {
            "x": torch.empty((self.chunk,) + chain_shape + event_shape, dtype=dtype, device=device)
        }
        for name in names:
            kind = torch.bool if name == "diverging" else dtype
            self.out[name] = torch.empty(shape, dtype=kind, device=store)
            self.buffer[name] = torch.empty((self.chunk,) + chain_shape, dtype=kind, device=device)
        # each buffer's rows as views made once: indexing a row per draw is one more dispatch
        self.rows = {name: block.unbind(0) for name, block in self.buffer.items()}

    def append(self, row: dict[str, Tensor]) -> None:
        for name, value in row.items():
            self.rows[name][self.pending].copy_(value)
        self.pending += 1
        if self.pending == self.chunk:
            self.flush()

    def flush(self) -> None:
        n = self.pending
        if not n:
            return
        for name, block in self.buffer.items():
            self.out[name][:, self.filled : self.filled + n] = block[:n].movedim(0, 1)
        self.filled += n
        self.pending = 0


def _tuning(kern: Kernel, length: float | None, median_eps: float, host_gen, jitter: float) -> dict:
    """Settings of one sampling transition; a trajectory's time is jittered in (0, T]
    (``jitter``: the step-size jitter warmup left in force; ``median_eps``: the median of the
    chains' step sizes, fixed while sampling)."""
    if length is None:
        return kern.tuning(None, math.nan, jitter=jitter)
    fraction = 1.0 - float(torch.rand((), generator=host_gen))  # in (0, 1]
    return kern.tuning(length, median_eps, fraction=fraction, jitter=jitter)


def _draw(
    kern, tgt, state, eps, metric, gen, host_gen, cfg, num_samples, length, jitter=0.0
) -> Samples:
    event_dim = len(tgt.event_shape)
    chain_shape = state.energy.shape
    store = cfg.sample_device or tgt.device
    names = ["potential", "acceptance_rate", "diverging"]
    names += list(kern.extra_stats)
    kept = num_samples if cfg.keep else 1
    shape = chain_shape[:1] + (kept,) + chain_shape[1:]
    rec = _Recorder(names, shape, tgt.event_shape, tgt.dtype, store, state.position.device)
    diverged = torch.zeros(chain_shape, dtype=torch.long, device=tgt.device)
    bar = progress(range(num_samples), desc=f"sample ({kern.name})", enabled=cfg.progress_bar)
    step = _stepper(kern, tgt, cfg)
    zero = torch.zeros(chain_shape, dtype=torch.long, device=tgt.device)
    update = _progress(bar, num_samples)
    median_eps = float(eps.median()) if length is not None else math.nan
    for j in bar:
        tuning = _tuning(kern, length, median_eps, host_gen, jitter)
        state, info = step(tgt.energy_fn, state, eps, metric, gen, event_dim, **tuning)
        accept, any_div = info.acceptance_rate, info.diverging
        if cfg.thin > 1:  # a kept draw reports the mean acceptance of its thinned transitions
            for _ in range(cfg.thin - 1):
                tuning = _tuning(kern, length, median_eps, host_gen, jitter)
                state, info = step(tgt.energy_fn, state, eps, metric, gen, event_dim, **tuning)
                accept = accept + info.acceptance_rate
                any_div = any_div | info.diverging
            accept = accept / cfg.thin
        if cfg.keep or j == num_samples - 1:
            row = {"x": state.position, "potential": state.energy, "acceptance_rate": accept,
                   "diverging": any_div}  # fmt: skip
            row.update({name: getattr(info, name) for name in kern.extra_stats})
            rec.append(row)
        if cfg.progress_bar:
            diverged += any_div
            update(j, info, diverged, zero)
    rec.flush()
    draws = rec.out.pop("x")
    stats: dict[str, Tensor] = {"lp": -rec.out.pop("potential")}
    stats["acceptance_rate"] = rec.out.pop("acceptance_rate")
    eps_full = eps.expand(chain_shape) if eps.dim() == 0 else eps
    stats["step_size"] = per_draw(eps_full.to(store), shape)
    stats["diverging"] = rec.out.pop("diverging")
    stats.update(rec.out)
    checkpoint = {
        "kernel": kern,
        "position": state.position,
        "energy": state.energy,
        "grad": state.grad,
        "step_size": eps,
        "trajectory_length": length,
        "step_size_jitter": jitter,
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
        kernel=kern.name,
        warmup_divergences=torch.zeros(chain_shape, dtype=torch.long, device=tgt.device),
        trajectory_length=length,
        step_size_jitter=jitter,
        _checkpoint=checkpoint,
        _target=tgt,
    )


def _check(out: Samples, cfg: _Config, event_dim: int) -> None:
    if not (cfg.keep and cfg.check_convergence):
        return
    acceptance = None if out.kernel == "ula" else out.stats.get("acceptance_rate")
    out.convergence = check_convergence(
        out.samples, out.stats["lp"], event_dim, acceptance=acceptance
    )
    warn_if_unconverged(out.convergence, out.kernel)


def resume(target, state_dict: dict, num_samples: int, *, progress_bar: bool | None = None):
    """Continue a run from :meth:`Samples.state_dict` for ``num_samples`` more draws.

    ``target`` is the energy or distribution sampled originally. The adapted step sizes,
    trajectory length and mass matrix are reused and the generator state restored, so the
    continuation is bitwise identical to one longer run.
    """
    num_samples = check_int("num_samples", num_samples, 1)
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
    kern = as_kernel(sd["kernel"])
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
    out = _draw(kern, tgt, state, sd["step_size"], metric, gen, host_gen, cfg, num_samples,
                sd["trajectory_length"], sd.get("step_size_jitter", 0.0))  # fmt: skip
    if sd.get("sharded"):
        out = _gather(out)
    _check(out, cfg, len(tgt.event_shape))
    return out


def _all_gather_chains(t: Tensor) -> Tensor:
    parts = [torch.empty_like(t) for _ in range(rank_and_world()[1])]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts, 0)


def _gather(out: Samples) -> Samples:
    """Join every rank's chains into one Samples (chain order: rank 0's first)."""
    out.samples = _all_gather_chains(out.samples)
    out.stats = {k: _all_gather_chains(v) for k, v in out.stats.items()}
    out.warmup_divergences = _all_gather_chains(out.warmup_divergences)
    if out.warmup_restarts is not None:
        out.warmup_restarts = _all_gather_chains(out.warmup_restarts)
    if out.step_size.dim() > 0:
        out.step_size = _all_gather_chains(out.step_size)
    out._checkpoint["sharded"] = True  # this rank's own state; resume gathers again
    return out
