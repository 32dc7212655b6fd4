"""Run configuration: the schema of a ``pyro-ebm`` run, read from and written to TOML.

A configuration is a dict of sections (``data``, ``model``, ``objective``, ``train``,
``sample``, ``evaluate``) holding scalars or lists of scalars. :data:`SCHEMA` lists every key
with its type, default and meaning; :func:`read_config` rejects unknown sections and keys
(naming the valid ones) and values of the wrong type; :func:`dumps_toml` writes the small TOML
subset these files need (no new dependency), and ``tomllib`` (``tomli`` before Python 3.11)
reads it back.

Defaults and choice lists come from the library (:func:`library_default` reads the signatures
of :func:`pyro_ebm.fit`, the objectives, the energies, :func:`pyro_ebm.infer.sample` and the
evaluation; choices are ``ACTIVATIONS``, ``infer.KERNELS`` and the like), so the command line
trains, samples and scores exactly as the library does by default. A default of ``None``
means "chosen from the data and the objective at training time" (see
:func:`pyro_ebm.builders.resolve_config`) or, for the warm-up keys, ``sample()``'s own
default; the run directory's ``config.toml`` holds the resolved values.

Examples
--------
>>> config = merge_config(default_config(), {"train": {"steps": 10}})
>>> config["train"]["steps"], config["train"]["lr"]  # None: the objective's rate, as in fit()
(10, None)
>>> text = dumps_toml({"train": {"steps": 10, "lr": 0.002}, "model": {"hidden": [16, 16]}})
>>> print(text)
[train]
steps = 10
lr = 0.002
<BLANKLINE>
[model]
hidden = [16, 16]
<BLANKLINE>
>>> loads_config(text)["model"]["hidden"]
[16, 16]
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._validation import check_choice, check_int
from .energies import ConvEnergy, MLPEnergy
from .energies.neural import ACTIVATIONS
from .errors import UserError
from .evaluation import ais_log_partition, grid_log_partition
from .infer import KERNELS, sample
from .objectives import FCE, NCE, ContrastiveDivergence, ScoreMatching
from .objectives.cd import MODES as CD_MODES
from .objectives.cd import SAMPLERS as CD_SAMPLERS
from .objectives.fce import FLOW_KINDS
from .training import SCHEDULES, fit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "SCHEMA",
    "ConfigError",
    "Key",
    "default_config",
    "dumps_toml",
    "library_default",
    "loads_config",
    "merge_config",
    "read_config",
    "validate_config",
    "write_config",
]

OBJECTIVES = ("cd", "sm-exact", "sm-sliced", "sm-denoising", "nce", "fce")
"""The objectives that ``pyro-ebm train --objective`` accepts."""

Config = dict[str, dict[str, Any]]


class ConfigError(UserError):
    """A configuration file or value that does not fit :data:`SCHEMA` (a user error)."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default (``None``: resolved at training time), help.

    ``kind`` is ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"ints"`` or ``"floats"``
    (the last two: lists). ``choices`` restricts a string; ``minimum`` and ``maximum`` a
    number (inclusive), ``below`` a number from above (exclusive: a share that must stay
    under 1), matching the library's own checks so a bad value is a configuration error
    naming the key.
    """

    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    below: float | None = None


def library_default(fn: Callable[..., Any], name: str) -> Any:
    """The default of argument ``name`` of ``fn`` (a function, class or classmethod).

    The library is the one source of defaults: every key of :data:`SCHEMA` that has a library
    counterpart reads its default here, so the command line and ``fit()``, the objectives,
    the energies, ``sample()`` and the evaluation cannot drift apart. Tuples become lists
    (TOML arrays).

    Examples
    --------
    >>> from pyro_ebm.evaluation import grid_log_partition
    >>> library_default(grid_log_partition, "resolution")
    501
    """
    parameter = inspect.signature(fn).parameters[name]
    if parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{getattr(fn, '__qualname__', fn)}() has no default for {name!r}")
    value = parameter.default
    return list(value) if isinstance(value, tuple) else value


_CD = ContrastiveDivergence
_FCE = FCE.for_data
_NCE = NCE.for_data

SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "name": Key("str", None, "a built-in data set or a path to a .npy/.csv file"),
        "n_train": Key("int", 50_000, "training points drawn from a built-in 2-d toy", None, 2),
        "n_test": Key("int", 20_000, "held-out points (another seed) for a 2-d toy", None, 2),
        "test_fraction": Key(
            "float", 0.2, "share held out of digits or a data file", None, 0.01, below=1
        ),
        "seed": Key("int", 0, "seed of the data (the held-out toy points use seed + 1)", None, 0),
    },
    "model": {
        "kind": Key("str", "auto", "energy network", ("auto", "mlp", "conv")),
        "hidden": Key("ints", None, "MLP widths (default (128, 128) in 2-d, else (256, 256))"),
        "channels": Key(
            "ints", library_default(ConvEnergy, "channels"), "ConvEnergy channels (digits)"
        ),
        "activation": Key(
            "str", library_default(MLPEnergy, "activation"), "activation", tuple(ACTIVATIONS)
        ),
        "spectral_norm": Key(
            "bool",
            library_default(MLPEnergy, "spectral_norm"),
            "spectral normalization of the MLP's layers",
        ),
        "first_layer_gain": Key(
            "float",
            library_default(MLPEnergy, "first_layer_gain"),
            "factor on the MLP's first-layer initialization",
            None,
            0,
        ),
    },
    "objective": {
        "name": Key("str", "nce", "training objective", OBJECTIVES),
        "noise_scale": Key(
            "float",
            library_default(_NCE, "noise_scale"),
            "NCE: the Gaussian noise's scale over the data's",
            None,
            0,
        ),
        "noise_ratio": Key(
            "float",
            None,
            f"NCE/FCE: noise samples per data point ({library_default(_NCE, 'noise_ratio'):g} / "
            f"{library_default(_FCE, 'noise_ratio'):g})",
            None,
            0,
        ),
        "sigma": Key(
            "float",
            library_default(ScoreMatching, "sigma"),
            "denoising score matching: noise scale",
            None,
            0,
        ),
        "antithetic": Key(
            "bool",
            library_default(ScoreMatching, "antithetic"),
            "denoising score matching: noise in antithetic pairs (+eps, -eps)",
        ),
        "num_projections": Key(
            "int",
            library_default(ScoreMatching, "num_projections"),
            "sliced score matching: projections per point",
            None,
            1,
        ),
        "nce_weight": Key(
            "float",
            library_default(ScoreMatching, "nce_weight"),
            "score matching: weight of the noise-contrastive term that learns the weights of "
            "separated modes and log Z (0: pure score matching)",
            None,
            0,
        ),
        "cd_mode": Key("str", library_default(_CD, "mode"), "CD chains", CD_MODES),
        "cd_sampler": Key(
            "str", library_default(_CD, "sampler"), "CD: sampler of the negatives", CD_SAMPLERS
        ),
        "cd_steps": Key(
            "int",
            library_default(_CD, "num_steps"),
            "CD: Langevin steps per training step",
            None,
            1,
        ),  # fmt: skip
        "cd_step_size": Key(
            "float", library_default(_CD, "step_size"), "CD: Langevin step size", None, 0
        ),
        "cd_target_accept": Key(
            "float",
            library_default(_CD, "target_accept_prob"),
            "CD: (would-be) MALA acceptance the step adapts to (0.95 for ULA, 0.574 for MALA)",
            None,
            0,
            below=1,
        ),
        "cd_adapt_step_size": Key(
            "bool",
            library_default(_CD, "adapt_step_size"),
            "CD: adapt the step (for ULA: below cd_step_size) or keep it fixed",
        ),
        "cd_alpha": Key(
            "float", library_default(_CD, "alpha"), "CD: energy-magnitude regularizer", None, 0
        ),
        "cd_buffer_size": Key(
            "int", library_default(_CD, "buffer_size"), "CD: replay buffer size", None, 1
        ),
        "cd_reinit_prob": Key(
            "float",
            library_default(_CD, "reinit_prob"),
            "CD: buffer re-initialization probability",
            None,
            0,
            maximum=1,
        ),
        "cd_per_chain_step_size": Key(
            "bool",
            library_default(_CD, "per_chain_step_size"),
            "CD (persistent): one step size per chain, adapted after every transition",
        ),
        "cd_jump_prob": Key(
            "float",
            library_default(_CD, "jump_prob"),
            "CD (persistent): share of negatives that try a mode-jumping move each step",
            None,
            0,
            maximum=1,
        ),
        "flow_kind": Key("str", None, "FCE flow (realnvp if d >= 2, else maf)", FLOW_KINDS),
        "flow_hidden": Key(
            "int", library_default(_FCE, "hidden_features"), "FCE: flow hidden features", None, 1
        ),
        "flow_layers": Key("int", library_default(_FCE, "num_layers"), "FCE: flow layers", None, 1),
        "flow_pretrain_steps": Key(
            "int",
            library_default(_FCE, "pretrain_steps"),
            "FCE: maximum-likelihood flow pre-training",
            None,
            0,
        ),
        "flow_refine": Key(
            "float",
            library_default(_FCE, "refine"),
            "FCE: share of the steps, at the end, refining the energy by NCE against the frozen "
            "flow (0: the game to the end)",
            None,
            0,
            below=1,
        ),
    },
    "train": {
        "steps": Key("int", 5000, "optimizer steps (the total, also when resuming)", None, 1),
        "batch_size": Key("int", library_default(fit, "batch_size"), "batch size", None, 1),
        "lr": Key(
            "float",
            library_default(fit, "lr"),
            "learning rate (default: the objective's, Objective.default_lr)",
            None,
            0,
        ),
        "adversary_lr": Key(
            "float",
            library_default(fit, "adversary_lr"),
            "FCE: the flow's learning rate (default: Objective.default_adversary_lr)",
            None,
            0,
        ),
        "schedule": Key(
            "str", library_default(fit, "schedule"), "learning-rate schedule", SCHEDULES
        ),
        "lr_warmup": Key(
            "int",
            library_default(fit, "lr_warmup"),
            "linear learning-rate warm-up steps (default: the objective's share of the steps, "
            "Objective.default_lr_warmup)",
            None,
            0,
        ),
        "ema": Key(
            "float",
            library_default(fit, "ema") or 0.0,
            "parameter EMA decay (0 turns it off)",
            None,
            0,
            below=1,
        ),  # fmt: skip
        "grad_clip": Key(
            "float",
            library_default(fit, "grad_clip") or 0.0,
            "global gradient-norm clip (0 turns it off)",
            None,
            0,
        ),
        "checkpoint_every": Key("int", 1000, "steps between checkpoints", None, 1),
        "seed": Key("int", 0, "seed of the model, the batches and the objective", None, 0),
    },
    "sample": {
        "kernel": Key("str", library_default(sample, "kernel"), "MCMC kernel", tuple(KERNELS)),
        "num_chains": Key("int", None, "chains (1024 for vectors, 64 for images)", None, 1),
        "num_samples": Key("int", 200, "draws kept per chain", None, 1),
        "warmup_steps": Key(
            "int",
            library_default(sample, "warmup_steps"),
            "adaptation steps, discarded (default: sample()'s, max(num_samples, 500))",
            None,
            0,
        ),
        "init": Key(
            "str", "data", "chains start at training points or N(0, I)", ("data", "normal")
        ),
        "seed": Key("int", 0, "seed of the chains", None, 0),
    },
    "evaluate": {
        "bounds": Key("floats", None, "grid box: [lo, hi] or [xlo, xhi, ylo, yhi] (1-d/2-d)"),
        "resolution": Key(
            "int",
            library_default(grid_log_partition, "resolution"),
            "grid nodes per axis",
            None,
            2,
        ),  # fmt: skip
        "ais_temperatures": Key(
            "int",
            library_default(ais_log_partition, "num_temperatures"),
            "AIS temperatures (more than 2-d)",
            None,
            1,
        ),
        "ais_chains": Key(
            "int", library_default(ais_log_partition, "num_chains"), "AIS chains", None, 2
        ),
        "mmd_points": Key("int", 2000, "points per side of the MMD", None, 2),
        "mmd_warmup_steps": Key(
            "int",
            library_default(sample, "warmup_steps"),
            "MALA warmup of the MMD's own draws (when there is no samples.pt; default: sample()'s)",
            None,
            0,
        ),
        "seed": Key("int", 0, "seed of AIS and the MMD subsample", None, 0),
    },
}
"""Every section and key of a run configuration."""


def default_config() -> Config:
    """The defaults of :data:`SCHEMA` (``None`` where resolved from the data at training time).

    Examples
    --------
    >>> default_config()["objective"]["name"]
    'nce'
    """
    return {
        s: {k: copy.deepcopy(key.default) for k, key in keys.items()} for s, keys in SCHEMA.items()
    }


def _valid_keys(section: str) -> str:
    return ", ".join(SCHEMA[section])


def _check_value(section: str, name: str, value: Any) -> Any:
    """``value`` converted to the key's type, or a :class:`ConfigError` naming the key."""
    key = SCHEMA[section][name]
    where = f"{section}.{name}"

    def number(v: Any, integer: bool) -> int | float:
        if integer:
            minimum = None if key.minimum is None else int(key.minimum)
            try:
                return check_int(where, v, minimum)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where} must be a number; got {v!r}")
        if not math.isfinite(v):
            raise ConfigError(f"{where} must be finite; got {v!r}")
        if key.minimum is not None and v < key.minimum:
            raise ConfigError(f"{where} must be >= {key.minimum:g}; got {v!r}")
        if key.maximum is not None and v > key.maximum:
            raise ConfigError(f"{where} must be <= {key.maximum:g}; got {v!r}")
        if key.below is not None and v >= key.below:
            raise ConfigError(f"{where} must be < {key.below:g}; got {v!r}")
        return float(v)

    if key.kind == "int":
        return number(value, True)
    if key.kind == "float":
        return number(value, False)
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false; got {value!r}")
        return value
    if key.kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string; got {value!r}")
        if key.choices is not None:
            try:
                check_choice(where, value, key.choices)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        return value
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{where} must be a non-empty list; got {value!r}")
    integer = key.kind == "ints"
    if integer and any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ConfigError(f"{where} must be a list of positive integers; got {value!r}")
    if not integer:
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise ConfigError(f"{where} must be a list of numbers; got {value!r}")
        if not all(math.isfinite(v) for v in value):
            raise ConfigError(f"{where} must hold finite numbers; got {value!r}")
    return [int(v) if integer else float(v) for v in value]


