"""The final metrics of a run as the harness measured them, and the checks that they were not forged.

One place records a run's metrics: the first `=== FINAL METRICS ===` block the script printed (what
`mlexp.log.RunLogger.final` prints), else the metrics.json the script wrote when it printed no block. Recorded once:

- a later block that disagrees with the recorded one, or a script-written metrics.json that disagrees with it, is a
  problem (someone printed a second, forged block);
- a non-finite or non-numeric value is never a measurement: it is kept aside (`invalid`) and is a problem;
- a metric the harness can recompute from predictions.parquet (accuracy/error for classification, MAE/MSE/RMSE for
  regression) that disagrees with the recomputed value is a problem (`recompute_problems`).

The harness writes the outcome to diagnostics/metrics_integrity.json after the run, where the post-run check reads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlexp.summary import FINAL_MARK, KV, strip_timestamp

INTEGRITY_FILE = "diagnostics/metrics_integrity.json"
MetricsSource = Literal["final block", "metrics.json (written by the script)", "none"]
RECOMPUTABLE = {
    "accuracy": "classification",
    "acc": "classification",
    "error": "classification",
    "error_rate": "classification",
    "mae": "regression",
    "mse": "regression",
    "rmse": "regression",
}
REL_TOL = 1e-4  # printed values have 6 significant digits; a real disagreement is far larger


@dataclass
class MetricsReading:
    """What the harness records as the run's metrics, and what it found wrong on the way."""

    metrics: dict[str, float] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # non-finite / non-numeric values, as printed
    problems: list[str] = field(default_factory=list)
    source: MetricsSource = "none"


def final_blocks(lines: list[str]) -> list[dict[str, str]]:
    """Every `=== FINAL METRICS ===` block's `key: value` lines, in output order."""
    blocks = []
    for idx, line in enumerate(lines):
        if FINAL_MARK not in line:
            continue
        block: dict[str, str] = {}
        for follow in lines[idx + 1 :]:
            match = KV.match(strip_timestamp(follow))
            if not match:
                break
            block[match.group(1)] = match.group(2)
        blocks.append(block)
    return blocks


class FinalLineFilter:
    """Fed the output line by line, keeps the lines of final-metrics blocks (the marker and its `key: value`s)."""

    def __init__(self) -> None:
        self.inside = False

    def keep(self, line: str) -> bool:
        if FINAL_MARK in line:
            self.inside = True
        elif not (self.inside and KV.match(strip_timestamp(line))):
            self.inside = False
        return self.inside


def final_metric_lines(lines: list[str]) -> list[str]:
    """Only the lines of final-metrics blocks (what `final_blocks` needs), from a whole output."""
    keep = FinalLineFilter().keep
    return [line for line in lines if keep(line)]


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _same(a: float, b: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


def _script_json(path: Path) -> dict[str, object] | None:
    """The metrics.json a script wrote itself (read leniently: NaN and Infinity are accepted, then refused)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _conflicts(recorded: dict[str, str | object], other: dict[str, str | object], what: str) -> list[str]:
    out = []
    for key in sorted(set(recorded) & set(other)):
        a, b = _as_float(recorded[key]), _as_float(other[key])
        if a is None or b is None or not _same(a, b):
            out.append(f"{what} says {key}={other[key]} but the recorded final block says {key}={recorded[key]}")
    return out


def read_metrics(lines: list[str], script_metrics_path: Path) -> MetricsReading:
    """The run's metrics from its output lines and the script-written metrics.json (see the module docstring)."""
    blocks = final_blocks(lines)
    written = _script_json(script_metrics_path)
    reading = MetricsReading()
    recorded: dict[str, str | object]
    if blocks:
        recorded, reading.source = dict(blocks[0]), "final block"
        for n, later in enumerate(blocks[1:], start=2):
            reading.problems += _conflicts(recorded, dict(later), f"final metrics block {n} (printed later)")
        if written is not None:
            reading.problems += _conflicts(recorded, written, "metrics.json written by the script")
    elif written is not None:
        recorded, reading.source = written, "metrics.json (written by the script)"
    else:
        return reading
    for key, value in recorded.items():
        number = _as_float(value)
        if number is not None and math.isfinite(number):
            reading.metrics[key] = number
        else:
            reading.invalid[key] = str(value)
    if reading.invalid:
        shown = ", ".join(f"{k}={v}" for k, v in reading.invalid.items())
        reading.problems.append(f"non-finite or non-numeric final metric(s): {shown}")
    return reading


def recompute_metric(run_dir: str | Path, metric: str) -> float | None:
    """The metric recomputed by the harness from the run's predictions.parquet, for the metrics it knows
    (accuracy/error for classification, MAE/MSE/RMSE for regression); None when it cannot be recomputed."""
    name = metric.lower().rsplit("/", 1)[-1]
    base = next((k for k in RECOMPUTABLE if name == k or name.endswith("_" + k)), None)
    if base is None or name.startswith(("train", "val", "dev")):
        return None
    from mlexp.rundir import load_predictions

    try:
        loaded = load_predictions(Path(run_dir))
    except (OSError, ValueError):
        return None
    if loaded is None:
        return None
    df, spec = loaded
    if len(df) == 0:
        return None
    task = spec.task or ("classification" if df[spec.y_true].dtype == object else None)
    if task != RECOMPUTABLE[base]:
        return None
    truth, pred = df[spec.y_true], df[spec.y_pred]
    if task == "classification":
        acc = float((truth == pred).mean())  # a missing prediction counts as wrong
        return acc if base in ("accuracy", "acc") else 1.0 - acc
    err = (pred.astype(float) - truth.astype(float)).dropna()
    if err.empty:
        return None
    mse = float((err**2).mean())
    return {"mae": float(err.abs().mean()), "mse": mse, "rmse": math.sqrt(mse)}[base]


def disagrees(value: float, again: float) -> bool:
    """True when a reported value and the harness's recomputation differ beyond print rounding."""
    return abs(again - value) > REL_TOL * max(1.0, abs(value))


def recompute_problems(run_dir: Path, metrics: dict[str, float]) -> list[str]:
    """One problem per metric that disagrees with the value recomputed from predictions.parquet."""
    out = []
    for key, value in metrics.items():
        again = recompute_metric(run_dir, key)
        if again is not None and disagrees(value, again):
            out.append(f"{key}={value:.6g} reported, but the harness recomputes {again:.6g} from predictions.parquet")
    return out
