"""fit(): the training loop (optimizers, schedule, EMA, guards, checkpoints and exact resume).

The loop owns the optimizers, the learning-rate schedule, an exponential moving average (EMA) of
the energy's parameters (and of a learned log Z), the random state and the checkpoints; the
objective only computes a loss on a batch (see :mod:`pyro_ebm.objectives`).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._validation import check_int, check_positive_float
from ..energies._log_z import store_log_Z
from ..objectives.base import LossOutput, Objective, Phase
from ..parallel import (
    all_reduce_mean,
    average_gradients,
    broadcast_parameters,
    rank_and_world,
)
from ..progress import progress
from .checkpoints import (
    CHECKPOINT_NAME,
    FORMAT,
    atomic_save,
    fingerprint,
    gather_states,
    load_checkpoint,
)
from .history import History
from .state import EMA, LoaderBatches, LogZHolder, TensorBatches, as_tensor_batch, first_sample

__all__ = ["OPTIMIZERS", "SCHEDULES", "History", "fit", "load_checkpoint"]

OPTIMIZERS = ("adam", "adamw", "sgd")
"""The optimizers :func:`fit` names (or pass a callable ``params -> Optimizer``)."""
SCHEDULES = ("cosine", "constant")
"""The learning-rate schedules of :func:`fit`."""
DIAGNOSE_EVERY = 50
"""Steps between two calls of the objective's ``diagnose`` on the History."""


def _make_optimizer(name, params, lr, weight_decay):
    params = list(params)
    if not params:
        return None
    if callable(name) and not isinstance(name, str):
        return name(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9)
    raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd' or a callable; got {name!r}")


def _check_phases(phases, steps: int) -> list:
    phases = list(phases)
    last = 0
    for i, phase in enumerate(phases):
        if not isinstance(phase, Phase) or not last < phase.start < steps:
            raise ValueError(
                f"Objective.phases({steps}) must return Phase objects with strictly increasing "
                f"starts in (0, {steps}); got {phases!r}"
            )
        if phase.lr is not None:
            check_positive_float("Phase.lr", phase.lr)
        if not 0.0 <= phase.warmup < 1.0:
            raise ValueError(f"Phase.warmup must be in [0, 1); got {phase.warmup}")
        end = phases[i + 1].start if i + 1 < len(phases) else steps
        if not isinstance(phase.trial, int) or not 0 <= phase.trial <= end - phase.start:
            raise ValueError(
                f"Phase.trial must be an int in [0, {end - phase.start}] (the phase's steps); "
                f"got {phase.trial!r}"
            )
        last = phase.start
    return phases


def _phase_index(phases, step: int) -> int:
    return sum(phase.start <= step for phase in phases)


def _make_schedule(name, optimizer, steps, warmup, phases=(), lr=None):
    """LambdaLR: ``schedule`` (after ``warmup`` steps) over the first phase, restarted at each
    later :class:`~pyro_ebm.objectives.base.Phase` with its peak rate and warm-up share.

    A phase's schedule runs to the start of the next phase that is not on trial
    (``Phase.trial``): a phase on trial cuts the one before it without reshaping it, so that
    after a rollback the earlier phase goes on where its schedule was. ``phases`` is read at
    every step (``fit`` shortens the list when it abandons a phase)."""
    if optimizer is None:
        return None
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {name!r}")

    def shape(t, length, warm):
        if warm and t < warm:
            return (t + 1) / warm
        if name == "constant":
            return 1.0
        progress = min(1.0, (t - warm) / max(1, length - warm))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    def end(k):  # where phase k's schedule ends: a phase on trial does not shorten it
        return next((p.start for p in phases[k:] if not p.trial), steps)

    def factor(t):
        k = _phase_index(phases, t)
        if k == 0:
            return shape(t, end(0), warmup)
        p = phases[k - 1]
        length = end(k) - p.start
        peak = 1.0 if p.lr is None or lr is None else p.lr / lr
        return peak * shape(t - p.start, length, round(p.warmup * length))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _set_scheduled_lr(sched) -> None:
    """Set the optimizer's rates to the schedule's value at its current step (after the
    phases changed or the optimizer's state, rates included, was restored)."""
    pairs = zip(sched.base_lrs, sched.lr_lambdas, strict=True)
    rates = [base * f(sched.last_epoch) for base, f in pairs]
    for group, rate in zip(sched.optimizer.param_groups, rates, strict=True):
        group["lr"] = rate
    sched._last_lr = rates


