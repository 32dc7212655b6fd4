"""fit()'s phases (warm restarts an objective asks for) and FCE's opt-in refinement phase."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_ebm import fit
from pyro_ebm.energies import MLPEnergy
from pyro_ebm.objectives import FCE, Phase, ScoreMatching, make_flow
from pyro_ebm.objectives.fce import REFINE_WARMUP, REFINE_WIDEN

DATA = torch.randn(256, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([2.0, 0.5])


SECOND = (Phase(10, 4e-2, 0.2),)


class Phased(ScoreMatching):
    """Sliced SM with a second phase at step 10 (peak 4e-2, 20% warm-up), recording entries."""

    def __init__(self, phases=SECOND):
        super().__init__("sliced")
        self._phases, self.entered = phases, []

    def phases(self, steps):
        return self._phases

    def enter_phase(self, index):
        self.entered.append(index)


def _cosine(t, length, warm, peak):
    if warm and t < warm:
        return peak * (t + 1) / warm
    progress = min(1.0, (t - warm) / max(1, length - warm))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def test_a_phase_restarts_the_schedule_at_its_own_peak_and_warm_up():
    """Steps 0-9: fit's lr (1e-2) with 2 warm-up steps, cosine over 10 steps; steps 10-19:
    warm-up over 20% of the phase's 10 steps to 4e-2, then cosine over the rest."""
    objective = Phased()
    history = fit(MLPEnergy(2, hidden=(8,)), DATA, objective, steps=20, batch_size=64,
                  lr=1e-2, lr_warmup=2, seed=0, progress_bar=False)  # fmt: skip
    expected = [_cosine(t, 10, 2, 1e-2) for t in range(10)]
    expected += [_cosine(t, 10, 2, 4e-2) for t in range(10)]
    assert history.lr == pytest.approx(expected)
    assert objective.entered == [0, 1]


def test_a_resumed_run_enters_the_phase_it_stopped_in(tmp_path):
    kw = dict(steps=20, batch_size=64, lr=1e-2, seed=0, progress_bar=False)
    torch.manual_seed(0)
    straight = fit(MLPEnergy(2, hidden=(8,)), DATA, Phased(), **kw)
    stop = lambda step, metrics: step == 13  # noqa: E731 - an interruption inside phase 1
    torch.manual_seed(0)
    fit(MLPEnergy(2, hidden=(8,)), DATA, Phased(), checkpoint_dir=tmp_path, callbacks=[stop],
        **kw)  # fmt: skip
    objective = Phased()
    torch.manual_seed(0)
    resumed = fit(MLPEnergy(2, hidden=(8,)), DATA, objective, checkpoint_dir=tmp_path,
                  resume=True, **kw)  # fmt: skip
    assert objective.entered == [1]
    assert resumed.lr == pytest.approx(straight.lr)
    assert resumed.loss == straight.loss


@pytest.mark.parametrize(
    "phases",
    [(Phase(0),), (Phase(20),), (Phase(12), Phase(12)), (Phase(5, lr=-1.0),),
     (Phase(5, warmup=1.0),), ("step 5",)],
)  # fmt: skip
def test_bad_phases_are_rejected_naming_what_is_allowed(phases):
    with pytest.raises(ValueError, match="Phase"):
        fit(MLPEnergy(2, hidden=(8,)), DATA, Phased(phases), steps=20, batch_size=64, seed=0,
            progress_bar=False)  # fmt: skip


def _fce(**kw):
    torch.manual_seed(0)
    return FCE(make_flow(2, hidden_features=8, num_layers=2), flow_update_threshold=0.0, **kw)


