"""The replication report: one self-contained report.html and the same content as report.md.

Read top-down it answers, in order: how many of the paper's numbers were replicated (the summary line), which ones
were not (the claims table, worst first), what the runs looked like (training curves, measured vs reported with
error bars), why they may differ and what to try next (hypotheses, with verified citations), what was run exactly
(spec, deviations, links into the run directories) and what it cost. The HTML has inline CSS and its plots as base64
PNGs, so it can be mailed or archived as one file; the markdown references the same plots as PNG files.
`append_experiment_log` keeps EXPERIMENT_LOG.md, the findings across iterations of run -> compare -> hypothesise.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlexp.compare import summary_line, worst_first

_VERDICT_COLORS = {"diverged": "#c0392b", "not run": "#7f8c8d", "better": "#d68910", "replicated": "#1e8449"}
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


# --------------------------------------------------------------------------- small helpers


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _g(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _num(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a" if x is None else str(x)
    return f"{x:.{digits}g}"


def _measured(v: Any) -> str:
    if v.measured_mean is None:
        return "—"
    std = f" ± {v.measured_std:.2g}" if v.measured_std is not None else ""
    return f"{v.measured_mean:.4g}{std} (n={v.n})"


def _reported(v: Any) -> str:
    if v.reported is None:
        return "—"
    return f"{v.reported:.4g}" + (f" ± {v.reported_std:.2g}" if v.reported_std is not None else "")


def _ci(v: Any) -> str:
    return "—" if v.ci_low is None else f"[{v.ci_low:.4g}, {v.ci_high:.4g}]"


def _gap(v: Any) -> str:
    return "—" if v.gap is None else f"{v.gap:+.4g}"


def _atomic_write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _run_list(runs: Any) -> list[Any]:
    if isinstance(runs, Mapping):
        out, seen = [], set()
        for group in runs.values():
            for run in group:
                key = _g(run, "identity") or id(run)
                if key not in seen:
                    seen.add(key)
                    out.append(run)
        return out
    return list(runs or [])


def _claim_text(paper: Any, claim_id: str) -> str:
    for claim in _g(paper, "claims", None) or []:
        if claim.id == claim_id:
            parts = [claim.table or f"p.{claim.page}", claim.row, claim.column]
            return " · ".join(str(p) for p in parts if p) + f" = {claim.text}"
    return ""


# --------------------------------------------------------------------------- plots


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def read_curves(run_dir: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Per-step series from a run's metrics.jsonl: {metric: [(step, value), ...]} (non-numeric values skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    series: dict[str, list[tuple[float, float]]] = {}
    if not path.is_file():
        return series
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        step = row.get("step", i)
        for key, value in row.items():
            if key in ("step", "total", "time", "elapsed_s") or isinstance(value, bool):
                continue
            if isinstance(value, int | float) and isinstance(step, int | float):
                series.setdefault(key, []).append((float(step), float(value)))
    return series


def plot_curves(runs: Sequence[Any], *, max_metrics: int = 6) -> bytes | None:
    """Training curves of every non-smoke run, one panel per logged metric. None when nothing was logged."""
    per_run = []
    for run in runs:
        if _g(run, "smoke", False) or not _g(run, "run_dir"):
            continue
        curves = read_curves(_g(run, "run_dir"))
        if curves:
            per_run.append((f"{_g(run, 'name')} s{_g(run, 'seed', '')}", curves))
    keys: list[str] = []
    for _, curves in per_run:
        keys += [k for k in curves if k not in keys]
    keys = keys[:max_metrics]
    if not keys:
        return None
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows))
    for i, key in enumerate(keys, 1):
        ax = fig.add_subplot(rows, cols, i)
        for label, curves in per_run:
            if key in curves:
                xs, ys = zip(*curves[key], strict=True)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if i == 1 and len(per_run) <= 8:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def plot_measured_vs_reported(verdicts: Sequence[Any]) -> bytes | None:
    """Per claim: the paper's value (± its std) and our mean with its 95 % CI (± std when n < 2 has no CI)."""
    shown = [v for v in verdicts if v.reported is not None]
    if not shown:
        return None
    metrics = list(dict.fromkeys(v.metric for v in shown))[:6]
    fig = Figure(figsize=(max(5.0, 1.4 * len(shown) + 2), 3.4 * len(metrics)))
    for i, metric in enumerate(metrics, 1):
        ax = fig.add_subplot(len(metrics), 1, i)
        group = [v for v in shown if v.metric == metric]
        xs = list(range(len(group)))
        ax.errorbar(
            [x - 0.1 for x in xs],
            [v.reported for v in group],
            yerr=[v.reported_std or 0 for v in group],
            fmt="s",
            color="#2c3e50",
            capsize=4,
            label="reported (± paper std)",
        )
        mx, my, lo, hi, colors = [], [], [], [], []
        for x, v in zip(xs, group, strict=True):
            if v.measured_mean is None or not math.isfinite(v.measured_mean):
                continue
            if v.ci_low is not None:
                down, up = v.measured_mean - v.ci_low, v.ci_high - v.measured_mean
            else:
                down = up = 0.0
            mx.append(x + 0.1)
            my.append(v.measured_mean)
            lo.append(down)
            hi.append(up)
            colors.append(_VERDICT_COLORS[v.verdict])
        if mx:
            ax.errorbar(mx, my, yerr=[lo, hi], fmt="none", ecolor="#555", capsize=4, label="measured (95% CI)")
            ax.scatter(mx, my, c=colors, zorder=3, s=36)
        ax.set_xlim(-0.6, len(group) - 0.4)
        ax.set_xticks(xs)
        ax.set_xticklabels([v.claim_id for v in group], rotation=20, fontsize=8)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------- content