def _snapshot(energy, objective, opt, adv_opt, ema_state) -> dict:
    """Copies of everything a rolled-back trial phase restores."""

    def cloned(state):
        return {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in state.items()}

    return {
        "energy": cloned(energy.state_dict()),
        "objective": cloned(objective.state_dict()),
        "optimizer": None if opt is None else copy.deepcopy(opt.state_dict()),
        "adversary_optimizer": None if adv_opt is None else copy.deepcopy(adv_opt.state_dict()),
        "ema": None if ema_state is None else cloned(ema_state.shadow),
    }


def _restore(state, energy, objective, opt, adv_opt, ema_state, device) -> None:
    """Load a :func:`_snapshot` or a checkpoint's training state (the same keys)."""
    energy.load_state_dict(state["energy"])
    objective.load_state_dict(state["objective"])
    if opt is not None:
        opt.load_state_dict(state["optimizer"])
    if adv_opt is not None:
        adv_opt.load_state_dict(state["adversary_optimizer"])
    if ema_state is not None:
        ema_state.shadow = {k: v.to(device, copy=True) for k, v in state["ema"].items()}


def _check_finite_data(data: Tensor) -> None:
    """Reject a data tensor holding NaN or inf, naming the first bad row and position.

    A non-finite point makes every batch that holds it non-finite; :func:`fit` would skip those
    steps one by one and train on the rest without saying that the data is the cause.
    """
    if not data.is_floating_point():
        return
    bad = ~torch.isfinite(data)
    if not bool(bad.any()):
        return
    flat = bad.reshape(data.shape[0], -1)
    row = int(flat.any(1).nonzero()[0])
    column = int(flat[row].nonzero()[0])
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(column), data.shape[1:]))
    count = int(flat.any(1).sum())
    raise ValueError(
        f"data must be finite: row {row} holds {float(data[row].reshape(-1)[column])} at "
        f"position {where if len(where) != 1 else where[0]} ({count} row(s) in all have NaN or "
        "inf); drop or impute them before fit()"
    )


