"""What the report shows, computed once by agent.report.write and rendered by agent.report.html and .markdown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.hypotheses.model import Hypothesis
from mlexp.compare import Verdict


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
