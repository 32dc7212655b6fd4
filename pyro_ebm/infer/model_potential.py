"""The joint potential energy of a Pyro model, evaluated for many chains in one pass.

For a model with continuous latent sites :math:`z_1, \\dots, z_K` (constrained values), each
site is mapped to the unconstrained space by :math:`z_k = T_k(u_k)` with
:math:`T_k = \\) ``biject_to(site.support)`` (or a transform the user gives), and the potential
energy of the flattened unconstrained vector :math:`u` is

.. math::

    U(u) = -\\log p(T(u), y) - \\sum_k \\log \\left| \\det \\partial T_k / \\partial u_k
    \\right|,

the quantity Pyro's ``initialize_model`` returns as ``potential_fn``. Here it is computed for
a batch of chains ``u`` of shape ``(num_chains, D)`` by running the model once under an outer
plate over the chains, to the left of the model's own plates: the device of Pyro's vectorized
ELBO particles and ``Predictive(parallel=True)``. Every site's ``log_prob`` (scaled and masked
as Pyro does) is then summed over all but the chain dimension. A model whose shapes break
under the extra dimension, or which mixes chains (e.g. a ``.sum()`` over all dimensions), is
caught at set-up by comparing against chain-by-chain evaluation (:mod:`.vectorize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import biject_to
from pyro.distributions.util import scale_and_mask
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from .._traces import plate_depth

__all__ = ["CHAIN_PLATE", "LatentSite", "ModelPotential"]

#: Name of the outer plate over chains (never a site name of a user's model).
CHAIN_PLATE = "_pyro_ebm_chains"


@dataclass
class LatentSite:
    """One latent sample site: its constrained and unconstrained shapes and its bijection."""

    name: str
    shape: torch.Size  # constrained value, as the model draws it without a chain plate
    batch_shape: torch.Size  # of the site's distribution (plate and batch dimensions)
    unconstrained_shape: torch.Size
    transform: object  # a torch.distributions.Transform onto the site's support
    dims: tuple[str | None, ...]  # plate name of each batch dimension (None when unnamed)

    @property
    def size(self) -> int:
        return self.unconstrained_shape.numel()


def _hot_transform(transform):
    """``transform`` without its identity parts, or ``None`` when it is the identity.

    ``biject_to`` builds e.g. ``ComposeTransform([ExpTransform(), AffineTransform(0, 1)])`` for
    a positive site and an empty ``ComposeTransform`` for a real one; the potential's hot path
    skips what does nothing (the value, and so the potential, is unchanged).
    """
    from torch.distributions import transforms as T

    def identity(t) -> bool:
        if isinstance(t, T.ComposeTransform):
            return all(identity(p) for p in t.parts)
        if isinstance(t, T.IndependentTransform):
            return identity(t.base_transform)
        if isinstance(t, T.AffineTransform):
            try:
                return bool(torch.all(torch.as_tensor(t.loc) == 0)) and bool(
                    torch.all(torch.as_tensor(t.scale) == 1)
                )
            except (TypeError, RuntimeError):
                return False
        return False

    if identity(transform):
        return None
    if isinstance(transform, T.ComposeTransform):
        parts = [p for p in transform.parts if not identity(p)]
        if len(parts) == 1 and parts[0].domain.event_dim == transform.domain.event_dim:
            return parts[0]
    return transform


def _energy_distribution(fn):
    """The EnergyDistribution under ``fn`` (through ``Independent``/masks), else ``None``.

    Duck-typed: ``infer/`` never imports :mod:`pyro_ebm.distribution` (import layering).
    """
    while fn is not None:
        if hasattr(fn, "energy") and hasattr(fn, "sampler_kwargs"):
            return fn
        fn = getattr(fn, "base_dist", None)
    return None


def _shape_probe(site: dict) -> Tensor:
    """A value of the right shape for the set-up trace, without running a sampler.

    Discrete sites are refused here with the message users see.
    """
    fn = site["fn"]
    support = fn.support
    if support.is_discrete:
        raise ValueError(
            f"latent site {site['name']!r} is discrete (support {support}); VectorizedMCMC "
            "samples continuous latent sites only and does not enumerate discrete ones: "
            "marginalize the site out of the model by hand, or observe it"
        )
    ebm = _energy_distribution(fn)
    if ebm is not None:  # its sample() runs MCMC: a zero of the right shape does here
        transform = biject_to(support)
        dtype, device = ebm._dtype_device()
        shape = transform.inverse_shape(fn.shape())
        return transform(torch.zeros(shape, dtype=dtype, device=device))
    return fn.sample().detach()


def _dims_of(site: dict) -> tuple[str | None, ...]:
    """The plate name of each batch dimension of a site (``None`` where no plate is)."""
    batch = site["fn"].batch_shape
    own = {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized}
    return tuple(own.get(i - len(batch)) for i in range(len(batch)))


class _LogJoint(Messenger):
    """Condition latent sites on given values and add up every site's scaled, masked
    ``log_prob`` per chain as the model runs: what ``trace(condition(model))`` followed by
    ``compute_log_prob`` gives, without building a trace (the hot path of sampling)."""

    def __init__(self, data: dict[str, Tensor], depth: int, num: int) -> None:
        super().__init__()
        self.data, self.depth, self.num = data, depth, num
        self.total: Tensor | int = 0

    def _pyro_sample(self, msg) -> None:
        value = self.data.get(msg["name"])
        if value is not None:
            msg["value"] = value
            msg["is_observed"] = True

    def _pyro_post_sample(self, msg) -> None:
        # a plate's subsample site, and a deterministic site (a Delta at its value: log_prob 0)
        if site_is_subsample(msg) or msg["infer"].get("_deterministic"):
            return
        lp = msg["fn"].log_prob(msg["value"], *msg["args"], **msg["kwargs"])
        lp = scale_and_mask(lp, msg["scale"], msg["mask"])
        self.total = self.total + _per_chain(lp, self.depth, msg["name"])


def _per_chain(lp: Tensor, depth: int, name: str) -> Tensor:
    """Sum a site's ``log_prob`` over all but the chain dimension (at ``-depth``)."""
    if not torch.is_tensor(lp) or lp.dim() == 0:
        return lp
    if lp.dim() > depth:
        raise ValueError(
            f"site {name!r} has log_prob of shape {tuple(lp.shape)}, deeper than the model's "
            f"plates ({depth - 1}): pass max_plate_nesting= or declare event dimensions with "
            ".to_event()"
        )
    lp = lp.reshape((1,) * (depth - lp.dim()) + lp.shape)
    return lp.sum(tuple(range(1, depth))) if depth > 1 else lp