def validate_config(config: Any, source: str = "config") -> Config:
    """Check sections, keys and value types; returns a checked copy (missing keys stay missing).

    Raises
    ------
    ConfigError
        Naming the unknown section or key with the valid ones, or the key with a bad value.

    Examples
    --------
    >>> validate_config({"train": {"steps": 5}})
    {'train': {'steps': 5}}
    >>> validate_config({"train": {"stepz": 5}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyro_ebm.config.ConfigError: config: unknown key 'train.stepz'; valid keys in [train]: ...
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a table of sections; got {type(config).__name__}")
    out: Config = {}
    for section, values in config.items():
        if section not in SCHEMA:
            if not isinstance(values, dict):
                raise ConfigError(
                    f"{source}: unknown key {section!r} outside any section; keys go in "
                    f"sections: {', '.join(f'[{s}]' for s in SCHEMA)}"
                )
            raise ConfigError(
                f"{source}: unknown section [{section}]; valid sections: "
                f"{', '.join(f'[{s}]' for s in SCHEMA)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of keys; got {values!r}")
        out[section] = {}
        for name, value in values.items():
            if name not in SCHEMA[section]:
                raise ConfigError(
                    f"{source}: unknown key '{section}.{name}'; valid keys in [{section}]: "
                    f"{_valid_keys(section)}"
                )
            try:
                out[section][name] = _check_value(section, name, value)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
    return out


def loads_config(text: str, source: str = "config") -> Config:
    """Parse TOML text and :func:`validate_config` it.

    Examples
    --------
    >>> loads_config('[sample]\\nkernel = "hmc"\\n')
    {'sample': {'kernel': 'hmc'}}
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source} is not valid TOML: {err}") from None
    return validate_config(raw, source)


