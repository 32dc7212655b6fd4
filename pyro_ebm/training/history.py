"""The per-step record of a training run, :class:`History`, saved and loaded as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["History"]


@dataclass
class History:
    """Per-step training record (plain lists; :meth:`save`/:meth:`load` as JSON).

    ``metrics`` holds the objective's figures (``energy_pos``, ``energy_neg``, ``accuracy``,
    ``acceptance_rate``, ``log_Z``, ...) per step; ``skipped`` lists steps whose loss or gradient
    was not finite (no update made). ``log_Z`` is the final learned log normalizer (EMA value)
    when the objective learns one.
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    log_Z: float | None = None

    @property
    def energy_pos(self) -> list[float]:
        return self.metrics.get("energy_pos", [])

    @property
    def energy_neg(self) -> list[float]:
        return self.metrics.get("energy_neg", [])

    def as_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.as_dict()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> History:
        return cls(**json.loads(Path(path).read_text()))
