"""The tune ledger: one row per trial in `tune.tsv` (for eyes) and `tune.parquet` (for code), plus the report.

Each row says what was changed, why (rationale and the papers cited, with each quote's verification against the
index), what it measured over its seeds, the verdict (baseline, keep, discard, crash, rejected) and what it cost.
Both files are rewritten whole after every trial through a temp file + rename, so a killed tune never leaves a
half-written ledger. The report (`report.md`, `report.html`, `metric_vs_trial.png`) is rebuilt from the ledger.
"""

from __future__ import annotations

import base64
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd
from jinja2 import Environment, FileSystemLoader
from pydantic import BaseModel, Field

from mlexp import atomic

TrialVerdict = Literal["baseline", "keep", "discard", "crash", "rejected", "recheck"]
VERDICTS: tuple[TrialVerdict, ...] = get_args(TrialVerdict)
# Who proposed a row: the baseline and re-checks are the tuner's own rows; a proposal's source otherwise.
RowSource = Literal["baseline", "recheck", "optuna", "llm", "hybrid"]
RowKind = Literal["baseline", "recheck", "config", "code", "config+code"]


class CitationRecord(BaseModel):
    paper_id: str
    quote: str
    verified: bool
    title: str = ""


class TrialRow(BaseModel):
    trial: int
    proposer: RowSource
    kind: RowKind
    change: str  # one line: the config changes and/or the files edited
    rationale: str = ""
    citations: list[CitationRecord] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)  # the full config the trial ran
    config_changes: dict[str, Any] = Field(default_factory=dict)  # relative to the incumbent's config
    files_changed: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)  # the metric, one per seed
    metric_mean: float = math.nan
    metric_std: float = math.nan
    incumbent_mean: float = math.nan
    improvement: float = math.nan  # positive = better than the incumbent
    threshold: float = math.nan  # the improvement the noise floor demanded
    verdict: TrialVerdict
    reason: str = ""
    commit: str = ""
    tag: str = ""
    cost_s: float = 0.0  # wall seconds of all its runs
    run_dirs: list[str] = Field(default_factory=list)
    started_at: str = ""
    ended_at: str = ""

    def flat(self) -> dict[str, Any]:
        """The row as scalars (lists and dicts as JSON text) for TSV and parquet."""
        data = self.model_dump()
        data["papers"] = ",".join(c.paper_id for c in self.citations)
        data["citations_verified"] = sum(c.verified for c in self.citations)
        for key in ("citations", "config", "config_changes", "files_changed", "seeds", "values", "run_dirs"):
            data[key] = json.dumps(data[key], default=str)
        return data


COLUMNS = [
    "trial",
    "verdict",
    "metric_mean",
    "metric_std",
    "seeds",
    "improvement",
    "threshold",
    "incumbent_mean",
    "proposer",
    "kind",
    "change",
    "rationale",
    "papers",
    "citations_verified",
    "citations",
    "reason",
    "values",
    "cost_s",
    "commit",
    "tag",
    "files_changed",
    "config_changes",
    "config",
    "run_dirs",
    "started_at",
    "ended_at",
]


class Ledger:
    """The rows of one tune run, persisted on every append."""

    def __init__(self, tune_dir: Path):
        self.tune_dir = Path(tune_dir)
        self.rows: list[TrialRow] = []

    @property
    def tsv(self) -> Path:
        return self.tune_dir / "tune.tsv"

    @property
    def parquet(self) -> Path:
        return self.tune_dir / "tune.parquet"

    def append(self, row: TrialRow) -> None:
        self.rows.append(row)
        self.save()

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.flat() for r in self.rows], columns=COLUMNS)

    def save(self) -> None:
        frame = self.frame()
        text = frame.to_csv(sep="\t", index=False, lineterminator="\n", float_format="%.6g")
        atomic.write_text(self.tsv, text)
        atomic.write_parquet(self.parquet, frame)

    @classmethod
    def load(cls, tune_dir: Path) -> Ledger:
        ledger = cls(tune_dir)
        frame = pd.read_parquet(ledger.parquet)
        for record in frame.to_dict("records"):
            for key in ("citations", "config", "config_changes", "files_changed", "seeds", "values", "run_dirs"):
                record[key] = json.loads(record[key])
            record = {k: v for k, v in record.items() if k in TrialRow.model_fields}
            ledger.rows.append(TrialRow.model_validate(record))
        return ledger


