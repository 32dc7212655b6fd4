"""Built-in data: the FFJORD 2-d toy densities and scikit-learn's 8x8 digits, seeded explicitly.

Every sampler in this module draws its randomness from an explicit :class:`torch.Generator`
(built from ``seed`` or passed as ``generator``); nothing here reads or changes the global
random state of torch, NumPy or Python, and nothing is downloaded.

The 2-d toys follow the definitions of ``lib/toy_data.py`` in FFJORD (Grathwohl et al. 2019),
scales, offsets and noise levels included. Where FFJORD (or scikit-learn's ``make_moons`` and
``make_circles``, which it calls) spreads points over evenly spaced angles or splits the batch
into equal groups, this module draws the angle and the group of every row independently, so
that every row is an independent draw from the same limiting distribution and ``load(name, n)``
behaves like ``n`` i.i.d. samples for any ``n``.

References
----------
- W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever and D. Duvenaud, "FFJORD:
  Free-form continuous dynamics for scalable reversible generative models", ICLR 2019.
  https://github.com/rtqichen/ffjord (``lib/toy_data.py``).
- F. Pedregosa et al., "Scikit-learn: Machine learning in Python", JMLR 12, 2011
  (``sklearn.datasets.load_digits``, ``make_moons``, ``make_circles``, ``make_swiss_roll``).
- L. Theis, A. van den Oord and M. Bethge, "A note on the evaluation of generative
  models", ICLR 2016 (uniform dequantization of discrete data).
"""

from __future__ import annotations

import functools

import torch

from .._validation import check_int
from . import _names
from ._names import _check_dtype, _check_name, _make_generator
from .files import check_data_name, load_file
from .toys import _TOY_SAMPLERS, oracle_nll, true_log_prob

__all__ = [
    "DENSITY_NAMES",
    "NAMES",
    "TOY_NAMES",
    "check_data_name",
    "load",
    "load_digits_with_labels",
    "load_file",
    "oracle_nll",
    "true_log_prob",
]

#: Names of the 2-d toy data sets; each returns samples of shape ``(n, 2)``.
TOY_NAMES: tuple[str, ...] = _names.TOY_NAMES
#: Every name that :func:`load` accepts.
NAMES: tuple[str, ...] = _names.NAMES
#: Names whose true density is known (:func:`true_log_prob`, :func:`oracle_nll`): every 2-d toy.
DENSITY_NAMES: tuple[str, ...] = _names.DENSITY_NAMES

_NUM_DIGITS_ROWS = 1797
_DIGITS_LEVELS = 17  # pixel intensities are the integers 0..16


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """Scikit-learn's bundled digits as (float64 pixels of shape (1797, 64), int64 labels)."""
    from sklearn.datasets import load_digits as _sklearn_load_digits

    bunch = _sklearn_load_digits()
    pixels = torch.as_tensor(bunch.data, dtype=torch.float64)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return pixels, labels


def _sample_digits(
    n: int, g: torch.Generator, dtype: torch.dtype, flatten: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, labels = _digits_arrays()
    if n <= _NUM_DIGITS_ROWS:
        rows = torch.randperm(_NUM_DIGITS_ROWS, generator=g)[:n]
    else:
        rows = torch.randint(0, _NUM_DIGITS_ROWS, (n,), generator=g)
    noise = torch.rand(n, pixels.shape[1], dtype=torch.float64, generator=g)
    unit = (pixels[rows] + noise) / _DIGITS_LEVELS  # in [0, 1)
    x = (2.0 * unit - 1.0).to(dtype)
    # Rounding to a narrower dtype could reach 1.0; keep the documented half-open range.
    below_one = torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype))
    x = torch.minimum(x, below_one)
    if not flatten:
        x = x.reshape(n, 1, 8, 8)
    return x, labels[rows]


