"""The Sphinx site builds offline without warnings, documents every public name, and its
quickstart mirrors the README (it includes it)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import zlib
from html import unescape
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PUBLIC_MODULES = (
    "pyro_ebm",
    "pyro_ebm.distribution",
    "pyro_ebm.training",
    "pyro_ebm.infer",
    "pyro_ebm.objectives",
    "pyro_ebm.energies",
    "pyro_ebm.evaluation",
    "pyro_ebm.diagnostics",
    "pyro_ebm.datasets",
)
PAGES = (
    "index",
    "quickstart",
    "theory/index",
    "theory/sampling",
    "theory/maximum_likelihood",
    "theory/score_matching",
    "theory/nce",
    "theory/fce",
    "tutorials",
    "tutorials/01_energy_distribution_in_pyro",
    "tutorials/02_training_methods",
    "tutorials/03_sampling_theory",
    "tutorials/04_partition_function",
    "tutorials/05_digits",
    "tutorials/06_pyro_models_on_many_chains",
    "api/index",
)


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    """Build the site once, as `make docs` does (-W: any warning fails), into a temp dir."""
    out = tmp_path_factory.mktemp("docs")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    return out / "html"


def _inventory(path: Path) -> dict[str, str]:
    """``{name: role}`` of the Python objects in a Sphinx ``objects.inv``."""
    lines = path.read_bytes().split(b"\n", 4)
    assert lines[3].startswith(b"# The remainder of this file is compressed")
    entries = {}
    for line in zlib.decompress(lines[4]).decode().splitlines():
        match = re.match(r"(\S+)\s+(py:\w+)\s+-?\d+\s", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def _resolve(name: str):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def test_docs_build_without_warnings(html):
    for page in PAGES:
        assert (html / f"{page}.html").exists(), page


def test_math_renders_offline(html):
    """The pages load MathJax from the site itself, never from a CDN."""
    page = (html / "theory" / "sampling.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page, flags=re.IGNORECASE)
    assert scripts and all(not s.startswith(("http:", "https:", "//")) for s in scripts), scripts
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_theory_index_lists_each_page_once(html):
    page = (html / "theory" / "index.html").read_text()
    article = page.split('itemprop="articleBody"', 1)[1].split("<footer", 1)[0]
    text = unescape(re.sub(r"<[^>]+>", " ", article))
    for title in ("Sampling", "Flow contrastive estimation", "Noise-contrastive estimation"):
        assert len(re.findall(rf"\b{title}\b", text)) == 1, title


def test_every_public_name_is_in_the_api_reference(html):
    documented = _inventory(html / "objects.inv")
    by_identity = {id(obj) for obj in map(_resolve, documented) if obj is not None}
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if f"{module_name}.{name}" in documented:
                continue
            if getattr(obj, "__name__", None) in documented and type(obj).__name__ == "module":
                continue
            if not isinstance(obj, (str, int, float, tuple, dict)) and id(obj) in by_identity:
                continue
            missing.append(f"{module_name}.{name}")
    assert not missing, f"not in the API reference: {missing}"


def test_quickstart_mirrors_the_readme(html):
    """The quickstart includes the README, so every README example appears on the page."""
    readme = (ROOT / "README.md").read_text()
    page = (html / "quickstart.html").read_text()
    text = unescape(re.sub(r"<[^>]+>", "", page))
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks, "the README has no python examples"
    for block in blocks:
        for line in filter(None, map(str.strip, block.splitlines())):
            assert line in text, f"README line missing from the quickstart page: {line}"
