"""report.md: the same content as report.html, with the plots as PNG files beside it."""

from __future__ import annotations

import json
import re
from typing import Any

from agent.hypotheses.model import Hypothesis
from agent.report.cells import ci, gap, measured, number, reported
from agent.report.context import ReportContext


def _md_cell(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value if value is not None else "")).replace("|", "\\|")


def _claims(ctx: ReportContext) -> list[str]:
    lines = [
        "## Claims, worst first",
        "",
        "| Claim | In the paper | Metric | Reported | Measured (mean ± std, n) | 95% CI | Gap | p | Verdict | Why |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for v in ctx.verdicts:
        metric = f"{v.metric} ({v.direction})"
        cells = [v.claim_id, ctx.claim_text.get(v.claim_id, ""), metric, reported(v), measured(v), ci(v),
                 gap(v), number(v.p_value, 3), f"**{v.verdict}**",
                 " ".join([v.reason, *(f"WARNING: {w}" for w in v.warnings)])]  # fmt: skip
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return lines


def _plots(ctx: ReportContext) -> list[str]:
    lines = ["", "## Plots", ""]
    for (title, png), name in zip(ctx.plots, ctx.plot_files, strict=True):
        lines.append(f"![{title}]({name})" if png is not None else f"_{title}: nothing to plot._")
        lines.append("")
    return lines


def _hypothesis(h: Hypothesis) -> list[str]:
    lines = [f"### [{h.priority}] {h.statement}"]
    lines.append(f"`{h.id}` · {h.category} · {h.source} · support: **{h.support}**"
                 + (f" · claims: {', '.join(h.claim_ids)}" if h.claim_ids else ""))  # fmt: skip
    lines.append("")
    lines += [f"- evidence: {e}" for e in h.evidence]
    lines += [f'- verified citation **{c.paper_id}** {c.title or ""}: "{c.quote}"' for c in h.citations]
    lines += [
        f'- ~~unverified citation {c.paper_id}: "{c.quote}"~~ ({c.note}; not counted as support)'
        for c in h.rejected_citations
    ]
    if h.ablation is not None:
        a = h.ablation
        change = json.dumps(a.change, default=str) if a.change else "(config unchanged)"
        seeds = f", {a.seeds} seeds" if a.seeds else ""
        lines.append(f"- ablation: `{change}`{seeds} → expected {a.metric or 'metric'}: {a.expected_direction}")
    lines.append("")
    return lines


def _spec(ctx: ReportContext) -> list[str]:
    lines = ["## Spec and deviations", ""]
    spec = ctx.spec
    if spec:
        lines += [f"Objective: {spec.get('objective', '')}", ""]
        if spec.get("hyperparameters"):
            lines += ["| Hyperparameter | Value | Source | Quote / reason |", "|---|---|---|---|"]
            for hp in spec["hyperparameters"]:
                why = f"p.{hp.get('page')}: {hp.get('quote')}" if hp.get("source") == "paper" else hp.get("reason")
                cells = [_md_cell(hp.get("name")), f"`{_md_cell(hp.get('value'))}`", hp.get("source"), _md_cell(why)]
                lines.append("| " + " | ".join(str(c) for c in cells) + " |")
            lines.append("")
    return lines + ([f"- deviation: {d}" for d in ctx.deviations] or ["_No deviations recorded._"])


def _runs(ctx: ReportContext) -> list[str]:
    lines = [
        "",
        "## Runs",
        "",
        "| Run | Seed | Status | Duration | Metrics | Directory |",
        "|---|---|---|---:|---|---|",
    ]
    for r in ctx.runs:
        lines.append(f"| {_md_cell(r.name)} `{r.identity}` | {r.seed} | {r.status} | {r.duration} | "
                     f"{_md_cell(r.metrics)} | [{r.link}]({r.link}/README.txt) |")  # fmt: skip
    return lines


def render_markdown(ctx: ReportContext) -> str:
    lines = [f"# Replication report: {ctx.title}", "", f"Generated {ctx.generated}. Paper: {ctx.paper_ref}", ""]
    lines += [f"**{ctx.summary}**", ""]
    lines += [f"> WARNING: {w}\n" for w in ctx.warnings]
    lines += _claims(ctx) + _plots(ctx)
    lines += ["## Hypotheses", ""]
    if not ctx.hypotheses:
        lines.append("_No hypotheses._")
    for h in ctx.hypotheses:
        lines += _hypothesis(h)
    lines += _spec(ctx) + _runs(ctx)
    lines += ["", "## Cost", ""] + [f"- {k}: {val}" for k, val in ctx.cost] + [""]
    return "\n".join(lines)