def fit(
    energy: nn.Module,
    data: Tensor | Dataset | DataLoader,
    objective: Objective,
    *,
    steps: int,
    batch_size: int = 256,
    optimizer: str | Callable = "adam",
    lr: float | None = None,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    lr_warmup: int | None = None,
    ema: float | None = 0.995,
    grad_clip: float | None = None,
    adversary_lr: float | None = None,
    max_nonfinite: int = 10,
    seed: int | None = None,
    device: torch.device | str | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callbacks: Iterable[Callable] = (),
    progress_bar: bool = True,
) -> History:
    """Train ``energy`` on ``data`` by minimizing ``objective``.

    Parameters
    ----------
    energy:
        The energy :math:`E_\\theta` (an ``nn.Module``); trained in place. On return it holds
        the EMA weights when ``ema`` is set (the final model users get), and for NCE/FCE the
        learned log normalizer as ``energy.log_Z``, which :class:`~pyro_ebm.EnergyDistribution`
        picks up. It is part of ``energy.state_dict()`` (the buffer ``learned_log_Z`` of a
        :class:`~pyro_ebm.energies.LearnedLogZ` energy such as ``MLPEnergy``, else a buffer
        ``log_Z``), so ``torch.save(energy.state_dict())`` keeps it; an objective without one
        clears a value left by an earlier run.
    data:
        A tensor ``(n, *event_shape)``, a ``Dataset`` (items are tensors or ``(x, label)``) or a
        ``DataLoader``.
    objective:
        A :class:`~pyro_ebm.objectives.Objective`.
    steps, batch_size:
        Total optimizer steps (also when resuming) and batch size (tensor/Dataset data).
    optimizer, lr, weight_decay:
        ``"adam"`` (default), ``"adamw"``, ``"sgd"`` or a callable ``params -> Optimizer``.
        ``lr=None`` (default) takes the objective's own rate,
        :attr:`~pyro_ebm.objectives.Objective.default_lr` (with the cosine decay): 5e-2 for NCE,
        5e-3 for contrastive divergence and FCE's energy, 2e-3 for score matching, each measured
        across the eight 2-d data sets of the training battery (``bench/training.py``).
    schedule, lr_warmup:
        ``"cosine"`` decay to 5% of ``lr`` (default) or ``"constant"``, after ``lr_warmup``
        linear warm-up steps. ``lr_warmup=None`` (default) takes the objective's
        :attr:`~pyro_ebm.objectives.Objective.default_lr_warmup` share of ``steps``: 5% for NCE
        (trained at 5e-2), none for the others.
        An objective may ask for later phases (:meth:`~pyro_ebm.objectives.Objective.phases`,
        e.g. FCE's opt-in refinement): the schedule restarts at each, with the phase's own
        peak rate and warm-up (:class:`~pyro_ebm.objectives.Phase`), and ``fit`` calls the
        objective's :meth:`~pyro_ebm.objectives.Objective.enter_phase` as it enters one.
    ema:
        Decay of the exponential moving average of the energy's parameters and learned log Z
        (``None`` disables it). Measured on 2-d data, the final KL of unsmoothed training jumps
        by 0.2-0.3 nats between checkpoints; the EMA removes that last-step noise.
    grad_clip:
        Clip the global gradient norm to this value.
    adversary_lr:
        Learning rate of an adversary (FCE's flow), kept constant. ``None`` (default) takes
        the objective's :attr:`~pyro_ebm.objectives.Objective.default_adversary_lr` (2e-3 for
        FCE's flow, measured with its energy at 5e-3), or ``lr`` where it has none. Constant:
        measured on ``8gaussians`` (10,000 steps), decaying it with ``schedule`` let the
        classifier win outright (accuracy stuck at 1, KL 0.415) where the constant rate reached
        KL 0.003.
    max_nonfinite:
        A step with a non-finite loss or gradient is skipped and counted; this many in a row
        stop training with a ``FloatingPointError`` naming the last good checkpoint.
    seed:
        Seeds the data order, the objective's sampling generator and torch's global generator
        (used by noise distributions), so runs are reproducible. ``None`` takes one draw from
        torch's global generator for the first two and leaves the global generator's stream
        to go on as it was (a ``pyro.set_rng_seed`` before ``fit`` still makes the run
        reproducible, and is not reset by it).
    device:
        Where to train (default: the energy's device).
    checkpoint_dir, checkpoint_every, resume:
        Write ``checkpoint.pt`` (energy, objective state incl. log Z/flow/replay buffer,
        optimizers, schedule, EMA, random states, data position, history) every
        ``checkpoint_every`` steps and at the end; ``resume=True`` continues from it exactly as
        an uninterrupted run would.
    callbacks:
        Callables ``callback(step, metrics)`` run after every step (``metrics``: a dict of
        floats); returning ``True`` stops training.
    progress_bar:
        Show progress, with the loss and the objective's figures (:mod:`pyro_ebm.progress`).

    Returns
    -------
    History

    Examples
    --------
    >>> import torch
    >>> from pyro_ebm import fit
    >>> from pyro_ebm.energies import MLPEnergy
    >>> from pyro_ebm.objectives import ScoreMatching
    >>> energy = MLPEnergy(2, hidden=(16,))
    >>> history = fit(energy, torch.randn(256, 2), ScoreMatching("sliced"), steps=20,
    ...               batch_size=64, seed=0, progress_bar=False)
    >>> len(history.loss)
    20
    """
    steps = check_int("steps", steps, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    max_nonfinite = check_int("max_nonfinite", max_nonfinite, 1)
    if not isinstance(energy, nn.Module):
        raise ValueError(f"energy must be an nn.Module; got {type(energy).__name__}")
    if not isinstance(objective, Objective):
        raise ValueError(f"objective must be a pyro_ebm Objective; got {type(objective).__name__}")
    if ema is not None and not 0.0 < ema < 1.0:
        raise ValueError(f"ema must be in (0, 1) or None; got {ema!r}")
    lr = check_positive_float("lr", objective.default_lr if lr is None else lr)
    if adversary_lr is None:
        adversary_lr = objective.default_adversary_lr or lr
    adversary_lr = check_positive_float("adversary_lr", adversary_lr)
    if grad_clip is not None:
        grad_clip = check_positive_float("grad_clip", grad_clip)
    if lr_warmup is None:
        lr_warmup = round(objective.default_lr_warmup * steps)
    lr_warmup = check_int("lr_warmup", lr_warmup, 0)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    if not torch.is_tensor(data) and not isinstance(data, (Dataset, DataLoader)):
        raise ValueError(f"data must be a tensor, Dataset or DataLoader; got {type(data).__name__}")
    if torch.is_tensor(data):
        _check_finite_data(data)

    if device is None:
        params = list(energy.parameters())
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)
    energy.to(device)
    objective.to(device)
    dtype = next((p.dtype for p in energy.parameters()), torch.get_default_dtype())

    rank, world = rank_and_world()
    if world > 1 and batch_size % world:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by the world size {world}")
    if seed is None:  # every rank must shuffle the data the same way
        # one draw from the user's stream (so pyro.set_rng_seed still makes the run
        # reproducible), and the global generator is not reseeded: the user's streams go on
        seed_t = torch.randint(0, 2**62, (1,))
        if world > 1:
            torch.distributed.broadcast(seed_t, 0)
        seed_base = int(seed_t)
    else:
        seed_base = seed
        torch.manual_seed(seed_base + rank)  # noise distributions (NCE) draw from it
    gen = torch.Generator()  # data order: the same on every rank
    gen.manual_seed(seed_base)
    dev_gen = torch.Generator(device=device)  # the objective's sampling: one stream per rank
    dev_gen.manual_seed(seed_base + 1 + rank)

    if isinstance(data, DataLoader):
        batches = LoaderBatches(data)
    else:
        batches = TensorBatches(data, batch_size, gen, rank, world)
    objective.setup(first_sample(data).to(device=device, dtype=dtype))

    opt = _make_optimizer(
        optimizer, list(energy.parameters()) + list(objective.primary_parameters()), lr,
        weight_decay,
    )  # fmt: skip
    adv_params = objective.adversary_parameters()
    adv_opt = _make_optimizer("adam", adv_params, adversary_lr, 0.0) if adv_params else None
    phases = _check_phases(objective.phases(steps), steps)
    sched = _make_schedule(schedule, opt, steps, lr_warmup, phases, lr)
    averaged = {"energy": energy}
    if objective.log_Z is not None:
        averaged["log_Z"] = LogZHolder(objective.log_Z)
    ema_state = EMA(averaged, ema) if ema is not None else None

    history, start = History(), 0
    trial = None  # the snapshot at the start of a trial phase, until the trial is judged
    abandoned: list[int] = []  # starts of the phases abandoned after their trial
    ckpt_path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        expected = fingerprint(energy, objective)
        if ckpt["fingerprint"] != expected:
            raise ValueError(
                f"checkpoint {ckpt_path} does not match this energy/objective: saved "
                f"{ckpt['fingerprint']['energy']}/{ckpt['fingerprint']['objective']} with "
                f"parameter shapes {ckpt['fingerprint']['energy_shapes']}"
            )
        _restore(ckpt, energy, objective, opt, adv_opt, ema_state, device)
        if sched is not None:
            sched.load_state_dict(ckpt["schedule"])
        gen.set_state(ckpt["rng"]["generator"])
        if ckpt["world_size"] == world:
            states = ckpt["rng"]["device_generators"]
            dev_gen.set_state(states[rank])
            torch.set_rng_state(ckpt["rng"]["torch_per_rank"][rank])
        else:  # another world size: fresh per-rank streams, derived from the step
            dev_gen.manual_seed(seed_base + 1 + rank + 7919 * ckpt["step"])
        batches.load_state_dict(ckpt["data"])
        history = History(**ckpt["history"])
        start = ckpt["step"]
        trials = ckpt.get("trials") or {"abandoned": [], "snapshot": None}
        abandoned = list(trials["abandoned"])
        for first in abandoned:  # the run went on without these phases
            del phases[[p.start for p in phases].index(first) :]
        trial = trials["snapshot"]
        if sched is not None:
            _set_scheduled_lr(sched)

    def save(step: int) -> None:
        if ckpt_path is None:
            return
        dev_states = gather_states(dev_gen.get_state(), world)
        torch_states = gather_states(torch.get_rng_state(), world)
        if rank == 0:
            state = {
                "format": FORMAT,
                "step": step,
                "world_size": world,
                "fingerprint": fingerprint(energy, objective),
                "energy": energy.state_dict(),
                "objective": objective.state_dict(),
                "optimizer": None if opt is None else opt.state_dict(),
                "adversary_optimizer": None if adv_opt is None else adv_opt.state_dict(),
                "schedule": None if sched is None else sched.state_dict(),
                "ema": None if ema_state is None else ema_state.shadow,
                "rng": {
                    "generator": gen.get_state(),
                    "device_generators": dev_states,
                    "torch_per_rank": torch_states,
                },
                "data": batches.state_dict(),
                "history": history.as_dict(),
                "trials": {"abandoned": abandoned, "snapshot": trial},
            }
            atomic_save(state, ckpt_path)
        if world > 1:
            torch.distributed.barrier()

    all_params = [p for g in (opt.param_groups if opt else []) for p in g["params"]]
    broadcast_parameters(list(all_params) + list(adv_params))  # identical start on all ranks
    consecutive_bad = 0
    last_good = start if (ckpt_path is not None and ckpt_path.exists()) else None
    t0 = time.perf_counter() - (history.wall_time[-1] if history.wall_time else 0.0)
    progress_bar = progress_bar and rank == 0
    bar = progress(range(start, steps), desc=type(objective).__name__, total=steps,
                   initial=start, enabled=progress_bar)  # fmt: skip
    callbacks = list(callbacks)
    phase = None
    for step in bar:
        if _phase_index(phases, step) != phase:  # also on resume: behaviour follows the step
            phase = _phase_index(phases, step)
            starting = phases[phase - 1] if phase else None
            if starting is not None and starting.trial and step == starting.start:
                trial = _snapshot(energy, objective, opt, adv_opt, ema_state)
            objective.enter_phase(phase)
            if starting is not None and starting.reset_optimizer and step == starting.start:
                if opt is not None:  # not when resuming inside the phase: the state is saved
                    opt.state.clear()
        batch = as_tensor_batch(batches.next()).to(device=device, dtype=dtype)
        out: LossOutput = objective(energy, batch, dev_gen)
        objective.synchronize(all_reduce_mean)  # e.g. FCE's turn, the same on every rank
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        loss_value = float(all_reduce_mean(out.loss.detach()))  # the global batch's loss
        grad_norm = math.nan
        ok = math.isfinite(loss_value)
        if ok:
            out.loss.backward()
            average_gradients(all_params)
            max_norm = grad_clip if grad_clip is not None else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(all_params, max_norm))
            ok = math.isfinite(grad_norm)
        if not ok:
            consecutive_bad += 1
            history.skipped.append(step)
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            if consecutive_bad >= max_nonfinite:
                where = (
                    f"the last good checkpoint is {ckpt_path} (step {last_good})"
                    if last_good is not None
                    else "no checkpoint was written (pass checkpoint_dir=)"
                )
                raise FloatingPointError(
                    f"{consecutive_bad} consecutive steps had a non-finite loss or gradient "
                    f"(last at step {step}); training stopped. {where}"
                )
        else:
            consecutive_bad = 0
            if opt is not None:
                opt.step()
            if adv_opt is not None:
                adv = objective.adversary_loss(energy, batch, dev_gen)
                if adv is not None and bool(torch.isfinite(adv.loss)):
                    adv_opt.zero_grad(set_to_none=True)
                    adv.loss.backward()
                    average_gradients(adv_params)
                    if grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(adv_params, grad_clip)
                    adv_opt.step()
                    out.metrics.update(adv.metrics)
                if opt is not None:
                    opt.zero_grad(set_to_none=True)  # the adversary's pass touched them
            if ema_state is not None:
                ema_state.update(averaged, step)
        step_lr = opt.param_groups[0]["lr"] if opt is not None else 0.0  # this step's rate
        if sched is not None:
            sched.step()
        metrics = {k: float(all_reduce_mean(v)) for k, v in out.metrics.items()}
        history.step.append(step)
        history.loss.append(loss_value)
        history.grad_norm.append(grad_norm)
        history.lr.append(step_lr)
        history.wall_time.append(time.perf_counter() - t0)
        for k, v in metrics.items():
            history.metrics.setdefault(k, []).append(v)
        if trial is not None and step + 1 == phases[phase - 1].start + phases[phase - 1].trial:
            reason = objective.abandon_phase(phase, history.metrics)
            if reason is not None:  # back to the phase's start; the phase before runs on
                _restore(trial, energy, objective, opt, adv_opt, ema_state, device)
                abandoned.append(phases[phase - 1].start)
                del phases[phase - 1 :]
                if sched is not None:
                    _set_scheduled_lr(sched)
                history.events.append({
                    "step": step, "kind": "phase_abandoned", "start": abandoned[-1],
                    "message": f"phase {phase} (from step {abandoned[-1]}) abandoned after its "
                    f"trial: {reason}; rolled back to step {abandoned[-1]} and phase {phase - 1} "
                    "runs to the end",
                })  # fmt: skip
            trial = None
        if (step + 1) % DIAGNOSE_EVERY == 0:
            _diagnose(objective, history, step)
        if progress_bar:
            bar.set_postfix(_postfix(loss_value, metrics, history.warnings), refresh=False)
        done = step + 1
        if checkpoint_every is not None and done % checkpoint_every == 0 and done < steps:
            save(done)
            last_good = done
        stop = any(cb(step, {"loss": loss_value, **metrics}) is True for cb in callbacks)
        if world > 1:  # every rank stops together
            stop = bool(all_reduce_mean(torch.tensor(float(stop))) > 0)
        if stop:
            break
    bar.close()
    save(history.step[-1] + 1 if history.step else start)  # raw weights: resumable
    if ema_state is not None:  # the user's model is the averaged one
        ema_state.copy_to(averaged)
    learned = objective.log_Z
    if learned is not None:
        history.log_Z = float(learned.detach())
    # in the energy's state_dict; None clears a log Z left by an earlier run
    store_log_Z(energy, None if learned is None else learned.detach().clone())
    return history


