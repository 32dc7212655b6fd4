"""The HTML report: self-contained, and rendered by a real headless Chromium with its images.

The browser test needs Debian's ``chromium``; when it is missing the test installs it with
``apt-get`` (as root, once per session) and skips, saying why, only when that fails.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

from pyro_ebm import cli
from pyro_ebm.report import _agg_backend

from .cli_support import tiny_config

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
_install_outcome: dict[str, str] = {}  # once per session: the path, or why there is none


def _apt_get(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], capture_output=True, text=True, timeout=900, env=env, check=False
    )


def chromium() -> str:
    """The chromium executable; installs Debian's package if absent, else skips with why."""
    found = shutil.which("chromium")
    if found:
        return found
    if "path" not in _install_outcome and "reason" not in _install_outcome:
        _install_outcome.update(_install_chromium())
    if "path" in _install_outcome:
        return _install_outcome["path"]
    pytest.skip(f"headless Chromium is not available: {_install_outcome['reason']}")


def _install_chromium() -> dict[str, str]:
    if shutil.which("apt-get") is None:
        return {"reason": "chromium is not installed and there is no apt-get to install it"}
    if os.geteuid() != 0:
        return {"reason": "chromium is not installed and installing it needs root (apt-get)"}
    try:
        result = _apt_get("install", "-y", "-q", "chromium")
        if result.returncode != 0:  # the package lists may be missing or stale
            _apt_get("update", "-q")
            result = _apt_get("install", "-y", "-q", "chromium")
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"reason": f"apt-get install chromium failed: {err}"}
    path = shutil.which("chromium")
    if result.returncode != 0 or path is None:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"reason": f"apt-get install chromium failed: {last[0]}"}
    return {"path": path}


BACKEND_SEEN: dict[str, object] = {}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report of a tiny trained, sampled and evaluated run (drawn under the svg backend)."""
    import matplotlib.pyplot as plt

    root = tmp_path_factory.mktemp("report")
    out = root / "run"
    argv = ["train", "--data", "8gaussians", "--steps", "30", "--out", str(out), "--config",
            str(tiny_config(root, {"sample": {"num_chains": 8}})), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        assert cli.main(["report", "--run", str(out), "--quiet"]) == 0  # samples, evaluates
        BACKEND_SEEN.update(after=matplotlib.get_backend(), figures=plt.get_fignums())
    finally:
        plt.switch_backend(before)
    return out / "report.html"


def image_sizes(page: str) -> dict[str, tuple[int, int]]:
    """Width and height of each embedded PNG, read from its header."""
    sizes = {}
    for name, data in re.findall(r'<img id="([\w-]+)"[^>]*base64,([A-Za-z0-9+/=]+)"', page):
        png = base64.b64decode(data)
        sizes[name] = (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big"))
    return sizes


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_report_is_self_contained(report):
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert len(image_sizes(page)) == 6
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch
    assert '<table id="evaluation">' in page and "r_hat" in page
    assert "[objective]" in page  # the configuration


def test_report_renders_in_headless_chromium(report, tmp_path):
    url = report.resolve().as_uri()
    page = report.read_text()
    expected = image_sizes(page)

    dom = run_chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the page's onload script wrote what the browser decoded: id=WIDTHxHEIGHT:INK per image,
    # INK being the share of the pixels (drawn on a canvas) that are neither white nor clear
    check = re.search(r'<pre id="image-check" data-count="(\d+)">([^<]*)</pre>', dom.stdout)
    assert check is not None, "the onload check did not run"
    loaded = dict(item.split("=") for item in check.group(2).split())
    assert int(check.group(1)) == len(expected) == 6
    for name, (width, height) in expected.items():
        size, ink = loaded[name].split(":")
        assert size == f"{width}x{height}", name  # decoded at its real, non-zero size
        assert float(ink) > 0.01, name  # with its content drawn, not blank
    assert dom.stdout.count('data-loaded="yes"') == 6 and 'data-loaded="no"' not in dom.stdout

    shot = tmp_path / "report.png"
    result = run_chromium(tmp_path, "--window-size=1200,1600", f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.stat().st_size > 10_000, result.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page
    # the density figure (first image) is coloured: far from grey
    rgb = pixels[..., :3].reshape(-1, 3)
    assert (rgb.max(1) - rgb.min(1) > 0.3).mean() > 0.01


def test_report_lists_training_warnings_and_fits_decisions(report, tmp_path):
    """History.warnings and History.events appear under "Training", escaped; a run without
    them (the fixture's) has no list."""
    import json

    assert 'id="training-notes"' not in report.read_text()
    run = tmp_path / "run"
    shutil.copytree(report.parent, run)
    history = json.loads((run / "history.json").read_text())
    history["warnings"] = [{"step": 7, "kind": "accuracy", "message": "stuck at <1>"}]
    history["events"] = [{"step": 9, "kind": "phase_abandoned", "message": "rolled back"}]
    (run / "history.json").write_text(json.dumps(history))
    assert cli.main(["report", "--run", str(run), "--quiet"]) == 0
    page = (run / "report.html").read_text()
    notes = re.search(r'<ul id="training-notes">(.*?)</ul>', page).group(1)
    assert "warning, step 7 (accuracy): stuck at &lt;1&gt;" in notes
    assert "step 9: rolled back" in notes


def test_report_restores_the_matplotlib_backend(report):
    assert BACKEND_SEEN == {"after": "svg", "figures": []}  # restored; ArviZ figures closed
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        with _agg_backend():
            assert matplotlib.get_backend().lower() == "agg"
        assert matplotlib.get_backend() == "svg"
    finally:
        plt.switch_backend(before)


def test_report_figures_are_saved(report):
    figures = report.parent / "figures"
    names = sorted(p.stem for p in figures.glob("*.png"))
    assert names == ["density", "energy", "history", "rank", "samples", "trace"]
    image = imread(figures / "density.png")
    assert image.shape[0] > 100 and np.ptp(image[..., :3]) > 0.5
