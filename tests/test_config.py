"""pyro_ebm.config: the schema, validation, and the TOML writer that tomllib reads back."""

from __future__ import annotations

import math
import sys

import pytest

from pyro_ebm.config import (
    SCHEMA,
    ConfigError,
    default_config,
    dumps_toml,
    loads_config,
    merge_config,
    read_config,
    validate_config,
    write_config,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_writer_round_trips_through_tomllib():
    config = {
        "data": {"name": 'C:\\data\\"odd" name, ünïcode\n.csv', "seed": 0},
        "train": {"lr": 2e-5, "ema": 0.995, "steps": 10**12, "grad_clip": 1e16},
        "model": {"spectral_norm": True, "hidden": [8, 16], "kind": "mlp"},
        "evaluate": {"bounds": [-4.0, 4.5, -1e-3, 3.0]},
        "extra": {"inf": math.inf, "ninf": -math.inf, "missing": None},
    }
    text = dumps_toml(config)
    back = tomllib.loads(text)
    expected = {s: {k: v for k, v in values.items() if v is not None} for s, values in
                config.items()}  # fmt: skip
    assert back == expected
    assert "missing" not in text
    with pytest.raises(ValueError, match="extra.obj: cannot write dict"):
        dumps_toml({"extra": {"obj": {}}})


def test_every_default_validates_and_writes(tmp_path):
    defaults = default_config()
    assert set(defaults) == set(SCHEMA)
    path = tmp_path / "config.toml"
    write_config(defaults, path)
    assert path.read_text().startswith("# The configuration this pyro-ebm run used")
    loaded = read_config(path)  # None defaults are left out of the file
    assert loaded == {s: {k: v for k, v in d.items() if v is not None} for s, d in
                      defaults.items()}  # fmt: skip


@pytest.mark.parametrize(
    "config, message",
    [
        ({"train": {"stepz": 1}}, "unknown key 'train.stepz'; valid keys in [train]: steps,"),
        ({"optim": {"lr": 1}}, "unknown section [optim]; valid sections: [data], [model]"),
        ({"lr": 1}, "unknown key 'lr' outside any section"),
        ({"train": {"steps": 1.5}}, "train.steps must be an integer >= 1; got 1.5"),
        ({"train": {"steps": True}}, "train.steps must be an integer >= 1; got True"),
        ({"train": {"steps": 0}}, "train.steps must be an integer >= 1; got 0"),
        ({"train": {"lr": "fast"}}, "train.lr must be a number; got 'fast'"),
        ({"train": {"lr": math.nan}}, "train.lr must be finite"),
        ({"objective": {"name": "gan"}}, "objective.name must be one of 'cd', 'sm-exact'"),
        ({"model": {"hidden": []}}, "model.hidden must be a non-empty list"),
        ({"model": {"hidden": [8, 0]}}, "model.hidden must be a list of positive integers"),
        ({"model": {"spectral_norm": 1}}, "model.spectral_norm must be true or false"),
        ({"evaluate": {"bounds": [0, "x"]}}, "evaluate.bounds must be a list of numbers"),
        ({"train": 3}, "[train] must be a table of keys"),
    ],
)
def test_validation_names_the_key_and_the_allowed_values(config, message):
    with pytest.raises(ConfigError) as info:
        validate_config(config, "my.toml")
    assert str(info.value).startswith("my.toml: ")
    assert message in str(info.value)


def test_values_are_converted_and_merged():
    checked = validate_config({"train": {"lr": 1, "steps": 3}, "model": {"hidden": [4]}})
    assert checked == {"train": {"lr": 1.0, "steps": 3}, "model": {"hidden": [4]}}
    assert isinstance(checked["train"]["lr"], float)
    base = {"train": {"steps": 1, "lr": 0.1}, "model": {"hidden": [4]}}
    merged = merge_config(base, {"train": {"steps": 2}}, {"sample": {"seed": 3}})
    assert merged == {"train": {"steps": 2, "lr": 0.1}, "model": {"hidden": [4]},
                      "sample": {"seed": 3}}  # fmt: skip
    merged["model"]["hidden"].append(8)
    assert base["model"]["hidden"] == [4]  # a copy


def test_reading_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[train]")
    with pytest.raises(ConfigError, match="cannot be read"):
        read_config(bad)
    with pytest.raises(ConfigError, match="is not valid TOML"):
        loads_config("[train\n")
