"""Data files: a ``.npy`` array or a ``.csv`` table of shape (rows, columns), checked cell by cell.

Every problem (a missing file, a header-less word, a NaN, a ragged row, a value beyond float32,
too few rows) raises :class:`~pyro_ebm.errors.UserError` naming the row and column, counting
from 1.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ._names import NAMES

__all__ = ["MIN_ROWS", "check_data_name", "is_file_name", "load_file"]

MIN_ROWS = 10


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


def load_file(path: str | os.PathLike) -> Tensor:
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
    >>> load_file(path).shape
    torch.Size([12, 2])
    >>> _ = path.write_text("a,b\\n" + rows + "\\n1,nan")
    >>> load_file(path)  # doctest: +ELLIPSIS
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


def is_file_name(name: str) -> bool:
    """Whether ``name`` names a data file (ends in ``.npy`` or ``.csv``, any case)."""
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
    if name in NAMES or is_file_name(name):
        return name
    raise UserError(
        f"unknown data set {name!r}; valid names: {', '.join(NAMES)}, or a path to a "
        ".npy or .csv file"
    )
