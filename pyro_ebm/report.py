"""The HTML report of a run: figures embedded as base64 PNGs, the evaluation and ArviZ tables.

:func:`write_report` turns a run directory (see :mod:`pyro_ebm.rundir`) into one self-contained
``report.html`` (no external files, scripts or styles) and also saves each figure as
``figures/NAME.png``. Missing draws or evaluation are computed first with the run's settings.
Under "Training" it lists the signs of failure the training recorded (``History.warnings``)
and what ``fit`` decided on its own (``History.events``, e.g. FCE's abandoned refinement).

ArviZ draws through pyplot, so while the report is drawn the Agg backend is selected (and the
previous backend restored afterwards); every figure is closed once saved. Nothing here changes
matplotlib's state at import.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .builders import bounds_pairs
from .config import dumps_toml
from .plotting import plot_density, plot_history, plot_images, plot_samples
from .progress import Log, say
from .progress import progress as progress_bar
from .rundir import CONFIG_FILE, FIGURES_DIR, REPORT_FILE, Run, load_run, samples_from_saved
from .runs import evaluate_run, sample_run
from .tables import MMD_NOTE, evaluation_rows
from .training import History

__all__ = ["render_html", "write_report"]

DPI = 90
MAX_TRACE_CHAINS = 8
MAX_COMPONENTS = 4
MAX_SUMMARY_ROWS = 16

# Written into the page: once every image has loaded, record in the DOM its natural size and its
# "ink" (the share of its pixels, drawn on a canvas, that are neither white nor transparent), so
# a missing, truncated or blank image is visible to a test without a screenshot.
_LOAD_CHECK = """
function pyroEbmInk(img) {
  try {
    var canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    var context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    var px = context.getImageData(0, 0, canvas.width, canvas.height).data, inked = 0;
    for (var i = 0; i < px.length; i += 4) {
      if (px[i + 3] > 0 && (px[i] < 250 || px[i + 1] < 250 || px[i + 2] < 250)) inked++;
    }
    return px.length ? inked / (px.length / 4) : 0;
  } catch (err) {
    return -1;
  }
}
window.addEventListener("load", function () {
  var sizes = [];
  document.querySelectorAll("img").forEach(function (img) {
    var ink = pyroEbmInk(img);
    var ok = img.complete && img.naturalWidth > 0 && img.naturalHeight > 0 && ink > 0;
    img.setAttribute("data-loaded", ok ? "yes" : "no");
    img.setAttribute("data-natural-size", img.naturalWidth + "x" + img.naturalHeight);
    img.setAttribute("data-ink", ink.toFixed(4));
    sizes.push(img.id + "=" + img.naturalWidth + "x" + img.naturalHeight + ":" + ink.toFixed(4));
  });
  var out = document.getElementById("image-check");
  out.textContent = sizes.join(" ");
  out.setAttribute("data-count", String(sizes.length));
});
"""

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; }
.meta { color: #555; } figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td.note, th.note { text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
#image-check { display: none; }
"""


@contextlib.contextmanager
def _agg_backend() -> Iterator[Any]:
    """Select matplotlib's Agg backend for ArviZ's pyplot figures; restore the previous one."""
    import matplotlib

    try:
        previous = matplotlib.get_backend(auto_select=False)
    except TypeError:  # matplotlib < 3.10 has no auto_select
        previous = matplotlib.rcParams["backend"]
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        yield plt
    finally:
        if previous and str(previous).lower() != "agg":
            with contextlib.suppress(Exception):  # best effort: never fail a finished report
                plt.switch_backend(previous)


def _png(fig: Figure, plt: Any = None) -> bytes:
    if fig.get_layout_engine() is None:  # ArviZ's figures: keep titles and labels apart
        fig.set_layout_engine("constrained")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    if plt is not None:
        plt.close(fig)
    return buffer.getvalue()


def _two_panels(width: float = 8.6, height: float = 3.9) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, 2)


def _is_image(run: Run) -> bool:
    return len(run.event_shape) == 3


def _density_figure(run: Run) -> bytes | None:
    if run.dim > 2 or _is_image(run):
        return None
    bounds = bounds_pairs(run.config["evaluate"]["bounds"], run.dim)
    fig, (left, right) = _two_panels()
    plot_density(run.energy, bounds, resolution=200, ax=left, title="model density exp(-E)/Z")
    plot_samples(run.test, bounds=bounds, kind="hist", ax=right, title="held-out data")
    if run.dim == 1:
        right.set_title("held-out data (histogram)")
    return _png(fig)


def _samples_figure(run: Run, draws: torch.Tensor, kernel: str) -> bytes:
    fig, (left, right) = _two_panels()
    if _is_image(run):
        plot_images(
            draws[:, -1], ncol=8, ax=left, title=f"model draws ({kernel.upper()}, last draws)"
        )
        plot_images(run.test, ncol=8, ax=right, title="held-out data", seed=0)
        return _png(fig)
    bounds = bounds_pairs(run.config["evaluate"]["bounds"], run.dim) if run.dim <= 2 else None
    plot_samples(draws, bounds=bounds, ax=left, title=f"model draws ({kernel.upper()})",
                 color="C1")  # fmt: skip
    plot_samples(run.test, bounds=bounds, ax=right, title="held-out data")
    return _png(fig)


