"""The ``pyro-ebm`` command line: train, sample, evaluate and report on energy-based models.

``pyro-ebm demo`` runs the whole job on built-in data. Every subcommand has ``--help``.
Mistakes a user can fix (an unknown data set or objective, a missing or corrupt run
directory, a bad data file or configuration key: a :class:`~pyro_ebm.errors.UserError`) end
with one line on stderr and exit status 2; anything else, internal errors included, with one
line and status 1. ``--debug`` shows the traceback instead; ``--quiet`` turns off progress bars
and notes but still prints each command's result line. Flags are never abbreviated.

Examples
--------
>>> main(["--version"])
pyro-ebm 0.1.0
0
>>> main(["train", "--data", "mnist", "--out", "unused"])  # prints one line on stderr:
2

The line reads ``pyro-ebm: error: unknown data set 'mnist'; valid names: 8gaussians, ...``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__, datasets
from .config import OBJECTIVES, SCHEMA, read_config
from .datasets import check_data_name
from .errors import UserError
from .rundir import load_run
from .runs import evaluate_run, sample_run, train_run
from .tables import format_evaluation

__all__ = ["build_parser", "demo_config", "main"]

PROG = "pyro-ebm"
DEMO_DIR = "runs/demo"
DEMO_STEPS = 5000
KERNELS = SCHEMA["sample"]["kernel"].choices


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, not printed with the usage)."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def _int(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pyro-ebm`` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or notes (each command's result line is still "
                        "printed)")  # fmt: skip
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")  # fmt: skip
    common.add_argument("--threads", type=_int(1), metavar="N", default=argparse.SUPPRESS,
                        help="CPU threads for torch (default: torch's own choice)")  # fmt: skip
    parser = _Parser(
        prog=PROG,
        description="Energy-based models in Pyro: train, sample, evaluate and report.",
        epilog="Start with `pyro-ebm demo`; `pyro-ebm COMMAND --help` describes each command.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or notes")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--threads", type=_int(1), metavar="N", help="CPU threads for torch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    names = ", ".join(datasets.NAMES)
    train = sub.add_parser(
        "train", parents=[common], allow_abbrev=False, help="train an energy into a run directory",
        description="Train an energy on built-in data or a data file; writes checkpoint.pt, "
        "model.pt, history.json, data.pt and the configuration actually used (config.toml) "
        "to --out. Flags override --config values.",
    )  # fmt: skip
    train.add_argument("--data", metavar="NAME|PATH",
                       help=f"built-in data ({names}) or a .npy/.csv file of shape (rows, "
                       "columns)")  # fmt: skip
    train.add_argument("--objective", choices=OBJECTIVES,
                       help="training objective (default: nce)")  # fmt: skip
    train.add_argument("--steps", type=_int(1), metavar="N",
                       help=f"optimizer steps (default {SCHEMA['train']['steps'].default}; "
                       "with --resume the new total)")  # fmt: skip
    train.add_argument("--out", required=True, metavar="DIR", help="the run directory")
    train.add_argument("--config", metavar="FILE.toml",
                       help="a TOML configuration (sections: " + ", ".join(SCHEMA) + "); "
                       "pyro-ebm writes a complete one as DIR/config.toml")  # fmt: skip
    train.add_argument("--seed", type=_int(0), metavar="S", help="seed (default 0)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint")  # fmt: skip
    train.add_argument("--force", action="store_true",
                       help="start over in an --out that already holds a run")  # fmt: skip
    train.add_argument("--nproc", type=_int(1), metavar="N",
                       help="train with N processes (torchrun, data-parallel; gloo on CPU, "
                       "nccl on GPU)")  # fmt: skip
    train.set_defaults(func=_train)

    samp = sub.add_parser(
        "sample", parents=[common], allow_abbrev=False, help="sample the trained energy of a run",
        description="Run vectorized MCMC chains on the trained energy; writes samples.pt "
        "(draws and statistics) and samples.nc (ArviZ netCDF) to the run directory. Options "
        "default to the run's [sample] settings.",
    )  # fmt: skip
    samp.add_argument("--run", required=True, metavar="DIR", help="the run directory")
    s = SCHEMA["sample"]
    samp.add_argument("--kernel", choices=KERNELS,
                      help=f"MCMC kernel (default {s['kernel'].default})")  # fmt: skip
    samp.add_argument("--num-chains", type=_int(1), metavar="C",
                      help="chains (default 1024 for vectors, 64 for images)")  # fmt: skip
    samp.add_argument("--num-samples", type=_int(1), metavar="N",
                      help=f"draws per chain (default {s['num_samples'].default})")  # fmt: skip
    samp.add_argument("--warmup-steps", type=_int(0), metavar="W",
                      help="adaptation steps, discarded (default: sample()'s, "
                      "max(num_samples, 500))")  # fmt: skip
    samp.add_argument("--init", choices=s["init"].choices,
                      help=f"start chains at training points or N(0, I) (default "
                      f"{s['init'].default})")  # fmt: skip
    samp.add_argument("--seed", type=_int(0), metavar="S", help="seed of the chains")
    samp.set_defaults(func=_sample)

    ev = sub.add_parser(
        "evaluate", parents=[common], allow_abbrev=False, help="score the trained energy of a run",
        description="log Z (quadrature in 1-d and 2-d, annealed importance sampling "
        "otherwise), test NLL on the held-out points, KL to the truth where the true density "
        "is known (every 2-d toy), MMD between model draws and held-out data. "
        "Writes evaluation.json and prints a table.",
    )  # fmt: skip
    ev.add_argument("--run", required=True, metavar="DIR", help="the run directory")
    ev.set_defaults(func=_evaluate)

    rep = sub.add_parser(
        "report", parents=[common], allow_abbrev=False, help="write the HTML report of a run",
        description="Write DIR/report.html, self-contained (images embedded): the density "
        "next to the data, model draws, training curves, ArviZ trace/rank/energy plots and "
        "summary, and the evaluation. Samples and evaluates first if that was not done.",
    )  # fmt: skip
    rep.add_argument("--run", required=True, metavar="DIR", help="the run directory")
    rep.set_defaults(func=_report)

    demo = sub.add_parser(
        "demo", parents=[common], allow_abbrev=False,
        help="train, sample, evaluate and report on 8gaussians",
        description="The default end-to-end job: NCE on 8gaussians, 1024 MALA chains x 200 "
        "draws, evaluation and the HTML report: 37 s measured on a 2-core CPU machine with "
        "another job running (load average 2), longer under heavier load (see the README). "
        "Runs on one CPU thread unless --threads says otherwise.",
    )  # fmt: skip
    demo.add_argument(
        "--out",
        default=DEMO_DIR,
        metavar="DIR",
        help=f"the run directory (default {DEMO_DIR}, replaced on each demo)",
    )
    demo.add_argument("--steps", type=_int(1), default=DEMO_STEPS, metavar="N",
                      help=f"NCE steps (default {DEMO_STEPS})")  # fmt: skip
    demo.add_argument(
        "--force",
        action="store_true",
        help="replace a run already in --out (implied for the default --out)",
    )
    demo.set_defaults(func=_demo)
    return parser


def demo_config(steps: int = DEMO_STEPS) -> dict:
    """The configuration of ``pyro-ebm demo``: NCE on 8gaussians, 1024 MALA chains x 200 draws.

    Examples
    --------
    >>> demo_config(100)["train"]
    {'steps': 100}
    """
    return {
        "data": {"name": "8gaussians"},
        "objective": {"name": "nce"},
        "train": {"steps": steps},
        "sample": {"kernel": "mala", "num_chains": 1024, "num_samples": 200},
    }


def _log(args: argparse.Namespace):
    return None if args.quiet else print


def _launch(nproc: int, argv: Sequence[str]) -> int:
    """Re-run this command under ``torchrun --standalone --nproc-per-node=N``."""
    rest, skip = [], False
    for token in argv:  # drop --nproc N / --nproc=N
        if skip:
            skip = False
            continue
        if token == "--nproc":
            skip = True
            continue
        if token.startswith("--nproc="):
            continue
        rest.append(token)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "pyro_ebm", *rest]  # fmt: skip
    return subprocess.run(command, check=False).returncode


def _init_distributed() -> None:
    """Join the process group torchrun describes in the environment (once)."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)


