"""Run directory writer (§1–4, §6): the layout a person drills into, from README.txt down to one sample.

    <run_dir>/
      README.txt               purpose, scope, data, model, results, metric definitions, navigation, comparison
      config.yaml, config.json frozen resolved config (yaml for eyes, json for the script: RUN_CONFIG)
      metadata.json            git state, host, environment, start/end times, exit reason
      metrics.json             final metrics;   metrics.jsonl   per-step metrics;   training.log   script's log
      console.log              everything the script printed, timestamped, secrets redacted
      record.json              the RunRecord;   predictions.parquet (+ predictions.meta.json) for code
      groups/_index.csv        one row per group, worst first
      groups/<group>/          metrics.json, predictions.csv, per_sample.csv (worst first), samples/<id>/summary.txt
      diagnostics/             parse_failures.csv, outliers.csv, value_ranges.json, actual_vs_predicted.csv,
                               post_run_check.txt, log_digest.txt

Every file is written atomically. CSV in the inspection folders, parquet at the root (§3): never parquet-only.
The views are rebuilt from predictions.parquet by the harness after every run, so a script cannot skip them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel

from mlexp import atomic

PRED_FILE = "predictions.parquet"
PRED_META = "predictions.meta.json"
SAMPLES_PER_GROUP = 10  # summary.txt folders for the worst N samples per group: drill-down without 1000s of dirs


class PredictionSpec(BaseModel):
    """Which columns of predictions.parquet mean what."""

    id_col: str
    y_true: str
    y_pred: str
    group_col: str | None = None
    score_col: str | None = None
    task: Literal["classification", "regression"] | None = None  # inferred when None
    valid_range: list[float] | None = None
    expected_count: int | None = None
    input_col: str | None = None
    raw_output_col: str | None = None


def safe_name(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("._") or "_"
    return text[:80]


def _infer_task(true: pd.Series, pred: pd.Series) -> str:
    for series in (true, pred):
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            return "classification"
    values = pd.concat([true, pred]).dropna()
    if len(values) and np.allclose(values, np.round(values)) and values.nunique() <= 50:
        return "classification"
    return "regression"


def save_prediction_table(run_dir: Path, df: pd.DataFrame, spec: PredictionSpec) -> Path:
    missing = [c for c in (spec.id_col, spec.y_true, spec.y_pred, spec.group_col, spec.score_col) if c and c not in df]
    if missing:
        raise ValueError(f"predictions table has no column(s) {missing}; columns are {list(df.columns)}")
    if spec.task is None:
        spec = spec.model_copy(update={"task": _infer_task(df[spec.y_true], df[spec.y_pred])})
    path = atomic.write_parquet(Path(run_dir) / PRED_FILE, df)
    atomic.write_json(Path(run_dir) / PRED_META, spec.model_dump())
    return path


def load_predictions(run_dir: Path) -> tuple[pd.DataFrame, PredictionSpec] | None:
    run_dir = Path(run_dir)
    if not (run_dir / PRED_FILE).exists() or not (run_dir / PRED_META).exists():
        return None
    spec = PredictionSpec.model_validate_json((run_dir / PRED_META).read_text(encoding="utf-8"))
    return pd.read_parquet(run_dir / PRED_FILE), spec


def annotate(df: pd.DataFrame, spec: PredictionSpec) -> pd.DataFrame:
    """Add `parse_failed`, `correct`/`abs_error`, `out_of_range` and a `badness` score (higher = worse)."""
    out = df.copy()
    pred = out[spec.y_pred]
    out["parse_failed"] = pred.isna()
    if spec.task == "classification":
        out["correct"] = (out[spec.y_true] == pred) & ~out["parse_failed"]
        # Wrong and confident is worst; right but unsure comes next; confident and right is last.
        score = out[spec.score_col].astype(float) if spec.score_col else pd.Series(0.5, index=out.index)
        out["badness"] = np.where(out["correct"], 1.0 - score, 1.0 + score)
        truth_labels = set(out[spec.y_true].dropna().unique())
        out["out_of_range"] = ~out["parse_failed"] & ~pred.isin(truth_labels)
    else:
        p, t = pred.astype(float), out[spec.y_true].astype(float)
        out["abs_error"] = (p - t).abs()
        out["badness"] = out["abs_error"].fillna(np.inf)
        low, high = spec.valid_range or (float(t.min()), float(t.max()))
        out["out_of_range"] = ~out["parse_failed"] & ((p < low) | (p > high))
    out.loc[out["parse_failed"], "badness"] = np.inf  # an unparsed output is the worst case of all
    return out


def group_metrics(part: pd.DataFrame, spec: PredictionSpec) -> dict[str, Any]:
    n = int(len(part))
    metrics: dict[str, Any] = {"n": n, "parse_failures": int(part["parse_failed"].sum())}
    metrics["outliers"] = int(part["out_of_range"].sum())
    if spec.task == "classification":
        metrics["accuracy"] = float(part["correct"].mean()) if n else float("nan")
        metrics["errors"] = int(n - part["correct"].sum())
        top = part.loc[~part["correct"] & ~part["parse_failed"], spec.y_pred].value_counts()
        metrics["most_confused_with"] = str(top.index[0]) if len(top) else ""
    else:
        p, t = part[spec.y_pred].astype(float), part[spec.y_true].astype(float)
        metrics["mae"] = float(part["abs_error"].mean())
        metrics["pred_mean"], metrics["true_mean"] = float(p.mean()), float(t.mean())
    return metrics


def primary_metric(spec: PredictionSpec) -> tuple[str, bool]:
    """(metric name, True if higher is better) used to sort groups worst-first."""
    return ("accuracy", True) if spec.task == "classification" else ("mae", False)


def _sample_summary(row: pd.Series, spec: PredictionSpec) -> str:
    lines = [f"sample_id: {row[spec.id_col]}"]
    if spec.group_col:
        lines.append(f"group: {row[spec.group_col]}")
    lines += [f"ground_truth: {row[spec.y_true]}", f"predicted: {row[spec.y_pred]}"]
    if spec.score_col:
        lines.append(f"score: {row[spec.score_col]}")
    if "abs_error" in row:
        lines.append(f"error: {row['abs_error']}")
    if spec.valid_range:
        lines.append(f"valid_range: {spec.valid_range}")
    lines.append(f"parse_failed: {bool(row['parse_failed'])}")
    if spec.input_col:
        lines += ["", "=== INPUT ===", str(row[spec.input_col])]
    if spec.raw_output_col:
        lines += ["", "=== OUTPUT ===", str(row[spec.raw_output_col])]
    return "\n".join(lines) + "\n"


def build_views(run_dir: Path) -> bool:
    """(Re)build groups/ and diagnostics/ from predictions.parquet. Returns False when there are no predictions."""
    run_dir = Path(run_dir)
    loaded = load_predictions(run_dir)
    if loaded is None:
        return False
    df, spec = loaded
    table = annotate(df, spec)
    group_col = spec.group_col or (spec.y_true if spec.task == "classification" else None)
    metric, higher_better = primary_metric(spec)
    groups_dir, diag = run_dir / "groups", run_dir / "diagnostics"
    rows = []
    parts = table.groupby(group_col, dropna=False, sort=True) if group_col else [("all", table)]
    for key, part in parts:
        name = safe_name(key)
        metrics = group_metrics(part, spec)
        rows.append({"group": key, "folder": f"groups/{name}", **metrics})
        worst = part.sort_values("badness", ascending=False, kind="stable")
        atomic.write_json(groups_dir / name / "metrics.json", metrics)
        atomic.write_csv(groups_dir / name / "predictions.csv", part[df.columns])
        atomic.write_csv(groups_dir / name / "per_sample.csv", worst)
        for _, row in worst.head(SAMPLES_PER_GROUP).iterrows():
            sample = groups_dir / name / "samples" / safe_name(row[spec.id_col]) / "summary.txt"
            atomic.write_text(sample, _sample_summary(row, spec))
    index = pd.DataFrame(rows)
    index = index.sort_values(metric, ascending=higher_better, kind="stable", na_position="first")
    atomic.write_csv(groups_dir / "_index.csv", index)
    # diagnostics: what went wrong, separate from what the results are (§6)
    keep = [c for c in df.columns if c != spec.input_col]
    atomic.write_csv(diag / "parse_failures.csv", table.loc[table["parse_failed"], df.columns])
    atomic.write_csv(diag / "outliers.csv", table.loc[table["out_of_range"], keep])
    atomic.write_csv(diag / "actual_vs_predicted.csv", table.drop(columns=[spec.input_col] if spec.input_col else []))
    atomic.write_json(diag / "value_ranges.json", value_ranges(table, spec, group_col))
    return True


def _describe(series: pd.Series) -> dict[str, Any]:
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().sum() == series.notna().sum() and series.notna().any():
        return {
            "min": float(numeric.min()),
            "max": float(numeric.max()),
            "mean": float(numeric.mean()),
            "std": float(numeric.std(ddof=0)),
        }
    counts = series.value_counts(normalize=True)
    return {"distribution": {str(k): round(float(v), 4) for k, v in counts.items()}}


def value_ranges(table: pd.DataFrame, spec: PredictionSpec, group_col: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"all": {"pred": _describe(table[spec.y_pred]), "true": _describe(table[spec.y_true])}}
    if spec.valid_range:
        out["valid_range"] = spec.valid_range
    if group_col:
        for key, part in table.groupby(group_col, dropna=False):
            out[str(key)] = {"pred": _describe(part[spec.y_pred]), "true": _describe(part[spec.y_true])}
    return out


# -- frozen config, metadata, README ------------------------------------------------------------------------------
def write_config(run_dir: Path, config: dict) -> Path:
    atomic.write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=True, allow_unicode=True))
    return atomic.write_json(run_dir / "config.json", config)


def _fmt_metric(value: float) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.6g}"


def render_readme(
    record: Any, info: dict | None, *, index_rows: list[dict] | None = None, others: Sequence[Any] = ()
) -> str:
    """README.txt for a stranger in three months: what, on what, how good, where to look, compared with what."""
    info = info or {}
    metric_defs: dict[str, dict] = info.get("metrics") or {}
    lines = [f"RUN {record.identity}  ({record.name})", "=" * 72, ""]
    lines += [
        "STATUS",
        f"  {record.status} (exit reason: {record.exit_reason or 'n/a'}, exit code: {record.exit_code})",
    ]
    if record.error:
        lines.append(f"  error: {record.error.splitlines()[-1][:300]}")
    lines.append(f"  kind: {'SMOKE run (small config, exercises the whole lifecycle)' if record.smoke else 'full run'}")
    lines += ["", "CONTAINMENT (docs/sandbox.md)", f"  sandbox: {record.sandbox or 'bwrap (starting)'}",
              f"  network: {record.network or 'n/a'}", f"  memory limit: {record.memory_limit or 'none'}"]
    lines += ["", "PURPOSE", f"  {info.get('purpose') or 'not stated (pass readme={purpose: ...})'}"]
    lines += ["", "SCOPE", f"  {info.get('scope') or 'not stated'}"]
    lines += ["", "DATA", f"  {info.get('data') or 'not stated'}"]
    lines += ["", "MODEL", f"  {info.get('model') or 'not stated'}"]
    lines += ["", "CODE AND CONFIG", f"  script: {record.script}", f"  code commit: {record.code_commit}"]
    lines.append(f"  config hash: {record.config_hash[:16]}  seed: {record.seed}  smoke: {record.smoke}")
    for key, value in sorted(record.config.items()):
        lines.append(f"    {key}: {json.dumps(value, default=str)[:100]}")
    lines += ["", "RESULTS"]
    if record.metrics:
        for key, value in record.metrics.items():
            definition = metric_defs.get(key, {})
            arrow = {"max": "higher is better", "min": "lower is better"}.get(definition.get("direction", ""), "")
            lines.append(f"  {key}: {_fmt_metric(value)}" + (f"   ({arrow})" if arrow else ""))
    else:
        lines.append("  no metrics recorded")
    lines += ["", "METRIC DEFINITIONS"]
    if metric_defs:
        for key, definition in metric_defs.items():
            direction = {"max": "higher is better", "min": "lower is better"}.get(str(definition.get("direction")), "?")
            lines.append(f"  {key} ({direction}): {definition.get('definition', '')}")
    else:
        lines.append("  not given (pass readme={'metrics': {name: {'direction': 'max'|'min', 'definition': ...}}})")
    if index_rows:
        lines += ["", "WORST GROUPS (from groups/_index.csv, worst first)"]
        for row in index_rows[:5]:
            shown = {k: v for k, v in row.items() if k not in ("folder",)}
            lines.append(
                "  " + ", ".join(f"{k}={_fmt_metric(v) if isinstance(v, float) else v}" for k, v in shown.items())
            )
    if record.check is not None:
        lines += ["", "POST-RUN CHECK (diagnostics/post_run_check.txt)", f"  {'OK' if record.check.ok else 'PROBLEMS'}"]
        lines += [f"  problem: {p}" for p in record.check.problems] + [f"  note: {n}" for n in record.check.notes[:8]]
    lines += ["", "COMPARISON CONTEXT"]
    if info.get("comparison"):
        lines.append(f"  {info['comparison']}")
    for other in others[:8]:
        metrics = ", ".join(f"{k}={_fmt_metric(v)}" for k, v in list(other.metrics.items())[:4])
        tag = "smoke" if other.smoke else "full"
        lines.append(f"  {other.identity} ({tag}, {other.status}, commit {other.code_commit}): {metrics}")
    if not info.get("comparison") and not others:
        lines.append("  no other runs of this experiment yet")
    lines += ["", "NAVIGATION", *NAVIGATION, ""]
    return "\n".join(lines)


NAVIGATION = [
    "  1. diagnostics/post_run_check.txt   did the run produce what it should? (counts, NaN, parse failures)",
    "  2. diagnostics/log_digest.txt       short digest of the log: errors, tracebacks, last progress",
    "  3. groups/_index.csv                one row per group, WORST FIRST -> open groups/<group>/",
    "  4. groups/<group>/per_sample.csv    samples of that group, worst first; samples/<id>/summary.txt",
    "  5. diagnostics/    parse_failures.csv, outliers.csv, value_ranges.json, actual_vs_predicted.csv",
    "  metrics.json (final), metrics.jsonl (per step), training.log (script log), console.log (all output)",
    "  config.yaml (frozen config), metadata.json (git, host, env, times), predictions.parquet (for code)",
]
