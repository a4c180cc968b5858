"""The report's two plots, as PNG bytes: training curves from every run's metrics.jsonl, and each claim's measured
value (mean, 95 % CI) beside the paper's (± its std)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from agent.runs import read_curves
from mlexp.compare import Verdict
from mlexp.record import RunRecord

VERDICT_COLORS = {"diverged": "#c0392b", "not run": "#7f8c8d", "better": "#d68910", "replicated": "#1e8449"}


def png_bytes(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def plot_curves(runs: Sequence[RunRecord], *, max_metrics: int = 6) -> bytes | None:
    """Training curves of every non-smoke run, one panel per logged metric. None when nothing was logged."""
    per_run = []
    for run in runs:
        if run.smoke or not run.run_dir:
            continue
        curves = read_curves(run.run_dir)
        if curves:
            per_run.append((f"{run.name} s{run.seed}", curves))
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
    return png_bytes(fig)


def plot_measured_vs_reported(verdicts: Sequence[Verdict]) -> bytes | None:
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
            [v.reported or 0.0 for v in group],  # `shown` holds only claims with a reported value
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
            if v.ci_low is not None and v.ci_high is not None:
                down, up = v.measured_mean - v.ci_low, v.ci_high - v.measured_mean
            else:
                down = up = 0.0
            mx.append(x + 0.1)
            my.append(v.measured_mean)
            lo.append(down)
            hi.append(up)
            colors.append(VERDICT_COLORS[v.verdict])
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
    return png_bytes(fig)
