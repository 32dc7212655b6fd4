"""Plain-text and row tables of a run's results: the evaluation as the CLI and report show it."""

from __future__ import annotations

from typing import Any

__all__ = ["MMD_NOTE", "evaluation_rows", "format_evaluation"]

#: Why a negative MMD^2 is no error (shown under the tables).
MMD_NOTE = (
    "MMD^2 is the unbiased estimate (Gretton et al. 2012): its expectation is >= 0, zero when "
    "the model matches the data, but a single estimate can be slightly negative; values within "
    "a few 1e-4 of zero mean no detectable difference at this sample size."
)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def evaluation_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The evaluation as ``(metric, value, note)`` rows (the printed and HTML tables)."""
    method = result["log_Z_method"]
    if method == "grid":
        box = " x ".join(f"[{lo:g}, {hi:g}]" for lo, hi in result["bounds"])
        z_note = f"quadrature on {box}, {result['resolution']} nodes per axis"
        z_value = _fmt(result["log_Z"])
    else:
        z_note = "annealed importance sampling"
        z_value = _fmt(result["log_Z"])
        if result.get("log_Z_stderr") is not None:
            z_value += f" ± {result['log_Z_stderr']:.3f}"
    rows = [("log Z", z_value, z_note)]
    if result.get("log_Z_learned") is not None:
        rows.append(("log Z learned", _fmt(result["log_Z_learned"]), f"by {result['objective']}"))
    nll = _fmt(result["test_nll"])
    if result["test_nll"] is not None and result["test_nll_stderr"] is not None:
        nll += f" ± {result['test_nll_stderr']:.3f}"
    rows.append(("test NLL (nats)", nll, f"{result['n_test']} held-out points"))
    if result["kl"] is not None:
        rows.append(("oracle NLL (nats)", _fmt(result["oracle_nll"]), "entropy of the truth"))
        kl = _fmt(result["kl"])
        if result["test_nll_stderr"] is not None:
            kl += f" ± {result['test_nll_stderr']:.3f}"
        rows.append(("KL to truth (nats)", kl, "test NLL - oracle NLL"))
    else:
        rows.append(("KL to truth (nats)", "n/a", f"no closed-form density for {result['data']}"))
    m = result["mmd_points"]
    note = f"{m} model draws vs {m} held-out points; unbiased, can be < 0"
    rows.append(("MMD^2", _fmt(result["mmd"], 5), note))
    return rows


def format_evaluation(result: dict[str, Any]) -> str:
    """The evaluation as a plain-text table.

    Examples
    --------
    >>> print(format_evaluation({"run": "r", "data": "moons", "objective": "nce", "steps": 5,
    ...     "log_Z_method": "grid", "bounds": [[-4, 4], [-4, 4]], "resolution": 400,
    ...     "log_Z": 1.0, "log_Z_learned": None, "test_nll": 2.5, "test_nll_stderr": 0.01,
    ...     "n_test": 100, "kl": None, "mmd": 0.001, "mmd_points": 100, "mmd_source": "x"}))
    evaluation of r (nce on moons, 5 steps)
    metric              value          note
    ------------------  -------------  -----------------------------------------------
    log Z               1.000          quadrature on [-4, 4] x [-4, 4], 400 nodes per axis
    test NLL (nats)     2.500 ± 0.010  100 held-out points
    KL to truth (nats)  n/a            no closed-form density for moons
    MMD^2               0.00100        100 model draws vs 100 held-out points; unbiased, can be < 0
    """
    rows = [("metric", "value", "note"), *evaluation_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    note_width = min(max(len(r[2]) for r in rows), 47)
    lines = [
        f"evaluation of {result['run']} ({result['objective']} on {result['data']}, "
        f"{result['steps']} steps)"
    ]
    for i, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip())
        if i == 0:
            lines.append(f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * note_width}")
    return "\n".join(lines)
