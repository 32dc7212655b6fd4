"""The pyro-ebm command line: end to end per objective, user errors, --resume, progress, demo."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_ebm import cli, datasets
from pyro_ebm.config import OBJECTIVES, read_config
from pyro_ebm.errors import UserError
from pyro_ebm.rundir import load_run

from .cli_support import assert_ok, assert_one_line_error, run_cli, tiny_config

EVALUATION_FIELDS = {
    "run", "data", "objective", "steps", "event_shape", "log_Z", "log_Z_method", "log_Z_stderr",
    "log_Z_learned", "test_nll", "test_nll_stderr", "n_test", "oracle_nll", "kl", "mmd",
    "mmd_points", "mmd_source", "seconds",
}  # fmt: skip
RUN_FILES = ("config.toml", "data.pt", "checkpoint.pt", "model.pt", "history.json")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def embedded_images(page: str) -> dict[str, bytes]:
    """The base64 PNGs of a report page, by element id."""
    found = re.findall(
        r'<img id="([\w-]+)"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page
    )
    return {name: base64.b64decode(data) for name, data in found}


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def full_run(capsys, tmp_path: Path, data: str, objective: str, steps: int = 5) -> Path:
    """train, sample, evaluate and report on tiny settings; returns the run directory."""
    out = tmp_path / f"run-{objective}"
    config = tiny_config(tmp_path)
    assert_ok(run_cli(capsys, "train", "--data", data, "--objective", objective, "--steps",
                      steps, "--out", out, "--config", config, "--quiet"))  # fmt: skip
    assert_ok(run_cli(capsys, "sample", "--run", out, "--kernel", "mala", "--num-chains", 4,
                      "--num-samples", 20, "--quiet"))  # fmt: skip
    result = run_cli(capsys, "evaluate", "--run", out, "--quiet")
    assert_ok(result)
    assert "test NLL" in result.out and "MMD" in result.out
    result = run_cli(capsys, "report", "--run", out, "--quiet")
    assert_ok(result)
    assert str(out / "report.html") in result.out
    return out


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_end_to_end_for_each_objective(capsys, tmp_path, objective):
    out = full_run(capsys, tmp_path, "8gaussians", objective)
    for name in (*RUN_FILES, "samples.pt", "samples.nc", "evaluation.json", "report.html"):
        assert (out / name).is_file(), name

    config = read_config(out / "config.toml")  # the configuration actually used, resolved
    assert config["objective"]["name"] == objective
    assert config["train"]["steps"] == 5
    assert config["model"] == {"kind": "mlp", "hidden": [16], "activation": "silu",
                               "spectral_norm": False, "first_layer_gain": 2.0}  # fmt: skip
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == [0, 1, 2, 3, 4]

    saved = torch.load(out / "samples.pt", weights_only=False)
    assert saved["samples"].shape == (4, 20, 2)
    assert saved["settings"]["kernel"] == "mala"
    assert (out / "samples.nc").read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # netCDF4 = HDF5

    evaluation = json.loads((out / "evaluation.json").read_text())
    assert EVALUATION_FIELDS <= set(evaluation)
    assert evaluation["log_Z_method"] == "grid"
    assert evaluation["oracle_nll"] == pytest.approx(datasets.oracle_nll("8gaussians"))
    assert evaluation["kl"] == pytest.approx(evaluation["test_nll"] - evaluation["oracle_nll"])
    assert evaluation["n_test"] == 100 and evaluation["mmd_points"] == 50
    learns_log_z = objective != "cd"  # NCE, FCE and score matching's contrastive term
    assert (evaluation["log_Z_learned"] is not None) == learns_log_z

    page = (out / "report.html").read_text()
    images = embedded_images(page)
    names = ("density", "samples", "history", "trace", "rank", "energy")
    assert set(images) == {f"fig-{n}" for n in names}
    for name, png in images.items():
        width, height = png_size(png)
        assert width > 100 and height > 100, name
        assert (out / "figures" / f"{name[4:]}.png").read_bytes() == png
    assert '<table id="evaluation">' in page and "KL to truth" in page
    assert 'class="dataframe summary"' in page and "r_hat" in page  # the ArviZ summary
    assert 'src="http' not in page and "<link" not in page  # self-contained


def test_training_says_what_fit_decided_and_warns_of_failure(capsys, tmp_path, monkeypatch):
    """An abandoned FCE refinement is a note on stdout; a sign of failure in the History is a
    UserWarning, also under --quiet."""
    from pyro_ebm.objectives import FCE

    monkeypatch.setattr("pyro_ebm.objectives.fce.REFINE_ABANDON", 0.0)  # any trial is lost
    config = tiny_config(tmp_path)
    result = run_cli(capsys, "train", "--data", "8gaussians", "--objective", "fce", "--steps",
                     30, "--out", tmp_path / "a", "--config", config)  # fmt: skip
    assert_ok(result)
    assert "abandoned after its trial" in result.out and "step 15:" in result.out

    monkeypatch.setattr(FCE, "diagnose", lambda self, metrics, lr: {"log_Z": "runs away"})
    with pytest.warns(UserWarning, match="training log_Z at step 49: runs away"):
        result = run_cli(capsys, "train", "--data", "8gaussians", "--objective", "fce",
                         "--steps", 50, "--out", tmp_path / "b", "--config", config,
                         "--quiet")  # fmt: skip
    assert_ok(result)


def test_digits_end_to_end_uses_a_conv_energy_ais_and_image_grids(capsys, tmp_path):
    out = full_run(capsys, tmp_path, "digits", "nce", steps=2)
    run = load_run(out)
    assert type(run.energy).__name__ == "ConvEnergy" and run.event_shape == (1, 8, 8)
    assert run.train.shape[0] + run.test.shape[0] == 1797
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["log_Z_method"] == "ais" and evaluation["kl"] is None
    images = embedded_images((out / "report.html").read_text())
    assert "fig-density" not in images and "fig-samples" in images  # no 64-d heatmap


def test_data_files_csv_and_npy(capsys, tmp_path):
    gen = np.random.default_rng(0)
    points = gen.normal(size=(60, 3)) * [1.0, 2.0, 0.5] + 10.0
    csv = tmp_path / "points.csv"
    csv.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in points))
    out = full_run(capsys, tmp_path, csv, "sm-sliced", steps=3)
    run = load_run(out)
    assert run.event_shape == (3,) and run.train.shape[0] + run.test.shape[0] == 60
    assert json.loads((out / "evaluation.json").read_text())["log_Z_method"] == "ais"

    npy = tmp_path / "points.npy"
    np.save(npy, points[:, :2])
    out2 = tmp_path / "npy-run"
    assert_ok(run_cli(capsys, "train", "--data", npy, "--steps", 2, "--out", out2, "--config",
                      tiny_config(tmp_path), "--quiet"))  # fmt: skip
    bounds = read_config(out2 / "config.toml")["evaluate"]["bounds"]
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    assert bounds[0] < lo[0] < hi[0] < bounds[1] and bounds[2] < lo[1] < hi[1] < bounds[3]
    result = run_cli(capsys, "evaluate", "--run", out2, "--quiet")  # fresh MALA for the MMD
    assert_ok(result)
    assert "fresh MALA run" in json.loads((out2 / "evaluation.json").read_text())["mmd_source"]


def test_sample_with_hmc_gives_arviz_energy_plot(capsys, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(tmp_path)
    assert_ok(run_cli(capsys, "train", "--data", "moons", "--steps", 2, "--out", out,
                      "--config", config, "--quiet"))  # fmt: skip
    assert_ok(run_cli(capsys, "sample", "--run", out, "--kernel", "hmc", "--num-chains", 3,
                      "--num-samples", 12, "--warmup-steps", 5, "--quiet"))  # fmt: skip
    saved = torch.load(out / "samples.pt", weights_only=False)
    assert saved["kernel"] == "hmc" and "energy" in saved["stats"]
    assert_ok(run_cli(capsys, "report", "--run", out, "--quiet"))  # evaluates on the way
    page = (out / "report.html").read_text()
    assert "ArviZ energy plot" in page and (out / "evaluation.json").exists()


# --------------------------------------------------------------------------------------------
# user errors: one line on stderr, non-zero exit, no traceback
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny trained run, copied by the tests that damage it."""
    root = tmp_path_factory.mktemp("trained")
    out = root / "run"
    assert cli.main(["train", "--data", "8gaussians", "--steps", "4", "--out", str(out),
                     "--config", str(tiny_config(root)), "--quiet"]) == 0  # fmt: skip
    return out


