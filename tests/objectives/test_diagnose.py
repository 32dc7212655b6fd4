"""Objective.diagnose: each failure sign fires on a failing record and stays quiet on a healthy
one; fit() records it once in History.warnings."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_ebm import fit
from pyro_ebm.energies import MLPEnergy
from pyro_ebm.objectives import FCE, NCE, ContrastiveDivergence, fit_gaussian_noise, make_flow
from pyro_ebm.objectives.base import DIAGNOSIS_WINDOW, LOG_Z_WINDOW, log_z_runaway

N = 2 * LOG_Z_WINDOW + 10
LR = [2e-3] * N


def _fce(**kwargs) -> FCE:
    kwargs.setdefault("refine", 0.0)  # the game's diagnosis (the refinement's: test_phases)
    return FCE(make_flow(2, hidden_features=4, num_layers=1), **kwargs)


def test_healthy_records_raise_nothing():
    fce_ok = {"accuracy": [0.6] * N, "flow_nll": [3.0] * N, "log_Z": [0.5] * N}
    assert _fce().diagnose(fce_ok, LR) == {}
    cd_ok = {"acceptance_rate": [0.6] * N, "energy_pos": [-1.0] * N,
             "energy_neg": [0.0] * N, "energy_neg_min": [-3.0] * N}  # fmt: skip
    assert ContrastiveDivergence().diagnose(cd_ok, LR) == {}
    assert _fce().diagnose({}, []) == {}  # too short a record to judge


def test_fce_accuracy_stuck_at_one():
    record = {"accuracy": [0.6] * 100 + [0.995] * DIAGNOSIS_WINDOW}
    assert "stuck at 0.995" in _fce().diagnose(record, LR)["accuracy"]
    record["accuracy"][-10:] = [0.5] * 10  # a window mean of 0.97: below the threshold
    assert _fce().diagnose(record, LR) == {}


def test_fce_flow_nll_exploding():
    w = DIAGNOSIS_WINDOW
    rising = {"flow_nll": [3.0] * (2 * w) + [9.0] * w}
    assert "rose from 3.00 to 9.00" in _fce().diagnose(rising, LR)["flow_nll"]
    small = {"flow_nll": [3.0] * (2 * w) + [7.0] * w}  # 4 nats: within FLOW_NLL_RISE
    assert _fce().diagnose(small, LR) == {}
    assert "diverged" in _fce().diagnose({"flow_nll": [3.0, math.inf]}, LR)["flow_nll"]


def test_log_z_running_away_and_converging():
    n = LOG_Z_WINDOW
    # moving at the optimizer's top speed (lr per step) long after the start: running away
    running = [2e-3 * t for t in range(N)]
    assert "running away" in log_z_runaway(running, LR)
    nce = NCE(fit_gaussian_noise(torch.randn(10, 2)))
    assert "log_Z" in nce.diagnose({"log_Z": running}, LR)
    # the same speed early on (converging to a far target) is not reported
    assert log_z_runaway(running[: 2 * n - 1], LR) is None
    # nor a log Z that settled
    settled = [min(2e-3 * t, 2.0) for t in range(N)]
    assert log_z_runaway(settled, LR) is None
    assert "diverged" in log_z_runaway([0.0, math.nan], LR)


def test_cd_acceptance_collapse_and_well():
    w = DIAGNOSIS_WINDOW
    cd = ContrastiveDivergence()
    found = cd.diagnose({"acceptance_rate": [0.01] * w}, LR)
    assert "overshoot" in found["acceptance"]
    well = {"energy_pos": [-5.0] * w, "energy_neg_min": [-44.0] * w}
    assert "well" in cd.diagnose(well, LR)["well"]
    shallow = {"energy_pos": [-5.0] * w, "energy_neg_min": [-20.0] * w}
    assert cd.diagnose(shallow, LR) == {}
    gap = {"energy_pos": [-5.0] * w, "energy_neg": [16.0] * w}
    assert "no mass" in cd.diagnose(gap, LR)["gap"]
    assert cd.diagnose({"energy_pos": [-5.0] * w, "energy_neg": [14.0] * w}, LR) == {}


def _tiny():
    torch.manual_seed(0)
    return MLPEnergy(2, hidden=(8,))


def test_fit_records_fce_accuracy_stuck_once():
    """Data far from a frozen flow (not standardized to the data): the classifier wins
    outright and the game stops."""
    data = torch.randn(512, 2, generator=torch.Generator().manual_seed(0)) + 8.0
    steps = DIAGNOSIS_WINDOW + 100
    history = fit(_tiny(), data, _fce(standardize=False), steps=steps, batch_size=64, lr=0.02,
                  adversary_lr=1e-12, seed=0, progress_bar=False)  # fmt: skip
    kinds = [w["kind"] for w in history.warnings]
    assert kinds.count("accuracy") == 1, history.warnings
    first = history.warnings[kinds.index("accuracy")]
    assert DIAGNOSIS_WINDOW - 1 <= first["step"] < steps
    assert "flow_nll" in history.metrics and len(history.metrics["flow_nll"]) == steps


def test_fit_records_cd_negatives_that_miss_the_model():
    """No energy regularizer, a large lr and a fixed large step (the adaptive one would shrink
    and rescue the negatives): the negatives' energy runs away from the data's."""
    data = 0.01 * torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
    cd = ContrastiveDivergence(
        num_steps=2, step_size=1.0, alpha=0.0, buffer_size=256, adapt_step_size=False
    )
    history = fit(_tiny(), data, cd, steps=DIAGNOSIS_WINDOW + 50, batch_size=64, lr=0.02,
                  seed=0, progress_bar=False)  # fmt: skip
    assert [w["kind"] for w in history.warnings] == ["gap"], history.warnings
    assert history.metrics["energy_neg_min"][-1] <= history.metrics["energy_neg"][-1]


@pytest.mark.parametrize("name", ["fce", "cd"])
def test_warnings_round_trip_through_history_json(name, tmp_path):
    from pyro_ebm import History

    history = History(warnings=[{"step": 3, "kind": name, "message": "m"}])
    history.save(tmp_path / "h.json")
    assert History.load(tmp_path / "h.json").warnings == history.warnings
