"""Orchestration of a run: train, sample and evaluate an energy into its run directory.

Every number comes from the library (:func:`pyro_ebm.fit`, :func:`pyro_ebm.infer.sample`,
:mod:`pyro_ebm.evaluation`); the directory's format is :mod:`pyro_ebm.rundir`, the ingredients
of a run (data, energy, objective) are :mod:`pyro_ebm.builders`.

Examples
--------
>>> import tempfile
>>> from pyro_ebm import runs
>>> out = tempfile.mkdtemp()
>>> tiny = {"data": {"name": "8gaussians", "n_train": 256, "n_test": 64},
...         "model": {"hidden": [8]}, "train": {"steps": 3, "batch_size": 64}}
>>> run = runs.train_run(out, tiny, progress=False, log=None, result=None)
>>> run.event_shape, len(run.history().loss)
(torch.Size([2]), 3)
>>> sorted(p.name for p in run.path.iterdir())
['checkpoint.pt', 'config.toml', 'data.pt', 'history.json', 'model.pt']
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from . import datasets
from .builders import bounds_pairs, build_energy, build_objective, load_data, resolve_config
from .config import Config, default_config, merge_config, validate_config, write_config
from .errors import UserError
from .evaluation import ais_log_partition, grid_log_partition, mmd, nll_summary
from .infer import Samples, sample
from .objectives import fit_gaussian_noise
from .parallel import rank_and_world
from .progress import Log, say
from .progress import progress as progress_bar
from .rundir import (
    ARVIZ_FILE,
    CONFIG_FILE,
    EVALUATION_FILE,
    REPORT_FILE,
    RUN_FILES,
    SAMPLES_FILE,
    Run,
    clear_derived,
    load_run,
    read_data,
    remove_files,
    resume_config,
    write_data,
    write_model,
    write_samples,
)
from .training import CHECKPOINT_NAME, fit, load_checkpoint

__all__ = ["evaluate_run", "sample_run", "train_run"]


def train_run(
    out: str | os.PathLike,
    overrides: Config,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Log = print,
    result: Log = print,
) -> Run:
    """Train an energy into the run directory ``out`` and return the loaded :class:`Run`.

    Parameters
    ----------
    out:
        The run directory (created if needed).
    overrides:
        Configuration values set by the user (a ``--config`` file and command-line flags);
        everything else takes the defaults of :data:`pyro_ebm.config.SCHEMA`, resolved for the
        data by :func:`resolve_config`.
    resume:
        Continue the run in ``out`` from its checkpoint, with its saved configuration; only
        ``train.steps`` (the new total) may change.
    force:
        Start over in a directory that already holds a run (its files are replaced).
    progress, log, result:
        Progress bars; where one-line notes go and where the one-line result goes (``None``:
        nowhere). ``fit``'s own decisions (``History.events``) go to ``log``; each sign of a
        failing run it recorded (``History.warnings``) is a ``UserWarning``, shown also when
        notes are off.
    """
    out = Path(out)
    overrides = validate_config(overrides)
    rank, world = rank_and_world()
    if rank != 0:  # under torchrun only rank 0 speaks and writes files
        log, result, progress = None, None, False
    if resume and force:
        raise UserError("--resume and --force exclude each other")
    if resume:
        config = resume_config(out, overrides)
        train, test = read_data(out)
        config = resolve_config(config, train)
        step = int(load_checkpoint(out / CHECKPOINT_NAME)["step"])
        if step >= config["train"]["steps"]:
            raise UserError(
                f"{out} is already trained for {step} steps; pass --steps N with N > {step} "
                "to continue it"
            )
        say(log, f"resuming {out} at step {step} of {config['train']['steps']}")
        if world > 1:  # every rank has read the run before rank 0 rewrites its config
            torch.distributed.barrier()
    else:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a directory")
        existing = [n for n in RUN_FILES if (out / n).exists()]
        if existing and not force:
            raise UserError(
                f"{out} already holds a run ({', '.join(existing)}): pass --resume to continue "
                "it, --force to start over, or another --out"
            )
        config = merge_config(default_config(), overrides)
        train, test = load_data(config["data"])
        config = resolve_config(config, train)
        if world > 1:  # every rank has checked the directory before rank 0 writes to it
            torch.distributed.barrier()
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            remove_files(out / n for n in RUN_FILES)
            write_data(out, train, test, config["data"]["name"])
    if rank == 0:
        removed = clear_derived(out)
        if removed and resume:
            say(log, f"removed results of the earlier model: {', '.join(removed)}")
        write_config(config, out / CONFIG_FILE)
    if world > 1:
        torch.distributed.barrier()

    t = config["train"]
    torch.manual_seed(t["seed"])
    energy = build_energy(config, train.shape[1:])
    objective = build_objective(config, train, pretrain=not resume, progress=progress)
    history = fit(
        energy, train, objective,
        steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"], schedule=t["schedule"],
        adversary_lr=t.get("adversary_lr"),
        lr_warmup=t["lr_warmup"], ema=t["ema"] or None, grad_clip=t["grad_clip"] or None,
        seed=t["seed"], checkpoint_dir=out, checkpoint_every=t["checkpoint_every"],
        resume=resume, progress_bar=progress,
    )  # fmt: skip
    seconds = history.wall_time[-1] if history.wall_time else 0.0
    if rank != 0:
        torch.distributed.barrier()  # rank 0 writes the results
        return load_run(out)
    write_model(out, energy, history, seconds)
    for event in history.events:  # what fit decided on its own (FCE's abandoned refinement)
        say(log, f"step {event['step']}: {event['message']}")
    for found in history.warnings:  # signs of failure: shown even without notes (--quiet)
        warnings.warn(
            f"training {found['kind']} at step {found['step']}: {found['message']}",
            UserWarning,
            stacklevel=2,
        )
    say(
        result,
        f"trained {config['objective']['name']} on {config['data']['name']} for "
        f"{t['steps']} steps ({seconds:.1f} s of training)"
        + (f" on {world} processes" if world > 1 else "")
        + f" -> {out}",
    )
    if world > 1:
        torch.distributed.barrier()
    return load_run(out)


def sample_run(
    run: Run,
    settings: dict[str, Any] | None = None,
    *,
    progress: bool = True,
    log: Log = print,
    result: Log = print,
) -> Samples:
    """Sample the trained energy; writes ``samples.pt`` and ArviZ netCDF ``samples.nc``.

    ``settings`` overrides keys of the run's ``[sample]`` section (``kernel``, ``num_chains``,
    ``num_samples``, ``warmup_steps``, ``init``, ``seed``). ``log`` receives notes and
    ``result`` the one-line summary (``None``: nowhere).
    """
    chosen = validate_config(
        {"sample": {k: v for k, v in (settings or {}).items() if v is not None}}
    )
    s = merge_config(run.config, chosen)["sample"]
    if s["init"] == "data":
        g = torch.Generator().manual_seed(s["seed"])
        init = run.train[torch.randint(0, run.train.shape[0], (s["num_chains"],), generator=g)]
    else:
        init = None
    start = time.perf_counter()
    out = sample(
        run.energy, s["num_samples"], num_chains=s["num_chains"], kernel=s["kernel"],
        warmup_steps=s["warmup_steps"], init=init, seed=s["seed"], progress_bar=progress,
        event_shape=tuple(run.event_shape),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    write_samples(run, out, s, seconds)
    from .diagnostics import to_arviz_quietly, write_netcdf  # local: ArviZ loads when needed

    write_netcdf(to_arviz_quietly(out), run.file(ARVIZ_FILE))
    remove_files([run.file(EVALUATION_FILE), run.file(REPORT_FILE)])  # they used the old draws
    accept = float(out.stats["acceptance_rate"].float().mean())
    say(
        result,
        f"sampled {s['num_chains']} {s['kernel']} chains x {s['num_samples']} draws in "
        f"{seconds:.1f} s (acceptance {accept:.2f}) -> {run.file(SAMPLES_FILE)}, "
        f"{run.file(ARVIZ_FILE)}",
    )
    return out


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def evaluate_run(run: Run, *, progress: bool = True, log: Log = print) -> dict[str, Any]:
    """Score the trained energy; writes ``evaluation.json`` and returns its fields.

    * ``log_Z``: quadrature on ``evaluate.bounds`` (1-d and 2-d; ``log_Z_method = "grid"``) or
      annealed importance sampling from a Gaussian fitted to the training data (``"ais"``,
      with ``log_Z_stderr``); ``log_Z_learned`` is the objective's own estimate (NCE, FCE,
      score matching's contrastive term).
    * ``test_nll`` (with ``test_nll_stderr``): mean :math:`E(x) + \\log Z` over the held-out
      points.
    * ``kl = test_nll - oracle_nll`` where the data's true density is known (every 2-d toy,
      :data:`pyro_ebm.datasets.DENSITY_NAMES`); ``None`` otherwise (``digits``).
    * ``mmd``: squared MMD between ``mmd_points`` model draws (from ``samples.pt``, or a fresh
      MALA run) and as many held-out points.
    """
    e = run.config["evaluate"]
    name = run.config["data"]["name"]
    energy, test = run.energy, run.test
    start = time.perf_counter()
    bar = progress_bar(desc="evaluate", total=3, enabled=progress)
    result: dict[str, Any] = {
        "run": str(run.path),
        "data": name,
        "objective": run.config["objective"]["name"],
        "steps": run.meta.get("steps"),
        "event_shape": list(run.event_shape),
    }
    bar.set_postfix_str("log Z")
    if run.dim <= 2:
        pairs = bounds_pairs(e["bounds"], run.dim)
        log_z = float(grid_log_partition(energy, pairs, e["resolution"]))
        result.update(log_Z=log_z, log_Z_method="grid", log_Z_stderr=None, bounds=pairs,
                      resolution=e["resolution"])  # fmt: skip
    else:
        base = fit_gaussian_noise(run.train, 1.0)
        ais = ais_log_partition(
            energy, base=base, num_temperatures=e["ais_temperatures"],
            num_chains=e["ais_chains"], seed=e["seed"], progress_bar=progress,
        )  # fmt: skip
        log_z = float(ais.log_Z)
        result.update(log_Z=log_z, log_Z_method="ais", log_Z_stderr=_finite_or_none(ais.stderr),
                      ais_ess=ais.ess)  # fmt: skip
    result["log_Z_learned"] = run.meta.get("log_Z")
    bar.update()

    bar.set_postfix_str("test NLL")
    nll = nll_summary(energy, test, log_z)
    result.update(test_nll=nll["nll"], test_nll_stderr=nll["stderr"], n_test=nll["n"])
    if name in datasets.DENSITY_NAMES:
        result["oracle_nll"] = datasets.oracle_nll(name)
        result["kl"] = result["test_nll"] - result["oracle_nll"]
    else:
        result["oracle_nll"] = result["kl"] = None
    bar.update()

    bar.set_postfix_str("MMD")
    g = torch.Generator().manual_seed(e["seed"])
    saved = run.samples()
    if saved is not None:
        draws = saved["samples"].reshape(-1, *run.event_shape)
        settings = saved["settings"]
        result["mmd_source"] = (
            f"samples.pt ({settings['kernel']}, {settings['num_chains']} chains x "
            f"{settings['num_samples']} draws)"
        )
    else:
        n = min(e["mmd_points"], run.train.shape[0])
        init = run.train[torch.randint(0, run.train.shape[0], (n,), generator=g)]
        warmup = e["mmd_warmup_steps"]
        fresh = sample(energy, 1, num_chains=n, kernel="mala", warmup_steps=warmup, init=init,
                       seed=e["seed"], keep=False, progress_bar=progress)  # fmt: skip
        draws = fresh.samples[:, -1]
        steps = "sample()'s default" if warmup is None else str(warmup)
        result["mmd_source"] = f"a fresh MALA run ({n} chains, {steps} warmup steps)"
    m = min(e["mmd_points"], draws.shape[0], test.shape[0])
    x = draws[torch.randperm(draws.shape[0], generator=g)[:m]].double()
    y = test[torch.randperm(test.shape[0], generator=g)[:m]].double()
    result["mmd"] = float(mmd(x, y))
    result["mmd_points"] = m
    bar.update()
    bar.close()
    result["seconds"] = time.perf_counter() - start
    for key in ("log_Z", "test_nll", "test_nll_stderr", "kl", "mmd"):
        result[key] = _finite_or_none(result[key])
    run.file(EVALUATION_FILE).write_text(json.dumps(result, indent=2) + "\n")
    remove_files([run.file(REPORT_FILE)])
    say(log, f"wrote {run.file(EVALUATION_FILE)}")
    return result
