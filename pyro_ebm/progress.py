"""Progress reporting: tqdm bars that suit a terminal or a log, and one-line notes.

:func:`progress` is the one place that decides how pyro-ebm shows progress. On a terminal it
returns an ordinary tqdm bar. When stderr is not a terminal (``make demo > log``, CI, a
notebook), a bar redrawn with carriage returns floods the log with one endless line, so the
same tqdm object instead prints a complete line at most every ``interval`` seconds, plus the
final one when it closes.

Examples
--------
>>> import io
>>> log = io.StringIO()
>>> for _ in progress(range(3), desc="steps", stream=log):
...     pass
>>> print(log.getvalue().splitlines()[-1])  # doctest: +ELLIPSIS
steps: 100% 3/3 [...]
"""

from __future__ import annotations

import io
import math
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from tqdm.std import tqdm

__all__ = ["LOG_INTERVAL", "Log", "progress", "say"]

#: Where one-line notes go: ``print``, a logger's method, or ``None`` for nowhere.
Log = Callable[[str], None] | None

#: Seconds between two plain progress lines when stderr is not a terminal.
LOG_INTERVAL = 10.0
_LOG_FORMAT = (
    "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)
_LOG_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class _PlainLines(io.TextIOBase):
    """A text stream for tqdm that turns its carriage-return redraws into throttled lines."""

    def __init__(self, stream: IO[str], interval: float) -> None:
        super().__init__()
        self.stream, self.interval = stream, interval
        self._last_time = -math.inf
        self._last_line: str | None = None
        self._pending: str | None = None

    def _emit(self, line: str) -> None:
        if line != self._last_line:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_line = line
        self._pending = None

    def write(self, text: str) -> int:
        if "\n" in text:  # tqdm closes the bar: show its last state
            if self._pending is not None:
                self._emit(self._pending)
            return len(text)
        line = text.replace("\r", "").strip()
        if line:
            now = time.monotonic()
            if now - self._last_time >= self.interval:
                self._last_time = now
                self._emit(line)
            else:
                self._pending = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    enabled: bool = True,
    initial: int = 0,
    interval: float = LOG_INTERVAL,
    stream: IO[str] | None = None,
) -> tqdm:
    """A tqdm progress bar over ``iterable`` (or updated by hand) that suits where it prints.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over; without it, call ``.update()`` (and pass ``total``).
    desc : str
        The label in front of the bar.
    total : int, optional
        The number of steps (default: ``len(iterable)`` where it has one).
    enabled : bool, default True
        ``False`` returns a silent bar that still iterates and accepts every call.
    initial : int, default 0
        Steps already done (a resumed run).
    interval : float, default :data:`LOG_INTERVAL`
        Seconds between plain lines when ``stream`` is not a terminal.
    stream : file-like, optional
        Where to print (default: ``sys.stderr`` at the time of the call).

    Returns
    -------
    tqdm.tqdm
        A live bar on a terminal; otherwise a bar that prints whole lines (``desc: 40% 2/5
        [...]``) at most every ``interval`` seconds, and its final state when closed.
    """
    stream = sys.stderr if stream is None else stream
    kwargs: dict[str, Any] = {"desc": desc, "total": total, "initial": initial}
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        kwargs["total"] = len(iterable)  # type: ignore[arg-type]
    bar_format = _LOG_FORMAT if kwargs["total"] is not None else _LOG_FORMAT_NO_TOTAL
    lines = _PlainLines(stream, interval)
    return tqdm(iterable, file=lines, bar_format=bar_format, mininterval=interval, **kwargs)


def say(log: Log, message: str) -> None:
    """Send ``message`` to ``log`` unless it is ``None``.

    Examples
    --------
    >>> say(print, "trained")
    trained
    >>> say(None, "nothing is printed")
    """
    if log is not None:
        log(message)