class ModelPotential:
    """Potential energy :math:`U(u)` of a Pyro model, for a batch of flattened chains.

    Parameters
    ----------
    model:
        A Pyro model (a callable with ``pyro.sample`` statements).
    model_args, model_kwargs:
        Arguments the model is called with (its data).
    transforms:
        Optional ``{site: Transform}`` from the unconstrained space onto a site's support,
        overriding ``biject_to(site.support)`` (Pyro's meaning of ``transforms``).
    max_plate_nesting:
        The model's plate depth; found from one trace when ``None``.

    Attributes
    ----------
    sites:
        The latent sites in the order the model samples them.
    dim:
        Length :math:`D` of the flattened unconstrained vector.
    deterministic:
        ``{name: shape}`` of the model's ``pyro.deterministic`` sites.
    """

    def __init__(
        self,
        model: Callable,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
        *,
        transforms: dict | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        self.model = model
        self.args = tuple(model_args)
        self.kwargs = dict(model_kwargs or {})
        with poutine.block(), pyro.validation_enabled(False):
            trace = poutine.trace(InitMessenger(_shape_probe)(model)).get_trace(
                *self.args, **self.kwargs
            )
        nesting = plate_depth(trace)
        self.max_plate_nesting = nesting if max_plate_nesting is None else int(max_plate_nesting)
        if self.max_plate_nesting < nesting:
            raise ValueError(
                f"max_plate_nesting={max_plate_nesting} is smaller than the model's plate "
                f"depth {nesting}"
            )
        transforms = dict(transforms or {})
        self.sites: list[LatentSite] = []
        self.deterministic: dict[str, torch.Size] = {}
        self.observed: list[str] = []
        self._dims: dict[str, tuple[str | None, ...]] = {}
        self._observed_shapes: dict[str, torch.Size] = {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["is_observed"]:
                if site["infer"].get("_deterministic"):
                    self.deterministic[name] = site["value"].shape
                    self._dims[name] = _dims_of(site)
                else:
                    self.observed.append(name)
                    if not site["fn"].event_shape:  # its data and log-likelihood share dims
                        self._observed_shapes[name] = site["value"].shape
                        self._dims[name] = _dims_of(site)
                continue
            fn, value = site["fn"], site["value"]
            transform = transforms.get(name) or biject_to(fn.support)
            batch = fn.batch_shape
            dims = _dims_of(site)
            self._dims[name] = dims
            self.sites.append(
                LatentSite(
                    name, value.shape, batch, transform.inverse_shape(value.shape), transform, dims
                )  # fmt: skip
            )
        if not self.sites:
            raise ValueError("the model has no latent sample sites: there is nothing to sample")
        self.dim = sum(s.size for s in self.sites)
        self.dtype = trace.nodes[self.sites[0].name]["value"].dtype
        self.device = trace.nodes[self.sites[0].name]["value"].device
        self.transforms = {s.name: s.transform for s in self.sites}
        # the hot path (``_conditioned``): split sizes, and per site its shapes and the
        # transform without identity parts (None: the identity, no transform, no log-det)
        self._sizes = [s.size for s in self.sites]
        self._hot = [
            (s.name, s.unconstrained_shape, self._chain_shape(s), _hot_transform(s.transform))
            for s in self.sites
        ]

    def dims(self) -> dict[str, list[str]]:
        """ArviZ dimension names of every latent and deterministic site (and of observed sites
        without event dimensions): plate names for plate dimensions, ``"<site>_dim_<i>"`` for
        the others."""
        out = {}
        shapes = {s.name: s.shape for s in self.sites} | dict(self.deterministic)
        shapes |= self._observed_shapes
        for name, shape in shapes.items():
            plates = list(self._dims.get(name, ()))
            plates = plates[len(plates) - len(shape) :] if len(plates) > len(shape) else plates
            names = plates + [None] * (len(shape) - len(plates))
            out[name] = [d if d is not None else f"{name}_dim_{i}" for i, d in enumerate(names)]
        return out

    # -- layout ------------------------------------------------------------------------------
    def unpack(self, flat: Tensor) -> dict[str, Tensor]:
        """``(*batch, D)`` -> ``{site: (*batch, *unconstrained_shape)}``."""
        parts = torch.split(flat, [s.size for s in self.sites], dim=-1)
        lead = flat.shape[:-1]
        return {s.name: p.reshape(lead + s.unconstrained_shape)
                for s, p in zip(self.sites, parts, strict=True)}  # fmt: skip

    def pack(self, params: dict[str, Tensor]) -> Tensor:
        """Inverse of :meth:`unpack`: unconstrained values with any leading dims -> flat."""
        parts = []
        for s in self.sites:
            value = torch.as_tensor(params[s.name])
            lead = value.shape[: value.dim() - len(s.unconstrained_shape)]
            parts.append(value.reshape(lead + (s.size,)))
        lead = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
        return torch.cat([p.expand(lead + p.shape[-1:]) for p in parts], -1)

    def constrain(self, flat: Tensor) -> dict[str, Tensor]:
        """Constrained site values, ``{site: (*batch, *shape)}``."""
        return {s.name: s.transform(u) for s, u in zip(self.sites, self.unpack(flat).values(),
                                                        strict=True)}  # fmt: skip

    def unconstrain(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Unconstrained values of constrained ``{site: tensor}``."""
        return {s.name: s.transform.inv(values[s.name]) for s in self.sites}

    # -- evaluation --------------------------------------------------------------------------
    def _chain_shape(self, site: LatentSite) -> tuple[int, ...]:
        """``(-1, 1, ..., 1, *shape)``: the chain dim at plate depth + 1, then the value."""
        pad = self.max_plate_nesting - len(site.batch_shape)
        return (-1,) + (1,) * pad + tuple(site.shape)

    def _conditioned(self, flat: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Constrained values in the chain layout and the per-chain log-Jacobian."""
        num = flat.shape[0]
        data, log_det = {}, None
        parts = torch.split(flat, self._sizes, dim=-1)
        for (name, unc_shape, chain_shape, transform), u in zip(self._hot, parts, strict=True):
            if transform is None:  # a real site: no transform, no Jacobian
                data[name] = u.reshape(chain_shape)
                continue
            u = u.reshape((num,) + unc_shape)
            x = transform(u)
            ladj = transform.log_abs_det_jacobian(u, x)
            ladj = ladj.reshape(num, -1).sum(-1) if ladj.dim() > 1 else ladj.reshape(-1)
            log_det = ladj if log_det is None else log_det + ladj
            data[name] = x.reshape(chain_shape)
        if log_det is None:
            log_det = flat.new_zeros(num)
        elif log_det.shape[0] != num:
            log_det = log_det.expand(num)
        return data, log_det

    def _chain_plate(self, num: int):
        """The outer plate over ``num`` chains (one object per size, entered on every call)."""
        plates = self.__dict__.setdefault("_plates", {})
        if num not in plates:
            plates[num] = pyro.plate(CHAIN_PLATE, num, dim=-(self.max_plate_nesting + 1))
        return plates[num]

    def _run(self, flat: Tensor):
        """The model's trace under the chain plate, conditioned on the chains' values."""
        data, _ = self._conditioned(flat)
        with pyro.plate(CHAIN_PLATE, flat.shape[0], dim=-(self.max_plate_nesting + 1)):
            return poutine.trace(poutine.condition(self.model, data)).get_trace(
                *self.args, **self.kwargs
            )

    def __call__(self, flat: Tensor) -> Tensor:
        """:math:`U(u)` of every chain: ``(num_chains, D)`` -> ``(num_chains,)``."""
        num = flat.shape[0]
        data, log_det = self._conditioned(flat)
        depth = self.max_plate_nesting + 1
        joint = _LogJoint(data, depth, num)
        with self._chain_plate(num), joint:
            self.model(*self.args, **self.kwargs)
        total = joint.total if torch.is_tensor(joint.total) else flat.new_tensor(joint.total)
        return -(total.expand(num) + log_det)

    def single(self, flat: Tensor) -> Tensor:
        """:math:`U(u)` of one chain ``(D,)`` without the chain plate (the reference path)."""
        unc = self.unpack(flat)
        data, log_det = {}, flat.new_zeros(())
        for s in self.sites:
            u = unc[s.name]
            x = s.transform(u)
            log_det = log_det + s.transform.log_abs_det_jacobian(u, x).sum()
            data[s.name] = x
        trace = poutine.trace(poutine.condition(self.model, data)).get_trace(
            *self.args, **self.kwargs
        )
        return -(trace.log_prob_sum() + log_det)

    def deterministic_values(self, flat: Tensor) -> dict[str, Tensor]:
        """The ``pyro.deterministic`` sites at every chain's point: ``{name: (C, *shape)}``."""
        if not self.deterministic:
            return {}
        with torch.no_grad():
            trace = self._run(flat)
        num, out, unsafe = flat.shape[0], {}, []
        for name, shape in self.deterministic.items():
            value = trace.nodes[name]["value"].detach()
            lead = value.shape[: value.dim() - len(shape)]
            if value.shape[value.dim() - len(shape) :] != shape or lead.numel() not in (1, num):
                unsafe.append(name)  # its expression mixes chains: evaluated one by one
                continue
            value = value.reshape((-1,) + shape) if len(lead) else value.unsqueeze(0)
            out[name] = value.expand((num,) + shape).clone()
        if unsafe:
            out.update(self.deterministic_one_by_one(flat, unsafe))
        return out

    def deterministic_one_by_one(self, flat: Tensor, names: list[str] | None = None) -> dict:
        """Deterministic sites from one trace per point (for models that do not vectorize)."""
        names = list(self.deterministic) if names is None else names
        rows: dict[str, list[Tensor]] = {k: [] for k in names}
        with torch.no_grad():
            for point in flat:
                trace = poutine.trace(poutine.condition(self.model, self.constrain(point)))
                trace = trace.get_trace(*self.args, **self.kwargs)
                for k in names:
                    rows[k].append(trace.nodes[k]["value"].detach().reshape(self.deterministic[k]))
        return {k: torch.stack(v) for k, v in rows.items()}
