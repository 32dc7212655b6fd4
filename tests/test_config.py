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
        ({"objective": {"flow_refine": 1.0}}, "objective.flow_refine must be < 1; got 1.0"),
        ({"objective": {"cd_jump_prob": 1.5}}, "objective.cd_jump_prob must be <= 1; got 1.5"),
        ({"objective": {"cd_reinit_prob": 2}}, "objective.cd_reinit_prob must be <= 1"),
        ({"objective": {"cd_target_accept": 1}}, "objective.cd_target_accept must be < 1"),
        ({"train": {"ema": 1.5}}, "train.ema must be < 1; got 1.5"),
        ({"data": {"test_fraction": 1}}, "data.test_fraction must be < 1"),
        ({"objective": {"nce_weight": -1}}, "objective.nce_weight must be >= 0; got -1"),
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


# ---- one source of defaults: the command line reads the library's ---------------------------


def _library_defaults():
    from pyro_ebm import fit
    from pyro_ebm.energies import ConvEnergy, MLPEnergy
    from pyro_ebm.evaluation import ais_log_partition, grid_log_partition
    from pyro_ebm.infer import sample
    from pyro_ebm.objectives import FCE, NCE, ContrastiveDivergence, ScoreMatching

    cd = ContrastiveDivergence
    return {
        ("model", "channels"): (ConvEnergy, "channels"),
        ("model", "activation"): (MLPEnergy, "activation"),
        ("model", "spectral_norm"): (MLPEnergy, "spectral_norm"),
        ("model", "first_layer_gain"): (MLPEnergy, "first_layer_gain"),
        ("objective", "noise_scale"): (NCE.for_data, "noise_scale"),
        ("objective", "sigma"): (ScoreMatching, "sigma"),
        ("objective", "antithetic"): (ScoreMatching, "antithetic"),
        ("objective", "num_projections"): (ScoreMatching, "num_projections"),
        ("objective", "nce_weight"): (ScoreMatching, "nce_weight"),
        ("objective", "cd_mode"): (cd, "mode"),
        ("objective", "cd_sampler"): (cd, "sampler"),
        ("objective", "cd_steps"): (cd, "num_steps"),
        ("objective", "cd_step_size"): (cd, "step_size"),
        ("objective", "cd_target_accept"): (cd, "target_accept_prob"),
        ("objective", "cd_adapt_step_size"): (cd, "adapt_step_size"),
        ("objective", "cd_alpha"): (cd, "alpha"),
        ("objective", "cd_buffer_size"): (cd, "buffer_size"),
        ("objective", "cd_reinit_prob"): (cd, "reinit_prob"),
        ("objective", "cd_per_chain_step_size"): (cd, "per_chain_step_size"),
        ("objective", "cd_jump_prob"): (cd, "jump_prob"),
        ("objective", "flow_hidden"): (FCE.for_data, "hidden_features"),
        ("objective", "flow_layers"): (FCE.for_data, "num_layers"),
        ("objective", "flow_pretrain_steps"): (FCE.for_data, "pretrain_steps"),
        ("objective", "flow_refine"): (FCE.for_data, "refine"),
        ("train", "batch_size"): (fit, "batch_size"),
        ("train", "lr"): (fit, "lr"),
        ("train", "adversary_lr"): (fit, "adversary_lr"),
        ("train", "schedule"): (fit, "schedule"),
        ("train", "lr_warmup"): (fit, "lr_warmup"),
        ("train", "ema"): (fit, "ema"),
        ("train", "grad_clip"): (fit, "grad_clip"),  # None in fit() is 0 (off) in a config
        ("sample", "kernel"): (sample, "kernel"),
        ("sample", "warmup_steps"): (sample, "warmup_steps"),
        ("evaluate", "resolution"): (grid_log_partition, "resolution"),
        ("evaluate", "ais_temperatures"): (ais_log_partition, "num_temperatures"),
        ("evaluate", "ais_chains"): (ais_log_partition, "num_chains"),
        ("evaluate", "mmd_warmup_steps"): (sample, "warmup_steps"),
    }


# keys with no library counterpart (what a run directory needs), or resolved from the data
CLI_ONLY = {
    ("data", k) for k in ("name", "n_train", "n_test", "test_fraction", "seed")
} | {
    ("model", "kind"), ("model", "hidden"), ("objective", "name"),
    ("objective", "noise_ratio"), ("objective", "flow_kind"), ("train", "steps"),
    ("train", "checkpoint_every"), ("train", "seed"), ("sample", "num_chains"),
    ("sample", "num_samples"), ("sample", "init"), ("sample", "seed"),
    ("evaluate", "bounds"), ("evaluate", "mmd_points"), ("evaluate", "seed"),
}  # fmt: skip


def test_every_key_is_either_the_librarys_or_the_command_lines():
    keys = {(s, k) for s, section in SCHEMA.items() for k in section}
    library = set(_library_defaults())
    assert not library & CLI_ONLY
    assert keys == library | CLI_ONLY, "classify a new key: library default or CLI-only"


@pytest.mark.parametrize("where", sorted(_library_defaults()), ids="/".join)
def test_schema_default_is_the_librarys(where):
    import inspect

    fn, name = _library_defaults()[where]
    expected = inspect.signature(fn).parameters[name].default
    if isinstance(expected, tuple):
        expected = list(expected)
    if where in (("train", "grad_clip"), ("train", "ema")) and expected is None:
        expected = 0.0
    section, key = where
    assert SCHEMA[section][key].default == expected