def test_fce_refinement_is_the_last_share_of_the_steps_at_its_own_rate():
    fce = _fce(refine=0.7)
    assert fce.phases(100) == (Phase(30, 5e-2, REFINE_WARMUP, reset_optimizer=True),)
    assert _fce().phases(100) == ()  # the default plays the game to the end
    assert _fce(refine=0.001).phases(100) == ()  # an empty refinement is none
    for bad in ({"refine": 1.0}, {"refine": -0.1}, {"refine_noise_share": 0.0},
                {"refine_lr": 0.0}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            _fce(**bad)


def test_fce_refinement_freezes_the_flow_and_trains_the_energy():
    fce = _fce(refine=0.5)
    energy = MLPEnergy(2, hidden=(8,))
    snapshots = []

    def watch(step, metrics):
        snapshots.append([p.detach().clone() for p in fce.flow.parameters()])

    history = fit(energy, DATA, fce, steps=20, batch_size=64, seed=0, callbacks=[watch],
                  progress_bar=False)  # fmt: skip
    moved = [any(not torch.equal(a, b) for a, b in zip(s, t, strict=True))
             for s, t in zip(snapshots, snapshots[1:], strict=False)]  # fmt: skip
    assert all(moved[:9]) and not any(moved[9:])  # steps 1-9 move the flow, 10-19 do not
    assert int(fce.flow_updates) == 10
    assert round(REFINE_WARMUP * 10) == 0 and history.lr[10] == pytest.approx(5e-2)
    assert fce.refining


def test_fce_refinement_noise_is_the_defensive_mixture():
    """A ``refine_noise_share`` of the draws come from N(m, (1.25 s)^2), the rest from the
    flow, and ``log_q`` is the mixture's density: checked against the two parts directly."""
    fce = _fce(refine=0.5, refine_noise_share=0.25)
    fce.setup(DATA)
    fce.enter_phase(1)
    x, log_q = fce.sample_q(400)
    assert x.shape == (400, 2)
    assert torch.allclose(log_q, fce.log_q(x))
    gauss = torch.distributions.Normal(DATA.mean(0), REFINE_WIDEN * DATA.std(0))
    with torch.no_grad():
        flow = fce.flow.log_prob((x - DATA.mean(0)) / DATA.std(0)) - DATA.std(0).log().sum()
    direct = torch.logsumexp(
        torch.stack([flow + math.log(0.75), gauss.log_prob(x).sum(-1) + math.log(0.25)]), 0
    )
    assert torch.allclose(log_q, direct, atol=1e-5)
    # the last quarter of the draws are the Gaussian's: their spread is 1.25 x the data's
    tail = x[300:]
    ratio = tail.std(0) / DATA.std(0)
    assert ((ratio - REFINE_WIDEN).abs() < 0.25).all()
    fce.enter_phase(0)
    _, log_q_game = fce.sample_q(10)
    assert log_q_game.shape == (10,)


def test_fce_refinement_warns_when_the_frozen_flow_is_far_from_the_data():
    fce = _fce(refine=0.5)
    fce.enter_phase(1)
    found = fce.diagnose({"accuracy": [1.0] * 400, "flow_nll": [1.0] * 200 + [9.0] * 200}, [1e-3])
    assert set(found) == {"accuracy"} and "refinement" in found["accuracy"]
    fce.enter_phase(0)
    found = fce.diagnose({"accuracy": [1.0] * 400, "flow_nll": [1.0] * 200 + [9.0] * 200}, [1e-3])
    assert set(found) == {"accuracy", "flow_nll"} and "refinement" not in found["accuracy"]


def test_fce_refinement_restarts_adam_and_a_resumed_run_is_exact(tmp_path):
    """The refinement starts with Adam's moments cleared (its step count restarts), and a run
    interrupted inside the refinement resumes exactly (the reset is not repeated)."""
    from pyro_ebm.training import load_checkpoint

    kw = dict(steps=20, batch_size=64, seed=0, progress_bar=False)

    def make():
        fce = _fce(refine=0.5)  # seeds torch's generator, then the flow
        return MLPEnergy(2, hidden=(8,)), fce

    energy, fce = make()
    straight = fit(energy, DATA, fce, checkpoint_dir=tmp_path / "a", **kw)
    reference = {k: v.clone() for k, v in energy.state_dict().items()}
    adam = load_checkpoint(tmp_path / "a")["optimizer"]["state"]
    assert {int(v["step"]) for v in adam.values()} == {10}  # 10 refinement steps, not 20

    stop = lambda step, metrics: step == 13  # noqa: E731 - an interruption in the refinement
    energy, fce = make()
    fit(energy, DATA, fce, checkpoint_dir=tmp_path / "b", callbacks=[stop], **kw)
    energy, fce = make()
    resumed = fit(energy, DATA, fce, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    assert resumed.loss == straight.loss
    for key, value in reference.items():
        assert torch.equal(energy.state_dict()[key], value), key
