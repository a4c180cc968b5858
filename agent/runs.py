"""Finished runs as the agent reads them, for the checklist and the report.

A set of runs comes in two shapes: a flat list of RunRecords, or a claim_id -> runs mapping (mlexp.compare's input
when several targets share runs); `run_list` flattens either. mlexp writes a run dir (README.txt, record.json,
metrics.json, metrics.jsonl, training.log, console.log); this module is the agent's one reader of the parts mlexp
does not load itself. Reads are bounded (a runaway log cannot exhaust memory) and forgiving (a missing or
half-written file reads as empty: the run may have been killed mid-write).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

from mlexp.record import RunRecord

Runs: TypeAlias = Sequence[RunRecord] | Mapping[str, Sequence[RunRecord]]

LOG_FILES = ("training.log", "console.log")
# Columns of metrics.jsonl that are bookkeeping, not a curve.
NOT_CURVES = frozenset({"step", "total", "time", "elapsed_s"})


def run_list(runs: Runs | None) -> list[RunRecord]:
    """Every run once (by identity), in order, from either shape of `runs`."""
    if not isinstance(runs, Mapping):
        return list(runs or [])
    seen: set[str] = set()
    out: list[RunRecord] = []
    for group in runs.values():
        for run in group:
            if run.identity not in seen:
                seen.add(run.identity)
                out.append(run)
    return out


def read_tail(path: Path, limit: int = 2_000_000) -> str:
    """The last `limit` bytes of a text file, or "" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            size = path.stat().st_size
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def code_text(run: RunRecord, *, max_files: int = 50) -> str:
    """The Python files next to the run's script (the code dir), concatenated."""
    if not run.script:
        return ""
    code_dir = Path(run.script).parent
    return "\n".join(read_tail(path, 200_000) for path in sorted(code_dir.glob("*.py"))[:max_files])


def log_text(run: RunRecord) -> str:
    """The script's log and the console log of the run, concatenated."""
    return "\n".join(read_tail(Path(run.run_dir) / name) for name in LOG_FILES)


def read_curves(run_dir: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Per-step series from a run's metrics.jsonl: {metric: [(step, value), ...]}.

    A row without a step counts by its line number; non-numeric values and unparsable lines (a run killed
    mid-line) are skipped.
    """
    path = Path(run_dir) / "metrics.jsonl"
    series: dict[str, list[tuple[float, float]]] = {}
    if not path.is_file():
        return series
    for i, line in enumerate(read_tail(path, 50_000_000).splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        step = row.get("step", i)
        for key, value in row.items():
            if key in NOT_CURVES or isinstance(value, bool):
                continue
            if isinstance(value, int | float) and isinstance(step, int | float):
                series.setdefault(key, []).append((float(step), float(value)))
    return series