def damaged_copy(trained: Path, tmp_path: Path, damage) -> Path:
    out = tmp_path / "damaged"
    shutil.copytree(trained, out)
    damage(out)
    return out


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def bad_npy(tmp_path: Path, array: np.ndarray) -> Path:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    return path


def with_nan(shape: tuple[int, ...], index: tuple[int, ...]) -> np.ndarray:
    array = np.ones(shape)
    array[index] = np.nan
    return array


def train_with_data(t: Path, data) -> list:
    return ["train", "--data", data, "--out", t / "r"]


def train_with_config(t: Path, text: str) -> list:
    return ["train", "--data", "moons", "--out", t / "r", "--config", write(t / "c.toml", text)]


def csv_file(t: Path, text: str) -> Path:
    return write(t / "d.csv", text)


ROWS = "\n".join(f"{i},{i * 2}" for i in range(12))
ERROR_CASES = {
    "unknown dataset": (
        lambda t: train_with_data(t, "mnist"),
        ["unknown data set 'mnist'", "8gaussians", "digits", ".npy or .csv"],
    ),
    "unknown objective": (
        lambda t: train_with_data(t, "moons") + ["--objective", "gan"],
        ["argument --objective", "invalid choice: 'gan'", "nce"],
    ),
    "unknown objective in config": (
        lambda t: train_with_config(t, '[objective]\nname = "gan"\n'),
        ["objective.name must be one of", "'gan'"],
    ),
    "unknown kernel": (
        lambda t: ["sample", "--run", t, "--kernel", "nuts"],
        ["invalid choice: 'nuts'", "mala"],
    ),
    "bad step count": (
        lambda t: train_with_data(t, "moons") + ["--steps", "0"],
        ["argument --steps", "must be >= 1"],
    ),
    "no data": (lambda t: ["train", "--out", t / "r"], ["needs --data"]),
    "missing run directory": (
        lambda t: ["sample", "--run", t / "nowhere"],
        ["run directory", "nowhere", "does not exist"],
    ),
    "not a run directory": (
        lambda t: ["evaluate", "--run", t],
        ["not a pyro-ebm run directory", "config.toml is missing"],
    ),
    "run directory is a file": (
        lambda t: ["report", "--run", write(t / "file.txt", "x")],
        ["is not a directory"],
    ),
    "missing data file": (
        lambda t: train_with_data(t, t / "absent.csv"),
        ["absent.csv does not exist"],
    ),
    "csv with a NaN": (
        lambda t: train_with_data(t, csv_file(t, f"x,y\n{ROWS}\n3,nan\n")),
        ["d.csv: row 14, column 2 is NaN"],
    ),
    "csv with an infinity": (
        lambda t: train_with_data(t, csv_file(t, f"{ROWS}\n-inf,1\n")),
        ["d.csv: row 13, column 1 is -inf"],
    ),
    "csv with a word": (
        lambda t: train_with_data(t, csv_file(t, f"x,y\n1,2\n3,four\n{ROWS}\n")),
        ["d.csv: row 3, column 2 is not a number: 'four'"],
    ),
    "csv with an empty field": (
        lambda t: train_with_data(t, csv_file(t, f"{ROWS}\n5,\n")),
        ["d.csv: row 13, column 2 is empty"],
    ),
    "csv with a value beyond float32": (
        lambda t: train_with_data(t, csv_file(t, f"{ROWS}\n1e300,1\n")),
        ["data row 13, column 1 is beyond the float32 range (1e+300)"],
    ),
    "csv with a ragged row": (
        lambda t: train_with_data(t, csv_file(t, f"{ROWS}\n1,2,3\n")),
        ["d.csv: row 13 has 3 columns; expected 2"],
    ),
    "npy with a NaN": (
        lambda t: train_with_data(t, bad_npy(t, with_nan((20, 3), (6, 2)))),
        ["bad.npy: row 7, column 3 is NaN"],
    ),
    "npy of the wrong shape": (
        lambda t: train_with_data(t, bad_npy(t, np.ones((20, 2, 2)))),
        ["bad.npy must be a 2-d array of shape (rows, columns); got shape (20, 2, 2)"],
    ),
    "npy of one dimension": (
        lambda t: train_with_data(t, bad_npy(t, np.ones(20))),
        ["got shape (20,)", "reshape(-1, 1)"],
    ),
    "too few rows": (
        lambda t: train_with_data(t, bad_npy(t, np.ones((3, 2)))),
        ["has 3 rows; at least 10"],
    ),
    "corrupt npy": (
        lambda t: train_with_data(t, write(t / "x.npy", b"not numpy")),
        ["x.npy is not a readable .npy array"],
    ),
    "unknown config key": (
        lambda t: train_with_config(t, "[train]\nstepz = 3\n"),
        ["unknown key 'train.stepz'", "valid keys in [train]: steps, batch_size"],
    ),
    "unknown config section": (
        lambda t: train_with_config(t, "[optimizer]\nlr = 3\n"),
        ["unknown section [optimizer]", "[train]"],
    ),
    "config key outside a section": (
        lambda t: train_with_config(t, "steps = 3\n"),
        ["unknown key 'steps' outside any section"],
    ),
    "config value of the wrong type": (
        lambda t: train_with_config(t, '[train]\nsteps = "many"\n'),
        ["train.steps must be an integer", "'many'"],
    ),
    "config that is not TOML": (
        lambda t: train_with_config(t, "[train\nsteps = 3\n"),
        ["c.toml is not valid TOML"],
    ),
    "missing config file": (
        lambda t: ["train", "--data", "moons", "--out", t / "r", "--config", t / "none.toml"],
        ["config file", "none.toml does not exist"],
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_errors_are_one_line(capsys, tmp_path, case):
    argv, needles = ERROR_CASES[case]
    result = run_cli(capsys, *argv(tmp_path))
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "r" / "model.pt").exists()


RUN_DAMAGE = {
    "corrupt model.pt": (lambda d: write(d / "model.pt", b"garbage"), ["model.pt is corrupt"]),
    "missing model.pt": (
        lambda d: (d / "model.pt").unlink(),
        ["holds no trained model (model.pt is missing)", "--resume"],
    ),
    "corrupt config.toml": (
        lambda d: write(d / "config.toml", "[model\n"),
        ["run directory", "is corrupt", "config.toml is not valid TOML"],
    ),
    "edited config.toml": (
        lambda d: write(d / "config.toml", (d / "config.toml").read_text().replace("16", "32")),
        ["model.pt does not match the [model] section"],
    ),
    "missing data.pt": (lambda d: (d / "data.pt").unlink(), ["data.pt is missing"]),
    "corrupt data.pt": (lambda d: write(d / "data.pt", b"\x00" * 10), ["data.pt is corrupt"]),
    "corrupt samples.pt": (
        lambda d: write(d / "samples.pt", b"junk"),
        ["samples.pt is corrupt or unreadable"],
    ),
}


@pytest.mark.parametrize(
    "command, case",
    [
        (command, case)
        for command in ("sample", "evaluate", "report")
        for case in RUN_DAMAGE
        if (command, case) != ("sample", "corrupt samples.pt")  # sample replaces it unread
    ],
)
def test_damaged_run_directory_is_one_line_error(capsys, tmp_path, trained, case, command):
    damage, needles = RUN_DAMAGE[case]
    out = damaged_copy(trained, tmp_path, damage)
    assert_one_line_error(run_cli(capsys, command, "--run", out, "--quiet"), *needles)


def test_training_into_an_existing_run_needs_resume_or_force(capsys, tmp_path, trained):
    out = damaged_copy(trained, tmp_path, lambda d: None)
    result = run_cli(capsys, "train", "--data", "8gaussians", "--out", out)
    assert_one_line_error(result, "already holds a run", "--resume", "--force")
    config = tiny_config(tmp_path)
    args = ("train", "--data", "moons", "--steps", 2, "--out", out, "--config", config)
    assert_ok(run_cli(capsys, *args, "--force", "--quiet"))
    assert read_config(out / "config.toml")["data"]["name"] == "moons"


@pytest.mark.parametrize(
    "argv, help_of",
    [
        (["train", "--objectiv", "nce", "--data", "moons", "--out", "r"], "pyro-ebm train"),
        (["train", "--data", "moons", "--out", "r", "--stps", "3"], "pyro-ebm train"),
        (["sample", "--run", "r", "--num-chain", "4"], "pyro-ebm sample"),
        (["demo", "--step", "3"], "pyro-ebm demo"),
        (["--quie", "evaluate", "--run", "r"], "pyro-ebm evaluate"),
    ],
)
def test_abbreviated_flags_are_rejected(capsys, tmp_path, monkeypatch, argv, help_of):
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, *argv)
    assert_one_line_error(result, "unrecognized arguments", f"(see {help_of} --help)")
    assert not (tmp_path / "r").exists()