def load(
    name: str,
    n: int,
    seed: int | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    flatten: bool = False,
) -> torch.Tensor:
    """Draw ``n`` samples from a built-in data set.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`: the 2-d toys ``"8gaussians"``, ``"checkerboard"``, ``"rings"``,
        ``"circles"``, ``"moons"``, ``"swissroll"``, ``"pinwheel"``, ``"2spirals"`` (FFJORD's
        definitions), or ``"digits"`` (scikit-learn's bundled 8x8 digits).
    n : int
        Number of samples, a positive int. For ``"digits"``, rows of the 1797 images are drawn
        without replacement when ``n <= 1797`` and with replacement beyond.
    seed : int, optional
        Seed of a fresh :class:`torch.Generator`. Cannot be combined with ``generator``. When
        both are omitted a fresh generator with a nondeterministic seed is used.
    generator : torch.Generator, optional
        A CPU generator to draw from (it is advanced). Cannot be combined with ``seed``;
        ``seed=s`` gives the same draws as ``generator=torch.Generator().manual_seed(s)``.
    dtype : torch.dtype
        Floating-point dtype of the result. Samples are computed in float64, then cast.
    flatten : bool
        For ``"digits"``, return shape ``(n, 64)`` instead of ``(n, 1, 8, 8)``. The 2-d toys are
        already flat and ignore it.

    Returns
    -------
    torch.Tensor
        Shape ``(n, 2)`` for the toys. For ``"digits"``, shape ``(n, 1, 8, 8)`` (or ``(n, 64)``)
        with values in ``[-1, 1)``: an integer pixel ``v`` in ``0..16`` becomes
        ``2 (v + u) / 17 - 1`` with ``u ~ Uniform[0, 1)`` drawn independently per pixel
        (uniform dequantization, Theis et al. 2016), so ``floor(17 (x + 1) / 2)`` recovers ``v``.

    Raises
    ------
    ValueError
        For an unknown ``name``, an ``n`` that is not a positive int, a non-floating ``dtype``,
        or both ``seed`` and ``generator``.

    Notes
    -----
    Rows are i.i.d.: where FFJORD and scikit-learn place points on evenly spaced angles or split
    the batch into equal groups, the angle and the group are drawn per row here, which leaves
    the limiting distribution unchanged. The random streams therefore differ from FFJORD's.

    References
    ----------
    - Grathwohl et al., "FFJORD", ICLR 2019, ``lib/toy_data.py``.
    - Pedregosa et al., "Scikit-learn", JMLR 2011, ``sklearn.datasets.load_digits``.
    - Theis, van den Oord and Bethge, "A note on the evaluation of generative models",
      ICLR 2016.

    Examples
    --------
    >>> x = load("8gaussians", 500, seed=0)
    >>> x.shape, x.dtype
    (torch.Size([500, 2]), torch.float32)
    >>> torch.equal(x, load("8gaussians", 500, seed=0))
    True
    >>> g = torch.Generator().manual_seed(0)
    >>> torch.equal(x, load("8gaussians", 500, generator=g))
    True
    >>> images = load("digits", 16, seed=1)
    >>> images.shape
    torch.Size([16, 1, 8, 8])
    >>> bool(images.min() >= -1) and bool(images.max() < 1)
    True
    >>> load("digits", 16, seed=1, flatten=True, dtype=torch.float64).shape
    torch.Size([16, 64])
    """
    _check_name(name)
    n = check_int("n", n, 1)
    dtype = _check_dtype(dtype)
    g = _make_generator(seed, generator)
    if name == "digits":
        return _sample_digits(n, g, dtype, flatten)[0]
    return _TOY_SAMPLERS[name](n, g).to(dtype)


def load_digits_with_labels(
    n: int,
    seed: int | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    flatten: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` dequantized digit images together with their class labels.

    The images are exactly those of ``load("digits", n, ...)`` for the same seed or generator
    state; see :func:`load` for the dequantization, the range ``[-1, 1)`` and the sampling of
    rows (without replacement up to 1797, with replacement beyond).

    Parameters
    ----------
    n : int
        Number of images, a positive int.
    seed : int, optional
        Seed of a fresh :class:`torch.Generator`; exclusive with ``generator``.
    generator : torch.Generator, optional
        A CPU generator to draw from; exclusive with ``seed``.
    dtype : torch.dtype
        Floating-point dtype of the images.
    flatten : bool
        Return images of shape ``(n, 64)`` instead of ``(n, 1, 8, 8)``.

    Returns
    -------
    tuple of torch.Tensor
        ``(x, y)``: images as in :func:`load` and int64 labels in ``0..9`` of shape ``(n,)``.

    References
    ----------
    - Pedregosa et al., "Scikit-learn", JMLR 2011, ``sklearn.datasets.load_digits``.

    Examples
    --------
    >>> x, y = load_digits_with_labels(10, seed=0)
    >>> x.shape, y.shape, y.dtype
    (torch.Size([10, 1, 8, 8]), torch.Size([10]), torch.int64)
    >>> torch.equal(x, load("digits", 10, seed=0))
    True
    >>> bool(((y >= 0) & (y <= 9)).all())
    True
    """
    n = check_int("n", n, 1)
    dtype = _check_dtype(dtype)
    g = _make_generator(seed, generator)
    return _sample_digits(n, g, dtype, flatten)