def _diagnose(objective: Objective, history: History, step: int) -> None:
    """Record each new sign of failure the objective finds, once per kind.

    The steps of an abandoned trial phase are left out: the objective judges the run it is
    in, not a stretch that was rolled back (FCE's classifier wins an abandoned refinement by
    design)."""
    seen = {w["kind"] for w in history.warnings}
    metrics, lr = history.metrics, history.lr
    spans = [(e["start"], e["step"]) for e in history.events if e["kind"] == "phase_abandoned"]
    if spans:
        keep = [i for i, s in enumerate(history.step) if not any(a <= s <= b for a, b in spans)]
        n = len(history.step)  # a metric not recorded on every step is passed as it is
        metrics = {k: [v[i] for i in keep] if len(v) == n else v for k, v in metrics.items()}
        lr = [lr[i] for i in keep]
    for kind, message in objective.diagnose(metrics, lr).items():
        if kind not in seen:
            history.warnings.append({"step": step, "kind": kind, "message": message})


def _postfix(loss: float, metrics: dict[str, float], warned: Sequence[dict] = ()) -> dict[str, str]:
    shown = {"loss": f"{loss:.3f}"}
    if "energy_pos" in metrics and "energy_neg" in metrics:
        shown["gap"] = f"{metrics['energy_neg'] - metrics['energy_pos']:.2f}"
    labels = {"accuracy": "accura", "acceptance_rate": "accept", "log_Z": "log_Z",
              "flow_nll": "flow_nll"}  # fmt: skip
    for key, label in labels.items():
        if key in metrics:
            shown[label] = f"{metrics[key]:.3f}"
    if warned:
        shown["WARNING"] = ",".join(w["kind"] for w in warned) + " (see History.warnings)"
