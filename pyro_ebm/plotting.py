"""Figures: density heatmaps of an energy, sample scatters and image grids, training curves.

Every function draws on a matplotlib ``Axes`` passed as ``ax=`` (for instance one of
``plt.subplots``), or else on a new :class:`matplotlib.figure.Figure` made without pyplot: it
needs no display, chooses no backend and is saved with ``ax.figure.savefig(...)`` through
matplotlib's Agg renderer. Nothing here changes global matplotlib state.

Examples
--------
>>> import torch
>>> from pyro_ebm import datasets
>>> from pyro_ebm.plotting import plot_density, plot_samples
>>> ax = plot_density(lambda x: 0.5 * x.square().sum(-1), (-3, 3), resolution=40)
>>> ax.get_title()
'density'
>>> ax = plot_samples(datasets.load("moons", 500, seed=0), bounds=(-3, 3))
>>> len(ax.collections)
1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._targets import resolve_energy
from ._validation import check_bounds, check_choice, check_int
from .evaluation import grid_log_partition
from .infer.base import module_dtype_device

__all__ = ["plot_density", "plot_history", "plot_images", "plot_samples"]

Bounds = Sequence[float] | Sequence[Sequence[float]]


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "samples") and torch.is_tensor(getattr(x, "samples", None)):
        x = x.samples  # a pyro_ebm.infer.Samples
    if torch.is_tensor(x):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def plot_density(
    energy: Any,
    bounds: Bounds,
    *,
    resolution: int = 200,
    log_Z: float | None = None,
    log_scale: bool = False,
    ax: Axes | None = None,
    cmap: str = "viridis",
    title: str | None = "density",
    dim: int = 2,
) -> Axes:
    r"""Heatmap of the density :math:`p(x) = e^{-E(x)}/Z` of a 2-d energy (a curve in 1-d).

    Parameters
    ----------
    energy : callable, nn.Module or EnergyDistribution
        Maps points of shape ``(n, dim)`` to energies of shape ``(n,)``.
    bounds : (lo, hi) or ((xlo, xhi), (ylo, yhi))
        The box shown.
    resolution : int, default 200
        Grid nodes per axis.
    log_Z : float, optional
        The log normalizer; by default the density is normalized on the box by
        :func:`pyro_ebm.evaluation.grid_log_partition`.
    log_scale : bool, default False
        Show :math:`\log p(x)` (clipped 12 nats below its maximum) instead of :math:`p(x)`.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    cmap, title : str
        Colour map and title.
    dim : int, default 2
        1 or 2 (the energy's dimension when it has no ``event_shape``).

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import GaussianEnergy
    >>> energy = GaussianEnergy(torch.zeros(2), torch.eye(2))
    >>> ax = plot_density(energy, (-4, 4), resolution=50, log_scale=True)
    >>> ax.images[0].get_array().shape
    (50, 50)
    """
    fn, shape = resolve_energy(energy)
    if shape is not None:
        dim = int(torch.Size(shape).numel())
    if dim not in (1, 2):
        raise ValueError(f"plot_density draws 1-d or 2-d energies; got dim={dim}")
    resolution = check_int("resolution", resolution, 2)
    box = check_bounds("bounds", bounds, dim)
    found = module_dtype_device(fn)
    dtype, device = found if found is not None else (torch.float64, torch.device("cpu"))
    axes_nodes = [torch.linspace(lo, hi, resolution, dtype=torch.float64) for lo, hi in box]
    if dim == 2:
        gx, gy = torch.meshgrid(axes_nodes[0], axes_nodes[1], indexing="xy")
        points = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    else:
        points = axes_nodes[0][:, None]
    with torch.no_grad():
        energies = fn(points.to(dtype=dtype, device=device)).double().cpu()
        if log_Z is None:
            log_Z = float(grid_log_partition(fn, box, resolution, dim=dim))
    log_p = (-energies - log_Z).numpy()
    finite_max = np.max(log_p[np.isfinite(log_p)], initial=-np.inf)
    values = np.maximum(log_p, finite_max - 12.0) if log_scale else np.exp(log_p)
    label = "log density" if log_scale else "density"
    if dim == 1:
        ax = _new_axes(ax, (4.5, 3.2))
        ax.plot(axes_nodes[0].numpy(), values, color="C0")
        ax.set_xlim(*box[0])
        ax.set_ylabel(label)
    else:
        ax = _new_axes(ax, (4.2, 3.8))
        image = ax.imshow(
            values.reshape(resolution, resolution),
            origin="lower",
            extent=(*box[0], *box[1]),
            cmap=cmap,
            aspect="auto",
            interpolation="nearest",
        )
        ax.figure.colorbar(image, ax=ax, shrink=0.8, label=label)
    if title:
        ax.set_title(title)
    return ax


def plot_samples(
    samples: Any,
    *,
    bounds: Bounds | None = None,
    kind: str = "scatter",
    max_points: int = 5000,
    ax: Axes | None = None,
    color: str = "C0",
    title: str | None = None,
    seed: int = 0,
    ncol: int = 8,
) -> Axes:
    """Scatter (or 2-d histogram) of vector draws, or a grid of image draws.

    Parameters
    ----------
    samples : Tensor, array or pyro_ebm.infer.Samples
        Vectors of shape ``(n, d)`` or ``(chains, draws, d)`` (the first two coordinates are
        shown when ``d > 2``; ``d = 1`` gives a histogram), or images of shape
        ``(n, channels, height, width)`` or ``(chains, draws, channels, height, width)``, drawn
        by :func:`plot_images`.
    bounds : (lo, hi) or ((xlo, xhi), (ylo, yhi)), optional
        Axis limits (and the histogram's range).
    kind : {"scatter", "hist"}
        Points, or a 2-d histogram (a density-like view of the same points).
    max_points : int, default 5000
        A seeded random subset of at most this many points is drawn (images: ``ncol**2``).
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    color, title : str
        Marker colour and title.
    seed : int
        Seed of the subset.
    ncol : int
        Images per row of an image grid.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import torch
    >>> ax = plot_samples(torch.randn(4, 100, 2), kind="hist", bounds=(-3, 3), title="draws")
    >>> ax.get_title(), [float(v) for v in ax.get_xlim()]
    ('draws', [-3.0, 3.0])
    >>> ax = plot_samples(torch.rand(10, 1, 8, 8), ncol=4)  # images
    >>> ax.images[0].get_array().shape
    (26, 35)
    """
    check_choice("kind", kind, ("scatter", "hist"))
    max_points = check_int("max_points", max_points, 1)
    x = _as_numpy(samples)
    if x.ndim >= 4:
        images = x.reshape(-1, *x.shape[-3:]) if x.ndim == 5 else x
        return plot_images(images, ncol=ncol, ax=ax, title=title, seed=seed)
    if x.ndim == 3:
        x = x.reshape(-1, x.shape[-1])
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(
            "samples must have shape (n, d), (chains, draws, d), (n, c, h, w) or "
            f"(chains, draws, c, h, w); got {x.shape}"
        )
    if x.shape[0] > max_points:
        keep = np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False)
        x = x[keep]
    dim = min(x.shape[1], 2)
    box = check_bounds("bounds", bounds, dim) if bounds is not None else None
    ax = _new_axes(ax, (3.8, 3.8))
    if dim == 1:
        values = x[:, 0]
        if box is not None:
            values = values[(values >= box[0][0]) & (values <= box[0][1])]
        ax.hist(values, bins=60, range=box[0] if box else None, color=color,
                density=values.size > 0)  # fmt: skip
    elif kind == "hist":
        ax.hist2d(x[:, 0], x[:, 1], bins=80, range=box, cmap="viridis")
    else:
        size = 4.0 if x.shape[0] <= 2000 else 1.5
        ax.scatter(x[:, 0], x[:, 1], s=size, alpha=0.5, color=color, linewidths=0)
    if box is not None:
        ax.set_xlim(*box[0])
        if dim == 2:
            ax.set_ylim(*box[1])
    if dim == 2:
        ax.set_aspect("equal" if box is None else "auto")
        if x.shape[1] > 2:
            ax.set_xlabel("x[0]")
            ax.set_ylabel("x[1]")
    if title:
        ax.set_title(title)
    return ax


def plot_images(
    images: Any,
    *,
    ncol: int = 8,
    ax: Axes | None = None,
    title: str | None = None,
    seed: int | None = None,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
) -> Axes:
    """A grid of single- or three-channel images (at most ``ncol**2`` of them).

    Parameters
    ----------
    images : Tensor or array
        Shape ``(n, channels, height, width)`` with 1 or 3 channels.
    ncol : int
        Images per row (and at most this many rows).
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    title : str, optional
    seed : int, optional
        With more than ``ncol**2`` images, show a random subset with this seed (else the first).
    value_range : (lo, hi) or None
        Pixel values mapped to black and white (digits: ``(-1, 1)``); ``None`` uses the images'
        own range.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import torch
    >>> ax = plot_images(torch.zeros(3, 1, 8, 8), ncol=2)
    >>> ax.images[0].get_array().shape
    (17, 17)
    """
    ncol = check_int("ncol", ncol, 1)
    x = _as_numpy(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] < 1:
        raise ValueError(f"images must have shape (n, 1 or 3, height, width); got {x.shape}")
    limit = ncol * ncol
    if x.shape[0] > limit:
        if seed is None:
            x = x[:limit]
        else:
            x = x[np.random.default_rng(seed).choice(x.shape[0], limit, replace=False)]
    n, c, h, w = x.shape
    cols = min(ncol, n)
    rows = math.ceil(n / cols)
    lo, hi = value_range if value_range is not None else (float(x.min()), float(x.max()))
    unit = np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1, c))
    for i in range(n):
        r, q = divmod(i, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = unit[i].transpose(
            1, 2, 0
        )
    ax = _new_axes(ax, (3.8, 3.8 * rows / cols + 0.3))
    if c == 1:
        ax.imshow(canvas[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or values.size < window:
        return values
    finite = np.where(np.isfinite(values), values, np.nan)
    kernel = np.ones(window) / window
    filled = np.nan_to_num(finite, nan=np.nanmean(finite) if np.isfinite(finite).any() else 0.0)
    smooth = np.convolve(filled, kernel, mode="valid")
    return np.concatenate([np.full(window - 1, np.nan), smooth])


def plot_history(history: Any, *, smooth: int | None = None, fig: Figure | None = None) -> Figure:
    """Training curves of a :class:`pyro_ebm.History`: loss, energies, objective figures, lr.

    Panels: the loss (raw and a moving average); the mean energy of data and of negatives
    (noise, model samples or flow samples, when the objective has them); the classifier's
    accuracy and the learned log Z (NCE, FCE) or the sampler's acceptance rate (CD); the
    learning rate.

    Parameters
    ----------
    history : History or dict
        A :class:`pyro_ebm.History`, or its ``as_dict()`` / the JSON it saves.
    smooth : int, optional
        Moving-average window (default: 1/50 of the steps).
    fig : matplotlib Figure, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from pyro_ebm import History
    >>> h = History(step=[0, 1, 2], loss=[1.0, 0.5, 0.25], lr=[1e-3] * 3,
    ...             metrics={"energy_pos": [0.0, -1, -2], "energy_neg": [0.0, 1, 2]})
    >>> [ax.get_title() for ax in plot_history(h).axes]
    ['loss', 'mean energy', 'learning rate']
    """
    h = history if isinstance(history, dict) else history.as_dict()
    if not h.get("loss"):
        raise ValueError("history holds no steps to plot")
    steps = np.asarray(h.get("step") or range(len(h["loss"])), dtype=np.float64)
    metrics = {k: np.asarray(v, dtype=np.float64) for k, v in (h.get("metrics") or {}).items()}
    window = smooth if smooth is not None else max(1, len(steps) // 50)
    panels: list[tuple[str, list[tuple[str, np.ndarray]]]] = [
        ("loss", [("loss", np.asarray(h["loss"], dtype=np.float64))])
    ]
    labels = {"energy_pos": "E(data)", "energy_neg": "E(negatives)"}
    energies = [(labels[k], metrics[k]) for k in labels if k in metrics]
    if energies:
        panels.append(("mean energy", energies))
    for key, name in (("accuracy", "classifier accuracy"), ("log_Z", "learned log Z"),
                      ("acceptance_rate", "sampler acceptance")):  # fmt: skip
        if key in metrics:
            panels.append((name, [(key, metrics[key])]))
    if h.get("lr"):
        panels.append(("learning rate", [("lr", np.asarray(h["lr"], dtype=np.float64))]))
    if fig is None:
        fig = Figure(figsize=(3.3 * len(panels), 2.9), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, curves) in zip(axes, panels, strict=True):
        for i, (label, values) in enumerate(curves):
            n = min(len(values), len(steps))
            if title in ("loss", "mean energy") and window > 1:
                ax.plot(steps[:n], values[:n], color=f"C{i}", alpha=0.25, linewidth=0.8)
                ax.plot(steps[:n], _moving_average(values[:n], window), color=f"C{i}", label=label)
            else:
                ax.plot(steps[:n], values[:n], color=f"C{i}", label=label)
        if len(curves) > 1:
            ax.legend(fontsize="small")
        ax.set_title(title)
        ax.set_xlabel("step")
    return fig