def read_config(path: str | os.PathLike) -> Config:
    """Read and validate a TOML configuration file.

    Raises
    ------
    ConfigError
        When the file is missing or unreadable, not valid TOML, or does not fit :data:`SCHEMA`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    return loads_config(text, f"config {path}")


def merge_config(base: Config, *overrides: Config) -> Config:
    """A copy of ``base`` with the keys of each override (later ones win) set on top.

    Examples
    --------
    >>> merge_config({"train": {"steps": 1, "lr": 0.1}}, {"train": {"steps": 2}})
    {'train': {'steps': 2, 'lr': 0.1}}
    """
    out = copy.deepcopy(base)
    for override in overrides:
        for section, values in override.items():
            out.setdefault(section, {}).update(copy.deepcopy(values))
    return out


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    raise ValueError(f"{where}: cannot write {type(value).__name__} {value!r} to TOML")


def dumps_toml(config: Config) -> str:
    """Serialize sections of scalars and lists of scalars as TOML (``None`` values are left out).

    Examples
    --------
    >>> print(dumps_toml({"data": {"name": "a \\"b\\"", "seed": 0, "skip": None}}), end="")
    [data]
    name = "a \\"b\\""
    seed = 0
    """
    blocks = []
    for section, values in config.items():
        lines = [f"[{section}]"]
        for name, value in values.items():
            if value is not None:
                lines.append(f"{name} = {_toml_value(value, f'{section}.{name}')}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def write_config(config: Config, path: str | os.PathLike) -> None:
    """Write ``config`` as TOML to ``path`` (with a one-line header comment)."""
    header = "# The configuration this pyro-ebm run used (pyro-ebm train --config accepts it).\n"
    Path(path).write_text(header + dumps_toml(config), encoding="utf-8")
