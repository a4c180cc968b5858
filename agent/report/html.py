"""report.html: one self-contained file (inline CSS, plots as base64 PNGs), rendered from a jinja2 template with
autoescaping, so text from the paper, the LLM or a run is always shown as text."""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agent.report.cells import ci, gap, measured, number, reported
from agent.report.context import ReportContext
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
