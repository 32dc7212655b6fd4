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

    ``metrics`` holds the objective's figures per step: ``energy_pos`` and ``energy_neg``
    (mean energies of data and negatives), for NCE/FCE the classifier's ``accuracy`` and the
    learned ``log_Z``, for FCE the flow's NLL on the data batch ``flow_nll``, for CD the lowest
    negative energy ``energy_neg_min`` and the negatives' ``acceptance_rate``. ``skipped`` lists
    steps whose loss or gradient was not finite (no update made). ``warnings`` records each
    sign of failure the objective's ``diagnose`` found (FCE accuracy stuck at 1, the flow's NLL
    exploding, log Z running away, CD negatives overshooting or a well forming) once, as
    ``{"step", "kind", "message"}``; the progress bar shows their kinds. ``events`` records
    what ``fit`` decided on its own, in the same form: ``"phase_abandoned"`` when a trial phase
    (:class:`~pyro_ebm.objectives.Phase`, e.g. FCE's refinement) was rolled back. ``log_Z`` is
    the final learned log normalizer (EMA value) when the objective learns one.
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
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