def _component_coords(run: Run) -> dict[str, list[int]]:
    """ArviZ ``coords`` picking at most MAX_COMPONENTS coordinates of the event to plot."""
    shape = tuple(run.event_shape)
    if int(np.prod(shape)) <= MAX_COMPONENTS:
        return {}
    if _is_image(run):  # the 2 x 2 pixels at the centre of the image
        return {"x_dim_0": [0], "x_dim_1": [3, 4], "x_dim_2": [3, 4]}
    return {"x_dim_0": list(range(MAX_COMPONENTS))}


def _arviz_figures(run: Run, saved: dict[str, Any], plt: Any) -> tuple[dict[str, bytes], str]:
    # only diagnostics imports ArviZ; its plot functions answer alike on ArviZ 0.2x and 1.x
    from .diagnostics import (
        az,
        from_groups,
        plot_energy,
        plot_rank,
        plot_trace,
        to_arviz_quietly,
    )

    idata = to_arviz_quietly(samples_from_saved(saved))
    chains = min(MAX_TRACE_CHAINS, saved["samples"].shape[0])
    coords = {"chain": list(range(chains)), **_component_coords(run)}
    figures = {}
    with warnings.catch_warnings():
        # statistics of very short or stuck chains are NaN; the tables show them as such
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        height = 2.2 * min(run.dim, MAX_COMPONENTS)
        fig = plot_trace(idata, coords=coords, compact=False, figsize=(10, height))
        figures["trace"] = _png(fig, plt)
        figures["rank"] = _png(plot_rank(idata, coords=coords, figsize=(10, 3)), plt)
        if "energy" in saved["stats"]:
            figures["energy"] = _png(plot_energy(idata, figsize=(6, 3.6)), plt)
        else:  # MALA, ULA, RWMH keep no Hamiltonian: show the model energy E(x) = -lp instead
            lp = saved["stats"]["lp"][:chains].double().numpy()
            energy = from_groups({"posterior": {"E(x) = -lp": -lp}})
            figures["energy"] = _png(plot_trace(energy, figsize=(10, 2.2)), plt)
        summary = az.summary(idata, round_to="none")  # plain floats on both ArviZ lines
    rows = summary.shape[0]
    notes = []
    if rows > MAX_SUMMARY_ROWS:
        summary = summary.iloc[:MAX_SUMMARY_ROWS]
        notes.append(f"First {MAX_SUMMARY_ROWS} of {rows} coordinates.")
    r_hat = summary["r_hat"].max() if "r_hat" in summary else float("nan")
    if r_hat > 1.01:
        notes.append(
            f"R-hat up to {r_hat:.2f} (above 1.01): the chains disagree. On a multimodal density "
            "each chain usually keeps to the mode it started in, so the pooled draws weigh the "
            "modes as the starting points do (the training data, with the default init)."
        )
    formatters = {
        col: (lambda v: f"{v:.0f}") if col.startswith("ess") else (lambda v: f"{v:.3f}")
        for col in summary.columns
    }
    table = summary.to_html(formatters=formatters, border=0, classes="summary")
    return figures, table + "".join(f'<p class="meta">{html.escape(n)}</p>' for n in notes)


