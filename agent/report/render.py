"""report.html and report.md from the same context.

The HTML is one self-contained file (inline CSS, plots as base64 PNGs) rendered from a jinja2 template with
autoescaping, so text from the paper, the LLM or a run is always shown as text; the markdown references the plots as
PNG files beside it.
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agent.hypotheses.model import Hypothesis
from agent.report.context import ReportContext, ci, gap, measured, number, reported
from agent.report.plots import VERDICT_COLORS

TEMPLATES = Path(__file__).parent / "templates"
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222;
line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
.summary{font-size:1.25em;font-weight:600;padding:10px 14px;background:#f4f6f7;border-left:6px solid #2c3e50}
.warn{background:#fdedec;border-left:6px solid #c0392b;padding:8px 12px;margin:10px 0}
table{border-collapse:collapse;width:100%;margin:10px 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:5px 7px;text-align:left;vertical-align:top}
th{background:#eaeded}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.verdict{color:#fff;font-weight:600;padding:2px 8px;border-radius:10px;white-space:nowrap}
.hyp{border:1px solid #ccc;border-radius:6px;padding:8px 14px;margin:10px 0}
.prio-high{border-left:6px solid #c0392b}.prio-medium{border-left:6px solid #d68910}
.prio-low{border-left:6px solid #95a5a6}
.tag{display:inline-block;background:#eaeded;border-radius:4px;padding:0 6px;margin-right:6px;font-size:.85em}
.ok{color:#1e8449}.bad{color:#c0392b}blockquote{margin:4px 0 4px 12px;padding-left:8px;border-left:3px solid #aaa;
color:#444}code,pre{background:#f4f6f7;padding:1px 4px;border-radius:3px}pre{padding:8px;overflow-x:auto}
img{max-width:100%;border:1px solid #eee}.muted{color:#777}
"""


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
    )
    env.filters.update(
        reported=reported,
        measured=measured,
        ci=ci,
        gap=gap,
        number=number,
        tojson_default=lambda value: json.dumps(value, default=str),
        tojson_indent=lambda value: json.dumps(value, indent=1, default=str),
    )
    return env


def render_html(ctx: ReportContext) -> str:
    plots = [(title, None if png is None else base64.b64encode(png).decode("ascii")) for title, png in ctx.plots]
    values: dict[str, Any] = {**vars(ctx), "plots": plots, "css": _CSS, "verdict_colors": VERDICT_COLORS}
    return environment().get_template("report.html.j2").render(**values)


# --------------------------------------------------------------------------- markdown


def _md_cell(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value if value is not None else "")).replace("|", "\\|")


def _table_head(title: str, columns: list[str], align: str) -> list[str]:
    """A section heading and the header of its pipe table; `align` has one character per column (l or r)."""
    rule = "|".join("---:" if a == "r" else "---" for a in align)
    return [f"## {title}", "", "| " + " | ".join(columns) + " |", f"|{rule}|"]


def _claims(ctx: ReportContext) -> list[str]:
    columns = ["Claim", "In the paper", "Metric", "Reported", "Measured (mean ± std, n)", "95% CI", "Gap", "p",
               "Verdict", "Why"]  # fmt: skip
    lines = _table_head("Claims, worst first", columns, "lllrrrrrll")
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
    lines = ["", *_table_head("Runs", ["Run", "Seed", "Status", "Duration", "Metrics", "Directory"], "lllrll")]
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
