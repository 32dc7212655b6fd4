"""``VectorizedMCMC``: Pyro models on the many-chain engine, the twin of ``pyro.infer.MCMC``.

``pyro.infer.MCMC`` runs one chain per process (or one after another); here all chains of a
Pyro model advance together as one batch through :func:`~pyro_ebm.infer.sample`, with its
robust warmup (per-chain step sizes, restarts of lost chains, a dense metric from healthy
chains, ChEES for HMC) and its convergence check. Switching is one name::

    mcmc = VectorizedMCMC(HMC(model), num_samples=1000, num_chains=256)   # was MCMC(NUTS(model))
    mcmc.run(data)
    mcmc.get_samples()["theta"]   # constrained values by site name, shaped as Pyro gives them

The joint potential (:class:`~pyro_ebm.infer.model_potential.ModelPotential`) runs the model
once for all chains under an outer plate; a model that does not vectorize is caught at set-up
and evaluated by ``torch.func.vmap`` or chain by chain, with a
:class:`~pyro_ebm.infer.vectorize.VectorizationWarning`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import torch
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.mcmc.util import diagnostics as pyro_diagnostics
from pyro.infer.mcmc.util import print_summary, select_samples
from torch import Tensor

from .._validation import check_int
from .convergence import check_convergence, warn_if_unconverged
from .kernels import Kernel
from .model_potential import CHAIN_PLATE, ModelPotential
from .run import sample
from .samples import Samples
from .vectorize import JitPotential, vectorized_potential

__all__ = ["VectorizedMCMC"]

_INIT_ATTEMPTS = 100  # as Pyro's initialize_model: redraws of a chain with a non-finite potential
_CHUNK = 65536  # points per pass when recording deterministic sites


class _DictPotential:
    """A user's ``potential_fn`` of ``{site: unconstrained tensor}`` over flat chains."""

    def __init__(self, potential_fn: Callable, shapes: dict[str, torch.Size]) -> None:
        self.potential_fn = potential_fn
        self.names = sorted(shapes)  # Pyro's order for flattening
        self.shapes = [torch.Size(shapes[n]) for n in self.names]
        self.sizes = [s.numel() for s in self.shapes]
        self.dim = sum(self.sizes)

    def unpack(self, flat: Tensor) -> dict[str, Tensor]:
        parts = torch.split(flat, self.sizes, dim=-1)
        lead = flat.shape[:-1]
        return {n: p.reshape(lead + s) for n, p, s in zip(self.names, parts, self.shapes,
                                                           strict=True)}  # fmt: skip

    def pack(self, params: dict[str, Tensor]) -> Tensor:
        lead = params[self.names[0]].shape[: params[self.names[0]].dim() - len(self.shapes[0])]
        return torch.cat([params[n].reshape(lead + (-1,)) for n in self.names], -1)

    def __call__(self, flat: Tensor) -> Tensor:
        return self.potential_fn(self.unpack(flat)).reshape(flat.shape[:1])

    def single(self, flat: Tensor) -> Tensor:
        return self.potential_fn(self.unpack(flat)).reshape(())


