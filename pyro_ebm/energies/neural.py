"""Neural-network energies: an MLP for vectors and a small convolutional net for 8x8 images."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .._validation import check_choice, check_int, check_int_sequence
from ._checks import check_event_shape
from ._log_z import LearnedLogZ

__all__ = ["ACTIVATIONS", "ConvEnergy", "MLPEnergy"]

#: Activation names accepted by :class:`MLPEnergy` and :class:`ConvEnergy`.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


def _activation_factory(activation: object) -> Callable[[], nn.Module]:
    return ACTIVATIONS[check_choice("activation", activation, tuple(ACTIVATIONS))]


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


class MLPEnergy(LearnedLogZ):
    r"""A multilayer perceptron mapping a vector in :math:`\mathbb{R}^d` to a scalar energy.

    .. math::

        E_\theta(x) = w_L^\top \sigma(W_{L-1} \cdots \sigma(W_1 x + b_1) \cdots) + b_L,

    with density :math:`p_\theta(x) \propto \exp(-E_\theta(x))`. Smooth activations
    (``"silu"``, ``"softplus"``, ``"gelu"``, ``"tanh"``, ``"elu"``) give the continuous gradients
    that Langevin and Hamiltonian samplers rely on.

    Parameters
    ----------
    dim : int
        Event dimension :math:`d`; inputs have shape ``batch_shape + (dim,)``.
    hidden : sequence of int, default (128, 128)
        Widths of the hidden layers.
    activation : str, default "silu"
        One of ``"silu"``, ``"relu"``, ``"elu"``, ``"tanh"``, ``"softplus"``, ``"gelu"``,
        ``"leaky_relu"``.
    spectral_norm : bool, default False
        Wrap every linear layer with
        :func:`torch.nn.utils.parametrizations.spectral_norm` (Miyato et al., 2018), which
        bounds the Lipschitz constant of the network and tends to stabilise contrastive training.

    Notes
    -----
    Any number of leading batch dimensions is accepted, including none: an input of shape
    ``batch_shape + (dim,)`` gives an output of shape ``batch_shape``. A log normalizer learned
    by :func:`pyro_ebm.fit` (NCE, FCE) is kept in the ``state_dict`` (:class:`LearnedLogZ`).

    References
    ----------
    T. Miyato, T. Kataoka, M. Koyama, Y. Yoshida (2018). Spectral normalization for generative
    adversarial networks. ICLR.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import MLPEnergy
    >>> energy = MLPEnergy(2, hidden=(32, 32))
    >>> energy(torch.randn(5, 2)).shape
    torch.Size([5])
    >>> energy(torch.randn(3, 4, 2)).shape
    torch.Size([3, 4])
    >>> energy(torch.randn(2)).shape
    torch.Size([])
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (128, 128),
        activation: str = "silu",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        self._init_learned_log_Z()
        self.dim = check_int("dim", dim, 1)
        self.hidden = check_int_sequence("hidden", hidden)
        make_activation = _activation_factory(activation)
        self.activation = activation
        self.spectral_norm = _check_bool(spectral_norm, "spectral_norm")
        self.event_shape = torch.Size([self.dim])

        layers: list[nn.Module] = []
        width_in = self.dim
        for width in self.hidden:
            layers += [self._linear(width_in, width), make_activation()]
            width_in = width
        layers.append(self._linear(width_in, 1))
        self.net = nn.Sequential(*layers)

    def _linear(self, width_in: int, width_out: int) -> nn.Module:
        layer = nn.Linear(width_in, width_out)
        return _spectral_norm(layer) if self.spectral_norm else layer

    def forward(self, x: Tensor) -> Tensor:
        """Energy of ``x`` (shape ``batch_shape + (dim,)``), returned with shape ``batch_shape``.

        Examples
        --------
        >>> MLPEnergy(3, hidden=(8,))(torch.zeros(4, 3)).shape
        torch.Size([4])
        """
        batch_shape = check_event_shape(x, self.event_shape)
        return self.net(x.reshape(-1, self.dim)).reshape(batch_shape)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, hidden={self.hidden}, activation={self.activation!r}, "
            f"spectral_norm={self.spectral_norm}"
        )


class ConvEnergy(LearnedLogZ):
    r"""A small convolutional energy for single-channel 8x8 images (event shape ``(1, 8, 8)``).

    The first 3x3 convolution keeps the 8x8 resolution; each further 3x3 convolution has
    stride 2 (8 -> 4 -> 2 -> 1). A final linear layer maps the flattened features to a scalar:

    .. math::

        E_\theta(x) = w^\top \mathrm{vec}\big(\sigma(\mathrm{conv}_K(\cdots
        \sigma(\mathrm{conv}_1(x)) \cdots))\big) + b.

    Parameters
    ----------
    channels : sequence of int, default (32, 64)
        Output channels of the successive convolutions.
    activation : str, default "silu"
        One of ``"silu"``, ``"relu"``, ``"elu"``, ``"tanh"``, ``"softplus"``, ``"gelu"``,
        ``"leaky_relu"``.

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm.energies import ConvEnergy
    >>> energy = ConvEnergy(channels=(8, 16))
    >>> energy(torch.randn(5, 1, 8, 8)).shape
    torch.Size([5])
    >>> energy(torch.randn(1, 8, 8)).shape
    torch.Size([])
    """

    image_side = 8

    def __init__(self, channels: Sequence[int] = (32, 64), activation: str = "silu") -> None:
        super().__init__()
        self._init_learned_log_Z()
        self.channels = check_int_sequence("channels", channels)
        make_activation = _activation_factory(activation)
        self.activation = activation
        self.event_shape = torch.Size([1, self.image_side, self.image_side])

        layers: list[nn.Module] = []
        channels_in, side = 1, self.image_side
        for index, channels_out in enumerate(self.channels):
            stride = 1 if index == 0 else 2
            layers += [
                nn.Conv2d(channels_in, channels_out, kernel_size=3, stride=stride, padding=1),
                make_activation(),
            ]
            channels_in = channels_out
            side = (side - 1) // stride + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels_in * side * side, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Energy of ``x`` (shape ``batch_shape + (1, 8, 8)``), returned with shape ``batch_shape``.

        Examples
        --------
        >>> ConvEnergy(channels=(4,))(torch.zeros(2, 3, 1, 8, 8)).shape
        torch.Size([2, 3])
        """
        batch_shape = check_event_shape(x, self.event_shape)
        features = self.features(x.reshape(-1, *self.event_shape))
        return self.head(features.flatten(1)).reshape(batch_shape)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, activation={self.activation!r}"
