"""The replication report: one self-contained report.html and the same content as report.md.

Read top-down it answers, in order: how many of the paper's numbers were replicated (the summary line), which ones
were not (the claims table, worst first), what the runs looked like (training curves, measured vs reported with
error bars), why they may differ and what to try next (hypotheses, with verified citations), what was run exactly
(spec, deviations, links into the run directories) and what it cost. The HTML (agent.report.render, a jinja2
template) has inline CSS and its plots as base64 PNGs, so it can be mailed or archived as one file; the markdown
references the same plots as PNG files. EXPERIMENT_LOG.md is agent.report.experiment_log.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.hypotheses.model import Hypothesis
from agent.report.context import ReportContext, RunRow, number, relative_link
from agent.report.plots import plot_curves, plot_measured_vs_reported
from agent.report.render import render_html, render_markdown
from agent.runs import Runs, run_list
from agent.spec import Spec
from mlexp import atomic
from mlexp.compare import Verdict, summary_line, worst_first
from mlexp.record import RunRecord
from retrieval.models import Paper

PLOTS = (("Measured vs reported", "measured_vs_reported"), ("Training curves", "training_curves"))


# --------------------------------------------------------------------------- content


def claim_text(paper: Paper | None, claim_id: str) -> str:
    for claim in paper.claims if paper is not None else []:
        if claim.id == claim_id:
            parts = [claim.table or f"p.{claim.page}", claim.row, claim.column]
            return " · ".join(str(p) for p in parts if p) + f" = {claim.text}"
    return ""


def cost_rows(runs: Sequence[RunRecord], llm_usage: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    total = sum(r.duration_s or 0.0 for r in runs if r.duration_s is not None)
    rows = [
        ("runs", f"{len(runs)} ({sum(r.smoke for r in runs)} smoke)"),
        ("compute time", f"{total:.1f} s ({total / 3600:.2f} h) of run wall-clock"),
    ]
    if llm_usage:
        cost = llm_usage.get("cost_usd")
        unknown = llm_usage.get("cost_unknown_calls")
        rows.append(
            (
                "LLM",
                f"{llm_usage.get('calls', 0)} calls, {llm_usage.get('input_tokens', 0)} input + "
                f"{llm_usage.get('output_tokens', 0)} output tokens, "
                + (f"${cost:.4f}" if isinstance(cost, int | float) else "cost unknown")
                + (f" ({unknown} calls of unknown price)" if unknown else ""),
            )
        )
    return rows


def deviations(spec: Spec | None, hypotheses: Sequence[Hypothesis]) -> list[str]:
    out = []
    for hp in spec.hyperparameters if spec is not None else []:
        if hp.source == "assumed":
            out.append(f"{hp.name}={hp.value} is assumed, not stated in the paper: {hp.reason}")
    for hyp in hypotheses:
        if hyp.category == "setup_mismatch":
            out.append(hyp.statement)
    return out


def run_rows(runs: Sequence[RunRecord], out_dir: Path) -> list[RunRow]:
    return [
        RunRow(
            name=r.name,
            identity=r.identity,
            seed=r.seed,
            status=f"{r.status}/{r.exit_reason}" + (" (smoke)" if r.smoke else ""),
            duration=number(r.duration_s, 3) + " s",
            metrics=", ".join(f"{k}={number(val)}" for k, val in r.metrics.items()),
            link=relative_link(r.run_dir, out_dir),
        )
        for r in runs
    ]


def paper_reference(paper: Paper | None) -> tuple[str, str]:
    """(the paper's title, the line naming it: title · arXiv id · source file)."""
    if paper is None:
        return "paper", "paper"
    title = paper.title or paper.slug or "paper"
    return title, " · ".join(str(x) for x in (title, paper.arxiv_id, paper.source_path) if x)


# --------------------------------------------------------------------------- files


def write_plots(
    out_dir: Path, verdicts: Sequence[Verdict], runs: Sequence[RunRecord]
) -> list[tuple[str, bytes | None]]:
    """Render both plots and write the ones with content to out_dir/plots/*.png (for report.md)."""
    pngs = [plot_measured_vs_reported(verdicts), plot_curves(runs)]
    for (_, stem), png in zip(PLOTS, pngs, strict=True):
        if png is not None:
            atomic.write_bytes(out_dir / f"plots/{stem}.png", png)
    return [(title, png) for (title, _), png in zip(PLOTS, pngs, strict=True)]


def shared_file(path: Path, text: str) -> Path:
    """Write atomically, readable by others: a report is meant to be shared (a temp file starts as 0600)."""
    atomic.write_text(path, text)
    os.chmod(path, 0o644)
    return path


def write_report(
    out_dir: Path,
    *,
    paper: Paper | None,
    spec: Spec | None,
    verdicts: Sequence[Verdict],
    hypotheses: Sequence[Hypothesis],
    runs: Runs,
    llm_usage: Mapping[str, Any] | None = None,
    warnings: Iterable[str] = (),
    title: str | None = None,
) -> tuple[Path, Path]:
    """Write out_dir/report.html (self-contained) and out_dir/report.md (+ plots/*.png). Returns both paths.

    `runs` is a list of RunRecords or a claim_id -> runs mapping; `warnings` (e.g. tamper-check findings) are shown
    at the top; `llm_usage` is agent.llm.seam.usage_summary(log_dir) for the cost section.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ran = run_list(runs)
    ordered = worst_first(verdicts)
    paper_title, paper_ref = paper_reference(paper)
    ctx = ReportContext(
        title=title or paper_title,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        paper_ref=paper_ref,
        summary=summary_line(list(verdicts)),
        warnings=list(warnings),
        verdicts=ordered,
        claim_text={v.claim_id: claim_text(paper, v.claim_id) for v in ordered},
        plots=write_plots(out_dir, ordered, ran),
        plot_files=[f"plots/{stem}.png" for _, stem in PLOTS],
        hypotheses=list(hypotheses),
        spec=spec.model_dump(mode="json") if spec is not None else {},
        deviations=deviations(spec, hypotheses),
        runs=run_rows(ran, out_dir),
        cost=cost_rows(ran, llm_usage),
    )
    return shared_file(out_dir / "report.html", render_html(ctx)), shared_file(
        out_dir / "report.md", render_markdown(ctx)
    )
