"""Tests of the neural energies: shapes, dtypes, gradients, spectral norm and argument checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from pyro_ebm.energies import ConvEnergy, MLPEnergy
from pyro_ebm.energies.neural import ACTIVATIONS, FIRST_LAYER_GAIN

F64 = torch.float64

MODELS: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: MLPEnergy(3, hidden=(16, 8)),
    "mlp_spectral": lambda: MLPEnergy(3, hidden=(16, 8), spectral_norm=True),
    "conv": lambda: ConvEnergy(channels=(4, 8)),
    "conv_deep": lambda: ConvEnergy(channels=(4, 4, 4, 4)),
}


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[request.param]().double()


@pytest.mark.parametrize("batch_shape", [(), (5,), (3, 4), (2, 1, 3), (0,)])
def test_output_shape(model: nn.Module, batch_shape: tuple[int, ...]) -> None:
    x = torch.randn(*batch_shape, *model.event_shape, dtype=F64, generator=generator(0))
    out = model(x)
    assert out.shape == batch_shape
    assert out.dtype == F64
    assert torch.isfinite(out).all()


def test_batched_equals_unbatched(model: nn.Module) -> None:
    model.eval()  # freeze spectral-norm power iterations so repeated calls agree
    x = torch.randn(2, 3, *model.event_shape, dtype=F64, generator=generator(1))
    looped = torch.stack([torch.stack([model(item) for item in row]) for row in x])
    torch.testing.assert_close(model(x), looped, rtol=1e-12, atol=1e-12)


def test_float32_by_default() -> None:
    x = torch.randn(4, 2)
    assert MLPEnergy(2, hidden=(8,))(x).dtype == torch.float32


def test_gradient_reaches_every_parameter(model: nn.Module) -> None:
    x = torch.randn(6, *model.event_shape, dtype=F64, generator=generator(2))
    model(x).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_gradient_with_respect_to_input(model: nn.Module) -> None:
    model.eval()
    x = torch.randn(2, *model.event_shape, dtype=F64, generator=generator(3)).requires_grad_()
    assert torch.autograd.gradcheck(model, (x,))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_builds(activation: str) -> None:
    x = torch.randn(5, 2, dtype=F64, generator=generator(4))
    assert MLPEnergy(2, hidden=(8,), activation=activation).double()(x).shape == (5,)
    image = torch.randn(5, 1, 8, 8, dtype=F64, generator=generator(4))
    assert ConvEnergy(channels=(2,), activation=activation).double()(image).shape == (5,)


@pytest.mark.parametrize("gain", [None, 1.0, 3.0])
def test_first_layer_gain_scales_only_the_first_layer_of_torchs_init(gain) -> None:
    kwargs = {} if gain is None else {"first_layer_gain": gain}
    expected = FIRST_LAYER_GAIN if gain is None else gain
    torch.manual_seed(3)
    energy = MLPEnergy(5, hidden=(64, 32), **kwargs)
    torch.manual_seed(3)
    reference = [nn.Linear(5, 64), nn.Linear(64, 32), nn.Linear(32, 1)]
    layers = [m for m in energy.modules() if isinstance(m, nn.Linear)]
    for index, (layer, ref) in enumerate(zip(layers, reference, strict=True)):
        factor = expected if index == 0 else 1.0
        torch.testing.assert_close(layer.weight, factor * ref.weight, rtol=0, atol=1e-7)
        torch.testing.assert_close(layer.bias, factor * ref.bias, rtol=0, atol=1e-7)
    # torch's bound 1/sqrt(fan_in), times the gain: the largest first-layer weight is near it
    bound = expected / 5**0.5
    assert 0.9 * bound < layers[0].weight.abs().max() <= bound
    assert f"first_layer_gain={expected:g}" in repr(energy)


def test_first_layer_gain_leaves_a_spectrally_normalized_layer_alone() -> None:
    torch.manual_seed(4)
    energy = MLPEnergy(2, hidden=(16,), spectral_norm=True, first_layer_gain=5.0)
    torch.manual_seed(4)
    plain = MLPEnergy(2, hidden=(16,), spectral_norm=True, first_layer_gain=1.0)
    x = torch.randn(8, 2)
    torch.testing.assert_close(energy(x), plain(x))


def test_spectral_norm_normalizes_every_linear_layer() -> None:
    torch.manual_seed(0)
    energy = MLPEnergy(2, hidden=(32, 32), spectral_norm=True).double()
    plain = MLPEnergy(2, hidden=(32, 32))
    linears = [m for m in energy.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    assert all(parametrize.is_parametrized(m, "weight") for m in linears)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    x = torch.randn(16, 2, dtype=F64, generator=generator(5))
    for _ in range(100):  # power iterations run in training mode
        energy(x)
    energy.eval()
    for layer in linears:
        top = torch.linalg.matrix_norm(layer.weight, ord=2).item()
        assert abs(top - 1.0) < 1e-3
    # hence the whole network is Lipschitz with constant <= max|silu'| ~ 1.1 per layer
    y = x + 0.1 * torch.randn(16, 2, dtype=F64, generator=generator(6))
    ratio = (energy(x) - energy(y)).abs() / (x - y).norm(dim=-1)
    assert (ratio <= 1.1**2 + 1e-9).all()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MLPEnergy(0), "dim"),
        (lambda: MLPEnergy(-2), "dim"),
        (lambda: MLPEnergy(2.0), "dim"),  # type: ignore[arg-type]
        (lambda: MLPEnergy(True), "dim"),
        (lambda: MLPEnergy(2, hidden=()), "hidden"),
        (lambda: MLPEnergy(2, hidden=(8, 0)), "hidden"),
        (lambda: MLPEnergy(2, hidden=(8, 2.5)), "hidden"),  # type: ignore[arg-type]
        (lambda: MLPEnergy(2, hidden=8), "hidden"),  # type: ignore[arg-type]
        (lambda: MLPEnergy(2, activation="swish"), "activation.*silu.*leaky_relu"),
        (lambda: MLPEnergy(2, activation=nn.ReLU), "activation"),  # type: ignore[arg-type]
        (lambda: MLPEnergy(2, spectral_norm="yes"), "spectral_norm"),  # type: ignore[arg-type]
        (lambda: MLPEnergy(2, first_layer_gain=0.0), "first_layer_gain"),
        (lambda: MLPEnergy(2, first_layer_gain=float("nan")), "first_layer_gain"),
        (lambda: ConvEnergy(channels=()), "channels"),
        (lambda: ConvEnergy(channels=(4, -1)), "channels"),
        (lambda: ConvEnergy(activation="sigmoid"), "activation.*silu"),
    ],
)
def test_bad_arguments_raise(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("model", "bad_shape"),
    [
        (lambda: MLPEnergy(3, hidden=(4,)), (5, 2)),
        (lambda: MLPEnergy(3, hidden=(4,)), ()),
        (lambda: ConvEnergy(channels=(2,)), (5, 8, 8)),
        (lambda: ConvEnergy(channels=(2,)), (5, 1, 8, 7)),
    ],
)
def test_wrong_event_shape_raises(
    model: Callable[[], nn.Module], bad_shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match="event shape"):
        model()(torch.zeros(bad_shape))


@pytest.mark.parametrize("make", [lambda: MLPEnergy(2, hidden=(4,)), lambda: ConvEnergy((2,))])
def test_learned_log_z_round_trips_through_the_state_dict(make) -> None:
    energy = make()
    assert energy.log_Z is None and "learned_log_Z" in energy.state_dict()
    unknown = {k: v for k, v in energy.state_dict().items() if k.startswith("learned_log_Z")}
    assert all(torch.equal(v, make().state_dict()[k]) for k, v in unknown.items())  # no NaN
    energy.log_Z = torch.tensor(-3.25)
    fresh = make()
    fresh.load_state_dict(energy.state_dict())  # strict: the keys of both match
    assert float(fresh.log_Z) == -3.25
    fresh.double()
    assert fresh.log_Z.dtype == torch.float64  # a buffer follows the module's dtype
    fresh.log_Z = None
    assert fresh.log_Z is None


def test_state_dict_from_before_the_buffer_loads_as_unknown() -> None:
    energy = MLPEnergy(2, hidden=(4,))
    energy.log_Z = 1.0
    old = {k: v for k, v in energy.state_dict().items() if not k.startswith("learned_log_Z")}
    fresh = MLPEnergy(2, hidden=(4,))
    fresh.log_Z = 2.0
    fresh.load_state_dict(old)
    assert fresh.log_Z is None
    assert torch.equal(fresh.net[0].weight, energy.net[0].weight)


@pytest.mark.parametrize(
    "value, match",
    [(torch.zeros(2), "scalar"), ("1", "float"), (True, "float"), (float("nan"), "finite")],
)
def test_bad_log_z_raises(value, match) -> None:
    with pytest.raises(ValueError, match=match):
        MLPEnergy(2, hidden=(4,)).log_Z = value