def incumbent_path(rows: list[TrialRow]) -> list[tuple[int, float]]:
    """(trial, incumbent metric) after each trial: the baseline, then each kept trial's mean."""
    path, current = [], math.nan
    for row in rows:
        if row.verdict in ("baseline", "keep"):
            current = row.metric_mean
        path.append((row.trial, current))
    return path


def _plot_measured(ax: Any, rows: list[TrialRow]) -> None:
    """Trial means by verdict (each seed as a faint dot) and the incumbent's re-checks."""
    colours = {"baseline": "#1f77b4", "keep": "#2ca02c", "discard": "#d62728"}
    for verdict, colour in colours.items():
        sel = [r for r in rows if r.verdict == verdict and math.isfinite(r.metric_mean)]
        if sel:
            ax.scatter(
                [r.trial for r in sel],
                [r.metric_mean for r in sel],
                c=colour,
                s=36,
                zorder=3,
                label=f"{verdict} ({len(sel)})",
            )
            for r in sel:
                ax.scatter([r.trial] * len(r.values), r.values, c=colour, s=8, alpha=0.35, zorder=2)
    rechecks = [r for r in rows if r.verdict == "recheck" and math.isfinite(r.metric_mean)]
    if rechecks:
        ax.scatter(
            [r.trial + 0.3 for r in rechecks],
            [r.metric_mean for r in rechecks],
            marker="D",
            c="#9467bd",
            s=22,
            zorder=3,
            label=f"incumbent re-checked ({len(rechecks)})",
        )


def _plot_unmeasured(ax: Any, rows: list[TrialRow], direction: str) -> None:
    """Crashed and rejected trials as crosses at the worst measured value."""
    finite = [r.metric_mean for r in rows if math.isfinite(r.metric_mean)]
    failed = [r for r in rows if r.verdict in ("crash", "rejected")]
    if failed and finite:
        y = max(finite) if direction == "min" else min(finite)
        ax.scatter(
            [r.trial for r in failed],
            [y] * len(failed),
            marker="x",
            c="grey",
            s=36,
            zorder=3,
            label=f"crash/rejected ({len(failed)})",
        )