def _train(args: argparse.Namespace) -> int:
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args.nproc, args.argv)
    _init_distributed()
    overrides: dict = {}
    if args.config is not None:
        overrides = read_config(args.config)
    flags = {
        ("data", "name"): check_data_name(args.data) if args.data is not None else None,
        ("objective", "name"): args.objective,
        ("train", "steps"): args.steps,
        ("train", "seed"): args.seed,
    }
    for (section, key), value in flags.items():
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    if not args.resume and not overrides.get("data", {}).get("name"):
        raise UserError(
            "train needs --data NAME|PATH (or data.name in --config) (see pyro-ebm train --help)"
        )
    train_run(args.out, overrides, resume=args.resume, force=args.force,
              progress=not args.quiet, log=_log(args), result=print)  # fmt: skip
    return 0


def _sample(args: argparse.Namespace) -> int:
    run = load_run(args.run)
    settings = {
        "kernel": args.kernel,
        "num_chains": args.num_chains,
        "num_samples": args.num_samples,
        "warmup_steps": args.warmup_steps,
        "init": args.init,
        "seed": args.seed,
    }
    sample_run(run, settings, progress=not args.quiet, log=_log(args), result=print)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    result = evaluate_run(load_run(args.run), progress=not args.quiet, log=_log(args))
    print(format_evaluation(result))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(load_run(args.run), progress=not args.quiet, log=_log(args), result=print)
    print(f"report: {path.resolve()}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .report import write_report

    start = time.perf_counter()
    if args.threads is None:
        # The demo's 2-d model is small: one thread is about as fast as two on an idle machine
        # and far faster when other processes keep the cores busy (measured; torch's OpenMP
        # threads spin while they wait for a core).
        import torch

        torch.set_num_threads(1)
    log = _log(args)
    force = args.force or Path(args.out) == Path(DEMO_DIR)
    run = train_run(args.out, demo_config(args.steps), force=force, progress=not args.quiet,
                    log=log, result=print)  # fmt: skip
    sample_run(run, progress=not args.quiet, log=log, result=print)
    result = evaluate_run(run, progress=not args.quiet, log=log)
    print(format_evaluation(result))
    path = write_report(run, progress=not args.quiet, log=log, result=print)
    print(f"demo finished in {time.perf_counter() - start:.0f} s; report: {path.resolve()}")
    return 0


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of ``command`` (``parser`` itself when there is none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, FileNotFoundError) and err.filename:
        text = f"no such file or directory: {err.filename}"
    return text or type(err).__name__


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyro-ebm`` with ``argv`` (default: the process's arguments); returns the status.

    0 on success, 2 for a user error (one line on stderr), 1 for an unexpected error (one
    line and a hint to rerun with ``--debug``, which re-raises instead), 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the subcommand's parser, whose --help lists its flags
            _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
        args.argv = argv
        if args.command is None:
            parser.print_help()
            return 0
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        return args.func(args)
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        if debug:
            raise
        _fail("interrupted (a training run can be continued with --resume)")
        return 130
    except UserError as err:  # ConfigError included; a bare ValueError is a bug, status 1
        if debug:
            raise
        _fail(_one_line(err))
        return 2
    except Exception as err:  # noqa: BLE001 - the command line shows one line, not a traceback
        if debug:
            raise
        _fail(f"unexpected {type(err).__name__}: {_one_line(err)} (rerun with --debug for the "
              "traceback)")  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
