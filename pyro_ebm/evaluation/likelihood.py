"""Log-likelihoods of data given log Z: per point, held-out NLL on a grid, KL to a known truth."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .. import datasets
from .._targets import check_energy_output, resolve_energy
from .._validation import check_choice, check_int
from ..infer.base import module_dtype_device
from .quadrature import Bounds, grid_log_partition

__all__ = ["kl_to_truth", "log_likelihood", "nll_summary", "test_nll"]


def log_likelihood(
    energy: Any, data: Tensor, log_Z: Tensor | float, *, reduction: str = "mean"
) -> Tensor:
    r"""Log-likelihood of data under :math:`p(x) = e^{-E(x)} / Z` given an estimate of log Z.

    .. math::

        \frac1n \sum_{i=1}^n \log p(x_i) = \frac1n \sum_{i=1}^n \big(-E(x_i)\big) - \log Z.

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        Maps ``(n, *event_shape)`` to ``(n,)``.
    data : Tensor
        Points of shape ``(n, *event_shape)``, cast to the dtype of the energy's parameters.
    log_Z : Tensor or float
        :math:`\log Z`, e.g. from :func:`grid_log_partition` or :func:`ais_log_partition`.
    reduction : {"mean", "none"}
        The mean (0-d) or the per-point values (shape ``(n,)``).

    Returns
    -------
    Tensor
        In float64; differentiable with respect to the energy's parameters.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> energy = GaussianEnergy(torch.zeros(1), torch.eye(1), dtype=torch.float64)
    >>> log_likelihood(energy, torch.zeros(3, 1), energy.log_partition())  # -log(2 pi) / 2
    tensor(-0.9189, dtype=torch.float64)
    """
    fn, event_shape = resolve_energy(energy)
    check_choice("reduction", reduction, ("mean", "none"))
    if not isinstance(data, Tensor) or not data.is_floating_point() or data.dim() == 0:
        raise ValueError("data must be a floating-point tensor of shape (n, *event_shape)")
    if data.shape[0] == 0:
        raise ValueError("data must hold at least one point")
    if event_shape is not None and tuple(data.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"data must have shape (n, *{tuple(event_shape)}); got {tuple(data.shape)}"
        )
    found = module_dtype_device(fn)
    if found is not None:
        data = data.to(dtype=found[0], device=found[1])
    out = fn(data)
    check_energy_output(out, (data.shape[0],), f"energy on data of shape {tuple(data.shape)}")
    log_z = torch.as_tensor(log_Z, dtype=torch.float64, device=out.device)
    values = -out.to(torch.float64) - log_z
    return values.mean() if reduction == "mean" else values


def nll_summary(energy: Any, data: Tensor, log_Z: Tensor | float) -> dict[str, Any]:
    r"""Mean negative log-likelihood of ``data`` given :math:`\log Z`, with its standard error.

    .. math::

        \mathrm{NLL} = \frac1n \sum_{i=1}^n E(x_i) + \log Z, \qquad
        \mathrm{se} = \operatorname{sd}_i(\log p(x_i)) / \sqrt n,

    evaluated without gradients (``log_Z`` from any estimator: quadrature, AIS, learned).

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        Maps ``(n, *event_shape)`` to ``(n,)``.
    data : Tensor
        Points of shape ``(n, *event_shape)``, ``n >= 2``.
    log_Z : Tensor or float
        The log normalizer.

    Returns
    -------
    dict
        ``{"nll": float, "stderr": float, "n": int}`` (nats).

    Examples
    --------
    >>> import math, torch
    >>> energy = lambda x: 0.5 * x.square().sum(-1)
    >>> out = nll_summary(energy, torch.zeros(4, 1), 0.5 * math.log(2 * math.pi))
    >>> round(out["nll"], 4), out["stderr"], out["n"]
    (0.9189, 0.0, 4)
    """
    if not isinstance(data, Tensor) or data.dim() == 0 or data.shape[0] < 2:
        raise ValueError("data must be a tensor of shape (n, *event_shape) with n >= 2")
    with torch.no_grad():
        values = log_likelihood(energy, data, log_Z, reduction="none")
    return {
        "nll": float(-values.mean()),
        "stderr": float(values.std(correction=1) / math.sqrt(values.numel())),
        "n": int(values.numel()),
    }


def test_nll(
    energy: Any,
    data: Tensor,
    bounds: Bounds = (-4.0, 4.0),
    resolution: int = 401,
    *,
    dim: int | None = None,
) -> dict[str, float]:
    r"""Negative log-likelihood of held-out data with :math:`Z` normalized on a grid.

    .. math::

        \mathrm{NLL} = \frac1n \sum_{i=1}^n E(x_i) + \log Z_B, \qquad
        Z_B = \int_B e^{-E(x)}\,dx \ \text{(by :func:`grid_log_partition`)},

    with Monte-Carlo standard error :math:`\operatorname{sd}_i(\log p(x_i)) / \sqrt n`. Only
    for 1-d and 2-d energies.

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        A 1-d or 2-d energy.
    data : Tensor
        Test points of shape ``(n, *event_shape)``, ``n >= 2``.
    bounds : (lo, hi) or ((xlo, xhi), (ylo, yhi)), default (-4, 4)
        The normalizing box.
    resolution : int, default 401
        Grid nodes per axis.
    dim : int, optional
        1 or 2, for energies without an ``event_shape`` (see :func:`grid_log_partition`).

    Returns
    -------
    dict
        ``{"nll": float, "stderr": float, "log_Z": float}`` in nats.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> energy = GaussianEnergy(torch.zeros(2), torch.eye(2), dtype=torch.float64)
    >>> data = energy.sample(1000, generator=torch.Generator().manual_seed(0))
    >>> out = test_nll(energy, data, bounds=(-8, 8), resolution=101)
    >>> round(out["log_Z"], 4)  # log(2 pi)
    1.8379
    >>> abs(out["nll"] - 2.8379) < 4 * out["stderr"]  # the entropy, 1 + log(2 pi)
    True
    """
    if not isinstance(data, Tensor) or data.dim() == 0 or data.shape[0] < 2:
        raise ValueError("data must be a tensor of shape (n, *event_shape) with n >= 2")
    log_z = grid_log_partition(energy, bounds, resolution, dim=dim)
    out = nll_summary(energy, data, log_z)
    return {"nll": out["nll"], "stderr": out["stderr"], "log_Z": float(log_z)}


test_nll.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def kl_to_truth(
    energy: Any,
    name: str,
    *,
    n_test: int = 20000,
    seed: int = 0,
    bounds: Bounds = (-4.0, 4.0),
    resolution: int = 401,
) -> dict[str, float]:
    r"""KL divergence from a 2-d toy data set's true density to a fitted model.

    .. math::

        \mathrm{KL}(p \,\Vert\, q) = \mathbb E_p[-\log q(x)] - H(p)
        \approx \mathrm{NLL}_q - H(p),

    where the model :math:`q = e^{-E}/Z_B` is normalized on the box ``bounds`` by
    :func:`grid_log_partition`, the NLL is averaged over ``n_test`` fresh samples of ``name``
    (:func:`pyro_ebm.datasets.load` with ``seed``) and :math:`H(p)` is the oracle NLL
    (:func:`pyro_ebm.datasets.oracle_nll`). The Monte-Carlo error of the estimate is
    ``stderr``, that of the NLL (the oracle is exact).

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        A 2-d energy.
    name : str
        A data set with a known density: one of :data:`pyro_ebm.datasets.DENSITY_NAMES`.
    n_test : int, default 20000
        Number of test samples, at least 2.
    seed : int, default 0
        Seed of the test samples.
    bounds : (lo, hi) or ((xlo, xhi), (ylo, yhi)), default (-4, 4)
        The normalizing box.
    resolution : int, default 401
        Grid nodes per axis.

    Returns
    -------
    dict
        ``{"kl", "nll", "stderr", "log_Z", "oracle"}`` as floats (nats).

    Examples
    --------
    >>> from pyro_ebm import datasets
    >>> truth = lambda x: -datasets.true_log_prob("8gaussians", x)
    >>> out = kl_to_truth(truth, "8gaussians", n_test=2000, resolution=201)
    >>> abs(out["log_Z"]) < 1e-3, abs(out["kl"]) < 4 * out["stderr"]
    (True, True)
    """
    oracle = datasets.oracle_nll(name)  # rejects names without a known density
    n_test = check_int("n_test", n_test, 2)
    data = datasets.load(name, n_test, seed=seed, dtype=torch.float64)
    out = test_nll(energy, data, bounds, resolution, dim=2)
    return {**out, "oracle": oracle, "kl": out["nll"] - oracle}
