"""The run-directory format: file names and formats, :class:`Run`, loading and checking.

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
>>> from pyro_ebm import rundir, runs
>>> out = tempfile.mkdtemp()
>>> tiny = {"data": {"name": "8gaussians", "n_train": 256, "n_test": 64},
...         "model": {"hidden": [8]}, "train": {"steps": 3, "batch_size": 64}}
>>> run = runs.train_run(out, tiny, progress=False, log=None, result=None)
>>> run = rundir.load_run(out)
>>> run.event_shape, len(run.history().loss)
(torch.Size([2]), 3)
>>> sorted(p.name for p in run.path.iterdir())
['checkpoint.pt', 'config.toml', 'data.pt', 'history.json', 'model.pt']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__
from .builders import build_energy, resolve_config
from .config import Config, ConfigError, default_config, merge_config, read_config
from .errors import UserError
from .infer import Samples
from .training import CHECKPOINT_NAME, History

__all__ = [
    "RUN_FILES",
    "Run",
    "check_run_dir",
    "clear_derived",
    "load_run",
    "read_data",
    "remove_files",
    "resume_config",
    "samples_from_saved",
    "write_data",
    "write_model",
    "write_samples",
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
# Files derived from a trained model: stale once the model changes.
DERIVED_FILES = (SAMPLES_FILE, ARVIZ_FILE, EVALUATION_FILE, REPORT_FILE)
RUN_FILES = (CONFIG_FILE, DATA_FILE, MODEL_FILE, HISTORY_FILE, CHECKPOINT_NAME, *DERIVED_FILES)
# Keys that may change when a run is resumed; everything else must match the saved config.
RESUMABLE_KEYS = {("train", "steps"), ("train", "checkpoint_every")}
RESUMABLE_SECTIONS = ("sample", "evaluate")


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


def check_run_dir(path: Path) -> None:
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
    check_run_dir(path)
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
    train, test = read_data(path)
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


def read_data(path: Path) -> tuple[Tensor, Tensor]:
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


def remove_files(paths) -> list[str]:
    removed = []
    for p in paths:
        if p.is_file():
            p.unlink()
            removed.append(p.name)
    return removed


def clear_derived(path: Path) -> list[str]:
    figures = path / FIGURES_DIR
    removed = remove_files(path / name for name in DERIVED_FILES)
    if figures.is_dir():
        remove_files(figures.glob("*.png"))
        if not any(figures.iterdir()):
            figures.rmdir()
    return removed


def resume_config(path: Path, overrides: Config) -> Config:
    check_run_dir(path)
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


def write_data(out: Path, train: Tensor, test: Tensor, source: str) -> None:
    """Write ``data.pt``: the training and held-out points and where they came from."""
    torch.save(
        {"format": DATA_FORMAT, "train": train, "test": test, "source": source}, out / DATA_FILE
    )


def write_model(out: Path, energy: nn.Module, history: History, seconds: float) -> None:
    """Write ``model.pt``: the trained energy's weights, its learned log Z and run facts."""
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
    history.save(out / HISTORY_FILE)


def write_samples(run: Run, samples: Any, settings: dict[str, Any], seconds: float) -> None:
    """Write ``samples.pt``: the draws, statistics and settings of a ``Samples``."""
    torch.save(
        {
            "format": SAMPLES_FORMAT,
            "samples": samples.samples,
            "stats": samples.stats,
            "step_size": samples.step_size,
            "kernel": samples.kernel,
            "warmup_divergences": samples.warmup_divergences,
            "settings": settings,
            "seconds": seconds,
        },
        run.file(SAMPLES_FILE),
    )
