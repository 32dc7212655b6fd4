"""Shared by the command-line tests: tiny run configurations and an in-process CLI runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyro_ebm import cli
from pyro_ebm.config import dumps_toml, merge_config

# Small enough that train + sample + evaluate + report take about a second per run.
TINY = {
    "data": {"n_train": 300, "n_test": 100},
    "model": {"hidden": [16], "channels": [4]},
    "objective": {
        "cd_steps": 3,
        "cd_buffer_size": 200,
        "flow_hidden": 8,
        "flow_layers": 2,
        "flow_pretrain_steps": 5,
    },
    "train": {"batch_size": 64, "checkpoint_every": 4},
    "sample": {"num_chains": 4, "num_samples": 20, "warmup_steps": 10},
    "evaluate": {
        "resolution": 40,
        "mmd_points": 50,
        "mmd_warmup_steps": 20,
        "ais_temperatures": 5,
        "ais_chains": 8,
    },
}


def tiny_config(directory: Path, extra: dict | None = None, name: str = "tiny.toml") -> Path:
    """Write TINY (with ``extra`` on top) as TOML in ``directory``; returns the path."""
    path = Path(directory) / name
    path.write_text(dumps_toml(merge_config(TINY, extra or {})))
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys, *argv: str | Path) -> Result:
    """``pyro-ebm ARGV`` in this process; returns the exit status and captured output."""
    capsys.readouterr()  # drop anything printed before
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_ok(result: Result) -> None:
    assert result.code == 0, result.err


def assert_one_line_error(result: Result, *needles: str, code: int = 2) -> None:
    """Exit status ``code``, exactly one line on stderr naming the problem, no traceback."""
    assert result.code == code, (result.code, result.err)
    lines = result.err.strip("\n").split("\n")
    assert len(lines) == 1, result.err
    assert lines[0].startswith("pyro-ebm: error: "), lines[0]
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
