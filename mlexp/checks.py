"""Post-run check (§10): did the run produce what it should, before anyone looks at a metric?

In order: output files exist and are non-empty; the resolved config was frozen; the prediction count matches the
input count; no NaN or constant predictions; parse-failure rate (<1% fine, 1–5% noted, >5% a problem); the
distribution of predictions vs truth; per-group spread; outliers. Problems make `ok` False; notes inform.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mlexp.record import CheckResult
from mlexp.rundir import PRED_FILE, annotate, load_predictions

PARSE_NOTE_RATE = 0.01
PARSE_PROBLEM_RATE = 0.05


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _is_smoke(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("smoke"))
    except (OSError, ValueError, AttributeError):
        return False


def post_run_check(run_dir: Path, *, expected_count: int | None = None) -> CheckResult:
    """Check a finished run dir. `expected_count` overrides the input count the script recorded."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    notes: list[str] = []
    if not run_dir.is_dir():
        return CheckResult(ok=False, problems=[f"run dir {run_dir} does not exist"])
    if not (_nonempty(run_dir / "config.yaml") or _nonempty(run_dir / "config.json")):
        problems.append("no frozen config (config.yaml) in the run dir")
    metrics_path = run_dir / "metrics.json"
    if not _nonempty(metrics_path):
        problems.append("metrics.json missing or empty: the script printed no final metrics block")
    else:
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            if not metrics:
                problems.append("no final metrics: the script printed no `=== FINAL METRICS ===` block")
            bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                problems.append(f"non-finite final metric(s): {', '.join(bad)}")
        except ValueError:
            problems.append("metrics.json is not valid JSON")
    if _is_smoke(run_dir) and not any((run_dir / "checkpoints").glob("*")):
        notes.append("smoke run saved no checkpoint: checkpoint save + reload was not exercised (§9)")
    loaded = None
    try:
        loaded = load_predictions(run_dir)
    except (OSError, ValueError) as exc:
        problems.append(f"{PRED_FILE} cannot be read: {exc}")
    if loaded is None:
        notes.append(f"no {PRED_FILE}: count, NaN, distribution and per-group checks skipped")
        return CheckResult(ok=not problems, problems=problems, notes=notes)
    df, spec = loaded
    n = len(df)
    expected = expected_count if expected_count is not None else spec.expected_count
    if n == 0:
        problems.append("predictions table is empty")
        return CheckResult(ok=False, problems=problems, notes=notes)
    if expected is not None and n != expected:
        problems.append(f"{n} predictions for {expected} inputs: {abs(expected - n)} silently lost or duplicated")
    elif expected is not None:
        notes.append(f"prediction count {n} matches the {expected} inputs")
    dup = int(df[spec.id_col].duplicated().sum())
    if dup:
        problems.append(f"{dup} duplicate ids in column {spec.id_col!r}")
    table = annotate(df, spec)
    failures = int(table["parse_failed"].sum())
    rate = failures / n
    if failures == n:
        problems.append(f"all {n} predictions are missing/NaN (nothing parsed)")
    elif rate > PARSE_PROBLEM_RATE:
        problems.append(f"parse-failure rate {rate:.1%} ({failures}/{n}) > 5%: check diagnostics/parse_failures.csv")
    elif rate > PARSE_NOTE_RATE:
        notes.append(f"parse-failure rate {rate:.1%} ({failures}/{n}); investigate above 5%")
    else:
        notes.append(f"parse-failure rate {rate:.1%} ({failures}/{n})")
    pred = table.loc[~table["parse_failed"], spec.y_pred]
    true = table[spec.y_true]
    if len(pred) > 1 and pred.nunique() == 1:
        problems.append(f"all predictions are the same value ({pred.iloc[0]!r}): constant predictions")
    if spec.task == "classification":
        pred_dist = pred.value_counts(normalize=True)
        true_dist = true.value_counts(normalize=True)
        never = sorted(str(c) for c in true_dist.index if c not in pred_dist.index)
        if never and len(pred) > 1:
            notes.append(f"classes never predicted: {', '.join(never[:10])}")
        tv = 0.5 * float(
            sum(abs(pred_dist.get(c, 0.0) - true_dist.get(c, 0.0)) for c in set(pred_dist.index) | set(true_dist.index))
        )
        notes.append(f"prediction vs truth class distribution: total variation distance {tv:.3f}")
        if tv > 0.5:
            problems.append(f"predicted class distribution far from the truth (total variation {tv:.2f})")
        per_group = table.groupby(spec.group_col or spec.y_true)["correct"].mean()
        notes.append(
            f"per-group accuracy spread: worst {per_group.idxmin()}={per_group.min():.3f}, "
            f"best {per_group.idxmax()}={per_group.max():.3f}"
        )
    else:
        p = pd.to_numeric(pred, errors="coerce")
        t = pd.to_numeric(true, errors="coerce")
        notes.append(
            f"pred mean {p.mean():.4g} std {p.std(ddof=0):.4g} vs true mean {t.mean():.4g} std {t.std(ddof=0):.4g}"
        )
        top_share = float(p.value_counts(normalize=True).iloc[0]) if len(p) else 0.0
        truth_top = float(t.value_counts(normalize=True).iloc[0]) if len(t) else 0.0
        if t.std(ddof=0) > 0 and p.std(ddof=0) < 0.05 * t.std(ddof=0) and len(p) > 1:
            problems.append("prediction spread is under 5% of the truth's: near-constant predictions")
        elif len(p) > 10 and top_share >= 0.9 and truth_top < 0.5 and p.nunique() > 1:
            value = p.value_counts().index[0]
            problems.append(f"near-constant predictions: {top_share:.0%} of them are {value:g}")
        if np.isinf(p).any():
            problems.append("infinite predictions")
    outliers = int(table["out_of_range"].sum())
    if outliers:
        msg = f"{outliers} predictions ({outliers / n:.1%}) outside the valid range: diagnostics/outliers.csv"
        (problems if outliers / n > PARSE_PROBLEM_RATE else notes).append(msg)
    return CheckResult(ok=not problems, problems=problems, notes=notes)


def format_check(result: CheckResult) -> str:
    lines = [f"post-run check: {'OK' if result.ok else 'PROBLEMS FOUND'}"]
    lines += [f"PROBLEM: {p}" for p in result.problems] + [f"note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"