def plot_metric(rows: list[TrialRow], path: Path, *, metric: str, direction: str, title: str = "") -> Path:
    """Metric vs trial: every seed as a faint dot, trial means coloured by verdict, the incumbent as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    _plot_measured(ax, rows)
    _plot_unmeasured(ax, rows, direction)
    inc = [(t, v) for t, v in incumbent_path(rows) if math.isfinite(v)]
    if inc:
        ax.step([t for t, _ in inc], [v for _, v in inc], where="post", c="black", lw=1.2, label="incumbent")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} ({'lower' if direction == 'min' else 'higher'} is better)")
    ax.set_title(title or f"{metric} vs trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    return atomic.write_bytes(path, png.getvalue())


def _fmt(x: float, digits: int = 4) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def report_section(rows: list[TrialRow], *, metric: str, direction: str, noise_std: float, summary: dict) -> str:
    """The markdown tune section: headline, noise floor, kept changes with their papers, full trial table."""
    base = next((r for r in rows if r.verdict == "baseline"), None)
    inc = [v for _, v in incumbent_path(rows) if math.isfinite(v)]
    best = inc[-1] if inc else math.nan
    lines = [f"## Tune: {summary.get('target', '')}", ""]
    if base is not None:
        gain = (base.metric_mean - best) if direction == "min" else (best - base.metric_mean)
        rel = gain / abs(base.metric_mean) if base.metric_mean else math.nan
        lines += [
            f"- baseline {metric}: {_fmt(base.metric_mean)} ± {_fmt(base.metric_std)} (std over {len(base.values)} "
            f"seeds); pooled seed noise {_fmt(noise_std)}",
            f"- final incumbent {metric}: {_fmt(best)}; improvement {_fmt(gain)} ({_fmt(100 * rel, 3)}%)",
        ]
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    lines.append("- trials: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v != "baseline"))
    for key, value in summary.items():
        if key != "target":
            lines.append(f"- {key}: {value}")
    kept = [r for r in rows if r.verdict == "keep"]
    lines += ["", "### Kept changes", ""]
    if not kept:
        lines.append("None: no change beat the incumbent by more than the seed noise.")
    for r in kept:
        lines.append(f"- trial {r.trial} ({r.proposer}): {r.change} -> {_fmt(r.metric_mean)} ({r.reason})")
        for c in r.citations:
            mark = "verified" if c.verified else "NOT verified in the index"
            lines.append(f'  - cites {c.paper_id} {c.title!s}: "{c.quote}" ({mark})')
    cited = [r for r in rows if r.citations]
    if cited:
        lines += ["", "### Changes suggested by papers, and what they were measured to do", ""]
        for r in cited:
            effect = f"improvement {_fmt(r.improvement)} vs threshold {_fmt(r.threshold)}" if r.values else r.reason
            lines.append(f"- trial {r.trial}: {r.change} -> **{r.verdict}** ({effect})")
            for c in r.citations:
                mark = "verified" if c.verified else "NOT verified in the index"
                lines.append(f'  - {c.paper_id} {c.title}: "{c.quote[:300]}" ({mark})')
    lines += [
        "",
        "### All trials (worst first)",
        "",
        "| trial | verdict | mean | std | n | change | papers | cost s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {"crash": 0, "rejected": 1, "discard": 2, "keep": 3, "recheck": 4, "baseline": 5}
    for r in sorted(rows, key=lambda r: (order.get(r.verdict, 0), r.trial)):
        papers = ", ".join(f"{c.paper_id}{'' if c.verified else ' (unverified)'}" for c in r.citations) or "-"
        change = r.change.replace("|", "/")[:120]
        lines.append(
            f"| {r.trial} | {r.verdict} | {_fmt(r.metric_mean)} | {_fmt(r.metric_std)} | {len(r.values)} | "
            f"{change} | {papers} | {r.cost_s:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    tune_dir: Path, rows: list[TrialRow], *, metric: str, direction: str, noise_std: float, summary: dict
) -> tuple[Path, Path, Path]:
    """report.md + self-contained report.html + metric_vs_trial.png in the tune dir."""
    tune_dir = Path(tune_dir)
    png = plot_metric(
        rows,
        tune_dir / "metric_vs_trial.png",
        metric=metric,
        direction=direction,
        title=f"{summary.get('target', '')}: {metric} vs trial",
    )
    md_text = report_section(rows, metric=metric, direction=direction, noise_std=noise_std, summary=summary)
    md_text += f"\n![{metric} vs trial]({png.name})\n"
    md = atomic.write_text(tune_dir / "report.md", md_text)
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    blocks = markdown_blocks([line for line in md_text.splitlines() if not line.startswith("![")])
    page = _templates().get_template("report.html.j2").render(blocks=blocks, metric=metric, image=image)
    out = atomic.write_text(tune_dir / "report.html", page)
    return md, out, png


@dataclass
class Block:
    """One block of our own report markdown: a heading, a paragraph, a bullet list or a pipe table."""

    kind: Literal["heading", "paragraph", "list", "table"]
    text: str = ""
    level: int = 0
    items: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def markdown_blocks(lines: list[str]) -> list[Block]:
    """Just enough markdown for report_section's output: headings, bullets and pipe tables (separators dropped)."""
    blocks: list[Block] = []
    for line in lines:
        if line.startswith("|---") or not line.strip():
            continue
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not blocks or blocks[-1].kind != "table":
                blocks.append(Block("table"))
            blocks[-1].rows.append(cells)
        elif line.startswith("#"):
            blocks.append(Block("heading", text=line.lstrip("#").strip(), level=len(line) - len(line.lstrip("#"))))
        elif line.lstrip().startswith("- "):
            if not blocks or blocks[-1].kind != "list":
                blocks.append(Block("list"))
            blocks[-1].items.append(line.lstrip()[2:])
        else:
            blocks.append(Block("paragraph", text=line))
    return blocks


@cache
def _templates() -> Environment:
    return Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)


def seed_stats(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else math.nan)