def _img(name: str, png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img id="fig-{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(name: str, png: bytes | None, caption: str) -> str:
    if png is None:
        return ""
    return (
        f"<figure>{_img(name, png, caption)}<figcaption>{html.escape(caption)}</figcaption>"
        "</figure>"
    )


def _training_notes(history: History) -> str:
    """The signs of failure ``fit`` recorded and what it decided on its own, as a list (empty
    when there are none)."""
    items = [
        f'<li class="warning">warning, step {w["step"]} ({html.escape(str(w["kind"]))}): '
        f"{html.escape(str(w['message']))}</li>"
        for w in history.warnings
    ]
    items += [
        f"<li>step {e['step']}: {html.escape(str(e['message']))}</li>" for e in history.events
    ]
    return f'<ul id="training-notes">{"".join(items)}</ul>' if items else ""


def _evaluation_table(result: dict[str, Any]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{html.escape(v)}</td>"
        f'<td class="note">{html.escape(n)}</td></tr>'
        for m, v, n in evaluation_rows(result)
    )
    return (
        '<table id="evaluation"><thead><tr><th>metric</th><th>value</th>'
        f'<th class="note">note</th></tr></thead><tbody>{body}</tbody></table>'
    )


def render_html(
    run: Run,
    figures: dict[str, bytes | None],
    evaluation: dict[str, Any],
    summary_table: str,
    saved: dict[str, Any],
) -> str:
    """The report page: every figure inlined as a base64 PNG, no external resources."""
    c = run.config
    history_seconds = run.meta.get("train_seconds") or 0.0
    s = saved["settings"]
    accept = float(saved["stats"]["acceptance_rate"].float().mean())
    divergences = int(saved["stats"]["diverging"].sum())
    title = f"pyro-ebm run: {c['objective']['name']} on {Path(str(c['data']['name'])).name}"
    kernel = s["kernel"].upper()  # the sampler's usual spelling: MALA, HMC, ...
    energy_caption = (
        "ArviZ energy plot (marginal and transition energy of the Hamiltonian, with BFMI)"
        if "energy" in saved["stats"]
        else f"{kernel} keeps no Hamiltonian energy (az.plot_energy needs HMC): trace of the "
        "model energy E(x) = -lp instead"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<script>{_LOAD_CHECK}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(str(run.path))}: {run.meta.get("steps")} training '
        f"steps in {history_seconds:.1f} s; event shape {tuple(run.event_shape)}; "
        f"{run.train.shape[0]} training and {run.test.shape[0]} held-out points; "
        f"{s['num_chains']} {kernel} chains x {s['num_samples']} draws, acceptance "
        f"{accept:.2f}, {divergences} divergent transitions.</p>",
        "<h2>Model and data</h2>",
        _figure(
            "density",
            figures.get("density"),
            "Left: the model density exp(-E(x))/Z on the evaluation box. Right: the "
            "held-out data, binned on the same box.",
        ),  # fmt: skip
        _figure(
            "samples",
            figures["samples"],
            f"Left: draws of the trained energy ({kernel}). Right: held-out data.",
        ),
        "<h2>Evaluation</h2>",
        _evaluation_table(evaluation),
        f'<p class="meta" id="mmd-note">{html.escape(MMD_NOTE)}</p>',
        "<h2>Training</h2>",
        _figure(
            "history",
            figures["history"],
            "Training curves (faint: per step; solid: moving average).",
        ),  # fmt: skip
        _training_notes(run.history()),
        "<h2>Sampler diagnostics (ArviZ)</h2>",
        _figure(
            "trace",
            figures["trace"],
            f"az.plot_trace: the first {min(MAX_TRACE_CHAINS, s['num_chains'])} chains.",
        ),
        _figure("rank", figures["rank"], "az.plot_rank: uniform ranks mean well-mixed chains."),
        _figure("energy", figures["energy"], energy_caption),
        f'<div id="summary">{summary_table}</div>',
        "<h2>Configuration</h2>",
        f"<pre>{html.escape(dumps_toml(c))}</pre>",
        '<p class="meta">Files: config.toml, model.pt, checkpoint.pt, history.json, '
        "samples.pt, samples.nc (ArviZ), evaluation.json, figures/.</p>",
        '<pre id="image-check" data-count="0"></pre>',
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_report(
    run: Run | str | os.PathLike,
    *,
    progress: bool = True,
    log: Log = print,
    result: Log = print,
) -> Path:
    """Write ``report.html`` (and ``figures/*.png``) for a run directory; returns its path.

    Draws (``samples.pt``) and the evaluation (``evaluation.json``) are computed first, with
    the run's ``[sample]`` and ``[evaluate]`` settings, when they are missing (``pyro-ebm
    sample`` removes a stale evaluation, so a report after re-sampling re-evaluates); each time
    the report says so on ``result``, even when ``log`` (other notes) is off.
    """
    if not isinstance(run, Run):
        run = load_run(run)
    if not (run.path / CONFIG_FILE).exists():  # pragma: no cover - load_run checks it
        raise ValueError(f"{run.path} is not a run directory")
    start = time.perf_counter()
    saved = run.samples()
    if saved is None:
        say(result, f"report: no draws in {run.path} yet: sampling with the run's [sample] "
              "settings")  # fmt: skip
        sample_run(run, progress=progress, log=log, result=result)
        saved = run.samples()
    evaluation = run.evaluation()
    if evaluation is None:
        say(result, f"report: no evaluation in {run.path} for these draws yet: evaluating "
              "with the run's [evaluate] settings")  # fmt: skip
        evaluation = evaluate_run(run, progress=progress, log=log)
    bar = progress_bar(desc="report", total=5, enabled=progress)
    figures: dict[str, bytes | None] = {}
    bar.set_postfix_str("density")
    figures["density"] = _density_figure(run)
    bar.update()
    bar.set_postfix_str("samples")
    figures["samples"] = _samples_figure(run, saved["samples"], saved["kernel"])
    bar.update()
    bar.set_postfix_str("training curves")
    figures["history"] = _png(plot_history(run.history()))
    bar.update()
    bar.set_postfix_str("ArviZ")
    with _agg_backend() as plt:
        arviz_figures, summary_table = _arviz_figures(run, saved, plt)
    figures.update(arviz_figures)
    bar.update()
    bar.set_postfix_str("HTML")
    page = render_html(run, figures, evaluation, summary_table, saved)
    path = run.path / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    fig_dir = run.path / FIGURES_DIR
    fig_dir.mkdir(exist_ok=True)
    for name, png in figures.items():
        if png is not None:
            (fig_dir / f"{name}.png").write_bytes(png)
    bar.update()
    bar.close()
    say(log, f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return path
