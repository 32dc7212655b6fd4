"""Run directories: train, sample and evaluate an energy from a configuration, saving everything.

A run directory (``pyro-ebm train --out DIR``) holds

==================  ===========================================================================
``config.toml``     the configuration actually used (every default resolved)
``data.pt``         the training and held-out points (so resuming and evaluating never re-read
                    the source)
``checkpoint.pt``   :func:`pyro_ebm.fit`'s resumable checkpoint (raw weights, optimizer, ...)
``model.pt``        the trained energy (EMA weights) and its learned log Z
``history.json``    :class:`pyro_ebm.History`
``samples.pt``      draws and sampler statistics (``pyro-ebm sample``)
``samples.nc``      the same as ArviZ data in netCDF
``evaluation.json`` log Z, test NLL, KL to the truth, MMD (``pyro-ebm evaluate``)
``report.html``     the self-contained report and ``figures/`` (``pyro-ebm report``)
==================  ===========================================================================

Problems a user can fix (an unknown data set, a missing or corrupt run directory, a bad data
file or configuration key) raise :class:`UserError` with a one-line message.

Examples
--------
>>> import tempfile
>>> from pyro_ebm import runs
>>> out = tempfile.mkdtemp()
>>> tiny = {"data": {"name": "8gaussians", "n_train": 256, "n_test": 64},
...         "model": {"hidden": [8]}, "train": {"steps": 3, "batch_size": 64}}
>>> run = runs.train_run(out, tiny, progress=False, log=None, result=None)
>>> run.event_shape, len(run.history().loss)
(torch.Size([2]), 3)
>>> sorted(p.name for p in run.path.iterdir())
['checkpoint.pt', 'config.toml', 'data.pt', 'history.json', 'model.pt']
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import __version__, datasets
from ._validation import check_bounds
from .config import (
    Config,
    ConfigError,
    default_config,
    merge_config,
    read_config,
    validate_config,
    write_config,
)
from .energies import ConvEnergy, MLPEnergy
from .errors import UserError
from .evaluation import ais_log_partition, grid_log_partition, mmd, nll_summary
from .infer import Samples, sample
from .objectives import (
    FCE,
    NCE,
    ContrastiveDivergence,
    Objective,
    ScoreMatching,
    fit_gaussian_noise,
    make_flow,
)
from .parallel import rank_and_world
from .progress import progress as progress_bar
from .training import CHECKPOINT_NAME, History, fit, load_checkpoint

__all__ = [
    "Run",
    "UserError",
    "build_energy",
    "build_objective",
    "evaluate_run",
    "format_evaluation",
    "load_data",
    "load_data_file",
    "load_run",
    "resolve_config",
    "sample_run",
    "train_run",
]

CONFIG_FILE = "config.toml"
DATA_FILE = "data.pt"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.json"
SAMPLES_FILE = "samples.pt"
ARVIZ_FILE = "samples.nc"
EVALUATION_FILE = "evaluation.json"
REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
MODEL_FORMAT = "pyro-ebm-model/1"
DATA_FORMAT = "pyro-ebm-data/1"
SAMPLES_FORMAT = "pyro-ebm-samples/1"
MIN_ROWS = 10
TOY_BOUNDS = [-4.0, 4.0, -4.0, 4.0]
# Files derived from a trained model: stale once the model changes.
DERIVED_FILES = (SAMPLES_FILE, ARVIZ_FILE, EVALUATION_FILE, REPORT_FILE)
RUN_FILES = (CONFIG_FILE, DATA_FILE, MODEL_FILE, HISTORY_FILE, CHECKPOINT_NAME, *DERIVED_FILES)
# Keys that may change when a run is resumed; everything else must match the saved config.
RESUMABLE_KEYS = {("train", "steps"), ("train", "checkpoint_every")}
RESUMABLE_SECTIONS = ("sample", "evaluate")

Log = Callable[[str], None] | None


def _say(log: Log, message: str) -> None:
    if log is not None:
        log(message)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _first_bad(array: np.ndarray) -> tuple[int, int, str] | None:
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    row, col = (int(i) for i in np.argwhere(bad)[0])
    value = array[row, col]
    return row, col, "NaN" if np.isnan(value) else ("+inf" if value > 0 else "-inf")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> np.ndarray:
    """Numbers of a comma-separated file (an optional header row), checked row by row."""
    rows: list[list[float]] = []
    lines: list[int] = []
    width = None
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, fields in enumerate(csv.reader(handle), start=1):
                if not fields or all(not f.strip() for f in fields):
                    continue  # blank line
                bad = next(((c, t) for c, t in enumerate(fields, 1) if not _is_number(t)), None)
                if bad is not None:
                    if not rows and width is None:  # a header row
                        width = len(fields)
                        continue
                    col, text = bad
                    what = "is empty" if not text.strip() else f"is not a number: {text!r}"
                    raise UserError(f"data file {path}: row {line}, column {col} {what}")
                if width is None:
                    width = len(fields)
                if len(fields) != width:
                    raise UserError(
                        f"data file {path}: row {line} has {len(fields)} columns; expected "
                        f"{width} like the rows before it"
                    )
                rows.append([float(t) for t in fields])
                lines.append(line)
    except UnicodeDecodeError:
        raise UserError(f"data file {path} is not a text CSV file (not UTF-8)") from None
    if not rows:
        raise UserError(f"data file {path} holds no rows of numbers")
    array = np.asarray(rows, dtype=np.float64)
    bad_value = _first_bad(array)
    if bad_value is not None:
        row, col, what = bad_value
        raise UserError(
            f"data file {path}: row {lines[row]}, column {col + 1} is {what} "
            "(rows and columns count from 1, a header row included)"
        )
    return array


def load_data_file(path: str | os.PathLike) -> Tensor:
    """Read a ``.npy`` array or a ``.csv`` file of shape ``(rows, columns)`` as float32 points.

    A CSV may start with a header row; every other row must hold the same number of numeric
    fields. NaN or infinite values, a wrong shape or fewer than 10 rows raise :class:`UserError`
    naming the row and column (counting from 1).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "points.csv"
    >>> rows = "\\n".join(f"{i},{2 * i}" for i in range(11))
    >>> _ = path.write_text("a,b\\n" + rows + "\\n11,22")
    >>> load_data_file(path).shape
    torch.Size([12, 2])
    >>> _ = path.write_text("a,b\\n" + rows + "\\n1,nan")
    >>> load_data_file(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyro_ebm.errors.UserError: data file ...points.csv: row 13, column 2 is NaN (rows and ...
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise UserError(f"data file {path} must end in .npy or .csv")
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    if suffix == ".csv":
        array = _read_csv(path)
    else:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise UserError(
                f"data file {path} is not a readable .npy array ({type(err).__name__})"
            ) from None
        if array.dtype.kind not in "biuf":
            raise UserError(f"data file {path} must hold real numbers; got dtype {array.dtype}")
        if array.ndim != 2:
            hint = " (one column? save x.reshape(-1, 1))" if array.ndim == 1 else ""
            raise UserError(
                f"data file {path} must be a 2-d array of shape (rows, columns); got shape "
                f"{array.shape}{hint}"
            )
        array = array.astype(np.float64)
        bad = _first_bad(array)
        if bad is not None:
            row, col, what = bad
            raise UserError(
                f"data file {path}: row {row + 1}, column {col + 1} is {what} (counting from 1)"
            )
    if array.shape[1] < 1:
        raise UserError(f"data file {path} has no columns")
    with np.errstate(over="ignore"):
        single = array.astype(np.float32)
    too_big = _first_bad(single)
    if too_big is not None:
        row, col, _ = too_big
        raise UserError(
            f"data file {path}: the value at data row {row + 1}, column {col + 1} is beyond the "
            f"float32 range ({array[row, col]:g})"
        )
    if array.shape[0] < MIN_ROWS:
        raise UserError(
            f"data file {path} has {array.shape[0]} rows; at least {MIN_ROWS} are needed"
        )
    return torch.from_numpy(single)


def _is_file_name(name: str) -> bool:
    return name.lower().endswith((".npy", ".csv"))


def check_data_name(name: str) -> str:
    """``name`` if it is a built-in data set or a ``.npy``/``.csv`` path, else :class:`UserError`.

    Examples
    --------
    >>> check_data_name("moons")
    'moons'
    >>> check_data_name("mnist")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyro_ebm.errors.UserError: unknown data set 'mnist'; valid names: 8gaussians, ...
    """
    if name in datasets.NAMES or _is_file_name(name):
        return name
    raise UserError(
        f"unknown data set {name!r}; valid names: {', '.join(datasets.NAMES)}, or a path to a "
        ".npy or .csv file"
    )


def _split(points: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    if not 0 < fraction < 1:
        raise UserError(f"data.test_fraction must be in (0, 1); got {fraction!r}")
    n = points.shape[0]
    n_test = min(max(2, round(n * fraction)), n - 2)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return points[order[n_test:]], points[order[:n_test]]


def load_data(data: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Training and held-out points (float32) for a ``[data]`` configuration section.

    2-d toys: ``n_train`` points with ``seed`` and ``n_test`` with ``seed + 1``. Digits (all
    1797 images, dequantized) and data files: a seeded split holding out ``test_fraction``.

    Examples
    --------
    >>> train, test = load_data({"name": "moons", "n_train": 100, "n_test": 20, "seed": 0})
    >>> train.shape, test.shape
    (torch.Size([100, 2]), torch.Size([20, 2]))
    """
    data = merge_config(default_config(), {"data": data})["data"]
    name = data.get("name")
    if not name:
        raise UserError("no data set given: pass --data NAME (or set data.name in --config)")
    check_data_name(name)
    if name in datasets.TOY_NAMES:
        train = datasets.load(name, data["n_train"], seed=data["seed"])
        test = datasets.load(name, data["n_test"], seed=data["seed"] + 1)
        return train, test
    if name == "digits":
        images = datasets.load("digits", 1797, seed=data["seed"])
        return _split(images, data["test_fraction"], data["seed"] + 1)
    return _split(load_data_file(name), data["test_fraction"], data["seed"])


# --------------------------------------------------------------------------------------------
# configuration, energy and objective
# --------------------------------------------------------------------------------------------

_OBJECTIVE_KEYS = {
    "cd": ("cd_mode", "cd_steps", "cd_step_size", "cd_alpha", "cd_buffer_size", "cd_reinit_prob"),
    "sm-exact": (),
    "sm-sliced": ("num_projections",),
    "sm-denoising": ("sigma",),
    "nce": ("noise_scale", "noise_ratio"),
    "fce": ("noise_ratio", "flow_kind", "flow_hidden", "flow_layers", "flow_pretrain_steps"),
}
_MODEL_KEYS = {
    "mlp": ("hidden", "activation", "spectral_norm"),
    "conv": ("channels", "activation"),
}


def _is_image(event_shape: torch.Size) -> bool:
    return len(event_shape) == 3 and tuple(event_shape) == (1, 8, 8)


def _data_bounds(train: Tensor) -> list[float]:
    lo, hi = train.min(0).values.double(), train.max(0).values.double()
    pad = 0.15 * (hi - lo).clamp(min=1e-3)
    return [round(float(v), 4) for pair in zip(lo - pad, hi + pad, strict=True) for v in pair]


def resolve_config(config: Config, train: Tensor) -> Config:
    """Fill in the defaults that depend on the data and the objective; drop unused keys.

    The result is what a run's ``config.toml`` records.

    Examples
    --------
    >>> train = torch.randn(50, 2)
    >>> config = resolve_config(merge_config(default_config(), {"data": {"name": "moons"}}), train)
    >>> config["model"]
    {'kind': 'mlp', 'hidden': [128, 128], 'activation': 'silu', 'spectral_norm': False}
    >>> config["objective"]
    {'name': 'nce', 'noise_scale': 1.25, 'noise_ratio': 4.0}
    """
    config = merge_config(default_config(), config)
    event_shape = train.shape[1:]
    dim = event_shape.numel()
    name = config["data"]["name"]
    data = config["data"]
    if name in datasets.TOY_NAMES:
        data.pop("test_fraction")
    else:
        data.pop("n_train")
        data.pop("n_test")

    model = config["model"]
    if model["kind"] == "auto":
        model["kind"] = "conv" if _is_image(event_shape) else "mlp"
    if model["kind"] == "conv" and not _is_image(event_shape):
        raise UserError(
            f"model.kind = 'conv' needs 8x8 images (digits); this data has event shape "
            f"{tuple(event_shape)}: use 'mlp' or 'auto'"
        )
    if model["kind"] == "mlp" and len(event_shape) != 1:
        raise UserError(
            f"model.kind = 'mlp' needs vector data; this data has event shape "
            f"{tuple(event_shape)}: use 'conv' or 'auto'"
        )
    if model["hidden"] is None:
        model["hidden"] = [128, 128] if dim == 2 else [256, 256]
    keep = ("kind", *_MODEL_KEYS[model["kind"]])
    config["model"] = {k: v for k, v in model.items() if k in keep}

    objective = config["objective"]
    kind = objective["name"]
    if objective["noise_ratio"] is None:
        objective["noise_ratio"] = 4.0 if kind == "nce" else 1.0
    if objective["flow_kind"] is None:
        objective["flow_kind"] = "realnvp" if dim >= 2 else "maf"
    if kind == "fce" and objective["flow_kind"] == "realnvp" and dim < 2:
        raise UserError("objective.flow_kind = 'realnvp' needs at least 2 dimensions; use 'maf'")
    keep = ("name", *_OBJECTIVE_KEYS[kind])
    config["objective"] = {k: v for k, v in objective.items() if k in keep}

    if config["sample"]["num_chains"] is None:
        config["sample"]["num_chains"] = 64 if dim > 2 else 1024
    evaluate = config["evaluate"]
    if dim <= 2:
        for key in ("ais_temperatures", "ais_chains"):
            evaluate.pop(key)
        if evaluate["bounds"] is None:
            toy = name in datasets.TOY_NAMES
            evaluate["bounds"] = TOY_BOUNDS[: 2 * dim] if toy else _data_bounds(train)
        bounds_pairs(evaluate["bounds"], dim)  # checks the length
    else:
        for key in ("bounds", "resolution"):
            evaluate.pop(key)
    return config


def bounds_pairs(bounds: list[float], dim: int) -> list[tuple[float, float]]:
    """The ``evaluate.bounds`` of a configuration as ``dim`` (lo, hi) pairs, or UserError."""
    try:
        return check_bounds("evaluate.bounds", bounds, dim)
    except ValueError as err:
        raise UserError(str(err)) from None


def build_energy(config: Config, event_shape: torch.Size) -> nn.Module:
    """The energy network that a resolved ``[model]`` section describes.

    Examples
    --------
    >>> build_energy({"model": {"kind": "mlp", "hidden": [8], "activation": "silu",
    ...                         "spectral_norm": False}}, torch.Size([3]))
    MLPEnergy(
      dim=3, hidden=(8,), activation='silu', spectral_norm=False
      (net): Sequential(
        (0): Linear(in_features=3, out_features=8, bias=True)
        (1): SiLU()
        (2): Linear(in_features=8, out_features=1, bias=True)
      )
    )
    """
    model = config["model"]
    if model["kind"] == "conv":
        return ConvEnergy(channels=tuple(model["channels"]), activation=model["activation"])
    return MLPEnergy(
        event_shape.numel(),
        hidden=tuple(model["hidden"]),
        activation=model["activation"],
        spectral_norm=model["spectral_norm"],
    )


def build_objective(
    config: Config, train: Tensor, *, pretrain: bool = True, progress: bool = False
) -> Objective:
    """The objective that a resolved ``[objective]`` section describes.

    NCE's noise is a Gaussian fitted to ``train``; FCE's flow is pre-trained on it by maximum
    likelihood when ``pretrain`` (a resumed run restores the flow from its checkpoint instead).

    Examples
    --------
    >>> build_objective({"objective": {"name": "sm-sliced", "num_projections": 2}},
    ...                 torch.randn(10, 2))
    ScoreMatching()
    """
    o = config["objective"]
    name = o["name"]
    if name == "cd":
        return ContrastiveDivergence(
            o["cd_mode"],
            num_steps=o["cd_steps"],
            step_size=o["cd_step_size"],
            alpha=o["cd_alpha"],
            buffer_size=o["cd_buffer_size"],
            reinit_prob=o["cd_reinit_prob"],
        )
    if name.startswith("sm-"):
        kwargs = {"num_projections": o["num_projections"]} if name == "sm-sliced" else {}
        if name == "sm-denoising":
            kwargs["sigma"] = o["sigma"]
        return ScoreMatching(name[3:], **kwargs)
    if name == "nce":
        return NCE(fit_gaussian_noise(train, o["noise_scale"]), noise_ratio=o["noise_ratio"])
    flow = make_flow(
        train[0].numel(), o["flow_kind"], hidden_features=o["flow_hidden"],
        num_layers=o["flow_layers"],
    )  # fmt: skip
    fce = FCE(flow, noise_ratio=o["noise_ratio"])
    if pretrain and o["flow_pretrain_steps"]:
        seed = config.get("train", {}).get("seed", 0)
        fce.pretrain_flow(
            train, o["flow_pretrain_steps"], generator=torch.Generator().manual_seed(seed),
            progress_bar=progress,
        )  # fmt: skip
    return fce


# --------------------------------------------------------------------------------------------
# the run directory
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A trained run directory: its resolved configuration, energy and data.

    Attributes
    ----------
    path:
        The directory.
    config:
        The resolved configuration (``config.toml``).
    energy:
        The trained energy (EMA weights; for NCE/FCE with the learned ``log_Z`` attribute),
        in evaluation mode with frozen parameters.
    train, test:
        The training and held-out points.
    meta:
        From ``model.pt``: ``steps``, ``train_seconds``, ``log_Z`` (learned, or ``None``) and
        ``version``.
    """

    path: Path
    config: Config
    energy: nn.Module
    train: Tensor
    test: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size(self.train.shape[1:])

    @property
    def dim(self) -> int:
        return self.event_shape.numel()

    def file(self, name: str) -> Path:
        return self.path / name

    def history(self) -> History:
        """The training history (``history.json``)."""
        try:
            return History.load(self.file(HISTORY_FILE))
        except FileNotFoundError:
            raise UserError(f"{self.path} has no {HISTORY_FILE}") from None
        except (ValueError, TypeError) as err:
            raise UserError(
                f"{self.file(HISTORY_FILE)} is corrupt ({type(err).__name__})"
            ) from None

    def samples(self) -> dict[str, Any] | None:
        """The saved draws (``samples.pt``), or ``None`` before ``pyro-ebm sample``."""
        path = self.file(SAMPLES_FILE)
        if not path.exists():
            return None
        saved = _torch_load(path)
        if not isinstance(saved, dict) or saved.get("format") != SAMPLES_FORMAT:
            raise UserError(f"{path} is not a pyro-ebm samples file; rerun pyro-ebm sample")
        return saved

    def evaluation(self) -> dict[str, Any] | None:
        """The saved evaluation (``evaluation.json``), or ``None`` before ``pyro-ebm evaluate``."""
        path = self.file(EVALUATION_FILE)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (ValueError, OSError) as err:
            raise UserError(f"{path} is corrupt ({type(err).__name__}); rerun evaluate") from None


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise UserError(f"{path} is corrupt or unreadable ({type(err).__name__})") from None


def _check_run_dir(path: Path) -> None:
    if not path.exists():
        raise UserError(
            f"run directory {path} does not exist (pyro-ebm train --out {path} makes one)"
        )
    if not path.is_dir():
        raise UserError(f"run directory {path} is not a directory")
    if not (path / CONFIG_FILE).exists():
        raise UserError(
            f"{path} is not a pyro-ebm run directory ({CONFIG_FILE} is missing; "
            f"pyro-ebm train --out {path} makes one)"
        )


def load_run(path: str | os.PathLike) -> Run:
    """Load a trained run directory, checking that every file it needs is there and sound.

    Raises
    ------
    UserError
        For a missing directory, a directory that is not a run, or missing or corrupt files.
    """
    path = Path(path)
    _check_run_dir(path)
    try:
        config = read_config(path / CONFIG_FILE)
    except ConfigError as err:
        raise UserError(f"run directory {path} is corrupt: {err}") from None
    model_path = path / MODEL_FILE
    if not model_path.exists():
        hint = (
            f"resume it with pyro-ebm train --out {path} --resume"
            if (path / CHECKPOINT_NAME).exists()
            else f"train it with pyro-ebm train --out {path}"
        )
        raise UserError(f"{path} holds no trained model ({MODEL_FILE} is missing): {hint}")
    saved = _torch_load(model_path)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise UserError(f"{model_path} is not a pyro-ebm model file (format {MODEL_FORMAT!r})")
    train, test = _load_data_file(path)
    config = merge_config(default_config(), config)
    try:
        config = resolve_config(config, train)
    except UserError as err:
        raise UserError(f"run directory {path} is corrupt: {err}") from None
    energy = build_energy(config, train.shape[1:])
    try:
        energy.load_state_dict(saved["energy"])
    except (RuntimeError, KeyError):
        raise UserError(
            f"{model_path} does not match the [model] section of {path / CONFIG_FILE} "
            "(was the config edited?)"
        ) from None
    energy.eval().requires_grad_(False)
    if saved.get("log_Z") is not None:
        energy.log_Z = torch.tensor(float(saved["log_Z"]))
    meta = {k: v for k, v in saved.items() if k not in ("energy", "format")}
    return Run(path, config, energy, train, test, meta)


def _load_data_file(path: Path) -> tuple[Tensor, Tensor]:
    data_path = path / DATA_FILE
    if not data_path.exists():
        raise UserError(f"{path} is not a complete run directory ({DATA_FILE} is missing)")
    saved = _torch_load(data_path)
    if (
        not isinstance(saved, dict)
        or saved.get("format") != DATA_FORMAT
        or not all(torch.is_tensor(saved.get(k)) for k in ("train", "test"))
    ):
        raise UserError(f"{data_path} is not a pyro-ebm data file")
    return saved["train"], saved["test"]


def _remove(paths) -> list[str]:
    removed = []
    for p in paths:
        if p.is_file():
            p.unlink()
            removed.append(p.name)
    return removed


def _clear_derived(path: Path) -> list[str]:
    figures = path / FIGURES_DIR
    removed = _remove(path / name for name in DERIVED_FILES)
    if figures.is_dir():
        _remove(figures.glob("*.png"))
        if not any(figures.iterdir()):
            figures.rmdir()
    return removed


def _resume_config(path: Path, overrides: Config) -> Config:
    _check_run_dir(path)
    if not (path / CHECKPOINT_NAME).exists():
        raise UserError(f"nothing to resume in {path}: {CHECKPOINT_NAME} is missing")
    try:
        saved = read_config(path / CONFIG_FILE)
    except ConfigError as err:
        raise UserError(f"run directory {path} is corrupt: {err}") from None
    for section, values in overrides.items():
        if section in RESUMABLE_SECTIONS:
            continue
        for key, value in values.items():
            before = saved.get(section, {}).get(key)
            if (section, key) not in RESUMABLE_KEYS and before is not None and value != before:
                raise UserError(
                    f"cannot change {section}.{key} when resuming ({before!r} in "
                    f"{path / CONFIG_FILE}, {value!r} now); only train.steps can grow"
                )
    return merge_config(saved, overrides)


def train_run(
    out: str | os.PathLike,
    overrides: Config,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Log = print,
    result: Log = print,
) -> Run:
    """Train an energy into the run directory ``out`` and return the loaded :class:`Run`.

    Parameters
    ----------
    out:
        The run directory (created if needed).
    overrides:
        Configuration values set by the user (a ``--config`` file and command-line flags);
        everything else takes the defaults of :data:`pyro_ebm.config.SCHEMA`, resolved for the
        data by :func:`resolve_config`.
    resume:
        Continue the run in ``out`` from its checkpoint, with its saved configuration; only
        ``train.steps`` (the new total) may change.
    force:
        Start over in a directory that already holds a run (its files are replaced).
    progress, log, result:
        Progress bars; where one-line notes go and where the one-line result goes (``None``:
        nowhere).
    """
    out = Path(out)
    overrides = validate_config(overrides)
    rank, world = rank_and_world()
    if rank != 0:  # under torchrun only rank 0 speaks and writes files
        log, result, progress = None, None, False
    if resume and force:
        raise UserError("--resume and --force exclude each other")
    if resume:
        config = _resume_config(out, overrides)
        train, test = _load_data_file(out)
        config = resolve_config(config, train)
        step = int(load_checkpoint(out / CHECKPOINT_NAME)["step"])
        if step >= config["train"]["steps"]:
            raise UserError(
                f"{out} is already trained for {step} steps; pass --steps N with N > {step} "
                "to continue it"
            )
        _say(log, f"resuming {out} at step {step} of {config['train']['steps']}")
        if world > 1:  # every rank has read the run before rank 0 rewrites its config
            torch.distributed.barrier()
    else:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a directory")
        existing = [n for n in RUN_FILES if (out / n).exists()]
        if existing and not force:
            raise UserError(
                f"{out} already holds a run ({', '.join(existing)}): pass --resume to continue "
                "it, --force to start over, or another --out"
            )
        config = merge_config(default_config(), overrides)
        train, test = load_data(config["data"])
        config = resolve_config(config, train)
        if world > 1:  # every rank has checked the directory before rank 0 writes to it
            torch.distributed.barrier()
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            _remove(out / n for n in RUN_FILES)
            torch.save(
                {"format": DATA_FORMAT, "train": train, "test": test,
                 "source": config["data"]["name"]},
                out / DATA_FILE,
            )  # fmt: skip
    if rank == 0:
        removed = _clear_derived(out)
        if removed and resume:
            _say(log, f"removed results of the earlier model: {', '.join(removed)}")
        write_config(config, out / CONFIG_FILE)
    if world > 1:
        torch.distributed.barrier()

    t = config["train"]
    torch.manual_seed(t["seed"])
    energy = build_energy(config, train.shape[1:])
    objective = build_objective(config, train, pretrain=not resume, progress=progress)
    history = fit(
        energy, train, objective,
        steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"], schedule=t["schedule"],
        lr_warmup=t["lr_warmup"], ema=t["ema"] or None, grad_clip=t["grad_clip"] or None,
        seed=t["seed"], checkpoint_dir=out, checkpoint_every=t["checkpoint_every"],
        resume=resume, progress_bar=progress,
    )  # fmt: skip
    seconds = history.wall_time[-1] if history.wall_time else 0.0
    if rank != 0:
        torch.distributed.barrier()  # rank 0 writes the results
        return load_run(out)
    history.save(out / HISTORY_FILE)
    torch.save(
        {
            "format": MODEL_FORMAT,
            "energy": energy.state_dict(),
            "log_Z": history.log_Z,
            "steps": history.step[-1] + 1 if history.step else 0,
            "train_seconds": seconds,
            "version": __version__,
        },
        out / MODEL_FILE,
    )
    _say(
        result,
        f"trained {config['objective']['name']} on {config['data']['name']} for "
        f"{t['steps']} steps ({seconds:.1f} s of training)"
        + (f" on {world} processes" if world > 1 else "")
        + f" -> {out}",
    )
    if world > 1:
        torch.distributed.barrier()
    return load_run(out)


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------


def sample_run(
    run: Run,
    settings: dict[str, Any] | None = None,
    *,
    progress: bool = True,
    log: Log = print,
    result: Log = print,
) -> Samples:
    """Sample the trained energy; writes ``samples.pt`` and ArviZ netCDF ``samples.nc``.

    ``settings`` overrides keys of the run's ``[sample]`` section (``kernel``, ``num_chains``,
    ``num_samples``, ``warmup_steps``, ``init``, ``seed``). ``log`` receives notes and
    ``result`` the one-line summary (``None``: nowhere).
    """
    chosen = validate_config(
        {"sample": {k: v for k, v in (settings or {}).items() if v is not None}}
    )
    s = merge_config(run.config, chosen)["sample"]
    if s["init"] == "data":
        g = torch.Generator().manual_seed(s["seed"])
        init = run.train[torch.randint(0, run.train.shape[0], (s["num_chains"],), generator=g)]
    else:
        init = None
    start = time.perf_counter()
    out = sample(
        run.energy, s["num_samples"], num_chains=s["num_chains"], kernel=s["kernel"],
        warmup_steps=s["warmup_steps"], init=init, seed=s["seed"], progress_bar=progress,
        event_shape=tuple(run.event_shape),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    torch.save(
        {
            "format": SAMPLES_FORMAT,
            "samples": out.samples,
            "stats": out.stats,
            "step_size": out.step_size,
            "kernel": out.kernel,
            "warmup_divergences": out.warmup_divergences,
            "settings": s,
            "seconds": seconds,
        },
        run.file(SAMPLES_FILE),
    )
    from .diagnostics import to_arviz_quietly  # local: ArviZ loads only when needed

    to_arviz_quietly(out).to_netcdf(str(run.file(ARVIZ_FILE)))
    _remove([run.file(EVALUATION_FILE), run.file(REPORT_FILE)])  # they used the old draws
    accept = float(out.stats["acceptance_rate"].float().mean())
    _say(
        result,
        f"sampled {s['num_chains']} {s['kernel']} chains x {s['num_samples']} draws in "
        f"{seconds:.1f} s (acceptance {accept:.2f}) -> {run.file(SAMPLES_FILE)}, "
        f"{run.file(ARVIZ_FILE)}",
    )
    return out


def samples_from_saved(saved: dict[str, Any]) -> Samples:
    """A :class:`~pyro_ebm.infer.Samples` rebuilt from a ``samples.pt`` dict."""
    return Samples(
        samples=saved["samples"],
        stats=saved["stats"],
        step_size=saved["step_size"],
        inv_mass=None,
        kernel=saved["kernel"],
        warmup_divergences=saved["warmup_divergences"],
    )


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def evaluate_run(run: Run, *, progress: bool = True, log: Log = print) -> dict[str, Any]:
    """Score the trained energy; writes ``evaluation.json`` and returns its fields.

    * ``log_Z``: quadrature on ``evaluate.bounds`` (1-d and 2-d; ``log_Z_method = "grid"``) or
      annealed importance sampling from a Gaussian fitted to the training data (``"ais"``,
      with ``log_Z_stderr``); ``log_Z_learned`` is NCE's or FCE's own estimate.
    * ``test_nll`` (with ``test_nll_stderr``): mean :math:`E(x) + \\log Z` over the held-out
      points.
    * ``kl = test_nll - oracle_nll`` where the data's true density is known (8gaussians,
      checkerboard); ``None`` otherwise (rings and the other toys have no closed form).
    * ``mmd``: squared MMD between ``mmd_points`` model draws (from ``samples.pt``, or a fresh
      MALA run) and as many held-out points.
    """
    e = run.config["evaluate"]
    name = run.config["data"]["name"]
    energy, test = run.energy, run.test
    start = time.perf_counter()
    bar = progress_bar(desc="evaluate", total=3, enabled=progress)
    result: dict[str, Any] = {
        "run": str(run.path),
        "data": name,
        "objective": run.config["objective"]["name"],
        "steps": run.meta.get("steps"),
        "event_shape": list(run.event_shape),
    }
    bar.set_postfix_str("log Z")
    if run.dim <= 2:
        pairs = bounds_pairs(e["bounds"], run.dim)
        log_z = float(grid_log_partition(energy, pairs, e["resolution"]))
        result.update(log_Z=log_z, log_Z_method="grid", log_Z_stderr=None, bounds=pairs,
                      resolution=e["resolution"])  # fmt: skip
    else:
        base = fit_gaussian_noise(run.train, 1.0)
        ais = ais_log_partition(
            energy, base=base, num_temperatures=e["ais_temperatures"],
            num_chains=e["ais_chains"], seed=e["seed"], progress_bar=progress,
        )  # fmt: skip
        log_z = float(ais.log_Z)
        result.update(log_Z=log_z, log_Z_method="ais", log_Z_stderr=_finite_or_none(ais.stderr),
                      ais_ess=ais.ess)  # fmt: skip
    result["log_Z_learned"] = run.meta.get("log_Z")
    bar.update()

    bar.set_postfix_str("test NLL")
    nll = nll_summary(energy, test, log_z)
    result.update(test_nll=nll["nll"], test_nll_stderr=nll["stderr"], n_test=nll["n"])
    if name in datasets.DENSITY_NAMES:
        result["oracle_nll"] = datasets.oracle_nll(name)
        result["kl"] = result["test_nll"] - result["oracle_nll"]
    else:
        result["oracle_nll"] = result["kl"] = None
    bar.update()

    bar.set_postfix_str("MMD")
    g = torch.Generator().manual_seed(e["seed"])
    saved = run.samples()
    if saved is not None:
        draws = saved["samples"].reshape(-1, *run.event_shape)
        settings = saved["settings"]
        result["mmd_source"] = (
            f"samples.pt ({settings['kernel']}, {settings['num_chains']} chains x "
            f"{settings['num_samples']} draws)"
        )
    else:
        n = min(e["mmd_points"], run.train.shape[0])
        init = run.train[torch.randint(0, run.train.shape[0], (n,), generator=g)]
        warmup = e["mmd_warmup_steps"]
        fresh = sample(energy, 1, num_chains=n, kernel="mala", warmup_steps=warmup, init=init,
                       seed=e["seed"], keep=False, progress_bar=progress)  # fmt: skip
        draws = fresh.samples
        result["mmd_source"] = f"a fresh MALA run ({n} chains, {warmup} warmup steps)"
    m = min(e["mmd_points"], draws.shape[0], test.shape[0])
    x = draws[torch.randperm(draws.shape[0], generator=g)[:m]].double()
    y = test[torch.randperm(test.shape[0], generator=g)[:m]].double()
    result["mmd"] = float(mmd(x, y))
    result["mmd_points"] = m
    bar.update()
    bar.close()
    result["seconds"] = time.perf_counter() - start
    for key in ("log_Z", "test_nll", "test_nll_stderr", "kl", "mmd"):
        result[key] = _finite_or_none(result[key])
    run.file(EVALUATION_FILE).write_text(json.dumps(result, indent=2) + "\n")
    _remove([run.file(REPORT_FILE)])
    _say(log, f"wrote {run.file(EVALUATION_FILE)}")
    return result


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def evaluation_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The evaluation as ``(metric, value, note)`` rows (the printed and HTML tables)."""
    method = result["log_Z_method"]
    if method == "grid":
        box = " x ".join(f"[{lo:g}, {hi:g}]" for lo, hi in result["bounds"])
        z_note = f"quadrature on {box}, {result['resolution']} nodes per axis"
        z_value = _fmt(result["log_Z"])
    else:
        z_note = "annealed importance sampling"
        z_value = _fmt(result["log_Z"])
        if result.get("log_Z_stderr") is not None:
            z_value += f" ± {result['log_Z_stderr']:.3f}"
    rows = [("log Z", z_value, z_note)]
    if result.get("log_Z_learned") is not None:
        rows.append(("log Z learned", _fmt(result["log_Z_learned"]), f"by {result['objective']}"))
    nll = _fmt(result["test_nll"])
    if result["test_nll"] is not None and result["test_nll_stderr"] is not None:
        nll += f" ± {result['test_nll_stderr']:.3f}"
    rows.append(("test NLL (nats)", nll, f"{result['n_test']} held-out points"))
    if result["kl"] is not None:
        rows.append(("oracle NLL (nats)", _fmt(result["oracle_nll"]), "entropy of the truth"))
        kl = _fmt(result["kl"])
        if result["test_nll_stderr"] is not None:
            kl += f" ± {result['test_nll_stderr']:.3f}"
        rows.append(("KL to truth (nats)", kl, "test NLL - oracle NLL"))
    else:
        rows.append(("KL to truth (nats)", "n/a", f"no closed-form density for {result['data']}"))
    m = result["mmd_points"]
    rows.append(("MMD^2", _fmt(result["mmd"], 5), f"{m} model draws vs {m} held-out points"))
    return rows


def format_evaluation(result: dict[str, Any]) -> str:
    """The evaluation as a plain-text table.

    Examples
    --------
    >>> print(format_evaluation({"run": "r", "data": "moons", "objective": "nce", "steps": 5,
    ...     "log_Z_method": "grid", "bounds": [[-4, 4], [-4, 4]], "resolution": 400,
    ...     "log_Z": 1.0, "log_Z_learned": None, "test_nll": 2.5, "test_nll_stderr": 0.01,
    ...     "n_test": 100, "kl": None, "mmd": 0.001, "mmd_points": 100, "mmd_source": "x"}))
    evaluation of r (nce on moons, 5 steps)
    metric              value          note
    ------------------  -------------  -----------------------------------------------
    log Z               1.000          quadrature on [-4, 4] x [-4, 4], 400 nodes per axis
    test NLL (nats)     2.500 ± 0.010  100 held-out points
    KL to truth (nats)  n/a            no closed-form density for moons
    MMD^2               0.00100        100 model draws vs 100 held-out points
    """
    rows = [("metric", "value", "note"), *evaluation_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    note_width = min(max(len(r[2]) for r in rows), 47)
    lines = [
        f"evaluation of {result['run']} ({result['objective']} on {result['data']}, "
        f"{result['steps']} steps)"
    ]
    for i, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip())
        if i == 0:
            lines.append(f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * note_width}")
    return "\n".join(lines)
