"""What the report shows, computed once by agent.report.write, and how it shows a number: one rule for the HTML,
the markdown and EXPERIMENT_LOG.md."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.hypotheses.model import Hypothesis
from mlexp.compare import Verdict


def number(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a" if x is None else str(x)
    return f"{x:.{digits}g}"


def measured(v: Verdict) -> str:
    if v.measured_mean is None:
        return "—"
    std = f" ± {v.measured_std:.2g}" if v.measured_std is not None else ""
    return f"{v.measured_mean:.4g}{std} (n={v.n})"


def reported(v: Verdict) -> str:
    if v.reported is None:
        return "—"
    return f"{v.reported:.4g}" + (f" ± {v.reported_std:.2g}" if v.reported_std is not None else "")


def ci(v: Verdict) -> str:
    return "—" if v.ci_low is None or v.ci_high is None else f"[{v.ci_low:.4g}, {v.ci_high:.4g}]"


def gap(v: Verdict) -> str:
    return "—" if v.gap is None else f"{v.gap:+.4g}"


def relative_link(path: str, out_dir: Path) -> str:
    """`path` relative to the report's folder, so links still work when the project folder moves."""
    try:
        return os.path.relpath(path, out_dir)
    except ValueError:  # another drive (Windows): keep it absolute
        return path


@dataclass(frozen=True)
class RunRow:
    """One line of the runs table."""

    name: str
    identity: str
    seed: int | str
    status: str
    duration: str
    metrics: str
    link: str  # the run dir, relative to the report's folder


@dataclass(frozen=True)
class ReportContext:
    """Everything the HTML and the markdown show, computed once."""

    title: str
    generated: str
    paper_ref: str
    summary: str
    warnings: list[str]
    verdicts: list[Verdict]  # worst first
    claim_text: dict[str, str]  # claim id -> where it is in the paper and what it says
    plots: list[tuple[str, bytes | None]]  # (title, PNG) in PLOTS order; None: nothing to plot
    plot_files: list[str]  # their paths relative to the report's folder
    hypotheses: list[Hypothesis]
    spec: dict[str, Any]  # the spec as JSON values (empty without a spec)
    deviations: list[str]
    runs: list[RunRow]
    cost: list[tuple[str, str]]