def _cost(runs: Sequence[Any], llm_usage: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    done = [r for r in runs if _g(r, "duration_s") is not None]
    total = sum(float(_g(r, "duration_s") or 0) for r in done)
    rows = [
        ("runs", f"{len(runs)} ({sum(bool(_g(r, 'smoke', False)) for r in runs)} smoke)"),
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


def _deviations(spec: Any, hypotheses: Sequence[Any]) -> list[str]:
    out = []
    for hp in _g(spec, "hyperparameters", None) or []:
        if hp.source == "assumed":
            out.append(f"{hp.name}={hp.value} is assumed, not stated in the paper: {hp.reason}")
    for hyp in hypotheses:
        if hyp.category == "setup_mismatch":
            out.append(hyp.statement)
    return out


def _rel(path: str, out_dir: Path) -> str:
    try:
        return os.path.relpath(path, out_dir)
    except ValueError:  # another drive (Windows): keep it absolute
        return path


def _spec_dump(spec: Any) -> dict[str, Any]:
    if spec is None:
        return {}
    if hasattr(spec, "model_dump"):
        return spec.model_dump(mode="json")
    return dict(spec)


# --------------------------------------------------------------------------- HTML


def _html_verdict(kind: str) -> str:
    return f'<span class="verdict" style="background:{_VERDICT_COLORS.get(kind, "#555")}">{_esc(kind)}</span>'


def _html_hypothesis(h: Any) -> str:
    parts = [f'<div class="hyp prio-{_esc(h.priority)}" id="hyp-{_esc(h.id)}">']
    support = {"backed": "ok", "unsupported": "bad"}.get(h.support, "muted")
    parts.append(
        f'<p><span class="tag">{_esc(h.priority)}</span><span class="tag">{_esc(h.category)}</span>'
        f'<span class="tag">{_esc(h.source)}</span><span class="tag {support}">{_esc(h.support)}</span>'
        f"<strong>{_esc(h.statement)}</strong></p>"
    )
    if h.claim_ids:
        parts.append(f"<p>Claims: {_esc(', '.join(h.claim_ids))}</p>")
    if h.evidence:
        parts.append(
            "<p>Evidence from this run:</p><ul>" + "".join(f"<li>{_esc(e)}</li>" for e in h.evidence) + "</ul>"
        )
    for c in h.citations:
        parts.append(
            f'<p class="ok">&#10003; verified: <strong>{_esc(c.paper_id)}</strong> {_esc(c.title or "")}</p>'
            f"<blockquote>{_esc(c.quote)}</blockquote>"
        )
    for c in h.rejected_citations:
        parts.append(
            f'<p class="bad">&#10007; unverified citation, not counted as support: <strong>{_esc(c.paper_id)}'
            f"</strong> ({_esc(c.note)})</p><blockquote><s>{_esc(c.quote)}</s></blockquote>"
        )
    a = h.ablation
    if a is not None:
        change = json.dumps(a.change, default=str) if a.change else "(config unchanged)"
        seeds = f", {a.seeds} seeds" if a.seeds else ""
        parts.append(
            f"<p>Proposed ablation: <code>{_esc(change)}</code>{_esc(seeds)} → expected {_esc(a.metric or 'metric')}: "
            f"<strong>{_esc(a.expected_direction)}</strong>. {_esc(a.description)}</p>"
        )
    parts.append("</div>")
    return "".join(parts)


def render_html(ctx: dict[str, Any]) -> str:
    v_rows = []
    for v in ctx["verdicts"]:
        v_rows.append(
            "<tr>"
            f"<td>{_esc(v.claim_id)}</td><td>{_esc(ctx['claim_text'].get(v.claim_id, ''))}</td>"
            f"<td>{_esc(v.metric)} ({'↑' if v.direction == 'max' else '↓'})</td>"
            f'<td class="num">{_esc(_reported(v))}</td><td class="num">{_esc(_measured(v))}</td>'
            f'<td class="num">{_esc(_ci(v))}</td><td class="num">{_esc(_gap(v))}</td>'
            f'<td class="num">{_esc(_num(v.p_value, 3))}</td><td>{_html_verdict(v.verdict)}</td>'
            f"<td>{_esc(v.reason)}"
            + "".join(f"<br><span class='bad'>&#9888; {_esc(w)}</span>" for w in getattr(v, "warnings", []))
            + "</td></tr>"
        )
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Replication report: {_esc(ctx['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Replication report: {_esc(ctx['title'])}</h1>",
        f"<p class='muted'>Generated {_esc(ctx['generated'])}. Paper: {_esc(ctx['paper_ref'])}</p>",
        f"<p class='summary' id='summary'>{_esc(ctx['summary'])}</p>",
    ]
    out += [f"<div class='warn'>&#9888; {_esc(w)}</div>" for w in ctx["warnings"]]
    out += [
        "<h2>Claims, worst first</h2>",
        "<table id='claims'><thead><tr><th>Claim</th><th>In the paper</th><th>Metric</th><th>Reported</th>"
        "<th>Measured (mean ± std, n)</th><th>95% CI</th><th>Gap</th><th>p</th><th>Verdict</th><th>Why</th></tr>"
        "</thead><tbody>" + "".join(v_rows) + "</tbody></table>",
        "<h2>Plots</h2>",
    ]
    for title, png in ctx["plots"]:
        if png is None:
            out.append(f"<p class='muted'>{_esc(title)}: nothing to plot.</p>")
        else:
            data = base64.b64encode(png).decode("ascii")
            out.append(f"<h3>{_esc(title)}</h3><img alt='{_esc(title)}' src='data:image/png;base64,{data}'>")
    out.append("<h2>Hypotheses</h2>")
    if not ctx["hypotheses"]:
        out.append("<p class='muted'>No hypotheses: nothing diverged and the checklist found nothing.</p>")
    out += [_html_hypothesis(h) for h in ctx["hypotheses"]]
    out.append("<h2>Spec and deviations</h2>")
    spec = ctx["spec"]
    if spec:
        out.append(f"<p><strong>Objective.</strong> {_esc(spec.get('objective', ''))}</p>")
        hp_rows = "".join(
            f"<tr><td>{_esc(hp.get('name'))}</td><td><code>{_esc(hp.get('value'))}</code></td>"
            f"<td>{_esc(hp.get('source'))}</td><td>"
            + (
                _esc(f"p.{hp.get('page')}: {hp.get('quote')}")
                if hp.get("source") == "paper"
                else _esc(hp.get("reason"))
            )
            + "</td></tr>"
            for hp in spec.get("hyperparameters", [])
        )
        if hp_rows:
            out.append(
                "<table id='hyperparameters'><thead><tr><th>Hyperparameter</th><th>Value</th><th>Source</th>"
                f"<th>Quote / reason</th></tr></thead><tbody>{hp_rows}</tbody></table>"
            )
        if spec.get("config"):
            out.append(f"<p>Run config:</p><pre>{_esc(json.dumps(spec['config'], indent=1, default=str))}</pre>")
        for q in spec.get("open_questions", []):
            out.append(
                f"<p>Open question: {_esc(q.get('question'))} <span class='muted'>{_esc(q.get('why'))}</span></p>"
            )
    if ctx["deviations"]:
        out.append("<p><strong>Deviations from the paper:</strong></p><ul>")
        out += [f"<li>{_esc(d)}</li>" for d in ctx["deviations"]]
        out.append("</ul>")
    else:
        out.append("<p class='muted'>No deviations recorded.</p>")
    out.append("<h2>Runs</h2><table id='runs'><thead><tr><th>Run</th><th>Seed</th><th>Status</th><th>Duration</th>"
               "<th>Metrics</th><th>Directory</th></tr></thead><tbody>")  # fmt: skip
    for r in ctx["runs"]:
        link = r["link"]
        out.append(
            f"<tr><td>{_esc(r['name'])}<br><span class='muted'>{_esc(r['identity'])}</span></td>"
            f"<td>{_esc(r['seed'])}</td><td>{_esc(r['status'])}</td><td class='num'>{_esc(r['duration'])}</td>"
            f"<td>{_esc(r['metrics'])}</td><td><a href='{_esc(link)}/README.txt'>{_esc(link)}</a></td></tr>"
        )
    out.append("</tbody></table><h2>Cost</h2><table id='cost'><tbody>")
    out += [f"<tr><th>{_esc(k)}</th><td>{_esc(val)}</td></tr>" for k, val in ctx["cost"]]
    out.append("</tbody></table></body></html>")
    return "\n".join(out)


# --------------------------------------------------------------------------- markdown


def _md_cell(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value if value is not None else "")).replace("|", "\\|")


def render_markdown(ctx: dict[str, Any]) -> str:
    lines = [
        f"# Replication report: {ctx['title']}",
        "",
        f"Generated {ctx['generated']}. Paper: {ctx['paper_ref']}",
        "",
    ]
    lines += [f"**{ctx['summary']}**", ""]
    lines += [f"> WARNING: {w}\n" for w in ctx["warnings"]]
    lines += [
        "## Claims, worst first",
        "",
        "| Claim | In the paper | Metric | Reported | Measured (mean ± std, n) | 95% CI | Gap | p | Verdict | Why |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for v in ctx["verdicts"]:
        metric = f"{v.metric} ({v.direction})"
        cells = [v.claim_id, ctx["claim_text"].get(v.claim_id, ""), metric, _reported(v), _measured(v), _ci(v),
                 _gap(v), _num(v.p_value, 3), f"**{v.verdict}**",
                 " ".join([v.reason, *(f"WARNING: {w}" for w in getattr(v, "warnings", []))])]  # fmt: skip
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    lines += ["", "## Plots", ""]
    for (title, png), name in zip(ctx["plots"], ctx["plot_files"], strict=True):
        lines.append(f"![{title}]({name})" if png is not None else f"_{title}: nothing to plot._")
        lines.append("")
    lines += ["## Hypotheses", ""]
    if not ctx["hypotheses"]:
        lines.append("_No hypotheses._")
    for h in ctx["hypotheses"]:
        lines.append(f"### [{h.priority}] {h.statement}")
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
    lines += ["## Spec and deviations", ""]
    spec = ctx["spec"]
    if spec:
        lines += [f"Objective: {spec.get('objective', '')}", ""]
        if spec.get("hyperparameters"):
            lines += ["| Hyperparameter | Value | Source | Quote / reason |", "|---|---|---|---|"]
            for hp in spec["hyperparameters"]:
                why = f"p.{hp.get('page')}: {hp.get('quote')}" if hp.get("source") == "paper" else hp.get("reason")
                cells = [_md_cell(hp.get("name")), f"`{_md_cell(hp.get('value'))}`", hp.get("source"), _md_cell(why)]
                lines.append("| " + " | ".join(str(c) for c in cells) + " |")
            lines.append("")
    lines += [f"- deviation: {d}" for d in ctx["deviations"]] or ["_No deviations recorded._"]
    lines += [
        "",
        "## Runs",
        "",
        "| Run | Seed | Status | Duration | Metrics | Directory |",
        "|---|---|---|---:|---|---|",
    ]
    for r in ctx["runs"]:
        lines.append(f"| {_md_cell(r['name'])} `{r['identity']}` | {r['seed']} | {r['status']} | {r['duration']} | "
                     f"{_md_cell(r['metrics'])} | [{r['link']}]({r['link']}/README.txt) |")  # fmt: skip
    lines += ["", "## Cost", ""] + [f"- {k}: {val}" for k, val in ctx["cost"]] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points


def write_report(
    out_dir: Path,
    *,
    paper: Any,
    spec: Any,
    verdicts: Sequence[Any],
    hypotheses: Sequence[Any],
    runs: Any,
    llm_usage: Mapping[str, Any] | None = None,
    warnings: Iterable[str] = (),
    title: str | None = None,
) -> tuple[Path, Path]:
    """Write out_dir/report.html (self-contained) and out_dir/report.md (+ plots/*.png). Returns both paths.

    `runs` is a list of RunRecords or a claim_id -> runs mapping; `warnings` (e.g. tamper-check findings) are shown
    at the top; `llm_usage` is agent.llm.usage_summary(log_dir) for the cost section.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_list = _run_list(runs)
    ordered = worst_first(verdicts)
    plots = [
        ("Measured vs reported", plot_measured_vs_reported(ordered)),
        ("Training curves", plot_curves(run_list)),
    ]
    plot_files = []
    for (_title, png), stem in zip(plots, ("measured_vs_reported", "training_curves"), strict=True):
        rel = f"plots/{stem}.png"
        if png is not None:
            _atomic_write(out_dir / rel, png)
        plot_files.append(rel)
    runs_rows = [
        dict(
            name=_g(r, "name", ""),
            identity=_g(r, "identity", ""),
            seed=_g(r, "seed", _g(_g(r, "config", {}) or {}, "seed", "")),
            status=f"{_g(r, 'status')}/{_g(r, 'exit_reason')}" + (" (smoke)" if _g(r, "smoke", False) else ""),
            duration=_num(_g(r, "duration_s"), 3) + " s",
            metrics=", ".join(f"{k}={_num(val)}" for k, val in (_g(r, "metrics", {}) or {}).items()),
            link=_rel(str(_g(r, "run_dir", "")), out_dir),
        )
        for r in run_list
    ]
    paper_title = _g(paper, "title", None) or _g(paper, "slug", None) or "paper"
    ctx = dict(
        title=title or paper_title,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        paper_ref=" · ".join(
            str(x) for x in (paper_title, _g(paper, "arxiv_id", None), _g(paper, "source_path", None)) if x
        ),
        summary=summary_line(list(verdicts)),
        warnings=list(warnings),
        verdicts=ordered,
        claim_text={v.claim_id: _claim_text(paper, v.claim_id) for v in ordered},
        plots=plots,
        plot_files=plot_files,
        hypotheses=list(hypotheses),
        spec=_spec_dump(spec),
        deviations=_deviations(spec, hypotheses),
        runs=runs_rows,
        cost=_cost(run_list, llm_usage),
    )
    html_path = _atomic_write(out_dir / "report.html", render_html(ctx))
    md_path = _atomic_write(out_dir / "report.md", render_markdown(ctx))
    return html_path, md_path


def append_experiment_log(
    out_dir: Path,
    *,
    verdicts: Sequence[Any],
    hypotheses: Sequence[Any] = (),
    runs: Any = (),
    note: str = "",
    ablations: Sequence[Mapping[str, Any]] = (),
    report: Path | None = None,
    iteration: int | None = None,
    key: str | None = None,
) -> Path:
    """Append one iteration's key findings to out_dir/EXPERIMENT_LOG.md (rewritten atomically; never truncated).

    `key` makes the call idempotent: a section with the same key is not appended twice (a graph node that is
    re-entered after a crash logs its iteration once)."""
    path = Path(out_dir) / "EXPERIMENT_LOG.md"
    old = (
        path.read_text(encoding="utf-8")
        if path.exists()
        else "# Experiment log\n\nKey findings, one section per iteration.\n"
    )
    marker = f"<!-- entry: {key} -->" if key else ""
    if marker and marker in old:
        return path
    if iteration is None:
        iteration = len(re.findall(r"^## Iteration \d+", old, re.M)) + 1
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["", f"## Iteration {iteration} — {stamp}", *([marker] if marker else []), "",
             f"**{summary_line(list(verdicts))}**", ""]  # fmt: skip
    for v in worst_first(verdicts):
        lines.append(f"- {v.claim_id} ({v.metric}): {v.verdict}; reported {_reported(v)}, measured {_measured(v)}, "
                     f"gap {_gap(v)}" + (f", p={v.p_value:.3g}" if v.p_value is not None else ""))  # fmt: skip
    run_list = _run_list(runs)
    if run_list:
        lines.append(f"- runs: {', '.join(str(_g(r, 'identity', '')) for r in run_list)}")
    top = [h for h in hypotheses if h.priority == "high"][:5] or list(hypotheses)[:3]
    if top:
        lines += ["", "Top hypotheses:"]
        for h in top:
            lines.append(f"- [{h.priority}, {h.support}] {h.statement}")
    if ablations:
        lines += ["", "Ablations queued:"] + [f"- `{json.dumps(dict(a), default=str)}`" for a in ablations]
    if note:
        lines += ["", note.strip()]
    if report is not None:
        lines += ["", f"Report: {_rel(str(report), Path(out_dir))}"]
    _atomic_write(path, old.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    return path
