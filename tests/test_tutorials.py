"""Every tutorial in ``tutorials/`` runs top to bottom as a notebook, with ``CI=1`` (small sizes).

Each jupytext percent-format file is converted to a notebook and executed by nbclient in a
fresh IPython kernel, which inherits this process's environment (so ``CI=1`` reaches the
tutorial's ``smoke_test`` flag). A cell that raises fails the test, and so does a warning
printed by a cell: tutorials are held to the suite's ``filterwarnings = error``. The run time
of each tutorial is printed at the end of the module and kept in pytest's cache under
``pyro_ebm/tutorial_seconds``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT = 600  # seconds per cell; each whole tutorial takes well under a minute with CI=1
WARNING_LINE = re.compile(r"^\S*(Warning|Error)\b|\b\w*Warning: ", re.MULTILINE)


def test_tutorials_exist():
    names = {path.stem for path in TUTORIALS}
    assert names >= {
        "01_energy_distribution_in_pyro",
        "02_training_methods",
        "03_sampling_theory",
        "04_partition_function",
        "05_digits",
        "06_pyro_models_on_many_chains",
    }
    for path in TUTORIALS:
        assert 'smoke_test = "CI" in os.environ' in path.read_text(), path.name


@pytest.fixture(scope="module")
def run_times(request):
    times: dict[str, float] = {}
    yield times
    if not times:
        return
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        cache.set("pyro_ebm/tutorial_seconds", times)
    lines = [f"  {name}: {seconds:.1f} s" for name, seconds in times.items()]
    lines.append(f"  total: {sum(times.values()):.1f} s")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\ntutorial run times with CI=1:\n" + "\n".join(lines))


def _stderr_of(notebook) -> list[str]:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                texts.append(output.get("text", ""))
    return texts


@pytest.mark.parametrize("path", TUTORIALS, ids=[path.stem for path in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch, run_times):
    notebook = jupytext.read(path, fmt="py:percent")
    monkeypatch.setenv("CI", "1")  # the kernel inherits it: small sizes
    monkeypatch.setenv("MPLBACKEND", "Agg")  # plain `python` runs; IPython switches to inline
    # The tutorials' models are tiny: one thread is as fast, and a busy machine (other jobs on
    # the same cores) cannot slow intra-op thread synchronization down by orders of magnitude.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()
    run_times[path.stem] = time.perf_counter() - start
    warnings_printed = [text for text in _stderr_of(notebook) if WARNING_LINE.search(text)]
    assert not warnings_printed, f"{path.name} printed warnings:\n" + "\n".join(warnings_printed)