def test_internal_value_errors_are_not_user_errors(capsys, tmp_path, trained, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("an internal check failed")

    monkeypatch.setattr("pyro_ebm.runs.sample", broken)
    result = run_cli(capsys, "sample", "--run", trained, "--quiet")
    assert_one_line_error(result, "unexpected ValueError: an internal check failed", code=1)


def test_debug_shows_the_traceback(capsys, tmp_path):
    with pytest.raises(UserError, match="unknown data set"):
        cli.main(["train", "--data", "mnist", "--out", str(tmp_path), "--debug"])


def test_unexpected_errors_are_one_line_with_a_hint(capsys, tmp_path, trained, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the sampler\nbroke")

    monkeypatch.setattr("pyro_ebm.runs.sample", broken)
    result = run_cli(capsys, "sample", "--run", trained, "--quiet")
    assert_one_line_error(result, "unexpected RuntimeError: the sampler broke", "--debug", code=1)
    with pytest.raises(RuntimeError, match="broke"):
        cli.main(["sample", "--run", str(trained), "--quiet", "--debug"])


def test_console_script_in_a_real_process(tmp_path):
    script = Path(sys.executable).with_name("pyro-ebm")
    if not script.exists():
        pytest.skip(f"the pyro-ebm console script is not installed next to {sys.executable}")
    proc = subprocess.run(
        [str(script), "train", "--data", "nowhere.csv", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == "pyro-ebm: error: data file nowhere.csv does not exist\n"
    assert proc.stdout == ""


# --------------------------------------------------------------------------------------------
# --help, --resume, progress bars, the demo
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "sample", "evaluate", "report", "demo", None])
def test_help_on_every_subcommand(capsys, command):
    argv = ["--help"] if command is None else [command, "--help"]
    result = run_cli(capsys, *argv)
    assert result.code == 0 and result.err == ""
    assert result.out.startswith(f"usage: pyro-ebm{' ' + command if command else ''}")
    assert "--quiet" in result.out
    if command is None:
        assert all(name in result.out for name in ("train", "sample", "evaluate", "report"))


def test_resume_continues_a_run_exactly(capsys, tmp_path):
    config = tiny_config(tmp_path, {"train": {"schedule": "constant"}})
    common = ("--data", "8gaussians", "--objective", "nce", "--config", config, "--quiet")
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert_ok(run_cli(capsys, "train", *common, "--steps", 8, "--out", straight))
    assert_ok(run_cli(capsys, "train", *common, "--steps", 4, "--out", pieces))
    assert_ok(run_cli(capsys, "sample", "--run", pieces, "--quiet"))
    assert json.loads((pieces / "history.json").read_text())["step"] == [0, 1, 2, 3]

    result = run_cli(capsys, "train", "--out", pieces, "--resume", "--steps", 8)
    assert_ok(result)
    assert "resuming" in result.out and "step 4 of 8" in result.out
    assert not (pieces / "samples.pt").exists()  # the draws of the 4-step model are gone
    a = json.loads((straight / "history.json").read_text())
    b = json.loads((pieces / "history.json").read_text())
    assert b["step"] == list(range(8)) and b["loss"] == a["loss"]
    model_a = torch.load(straight / "model.pt", weights_only=False)
    model_b = torch.load(pieces / "model.pt", weights_only=False)
    assert model_b["steps"] == 8 and model_b["log_Z"] == model_a["log_Z"]
    for key, value in model_a["energy"].items():
        assert torch.equal(value, model_b["energy"][key]), key
    assert read_config(pieces / "config.toml")["train"]["steps"] == 8

    assert_one_line_error(
        run_cli(capsys, "train", "--out", pieces, "--resume", "--steps", 8),
        "already trained for 8 steps",
    )
    assert_one_line_error(
        run_cli(capsys, "train", "--out", pieces, "--resume", "--steps", 9, "--objective", "cd"),
        "cannot change objective.name when resuming",
    )
    assert_one_line_error(
        run_cli(capsys, "train", "--out", tmp_path / "none", "--resume"), "does not exist"
    )


def test_progress_bars_and_quiet(capsys, tmp_path):
    config = tiny_config(tmp_path)
    out = tmp_path / "run"
    result = run_cli(capsys, "train", "--data", "moons", "--steps", 3, "--out", out,
                     "--config", config)  # fmt: skip
    assert_ok(result)
    assert "NCE" in result.err and "3/3" in result.err  # tqdm's bar
    assert "trained nce on moons" in result.out
    result = run_cli(capsys, "evaluate", "--run", out)
    assert "evaluate" in result.err and "3/3" in result.err
    result = run_cli(capsys, "--quiet", "sample", "--run", out)  # also before the command
    assert_ok(result)
    assert result.err == ""  # no bar, no notes, but the result line that --help promises
    assert result.out.startswith("sampled ") and result.out.count("\n") == 1
    result = run_cli(capsys, "train", "--data", "moons", "--steps", 3, "--out", out, "--config",
                     config, "--force", "--quiet")  # fmt: skip
    assert result.err == "" and result.out.startswith("trained nce on moons")
    result = run_cli(capsys, "report", "--run", out, "--quiet")  # re-samples: it says so
    assert result.err == ""
    assert "no draws" in result.out and "no evaluation" in result.out
    assert result.out.splitlines()[-1].startswith("report: ")
    result = run_cli(capsys, "report", "--run", out, "--quiet")
    assert result.err == "" and result.out.startswith("report: ")


def test_demo_runs_the_whole_job(capsys, tmp_path, monkeypatch):
    def small_demo(steps: int) -> dict:
        tiny = {k: dict(v) for k, v in read_config(tiny_config(tmp_path)).items()}
        tiny.update(data={"name": "8gaussians", "n_train": 300, "n_test": 100},
                    objective={"name": "nce"})  # fmt: skip
        tiny["train"]["steps"] = steps
        return tiny

    monkeypatch.setattr(cli, "demo_config", small_demo)
    out = tmp_path / "demo"
    result = run_cli(capsys, "demo", "--out", out, "--steps", 3, "--quiet")
    assert_ok(result)
    assert "KL to truth" in result.out
    assert re.search(r"demo finished in \d+ s; report: .*report\.html", result.out)
    assert (out / "report.html").exists() and (out / "samples.nc").exists()
    assert_one_line_error(run_cli(capsys, "demo", "--out", out, "--quiet"), "already holds a run")
    assert_ok(run_cli(capsys, "demo", "--out", out, "--steps", 2, "--force", "--quiet"))


def test_threads_option(capsys, tmp_path, trained):
    before = torch.get_num_threads()
    try:
        assert_ok(run_cli(capsys, "evaluate", "--run", trained, "--quiet", "--threads", 1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_train_with_two_processes_matches_the_checkpoint_format(capsys, tmp_path):
    """``--nproc 2`` relaunches under torchrun: rank 0 writes one run that loads and resumes."""
    config = tiny_config(tmp_path, {"train": {"batch_size": 64, "checkpoint_every": 2}})
    out = tmp_path / "ddp"
    result = run_cli(capsys, "train", "--data", "8gaussians", "--objective", "sm-sliced",
                     "--steps", "4", "--out", out, "--config", config, "--quiet",
                     "--nproc", "2")  # fmt: skip
    assert_ok(result)
    run = load_run(out)
    assert len(run.history().loss) == 4
    # the checkpoint continues in a single process (another world size)
    assert_ok(run_cli(capsys, "train", "--out", out, "--resume", "--steps", "6", "--quiet"))
    assert len(load_run(out).history().loss) == 6
