"""A run's ingredients from its configuration: data, resolved defaults, energy and objective."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from . import datasets
from ._validation import check_bounds
from .config import Config, default_config, library_default, merge_config
from .energies import ConvEnergy, MLPEnergy
from .errors import UserError
from .objectives import (
    FCE,
    NCE,
    ContrastiveDivergence,
    Objective,
    ScoreMatching,
)
from .objectives.fce import default_flow_kind

__all__ = [
    "TOY_BOUNDS",
    "bounds_pairs",
    "build_energy",
    "build_objective",
    "load_data",
    "resolve_config",
]

TOY_BOUNDS = [-4.0, 4.0, -4.0, 4.0]


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
    datasets.check_data_name(name)
    if name in datasets.TOY_NAMES:
        train = datasets.load(name, data["n_train"], seed=data["seed"])
        test = datasets.load(name, data["n_test"], seed=data["seed"] + 1)
        return train, test
    if name == "digits":
        images = datasets.load("digits", 1797, seed=data["seed"])
        return _split(images, data["test_fraction"], data["seed"] + 1)
    return _split(datasets.load_file(name), data["test_fraction"], data["seed"])


_OBJECTIVE_KEYS = {
    "cd": (
        "cd_mode",
        "cd_sampler",
        "cd_steps",
        "cd_step_size",
        "cd_target_accept",
        "cd_adapt_step_size",
        "cd_alpha",
        "cd_buffer_size",
        "cd_reinit_prob",
        "cd_per_chain_step_size",
        "cd_jump_prob",
    ),
    "sm-exact": ("nce_weight",),
    "sm-sliced": ("num_projections", "nce_weight"),
    "sm-denoising": ("sigma", "antithetic", "nce_weight"),
    "nce": ("noise_scale", "noise_ratio"),
    "fce": (
        "noise_ratio",
        "flow_kind",
        "flow_hidden",
        "flow_layers",
        "flow_pretrain_steps",
        "flow_refine",
    ),  # fmt: skip
}
_MODEL_KEYS = {
    "mlp": ("hidden", "activation", "spectral_norm", "first_layer_gain"),
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
    >>> config["model"]["hidden"], config["model"]["first_layer_gain"]
    ([128, 128], 2.0)
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
    if objective["noise_ratio"] is None:  # the library's recipe for each objective
        recipe = NCE.for_data if kind == "nce" else FCE.for_data
        objective["noise_ratio"] = float(library_default(recipe, "noise_ratio"))
    if objective["flow_kind"] is None:
        objective["flow_kind"] = default_flow_kind(dim)
    if kind == "fce" and objective["flow_kind"] == "realnvp" and dim < 2:
        raise UserError("objective.flow_kind = 'realnvp' needs at least 2 dimensions; use 'maf'")
    keep = ("name", *_OBJECTIVE_KEYS[kind])
    config["objective"] = {k: v for k, v in objective.items() if k in keep}

    if config["train"]["lr"] is None:  # the objective's own rate, as fit(lr=None) takes it
        config["train"]["lr"] = objective_class(kind).default_lr
    if config["train"]["lr_warmup"] is None:  # the objective's share of the steps, as in fit()
        share = objective_class(kind).default_lr_warmup
        config["train"]["lr_warmup"] = round(share * config["train"]["steps"])
    if kind != "fce":  # only FCE has an adversary (its flow)
        config["train"].pop("adversary_lr", None)
    elif config["train"]["adversary_lr"] is None:
        config["train"]["adversary_lr"] = objective_class(kind).default_adversary_lr
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


def objective_class(name: str) -> type[Objective]:
    """The objective class of the configuration's ``objective.name`` (``"sm-*"``: score matching).

    Examples
    --------
    >>> objective_class("cd").__name__, objective_class("sm-sliced").default_lr
    ('ContrastiveDivergence', 0.002)
    """
    if name.startswith("sm-"):
        return ScoreMatching
    return {"cd": ContrastiveDivergence, "nce": NCE, "fce": FCE}[name]


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
    ...                         "spectral_norm": False, "first_layer_gain": 2.0}},
    ...              torch.Size([3]))
    MLPEnergy(
      dim=3, hidden=(8,), activation='silu', spectral_norm=False, first_layer_gain=2
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
        first_layer_gain=model["first_layer_gain"],
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
            sampler=o["cd_sampler"],
            num_steps=o["cd_steps"],
            step_size=o["cd_step_size"],
            target_accept_prob=o["cd_target_accept"],
            adapt_step_size=o["cd_adapt_step_size"],
            alpha=o["cd_alpha"],
            buffer_size=o["cd_buffer_size"],
            reinit_prob=o["cd_reinit_prob"],
            per_chain_step_size=o["cd_per_chain_step_size"],
            jump_prob=o["cd_jump_prob"],
        )
    if name.startswith("sm-"):
        kwargs = {"nce_weight": o["nce_weight"]} if "nce_weight" in o else {}
        if name == "sm-sliced":
            kwargs["num_projections"] = o["num_projections"]
        if name == "sm-denoising":
            kwargs.update(sigma=o["sigma"], antithetic=o["antithetic"])
        return ScoreMatching(name[3:], **kwargs)
    if name == "nce":
        return NCE.for_data(train, noise_scale=o["noise_scale"], noise_ratio=o["noise_ratio"])
    seed = config.get("train", {}).get("seed", 0)
    return FCE.for_data(
        train, kind=o["flow_kind"], hidden_features=o["flow_hidden"],
        num_layers=o["flow_layers"], noise_ratio=o["noise_ratio"],
        pretrain_steps=o["flow_pretrain_steps"] if pretrain else 0, refine=o["flow_refine"],
        generator=torch.Generator().manual_seed(seed), progress_bar=progress,
    )  # fmt: skip