class _Quiet:
    """The hot-path potential: Pyro's argument validation off, so that a proposal outside a
    distribution's support gives a non-finite energy (a rejected, counted divergence) rather
    than an exception in the middle of sampling."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, flat: Tensor) -> Tensor:
        with pyro.validation_enabled(False):
            return self.fn(flat)


class VectorizedMCMC:
    """Many chains of a Pyro model in one batch, with the interface of ``pyro.infer.MCMC``.

    Parameters
    ----------
    kernel:
        A pyro-ebm kernel built on a model or a potential: ``HMC(model)``, ``MALA(model)``,
        ``RandomWalkMH(model)``, ``ULA(model)``, or ``HMC(potential_fn=...)`` (then
        ``initial_params`` is required). Its settings (step size, ``target_accept_prob``, mass
        matrix, ``transforms``, ``max_plate_nesting``, ``init_strategy``) apply.
    num_samples:
        Draws kept per chain.
    warmup_steps:
        Adaptation steps, discarded (default: the engine's, ``max(num_samples, 500)``).
    num_chains:
        Chains run together as one batch (default 64: enough for a well-conditioned dense
        metric and for nested R-hat).
    initial_params:
        ``{site: tensor}`` in the unconstrained space, with a leading dimension of size
        ``num_chains`` (as ``pyro.infer.MCMC``), or without it to start every chain there.
        Default: the kernel's ``init_strategy`` (``init_to_uniform``), drawn per chain.
    disable_progbar:
        Turn the progress bars off.
    thin, seed, restart_chains, check_convergence, sample_device, compile:
        As in :func:`~pyro_ebm.infer.sample`. The chains run on the device and in the dtype
        of the model's own tensors (its data and parameters).
    jit_compile:
        Trace the vectorized potential with ``torch.jit.trace`` (as Pyro's ``jit_compile``):
        removes the Python overhead of Pyro's effect handlers, which dominates for small
        models with few chains; control flow and subsampling in the model are frozen, and
        each trace is checked against the eager potential
        (:class:`~pyro_ebm.infer.vectorize.JitPotential`).

    Attributes
    ----------
    potential:
        The joint potential of the last :meth:`run` (a
        :class:`~pyro_ebm.infer.model_potential.ModelPotential` for a model).
    mode:
        How chains were evaluated: ``"vectorized"``, ``"vmap"`` or ``"loop"``.
    result:
        The engine's :class:`~pyro_ebm.infer.Samples` (flat unconstrained draws and stats).
    convergence:
        The R-hat/ESS check of the draws.

    Examples
    --------
    >>> import torch, pyro, pyro.distributions as dist
    >>> from pyro_ebm.infer import MALA, VectorizedMCMC
    >>> def model(y):
    ...     loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    ...     scale = pyro.sample("scale", dist.HalfNormal(5.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(loc, scale), obs=y)
    >>> mcmc = VectorizedMCMC(MALA(model), num_samples=200, num_chains=16, seed=0,
    ...                       disable_progbar=True, check_convergence=False)
    >>> mcmc.run(torch.randn(20) + 3.0)
    >>> {k: tuple(v.shape) for k, v in mcmc.get_samples().items()}
    {'loc': (3200,), 'scale': (3200,)}
    """

    def __init__(
        self,
        kernel: Kernel,
        num_samples: int,
        warmup_steps: int | None = None,
        num_chains: int = 64,
        initial_params: dict[str, Tensor] | None = None,
        disable_progbar: bool = False,
        *,
        thin: int = 1,
        seed: int | torch.Generator | None = None,
        restart_chains: bool = True,
        check_convergence: bool = True,
        sample_device: torch.device | str | None = None,
        compile: bool = False,
        jit_compile: bool = False,
    ) -> None:
        if not isinstance(kernel, Kernel):
            raise ValueError(
                "kernel must be a pyro-ebm kernel object built on a model, e.g. HMC(model) or "
                f"MALA(model) from pyro_ebm.infer; got {type(kernel).__name__} (Pyro's own "
                "kernels run in pyro.infer.MCMC)"
            )
        if kernel.model is None and kernel.potential_fn is None:
            raise ValueError(
                f"{type(kernel).__name__}() has neither `model=` nor `potential_fn=`: pass "
                f"{type(kernel).__name__}(model) (a bare kernel configures pyro_ebm.infer.sample)"
            )
        self.kernel = kernel
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.warmup_steps = None if warmup_steps is None else check_int(
            "warmup_steps", warmup_steps, 0)  # fmt: skip
        self.num_chains = check_int("num_chains", num_chains, 1)
        self.initial_params = initial_params
        self.disable_progbar = bool(disable_progbar)
        self.thin = check_int("thin", thin, 1)
        self.seed = seed
        self.restart_chains = bool(restart_chains)
        self.check_convergence = bool(check_convergence)
        self.sample_device = sample_device
        self.compile = bool(compile)
        self.jit_compile = bool(jit_compile)
        self.potential = None
        self.mode: str | None = None
        self.result: Samples | None = None
        self.convergence = None
        self.transforms: dict = {}
        self._samples: dict[str, Tensor] | None = None
        self._args: tuple = ()
        self._kwargs: dict = {}

    # -- set-up ------------------------------------------------------------------------------
    def _build_potential(self, args: tuple, kwargs: dict):
        kern = self.kernel
        if kern.model is not None:
            pot = ModelPotential(kern.model, args, kwargs, transforms=kern.transforms,
                                 max_plate_nesting=kern._max_plate_nesting)  # fmt: skip
            self.transforms = dict(pot.transforms)
            return pot
        params = self.initial_params or kern.initial_params
        if not params:
            raise ValueError(
                "initial_params are required with potential_fn: pass VectorizedMCMC(kernel, "
                "..., initial_params={name: tensor of shape (num_chains, *site_shape)})"
            )
        lead = 1 if self.num_chains > 1 else 0
        shapes = {k: torch.as_tensor(v).shape[lead:] for k, v in params.items()}
        return _DictPotential(kern.potential_fn, shapes)

    def _given_positions(self, pot) -> Tensor | None:
        params = self.initial_params or self.kernel.initial_params
        if not params:
            return None
        names = [s.name for s in pot.sites] if isinstance(pot, ModelPotential) else pot.names
        missing = sorted(set(names) - set(params))
        if missing:
            raise ValueError(f"initial_params lacks the latent site(s) {missing}")
        values = {k: torch.as_tensor(params[k]) for k in names}
        flat = pot.pack(values)
        flat = flat.reshape(-1, flat.shape[-1]) if flat.dim() > 1 else flat.unsqueeze(0)
        if flat.shape[0] == 1:
            flat = flat.expand(self.num_chains, -1)
        if flat.shape[0] != self.num_chains:
            raise ValueError(
                f"initial_params must have a leading dimension of size num_chains "
                f"({self.num_chains}); got {flat.shape[0]}"
            )
        return flat.clone()

    def _one_chain_position(self, pot: ModelPotential) -> Tensor:
        """The kernel's init strategy for one chain (no chain plate: works for any model)."""
        latent = {s.name for s in pot.sites}
        with pyro.poutine.block():
            trace = pyro.poutine.trace(
                InitMessenger(self.kernel._init_strategy)(pot.model)
            ).get_trace(*pot.args, **pot.kwargs)
        values = {s.name: s.transform.inv(trace.nodes[s.name]["value"].detach())
                  for s in pot.sites if s.name in latent}  # fmt: skip
        return pot.pack(values)

    def _strategy_positions(self, pot: ModelPotential) -> Tensor:
        """The kernel's init strategy for every chain: one run of the model under the chain
        plate when it vectorizes, else one run per chain."""
        if self.mode != "vectorized":
            return torch.stack([self._one_chain_position(pot) for _ in range(self.num_chains)])
        strategy = self.kernel._init_strategy
        num, depth = self.num_chains, pot.max_plate_nesting + 1
        chain_shape = (num,) + (1,) * (depth - 1)
        latent = {s.name for s in pot.sites}

        def per_chain(site: dict) -> Tensor:
            if site["name"] not in latent:
                return strategy(site)
            fn = site["fn"]
            batch = torch.broadcast_shapes(fn.batch_shape, chain_shape)
            return strategy({**site, "fn": fn.expand(batch)})

        with pyro.poutine.block(), pyro.plate(CHAIN_PLATE, num, dim=-depth):
            trace = pyro.poutine.trace(InitMessenger(per_chain)(pot.model)).get_trace(
                *pot.args, **pot.kwargs
            )
        values = {}
        for s in pot.sites:
            value = trace.nodes[s.name]["value"].detach()
            lead = value.shape[: value.dim() - len(s.shape)]
            value = value.reshape((-1,) + s.shape) if len(lead) else value.unsqueeze(0)
            values[s.name] = s.transform.inv(value.expand((num,) + s.shape))
        return pot.pack(values)

    def _initial_positions(self, pot: ModelPotential, fn) -> Tensor:
        """The init strategy per chain, redrawn where a chain's potential is not finite."""
        position = self._strategy_positions(pot)
        for _ in range(_INIT_ATTEMPTS):
            with torch.no_grad():
                bad = ~torch.isfinite(fn(position))
            if not bool(bad.any()):
                return position
            position[bad] = self._strategy_positions(pot)[bad]
        raise ValueError(
            f"no finite potential at the initial points of {int(bad.sum())} chain(s) after "
            f"{_INIT_ATTEMPTS} draws of the init strategy: check the model's support, or pass "
            "initial_params"
        )

    # -- running -----------------------------------------------------------------------------
    def run(self, *args, **kwargs) -> None:
        """Run the chains on the model called with ``(*args, **kwargs)`` (its data)."""
        self._args, self._kwargs = args, kwargs
        pot = self._build_potential(args, kwargs)
        given = self._given_positions(pot)
        probe = given[0] if given is not None else self._one_chain_position(pot)
        what = "the model" if isinstance(pot, ModelPotential) else "potential_fn"
        fn, self.mode = vectorized_potential(pot, pot.single, probe, what)
        fn = _Quiet(fn)
        if self.jit_compile and self.mode == "vectorized":
            fn = JitPotential(fn)
        self.potential = pot
        init = given if given is not None else self._initial_positions(pot, fn)
        self.result = sample(
            fn,
            self.num_samples,
            kernel=self.kernel,
            num_chains=self.num_chains,
            warmup_steps=self.warmup_steps,
            init=init,
            thin=self.thin,
            seed=self.seed,
            progress_bar=not self.disable_progbar,
            event_shape=(pot.dim,),
            restart_chains=self.restart_chains,
            check_convergence=False,
            sample_device=self.sample_device,
            compile=self.compile,
        )
        self._samples = self._constrained(pot, self.result.samples)
        if self.check_convergence:
            acceptance = self.result.stats.get("acceptance_rate")
            self.convergence = check_convergence(
                self.result.samples, self.result.stats["lp"], 1, labels=self._labels(pot),
                acceptance=None if self.result.kernel == "ula" else acceptance,
            )  # fmt: skip
            warn_if_unconverged(
                self.convergence, self.result.kernel,
                inspect="VectorizedMCMC.summary() and VectorizedMCMC.convergence",
            )  # fmt: skip

    @staticmethod
    def _labels(pot) -> list[str]:
        """A name per flat unconstrained coordinate: ``"site[i, j]"`` (the site for scalars)."""
        if isinstance(pot, ModelPotential):
            layout = [(s.name, tuple(s.unconstrained_shape)) for s in pot.sites]
        else:
            layout = [(n, tuple(shape)) for n, shape in zip(pot.names, pot.shapes, strict=True)]
        labels = []
        for name, shape in layout:
            if not shape:
                labels.append(name)
                continue
            for flat in range(math.prod(shape)):
                index = []
                for size in reversed(shape):
                    flat, i = divmod(flat, size)
                    index.append(i)
                labels.append(f"{name}[{', '.join(map(str, reversed(index)))}]")
        return labels

    def _constrained(self, pot, draws: Tensor) -> dict[str, Tensor]:
        """``(C, N, D)`` unconstrained draws -> constrained values (and deterministic sites)."""
        chains, n = draws.shape[:2]
        if not isinstance(pot, ModelPotential):
            return {k: v.detach() for k, v in pot.unpack(draws).items()}
        with torch.no_grad():
            out = {k: v.detach() for k, v in pot.constrain(draws).items()}
            if pot.deterministic:
                out.update(self._deterministic(pot, draws.reshape(chains * n, -1), chains, n))
        return out

    def _deterministic(self, pot: ModelPotential, flat: Tensor, chains: int, n: int) -> dict:
        parts: dict[str, list[Tensor]] = {k: [] for k in pot.deterministic}
        for start in range(0, flat.shape[0], _CHUNK):
            block = flat[start : start + _CHUNK]
            if self.mode == "vectorized":
                with pyro.validation_enabled(False):
                    values = pot.deterministic_values(block)
            else:
                with pyro.validation_enabled(False):
                    values = pot.deterministic_one_by_one(block)
            for k, v in values.items():
                parts[k].append(v)
        return {k: torch.cat(v).reshape((chains, n) + pot.deterministic[k])
                for k, v in parts.items()}  # fmt: skip

    # -- results, as pyro.infer.MCMC ---------------------------------------------------------
    def _require_run(self) -> dict[str, Tensor]:
        if self._samples is None:
            raise ValueError("no samples yet: call VectorizedMCMC.run(*model_args) first")
        return self._samples

    def get_samples(
        self, num_samples: int | None = None, group_by_chain: bool = False
    ) -> dict[str, Tensor]:
        """Constrained values by site name (latent and ``pyro.deterministic`` sites).

        Shapes as :meth:`pyro.infer.MCMC.get_samples`: ``(num_chains * num_samples, *shape)``,
        or ``(num_chains, num_samples, *shape)`` with ``group_by_chain=True``; ``num_samples``
        draws a random subset with replacement, as Pyro does.
        """
        return select_samples(self._require_run(), num_samples, group_by_chain)

    def diagnostics(self) -> dict:
        """ESS and split R-hat per site (Pyro's ``n_eff``/``r_hat``), plus the divergences,
        acceptance rate and warmup restarts of every chain, keyed ``"chain i"`` as Pyro."""
        samples = self._require_run()
        diag = pyro_diagnostics(samples)
        stats = self.result.stats
        div = stats["diverging"].reshape(self.num_chains, -1)
        acc = stats["acceptance_rate"].reshape(self.num_chains, -1)
        restarts = self.result.warmup_restarts
        diag["divergences"] = {f"chain {i}": torch.nonzero(div[i]).reshape(-1).tolist()
                               for i in range(self.num_chains)}  # fmt: skip
        diag["acceptance rate"] = {f"chain {i}": float(acc[i].mean())
                                   for i in range(self.num_chains)}  # fmt: skip
        if restarts is not None:
            diag["warmup restarts"] = {f"chain {i}": int(restarts.reshape(self.num_chains, -1)[i]
                                       .sum()) for i in range(self.num_chains)}  # fmt: skip
        return diag

    def summary(self, prob: float = 0.9) -> None:
        """Print Pyro's summary table (mean, sd, median, credible interval, n_eff, r_hat) and
        the number of divergences."""
        print_summary(self._require_run(), prob=prob)
        print(f"Number of divergences: {int(self.result.stats['diverging'].sum())}")

    def to_arviz(self, **kwargs):
        """ArviZ data of the run (see :func:`pyro_ebm.diagnostics.to_arviz`)."""
        from ..diagnostics import to_arviz  # the diagnostics layer owns ArviZ

        return to_arviz(self, **kwargs)
