"""Post-run check (§10): did the run produce what it should, before anyone looks at a metric?

In order: output files exist and are non-empty; the resolved config was frozen; the prediction count matches the
input count; no NaN or constant predictions; parse-failure rate (<1% fine, 1–5% noted, >5% a problem); the
distribution of predictions vs truth; per-group spread; outliers. Problems make `ok` False; notes inform.
Metric integrity is part of it: conflicting final blocks and non-finite values (recorded by the harness in
diagnostics/metrics_integrity.json) and metrics that disagree with predictions.parquet are problems.
Each check is a function in `RUN_DIR_CHECKS` or `PREDICTION_CHECKS`, run in that order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlexp.metrics import INTEGRITY_FILE, recompute_problems
from mlexp.record import CheckResult
from mlexp.rundir import PRED_FILE, PredictionSpec, annotate, load_predictions

PARSE_NOTE_RATE = 0.01
PARSE_PROBLEM_RATE = 0.05


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _is_smoke(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("smoke"))
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class Findings:
    """What the checks found so far; each check appends to it."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Predictions:
    """The run's predictions, annotated, as the prediction checks see them."""

    table: pd.DataFrame
    spec: PredictionSpec
    expected: int | None

    @property
    def n(self) -> int:
        return len(self.table)


def check_config_frozen(run_dir: Path, found: Findings) -> None:
    if not (_nonempty(run_dir / "config.yaml") or _nonempty(run_dir / "config.json")):
        found.problems.append("no frozen config (config.yaml) in the run dir")


def check_metrics_file(run_dir: Path, found: Findings) -> None:
    metrics_path = run_dir / "metrics.json"
    if not _nonempty(metrics_path):
        found.problems.append("metrics.json missing or empty: the script printed no final metrics block")
        return
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except ValueError:
        found.problems.append("metrics.json is not valid (strict) JSON")
        return
    if not metrics:
        found.problems.append("no final metrics: the script printed no `=== FINAL METRICS ===` block")
    bad = [k for k, v in metrics.items() if v is None or (isinstance(v, float) and not math.isfinite(v))]
    if bad:
        found.problems.append(f"non-finite final metric(s): {', '.join(bad)}")


def check_metrics_integrity(run_dir: Path, found: Findings) -> None:
    """The harness's own findings while recording the metrics (conflicting blocks, non-finite values), and every
    metric that disagrees with the one recomputed from predictions.parquet."""
    path = run_dir / INTEGRITY_FILE
    if path.exists():
        try:
            found.problems += list(json.loads(path.read_text(encoding="utf-8")).get("problems", []))
        except (OSError, ValueError, AttributeError):
            found.problems.append(f"{INTEGRITY_FILE} cannot be read")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    found.problems += recompute_problems(run_dir, {k: v for k, v in numbers.items() if math.isfinite(v)})


def check_smoke_checkpoint(run_dir: Path, found: Findings) -> None:
    if _is_smoke(run_dir) and not any((run_dir / "checkpoints").glob("*")):
        found.notes.append("smoke run saved no checkpoint: checkpoint save + reload was not exercised (§9)")


def check_count(pred: Predictions, found: Findings) -> None:
    n, expected = pred.n, pred.expected
    if expected is not None and n != expected:
        found.problems.append(f"{n} predictions for {expected} inputs: {abs(expected - n)} silently lost or duplicated")
    elif expected is not None:
        found.notes.append(f"prediction count {n} matches the {expected} inputs")
    dup = int(pred.table[pred.spec.id_col].duplicated().sum())
    if dup:
        found.problems.append(f"{dup} duplicate ids in column {pred.spec.id_col!r}")


def check_parse_failures(pred: Predictions, found: Findings) -> None:
    failures, n = int(pred.table["parse_failed"].sum()), pred.n
    rate = failures / n
    if failures == n:
        found.problems.append(f"all {n} predictions are missing/NaN (nothing parsed)")
    elif rate > PARSE_PROBLEM_RATE:
        found.problems.append(
            f"parse-failure rate {rate:.1%} ({failures}/{n}) > 5%: check diagnostics/parse_failures.csv"
        )
    elif rate > PARSE_NOTE_RATE:
        found.notes.append(f"parse-failure rate {rate:.1%} ({failures}/{n}); investigate above 5%")
    else:
        found.notes.append(f"parse-failure rate {rate:.1%} ({failures}/{n})")


def _parsed(pred: Predictions) -> pd.Series:
    return pred.table.loc[~pred.table["parse_failed"], pred.spec.y_pred]


def check_constant(pred: Predictions, found: Findings) -> None:
    parsed = _parsed(pred)
    if len(parsed) > 1 and parsed.nunique() == 1:
        found.problems.append(f"all predictions are the same value ({parsed.iloc[0]!r}): constant predictions")


