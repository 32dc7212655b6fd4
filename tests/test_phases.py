"""fit()'s phases (warm restarts an objective asks for) and FCE's opt-in refinement phase."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_ebm import fit
from pyro_ebm.energies import MLPEnergy
from pyro_ebm.objectives import FCE, Phase, ScoreMatching, make_flow
from pyro_ebm.objectives.fce import REFINE_ABANDON, REFINE_TRIAL, REFINE_WARMUP, REFINE_WIDEN

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


class Trial(Phased):
    """A second phase at step 10 on trial for 4 steps; abandoned when ``verdict`` says so."""

    def __init__(self, verdict="too far"):
        super().__init__((Phase(10, 4e-2, 0.2, reset_optimizer=True, trial=4),))
        self.verdict, self.judged = verdict, []

    def abandon_phase(self, index, metrics):
        self.judged.append((index, len(metrics["energy_pos"])))
        return self.verdict


def _trial_run(objective, tmp_path=None, **kw):
    torch.manual_seed(0)
    energy = MLPEnergy(2, hidden=(8,))
    states = {}

    def watch(step, metrics):  # the energy after each step
        states[step] = {k: v.clone() for k, v in energy.state_dict().items()}

    history = fit(energy, DATA, objective, steps=20, batch_size=64, lr=1e-2, lr_warmup=2,
                  seed=0, progress_bar=False, callbacks=[watch, *kw.pop("callbacks", [])],
                  checkpoint_dir=tmp_path, **kw)  # fmt: skip
    return energy, history, states


def test_an_abandoned_trial_rolls_back_and_the_phase_before_runs_to_the_end(tmp_path):
    """Judged after its 4 trial steps (10-13): everything returns to the state at step 10
    (the energy, the EMA, Adam's moments) and the first phase's schedule, stretched to the
    run's 20 steps, goes on from step 14."""
    from pyro_ebm.training import load_checkpoint

    objective = Trial()
    energy, history, states = _trial_run(objective, tmp_path, ema=None)
    assert objective.judged == [(1, 14)]  # after step 13, with its metrics recorded
    for key, value in states[9].items():  # the state at the phase's start
        assert torch.equal(states[13][key], value), key
    assert any(not torch.equal(states[12][k], v) for k, v in states[9].items())
    assert objective.entered == [0, 1, 0]
    # the first phase's schedule is laid out over all 20 steps (a phase on trial does not
    # reshape it): cut by the trial, it goes on from where it was
    expected = [_cosine(t, 20, 2, 1e-2) for t in range(10)]
    expected += [_cosine(t, 10, 2, 4e-2) for t in range(4)]
    expected += [_cosine(t, 20, 2, 1e-2) for t in range(14, 20)]
    assert history.lr == pytest.approx(expected)
    assert [(e["kind"], e["step"]) for e in history.events] == [("phase_abandoned", 13)]
    assert "too far" in history.events[0]["message"] and len(history.loss) == 20
    adam = load_checkpoint(tmp_path)["optimizer"]["state"]
    assert {int(v["step"]) for v in adam.values()} == {16}  # 10 before the trial + 6 after


def test_an_abandoned_trial_restores_the_ema_and_the_optimizer(tmp_path):
    """The checkpoint written after the verdict (step 14) holds the EMA and Adam's state of the
    one written at the phase's start (step 10)."""
    from pyro_ebm.training import load_checkpoint

    saved = {}

    def keep(step, metrics):  # each checkpoint, as written after the step
        if step in (9, 11, 13):
            saved[step + 1] = load_checkpoint(tmp_path)

    _trial_run(Trial(), tmp_path, ema=0.9, checkpoint_every=2, callbacks=[keep])
    for key, value in saved[10]["ema"].items():
        assert torch.equal(saved[14]["ema"][key], value), key
    assert any(not torch.equal(saved[12]["ema"][k], v) for k, v in saved[10]["ema"].items())
    assert saved[14]["optimizer"]["state"].keys() == saved[10]["optimizer"]["state"].keys()
    for index, state in saved[10]["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(saved[14]["optimizer"]["state"][index][name], value), name


def test_a_kept_trial_runs_the_phase_to_its_end():
    """Kept, the phase runs on after its trial as a phase without one; the schedule before it
    is laid out to the end of the run (the trial did not reshape it)."""
    objective = Trial(verdict=None)
    _, kept, _ = _trial_run(objective)
    expected = [_cosine(t, 20, 2, 1e-2) for t in range(10)]
    expected += [_cosine(t, 10, 2, 4e-2) for t in range(10)]
    assert kept.lr == pytest.approx(expected)
    assert objective.entered == [0, 1] and objective.judged == [(1, 14)] and not kept.events
    # the snapshot is a copy: the run after the verdict is the same as the abandoned run's
    # up to the trial's end
    _, abandoned, _ = _trial_run(Trial())
    assert kept.loss[:14] == abandoned.loss[:14]


def test_the_diagnosis_leaves_out_an_abandoned_trial():
    """``diagnose`` judges the run without the rolled-back steps (40-49 here): at step 50 it
    sees 40 of them, at step 100 90, and the learning rates alike."""

    class Judged(Phased):
        def __init__(self):
            super().__init__((Phase(40, 4e-2, trial=10),))
            self.seen = []

        def abandon_phase(self, index, metrics):
            return "no"

        def diagnose(self, metrics, lr):
            self.seen.append((len(metrics["energy_pos"]), len(lr)))
            return {}

    objective = Judged()
    fit(MLPEnergy(2, hidden=(8,)), DATA, objective, steps=100, batch_size=64, seed=0,
        progress_bar=False)  # fmt: skip
    assert objective.seen == [(40, 40), (90, 90)]


@pytest.mark.parametrize("stop_at", [11, 13, 16])  # inside the trial, at its verdict, after
def test_a_run_resumed_around_a_trial_is_exact(tmp_path, stop_at):
    straight_energy, straight, _ = _trial_run(Trial(), tmp_path / "a")
    stop = lambda step, metrics: step == stop_at  # noqa: E731
    _trial_run(Trial(), tmp_path / "b", callbacks=[stop])
    energy, resumed, _ = _trial_run(Trial(), tmp_path / "b", resume=True)
    assert resumed.loss == straight.loss and resumed.lr == pytest.approx(straight.lr)
    assert resumed.events == straight.events
    for key, value in straight_energy.state_dict().items():
        assert torch.equal(energy.state_dict()[key], value), key


@pytest.mark.parametrize(
    "phases",
    [(Phase(0),), (Phase(20),), (Phase(12), Phase(12)), (Phase(5, lr=-1.0),),
     (Phase(5, warmup=1.0),), (Phase(5, trial=16),), (Phase(5, trial=-1),), ("step 5",)],
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
    assert fce.phases(100) == (Phase(30, 5e-2, REFINE_WARMUP, reset_optimizer=True, trial=23),)
    assert fce.phases(10_000)[0].trial == REFINE_TRIAL  # at most a third of the refinement
    assert _fce().phases(100) == fce.phases(100)  # the default refines the last 70%, on trial
    assert _fce(refine=0.0).phases(100) == ()  # the game to the end
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


def test_fce_abandons_the_refinement_when_the_classifier_wins_its_trial():
    fce = _fce(refine=0.7)
    fce.phases(10_000)  # a trial of REFINE_TRIAL steps, judged on its second half
    half = REFINE_TRIAL // 2
    close = [0.99] * half + [REFINE_ABANDON - 0.01] * half
    assert fce.abandon_phase(1, {"accuracy": close}) is None
    far = [0.6] * half + [REFINE_ABANDON] * half
    assert "0.900" in fce.abandon_phase(1, {"accuracy": far})


def test_fce_after_an_abandoned_refinement_plays_the_game_to_the_end(monkeypatch):
    """Any accuracy abandons the refinement here: the flow, frozen in the trial, trains again
    after the rollback, and the noise is the flow's alone."""
    monkeypatch.setattr("pyro_ebm.objectives.fce.REFINE_ABANDON", 0.0)
    fce = _fce(refine=0.5)  # steps 10-19 refine; the trial is steps 10-12
    updates = []
    history = fit(MLPEnergy(2, hidden=(8,)), DATA, fce, steps=20, batch_size=64, seed=0,
                  callbacks=[lambda step, m: updates.append(int(fce.flow_updates))],
                  progress_bar=False)  # fmt: skip
    assert [e["step"] for e in history.events] == [12]
    assert updates[9] == updates[11] == 10  # frozen in the trial
    assert updates[12] == 10 and updates[19] == 17  # rolled back with the flow, then the game
    assert not fce.refining
