"""pyro_ebm.plotting: density heatmaps, sample scatters and image grids, training curves."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from pyro_ebm import EnergyDistribution, History
from pyro_ebm.energies import GaussianEnergy, GaussianMixtureEnergy
from pyro_ebm.infer import sample
from pyro_ebm.plotting import plot_density, plot_history, plot_images, plot_samples

F64 = torch.float64


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    return buffer.getvalue()


def test_density_heatmap_is_the_normalized_density():
    energy = GaussianEnergy(torch.tensor([1.0, -0.5]), 0.3 * torch.eye(2), dtype=F64)
    ax = plot_density(energy, ((-4, 6), (-5, 4)), resolution=101)
    image = ax.images[0].get_array()
    assert image.shape == (101, 101)
    cell = (10 / 100) * (9 / 100)
    assert float(image.sum()) * cell == pytest.approx(1.0, abs=0.02)  # a density on the box
    row, col = np.unravel_index(np.argmax(image), image.shape)
    xs, ys = np.linspace(-4, 6, 101), np.linspace(-5, 4, 101)
    assert (xs[col], ys[row]) == (pytest.approx(1.0, abs=0.1), pytest.approx(-0.5, abs=0.1))
    assert ax.get_title() == "density" and ax.images[0].get_extent() == [-4, 6, -5, 4]
    assert ax.figure.canvas.manager is None  # made without pyplot: no window, no backend
    assert png_bytes(ax.figure)[:8] == b"\x89PNG\r\n\x1a\n"


def test_density_accepts_log_z_log_scale_distributions_and_1d():
    energy = GaussianEnergy(torch.zeros(2), torch.eye(2), dtype=F64)
    exact = plot_density(energy, (-3, 3), resolution=31, log_Z=math.log(2 * math.pi))
    grid = plot_density(energy, (-3, 3), resolution=31)
    ratio = grid.images[0].get_array() / exact.images[0].get_array()
    assert np.allclose(ratio, ratio[0, 0]) and ratio[0, 0] > 1  # the box holds < all the mass
    logs = plot_density(EnergyDistribution(energy, (2,)), (-3, 3), resolution=31, log_scale=True)
    values = logs.images[0].get_array()
    assert values.max() == pytest.approx(-math.log(2 * math.pi), abs=0.01)
    assert values.min() >= values.max() - 12.0
    curve = plot_density(lambda x: 0.5 * x.squeeze(-1) ** 2, (-3, 3), dim=1, resolution=61)
    ys = curve.lines[0].get_ydata()
    assert ys.max() == pytest.approx(1 / math.sqrt(2 * math.pi), rel=0.01)


def test_density_draws_on_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    out = plot_density(lambda x: x.square().sum(-1), (-2, 2), resolution=10, ax=ax, title=None)
    assert out is ax and ax.get_title() == ""


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bounds": (2, -2)}, "bounds must be"),
        ({"bounds": (-2, 2), "resolution": 1}, "resolution must be"),
        ({"bounds": (-2, 2), "dim": 3}, "1-d or 2-d"),
    ],
)
def test_density_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_density(lambda x: x.square().sum(-1), **kwargs)


def test_samples_scatter_hist_and_shapes():
    draws = torch.randn(3, 50, 2, generator=torch.Generator().manual_seed(0))
    ax = plot_samples(draws, bounds=(-3, 3), title="draws")
    offsets = ax.collections[0].get_offsets()
    assert offsets.shape == (150, 2) and ax.get_title() == "draws"
    assert np.allclose(np.sort(offsets[:, 0]), np.sort(draws[..., 0].reshape(-1).numpy()))
    few = plot_samples(draws, max_points=40)
    assert few.collections[0].get_offsets().shape == (40, 2)
    hist = plot_samples(draws, kind="hist", bounds=((-3, 3), (-2, 2)))
    assert [float(v) for v in hist.get_ylim()] == [-2.0, 2.0]
    wide = plot_samples(torch.randn(20, 5))
    assert wide.get_xlabel() == "x[0]" and wide.get_ylabel() == "x[1]"
    line = plot_samples(torch.randn(100, 1), bounds=(-4, 4))
    assert len(line.patches) == 60  # a histogram of 1-d draws
    outside = plot_samples(torch.full((10, 1), 100.0), bounds=(-1, 1))  # no 0/0 warning
    assert all(patch.get_height() == 0 for patch in outside.patches)


def test_samples_of_a_sampler_run_and_images():
    energy = GaussianMixtureEnergy(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.ones(2) * 0.5)
    run = sample(energy, 20, num_chains=4, event_shape=(2,), seed=0, progress_bar=False)
    assert plot_samples(run).collections[0].get_offsets().shape == (80, 2)
    images = torch.rand(2, 30, 1, 8, 8) * 2 - 1
    grid = plot_samples(images, ncol=5)  # (chains, draws, c, h, w): an image grid
    assert grid.images[0].get_array().shape == (5 * 9 - 1, 5 * 9 - 1)
    assert not grid.axison


def test_images_grid_layout_and_values():
    images = torch.stack([torch.full((1, 8, 8), v) for v in (-1.0, 0.0, 1.0)])
    ax = plot_images(images, ncol=2)
    canvas = ax.images[0].get_array()
    assert canvas.shape == (17, 17)
    assert canvas[0, 0] == 0.0 and canvas[0, 9] == 0.5 and canvas[9, 0] == 1.0
    assert canvas[8, 0] == 1.0  # the white gutter between rows
    colour = plot_images(torch.zeros(1, 3, 4, 4), value_range=None)
    assert colour.images[0].get_array().shape == (4, 4, 3)
    with pytest.raises(ValueError, match="images must have shape"):
        plot_images(torch.zeros(2, 2, 8, 8))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: plot_samples(torch.zeros(3)), "samples must have shape"),
        (lambda: plot_samples(torch.zeros(3, 2), kind="kde"), "kind must be"),
        (lambda: plot_samples(torch.zeros(3, 2), max_points=0), "max_points must be"),
        (lambda: plot_images(torch.zeros(1, 1, 8, 8), ncol=0), "ncol must be"),
    ],
)
def test_samples_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_history_panels_follow_the_objective():
    n = 200
    nce = History(step=list(range(n)), loss=[1 / (1 + t) for t in range(n)], lr=[1e-3] * n,
                  metrics={"energy_pos": [0.0] * n, "energy_neg": [1.0] * n,
                           "accuracy": [0.8] * n, "log_Z": [0.1] * n})  # fmt: skip
    fig = plot_history(nce)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "mean energy", "classifier accuracy", "learned log Z",
                      "learning rate"]  # fmt: skip
    assert len(fig.axes[0].lines) == 2  # raw and moving average
    assert fig.axes[1].get_legend() is not None
    cd = {"step": [0, 1, 2], "loss": [1.0, 0.5, float("nan")],
          "metrics": {"acceptance_rate": [0.5, 0.6, 0.7]}}  # fmt: skip
    assert [ax.get_title() for ax in plot_history(cd).axes] == ["loss", "sampler acceptance"]
    assert png_bytes(fig)[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no steps"):
        plot_history(History())