def test_choice_lists_are_the_librarys():
    from pyro_ebm import infer, training
    from pyro_ebm.energies import neural
    from pyro_ebm.objectives import cd, fce

    assert SCHEMA["model"]["activation"].choices == tuple(neural.ACTIVATIONS)
    assert SCHEMA["sample"]["kernel"].choices == tuple(infer.KERNELS)
    assert SCHEMA["objective"]["cd_mode"].choices == cd.MODES
    assert SCHEMA["objective"]["cd_sampler"].choices == cd.SAMPLERS
    assert SCHEMA["objective"]["flow_kind"].choices == fce.FLOW_KINDS
    assert SCHEMA["train"]["schedule"].choices == training.SCHEDULES


def test_default_run_builds_the_librarys_default_objectives():
    """What ``pyro-ebm train --objective X`` builds equals what the library builds by default."""
    import torch

    from pyro_ebm.builders import build_objective, resolve_config
    from pyro_ebm.objectives import FCE, NCE, ContrastiveDivergence, ScoreMatching, make_flow

    train = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))

    def built(name):
        config = merge_config(default_config(), {"data": {"name": "moons"},
                                                 "objective": {"name": name}})  # fmt: skip
        return build_objective(resolve_config(config, train), train)

    cd, ref = built("cd"), ContrastiveDivergence()
    assert (cd.mode, cd.sampler, cd.num_steps, cd.alpha, cd.grad_clip) == (
        ref.mode, ref.sampler, ref.num_steps, ref.alpha, ref.grad_clip
    )  # fmt: skip
    assert float(cd.log_step_size) == float(ref.log_step_size)
    assert (cd.target_accept_prob, cd.adapt_step_size, cd.max_log_step_size) == (
        ref.target_accept_prob, ref.adapt_step_size, ref.max_log_step_size
    )  # fmt: skip
    mala = build_objective(resolve_config(merge_config(default_config(), {
        "data": {"name": "moons"},
        "objective": {"name": "cd", "cd_sampler": "mala", "cd_adapt_step_size": False},
    }), train), train)  # fmt: skip
    assert (mala.target_accept_prob, mala.adapt_step_size) == (0.574, False)
    assert (cd.buffer.size, cd.buffer.reinit_prob) == (ref.buffer.size, ref.buffer.reinit_prob)
    assert (cd.per_chain_step_size, cd.jump_prob) == (ref.per_chain_step_size, ref.jump_prob)
    assert torch.equal(built("sm-denoising").sigmas, ScoreMatching("denoising").sigmas)
    assert built("sm-denoising").antithetic is ScoreMatching("denoising").antithetic
    for name in ("sm-exact", "sm-sliced", "sm-denoising"):
        assert built(name).nce_weight == ScoreMatching().nce_weight
    nce, ref_nce = built("nce"), NCE.for_data(train)
    assert nce.noise_ratio == ref_nce.noise_ratio
    assert torch.allclose(nce.noise.covariance_matrix, ref_nce.noise.covariance_matrix)
    fce, flow = built("fce"), make_flow(2)
    assert fce.noise_ratio == FCE.for_data(train).noise_ratio
    assert type(fce.flow) is type(flow)
    assert [p.shape for p in fce.flow.parameters()] == [p.shape for p in flow.parameters()]


@pytest.mark.parametrize("name", ["cd", "sm-exact", "sm-sliced", "sm-denoising", "nce", "fce"])
def test_resolved_learning_rate_is_the_objectives_own(name):
    """``train.lr`` and ``train.lr_warmup`` unset resolve to the objective's ``default_lr``
    and ``default_lr_warmup``, as ``fit(lr=None, lr_warmup=None)`` does."""
    import torch

    from pyro_ebm.builders import build_objective, resolve_config

    train = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    config = merge_config(default_config(), {"data": {"name": "moons"},
                                             "objective": {"name": name}})  # fmt: skip
    resolved = resolve_config(config, train)
    assert resolved["train"]["lr"] == type(build_objective(resolved, train)).default_lr
    given = merge_config(config, {"train": {"lr": 0.01}})
    assert resolve_config(given, train)["train"]["lr"] == 0.01
    objective_class = type(build_objective(resolved, train))
    # the warm-up: the objective's share of the steps, as fit(lr_warmup=None) takes it
    share = 0.05 if name == "nce" else 0.0
    assert objective_class.default_lr_warmup == share
    assert resolved["train"]["lr_warmup"] == round(share * resolved["train"]["steps"])
    given = merge_config(config, {"train": {"lr_warmup": 7}})
    assert resolve_config(given, train)["train"]["lr_warmup"] == 7
    if name == "fce":  # the flow's own rate, as fit(adversary_lr=None) takes it
        assert resolved["train"]["adversary_lr"] == objective_class.default_adversary_lr == 2e-3
        given = merge_config(config, {"train": {"adversary_lr": 1e-4}})
        assert resolve_config(given, train)["train"]["adversary_lr"] == 1e-4
    else:  # no adversary: the key is dropped from the recorded config
        assert "adversary_lr" not in resolved["train"]