def check_class_distribution(pred: Predictions, found: Findings) -> None:
    if pred.spec.task != "classification":
        return
    parsed, table, spec = _parsed(pred), pred.table, pred.spec
    pred_dist = parsed.value_counts(normalize=True)
    true_dist = table[spec.y_true].value_counts(normalize=True)
    never = sorted(str(c) for c in true_dist.index if c not in pred_dist.index)
    if never and len(parsed) > 1:
        found.notes.append(f"classes never predicted: {', '.join(never[:10])}")
    classes = set(pred_dist.index) | set(true_dist.index)
    tv = 0.5 * float(sum(abs(pred_dist.get(c, 0.0) - true_dist.get(c, 0.0)) for c in classes))
    found.notes.append(f"prediction vs truth class distribution: total variation distance {tv:.3f}")
    if tv > 0.5:
        found.problems.append(f"predicted class distribution far from the truth (total variation {tv:.2f})")
    per_group = table.groupby(spec.group_col or spec.y_true)["correct"].mean()
    found.notes.append(
        f"per-group accuracy spread: worst {per_group.idxmin()}={per_group.min():.3f}, "
        f"best {per_group.idxmax()}={per_group.max():.3f}"
    )


def check_regression_spread(pred: Predictions, found: Findings) -> None:
    if pred.spec.task == "classification":
        return
    p = pd.to_numeric(_parsed(pred), errors="coerce")
    t = pd.to_numeric(pred.table[pred.spec.y_true], errors="coerce")
    found.notes.append(
        f"pred mean {p.mean():.4g} std {p.std(ddof=0):.4g} vs true mean {t.mean():.4g} std {t.std(ddof=0):.4g}"
    )
    top_share = float(p.value_counts(normalize=True).iloc[0]) if len(p) else 0.0
    truth_top = float(t.value_counts(normalize=True).iloc[0]) if len(t) else 0.0
    if t.std(ddof=0) > 0 and p.std(ddof=0) < 0.05 * t.std(ddof=0) and len(p) > 1:
        found.problems.append("prediction spread is under 5% of the truth's: near-constant predictions")
    elif len(p) > 10 and top_share >= 0.9 and truth_top < 0.5 and p.nunique() > 1:
        value = p.value_counts().index[0]
        found.problems.append(f"near-constant predictions: {top_share:.0%} of them are {value:g}")
    if np.isinf(p).any():
        found.problems.append("infinite predictions")


def check_outliers(pred: Predictions, found: Findings) -> None:
    outliers, n = int(pred.table["out_of_range"].sum()), pred.n
    if outliers:
        msg = f"{outliers} predictions ({outliers / n:.1%}) outside the valid range: diagnostics/outliers.csv"
        (found.problems if outliers / n > PARSE_PROBLEM_RATE else found.notes).append(msg)


# In order: the run dir's own files first, then the predictions (skipped when there are none).
RUN_DIR_CHECKS: list[Callable[[Path, Findings], None]] = [
    check_config_frozen, check_metrics_file, check_metrics_integrity, check_smoke_checkpoint,
]  # fmt: skip
PREDICTION_CHECKS: list[Callable[[Predictions, Findings], None]] = [
    check_count, check_parse_failures, check_constant, check_class_distribution, check_regression_spread,
    check_outliers,
]  # fmt: skip


def _load(run_dir: Path, expected_count: int | None, found: Findings) -> Predictions | None:
    try:
        loaded = load_predictions(run_dir)
    except (OSError, ValueError) as exc:
        found.problems.append(f"{PRED_FILE} cannot be read: {exc}")
        loaded = None
    if loaded is None:
        found.notes.append(f"no {PRED_FILE}: count, NaN, distribution and per-group checks skipped")
        return None
    df, spec = loaded
    if len(df) == 0:
        found.problems.append("predictions table is empty")
        return None
    expected = expected_count if expected_count is not None else spec.expected_count
    return Predictions(annotate(df, spec), spec, expected)


def post_run_check(run_dir: Path, *, expected_count: int | None = None) -> CheckResult:
    """Check a finished run dir. `expected_count` overrides the input count the script recorded."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return CheckResult(ok=False, problems=[f"run dir {run_dir} does not exist"])
    found = Findings()
    for check in RUN_DIR_CHECKS:
        check(run_dir, found)
    pred = _load(run_dir, expected_count, found)
    if pred is not None:
        for check_pred in PREDICTION_CHECKS:
            check_pred(pred, found)
    return CheckResult(ok=not found.problems, problems=found.problems, notes=found.notes)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def format_check(result: CheckResult) -> str:
    lines = [f"post-run check: {'OK' if result.ok else 'PROBLEMS FOUND'}"]
    lines += [f"PROBLEM: {p}" for p in result.problems] + [f"note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"
