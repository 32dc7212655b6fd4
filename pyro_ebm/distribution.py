"""EnergyDistribution: an energy-defined density as a Pyro distribution.

Sign convention (used throughout pyro-ebm): the *energy* is the negative unnormalized
log-density, :math:`p(x) = \\exp(-E(x)) / Z` -- Pyro's "potential energy". ('Energy Based
Models', June 2024, writes :math:`p = \\exp(E)/Z`; only the sign differs.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

__all__ = ["EnergyDistribution"]

_POOL_OPTIONS = ("num_transitions", "pool_size", "fresh")


class EnergyDistribution(TorchDistribution):
    """A density known up to its normalizer, :math:`p(x) = \\exp(-E(x) - \\log Z)`.

    ``log_prob(x)`` returns :math:`-E(x) - \\log Z`, with :math:`\\log Z = 0` while the
    normalizer is unknown (:attr:`is_normalized` is then ``False``), so it can serve as an
    (unnormalized) prior or factor in any Pyro model and as a target of Pyro's MCMC kernels.
    ``sample()`` returns approximate draws from pyro-ebm's vectorized MCMC engine.

    Parameters
    ----------
    energy:
        An ``nn.Module`` or callable mapping a tensor of shape ``(*sample, *batch_shape,
        *event_shape)`` to shape ``(*sample, *batch_shape)``.
    event_shape:
        Shape of one draw, e.g. ``(2,)`` or ``(1, 8, 8)``.
    log_Z:
        The log normalizer if known: a float, a tensor broadcastable to ``batch_shape``, or an
        ``nn.Parameter`` (learned by NCE/FCE; gradients flow through ``log_prob``). When
        omitted, a ``log_Z`` tensor attribute of the energy (set by :func:`pyro_ebm.fit` with
        NCE or FCE) is used.
    batch_shape:
        Batch shape of the distribution (the energy's own batch), default ``()``.
    sampler:
        Kernel used by :meth:`sample`: ``"mala"`` (default), ``"hmc"``, ``"rwmh"`` or ``"ula"``.
    sampler_kwargs:
        Arguments for :func:`pyro_ebm.infer.sample` (e.g. ``warmup_steps``, ``seed``,
        ``dtype``), plus the options of the warm-chain pool that :meth:`sample` keeps:
        ``num_transitions`` (transitions per call, default 10), ``pool_size`` (chains kept
        warm, default 64) and ``fresh`` (``True``: a new warmup on every call).
    validate_args:
        Pyro/torch argument validation (checks the energy's output shape at construction and
        values in :meth:`log_prob`).

    Examples
    --------
    >>> import torch, pyro
    >>> from pyro_ebm import EnergyDistribution
    >>> d = EnergyDistribution(lambda x: 0.5 * x.pow(2).sum(-1), event_shape=(2,))
    >>> d.log_prob(torch.ones(3, 2))
    tensor([-1., -1., -1.])
    >>> d.sample((5,)).shape
    torch.Size([5, 2])
    >>> def model():
    ...     x = pyro.sample("x", d)
    ...     pyro.sample("y", pyro.distributions.Normal(x.sum(), 1.0), obs=torch.tensor(1.0))
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(
        self,
        energy: Callable[[Tensor], Tensor],
        event_shape: tuple[int, ...] | torch.Size,
        log_Z: float | Tensor | None = None,
        *,
        batch_shape: tuple[int, ...] | torch.Size = (),
        sampler="mala",
        sampler_kwargs: dict | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if not callable(energy):
            raise ValueError(
                f"energy must be a callable or nn.Module mapping batch + event_shape to batch; "
                f"got {type(energy).__name__}"
            )
        event_shape = _as_shape("event_shape", event_shape)
        batch_shape = _as_shape("batch_shape", batch_shape)
        from .infer.kernels import as_kernel  # local: keeps the import graph one-way at load

        as_kernel(sampler, "sampler")  # a kernel object or an alias, else a ValueError
        if sampler_kwargs is not None and not isinstance(sampler_kwargs, dict):
            raise ValueError(f"sampler_kwargs must be a dict; got {type(sampler_kwargs).__name__}")
        if log_Z is None and torch.is_tensor(getattr(energy, "log_Z", None)):
            log_Z = energy.log_Z  # learned by pyro_ebm.fit with NCE/FCE
        if log_Z is not None:
            if not torch.is_tensor(log_Z):
                if isinstance(log_Z, bool) or not isinstance(log_Z, (int, float)):
                    raise ValueError(f"log_Z must be a float or tensor; got {log_Z!r}")
                log_Z = torch.tensor(float(log_Z))
            try:
                _broadcast_shapes(log_Z.shape, batch_shape)
            except ValueError as err:
                raise ValueError(
                    f"log_Z of shape {tuple(log_Z.shape)} does not broadcast to batch_shape "
                    f"{tuple(batch_shape)}"
                ) from err
        self.energy = energy
        self.log_Z = log_Z
        self.sampler = sampler
        self.sampler_kwargs = dict(sampler_kwargs or {})
        super().__init__(batch_shape, event_shape, validate_args=validate_args)
        if self._validate_args:
            self._check_energy_output()

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def is_normalized(self) -> bool:
        """Whether ``log_Z`` is known, so that :meth:`log_prob` is a normalized log density."""
        return self.log_Z is not None

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        from .infer.base import module_dtype_device

        found = module_dtype_device(self.energy)
        if found is not None:
            return found
        if torch.is_tensor(self.log_Z) and self.log_Z.is_floating_point():
            return self.log_Z.dtype, self.log_Z.device
        return torch.get_default_dtype(), torch.device("cpu")

    def _check_energy_output(self) -> None:
        dtype, device = self._dtype_device()
        probe = torch.zeros((1,) + self.batch_shape + self.event_shape, dtype=dtype, device=device)
        try:
            with torch.no_grad():
                out = self.energy(probe)
        except Exception as err:  # noqa: BLE001 - report any failure of the user's energy
            raise ValueError(
                f"energy failed on an input of shape {tuple(probe.shape)} (a sample of "
                f"batch_shape {tuple(self.batch_shape)} and event_shape "
                f"{tuple(self.event_shape)}): {err}"
            ) from err
        expected = (1,) + self.batch_shape
        if not torch.is_tensor(out) or out.shape != expected:
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(
                f"energy must map shape (*sample, *batch_shape, *event_shape) to (*sample, "
                f"*batch_shape): for input {tuple(probe.shape)} expected output {expected}, got "
                f"{got}; check batch_shape={tuple(self.batch_shape)} and "
                f"event_shape={tuple(self.event_shape)}"
            )

    def _validate_sample(self, value: Tensor) -> None:
        event_dim = len(self.event_shape)
        if not torch.is_tensor(value):
            raise ValueError(f"value must be a tensor; got {type(value).__name__}")
        if value.dim() < event_dim or value.shape[value.dim() - event_dim :] != self.event_shape:
            raise ValueError(
                f"value of shape {tuple(value.shape)} does not end in the expected event shape "
                f"{tuple(self.event_shape)}"
            )
        try:
            _broadcast_shapes(value.shape[: value.dim() - event_dim], self.batch_shape)
        except ValueError as err:
            raise ValueError(
                f"value of shape {tuple(value.shape)} does not broadcast to batch_shape "
                f"{tuple(self.batch_shape)} + event_shape {tuple(self.event_shape)}"
            ) from err
        if not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"value must be finite (support is real^{tuple(self.event_shape)}); got "
                "NaN or inf entries"
            )

    def log_prob(self, value: Tensor) -> Tensor:
        """:math:`-E(x) - \\log Z`, of shape ``value.shape[:-event_dim]`` broadcast with batch."""
        if self._validate_args:
            self._validate_sample(value)
        event_dim = len(self.event_shape)
        lp = -self.energy(value)
        if self.log_Z is not None:
            lp = lp - self.log_Z
        shape = _broadcast_shapes(value.shape[: value.dim() - event_dim], self.batch_shape)
        return lp.expand(shape) if lp.shape != shape else lp

    def sample(
        self, sample_shape: torch.Size | tuple[int, ...] = (), fresh: bool | None = None
    ) -> Tensor:
        """Approximate draws of shape ``sample_shape + batch_shape + event_shape``.

        Draws come from a pool of warm chains of the vectorized sampler (``sampler``, default
        MALA), kept between calls (:mod:`pyro_ebm.infer.warm_chains`): the first call runs the
        engine's warmup for ``pool_size`` chains (64 by default, more if more draws are asked),
        and every later call advances all of them by ``num_transitions`` (default 10)
        transitions and returns the next chains in rotation, so repeated calls (``Predictive``,
        init strategies) cost a few transitions each. Draws within a call are different chains;
        a chain is handed out again only after ``pool_size / n`` calls of ``n`` draws. The pool
        is rebuilt when the energy's parameters change (an optimizer step, ``load_state_dict``)
        or the settings do; pass ``fresh=True`` (here or in ``sampler_kwargs``) for a new warmup
        on every call, i.e. independent draws, or when a plain function's closure changed.

        Uses torch's global generator unless ``sampler_kwargs`` gives a ``seed``, so
        ``pyro.set_rng_seed`` applies. A ``sample_shape`` with no elements, such as ``(0,)``,
        returns an empty tensor of the right shape without running the sampler.
        """
        from .infer.warm_chains import (
            DEFAULT_NUM_TRANSITIONS,
            DEFAULT_POOL_SIZE,
            fingerprint,
            pool_for,
        )

        sample_shape = torch.Size(sample_shape)
        shape = sample_shape + self.batch_shape + self.event_shape
        dtype, device = self._dtype_device()
        kwargs = dict(self.sampler_kwargs)
        num_transitions = kwargs.pop("num_transitions", DEFAULT_NUM_TRANSITIONS)
        pool_size = kwargs.pop("pool_size", DEFAULT_POOL_SIZE)
        fresh = bool(kwargs.pop("fresh", False) if fresh is None else fresh)
        kwargs.setdefault("dtype", dtype)
        kwargs.setdefault("device", device)
        if sample_shape.numel() == 0 and len(sample_shape) > 0:  # no draws: no chain to run
            return torch.empty(shape, dtype=kwargs["dtype"], device=kwargs["device"])
        kwargs.setdefault("progress_bar", False)
        sampler = self.sampler
        key = (
            tuple(self.batch_shape), tuple(self.event_shape),
            sampler if isinstance(sampler, str) else (type(sampler), id(sampler)),
            repr(sorted(kwargs.items(), key=lambda kv: kv[0])), num_transitions, pool_size,
        )  # fmt: skip
        pool = pool_for(self.energy, key)
        with torch.no_grad():
            draws = pool.draw(
                self, sample_shape.numel(), kernel=sampler, num_transitions=num_transitions,
                pool_size=pool_size, fresh=fresh, version=fingerprint(self.energy), **kwargs,
            )  # fmt: skip
        return draws.detach().reshape(shape)

    def expand(self, batch_shape, _instance=None) -> EnergyDistribution:
        new = self._get_checked_instance(EnergyDistribution, _instance)
        batch_shape = torch.Size(batch_shape)
        new.energy = self.energy
        new.log_Z = self.log_Z
        new.sampler = self.sampler
        new.sampler_kwargs = dict(self.sampler_kwargs)
        super(EnergyDistribution, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def __repr__(self) -> str:
        name = getattr(self.energy, "__class__", type(self.energy)).__name__
        return (
            f"EnergyDistribution(energy={name}, batch_shape={tuple(self.batch_shape)}, "
            f"event_shape={tuple(self.event_shape)}, normalized={self.is_normalized})"
        )


def _as_shape(name: str, shape) -> torch.Size:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = torch.Size(shape)
    except TypeError as err:
        raise ValueError(f"{name} must be a tuple of non-negative ints; got {shape!r}") from err
    if any(s < 0 for s in out):
        raise ValueError(f"{name} must be a tuple of non-negative ints; got {tuple(out)}")
    return out


def _broadcast_shapes(a: torch.Size, b: torch.Size) -> torch.Size:
    """NumPy broadcasting of two shapes (plain Python: cheap on the log_prob hot path)."""
    if a == b:
        return torch.Size(a)
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for i, j in zip(a, b, strict=True):
        if i != j and 1 not in (i, j):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(j if i == 1 else i)
    return torch.Size(out)
