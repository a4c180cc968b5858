"""The fixed comparison harness: measured metrics from finished runs against the numbers a paper reports.

This module is part of the harness, never generated. It reads only what the harness itself measured
(`RunRecord.metrics`, parsed from the run's final `key: value` block into metrics.json) and the targets the
researcher approved (reported value, its spread, a tolerance). It never looks at anything a generated script wrote
about the paper, so a script cannot "replicate" a result by printing the paper's number under another name.

Verdict rules (one claim, direction-aware; `alpha` = 0.05 and a 95 % t-interval by default):

1. No usable measurement (no completed non-smoke run carries the metric, or the target says why it was not run)
   -> `not run`, with the reason.
2. gap = measured mean - reported. If |gap| <= tolerance -> `replicated` ("within tolerance").
3. Otherwise test whether the gap is larger than the noise:
   - paper std and paper repeats n_p >= 2 known, our n >= 2: Welch's t-test, se^2 = s^2/n + sp^2/n_p,
     Welch-Satterthwaite df;
   - paper std and n_p known, our n == 1: our value as one new draw from the paper's distribution,
     se = sp * sqrt(1 + 1/n_p), df = n_p - 1;
   - paper std known, n_p unknown: the paper's std taken as the uncertainty of its number (known variance),
     se^2 = s^2/n + sp^2, Satterthwaite df = se^4 / ((s^2/n)^2 / (n-1)) (infinite when n == 1 or s == 0);
   - no paper std, our n >= 2: one-sample t-test against the reported value, se = s/sqrt(n), df = n - 1
     (s == 0 gives p = 0: with no seed noise any gap beyond tolerance is systematic);
   - no paper std, n == 1: no test is possible (p = None); the verdict rests on the tolerance alone.
   Two-sided p-value. p >= alpha -> `replicated` ("consistent with the spread"; the gap is within noise).
4. Outside tolerance and significant (or untestable): `better` when the gap points the good way for the metric's
   direction, else `diverged`.

A non-finite measured value (NaN, inf) is a broken run, not a missing one: the claim is `diverged`.
Where the harness can recompute the metric from the run's predictions.parquet (accuracy/error for classification,
MAE/MSE/RMSE for regression), a printed value that disagrees is kept but flagged in `Verdict.warnings`.

The tamper guard (`harness_fingerprint`, `data_fingerprint`, `fingerprint_changes`) records sha256 hashes of the
harness's own source files and of the data files, so a later check can flag any change made between the moment a
spec was approved and the moment its runs are compared.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from scipy import stats

VerdictKind = Literal["replicated", "better", "diverged", "not run"]

# Metric keys a generated script might use to smuggle the paper's number into metrics.json. They are never read
# as measurements, whatever the target's metric is called.
_PAPER_KEY_PREFIXES = ("reported", "paper_", "claimed")


class Verdict(BaseModel):
    """One claim's comparison: what the paper reported, what we measured across seeds, and the decision."""

    claim_id: str
    metric: str
    reported: float | None
    reported_std: float | None = None
    reported_n: int | None = None
    direction: Literal["max", "min"] = "max"
    tolerance: float = 0.0
    measured_mean: float | None = None
    measured_std: float | None = None  # sample std (ddof=1); None with fewer than 2 values
    n: int = 0
    ci_low: float | None = None  # t-interval on our mean; None with fewer than 2 values
    ci_high: float | None = None
    gap: float | None = None  # measured_mean - reported, in the claim's unit
    p_value: float | None = None  # two-sided; None when no test was possible or needed
    test: str = "none"  # "welch", "one-sample t", "prediction t", "known-variance t", "none"
    statistic: float | None = None
    df: float | None = None
    verdict: VerdictKind
    reason: str
    values: list[float] = Field(default_factory=list)  # one measured value per run, in run order
    runs: list[str] = Field(default_factory=list)  # run identities the values came from
    run_dirs: list[str] = Field(default_factory=list)
    seeds_planned: int | None = None
    warnings: list[str] = Field(default_factory=list)  # e.g. a metric that disagrees with the saved predictions

    @property
    def shortfall(self) -> float:
        """How far the measurement falls short of the paper in the metric's good direction (negative = better)."""
        if self.gap is None or not math.isfinite(self.gap):
            return math.inf
        return -self.gap if self.direction == "max" else self.gap


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Duck-typed field access: a pydantic Target, a dataclass or a plain dict all work."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _is_smoke(run: Any) -> bool:
    """A smoke run's numbers are not measurements: RunRecord.smoke, or the resolved config's `smoke` key."""
    config = _get(run, "config", None) or {}
    flags = [_get(run, "smoke", False), config.get("smoke", False) if isinstance(config, Mapping) else False]
    return any(str(flag).lower() in ("1", "true", "yes") for flag in flags)


def _metric_value(metrics: Mapping[str, Any], claim_id: str, metric: str) -> float | None:
    """The measured value for a target: `<claim_id>/<metric>` first (several claims in one run), then `<metric>`."""
    for key in (f"{claim_id}/{metric}", metric):
        if key.lower().startswith(_PAPER_KEY_PREFIXES):
            continue
        if key in metrics:
            try:
                return float(metrics[key])
            except (TypeError, ValueError):
                return math.nan  # a non-numeric "measurement" is a broken run, not a missing one
    return None


def t_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float | None, float | None, float | None]:
    """Mean, sample std and the two-sided t confidence interval of the mean: mean +- t_{(1+c)/2, n-1} * s/sqrt(n)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None, None
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    std = math.sqrt(var)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def _two_sided_p(t_stat: float, df: float) -> float:
    if math.isinf(t_stat):
        return 0.0
    if math.isinf(df):
        return float(2 * stats.norm.sf(abs(t_stat)))
    return float(2 * stats.t.sf(abs(t_stat), df))


def gap_test(
    values: Sequence[float],
    reported: float,
    reported_std: float | None = None,
    reported_n: int | None = None,
) -> tuple[str, float | None, float | None, float | None]:
    """Test H0 "our runs and the paper measure the same mean". Returns (test name, statistic, df, two-sided p).

    See the module docstring for which test applies when. (None, None, None) for the numbers means no test is
    possible: one run and no printed spread.
    """
    n = len(values)
    mean, std, _, _ = t_interval(values)
    gap = mean - reported
    s2n = (std**2 / n) if std is not None else 0.0
    if reported_std is not None and reported_std > 0:
        sp2 = reported_std**2
        if reported_n is not None and reported_n >= 2:
            if n >= 2:
                v_paper = sp2 / reported_n
                se2 = s2n + v_paper
                df = se2**2 / ((s2n**2) / (n - 1) + (v_paper**2) / (reported_n - 1))
                name = "welch"
            else:
                se2 = sp2 * (1 + 1 / reported_n)
                df = float(reported_n - 1)
                name = "prediction t"
        else:
            se2 = s2n + sp2
            df = se2**2 / (s2n**2 / (n - 1)) if (n >= 2 and s2n > 0) else math.inf
            name = "known-variance t"
        t_stat = gap / math.sqrt(se2)
        return name, t_stat, df, _two_sided_p(t_stat, df)
    if n < 2:
        return "none", None, None, None
    if s2n == 0:
        # No seed-to-seed variation at all: the gap is systematic (or exactly zero).
        t_stat = 0.0 if gap == 0 else math.copysign(math.inf, gap)
        return "one-sample t", t_stat, float(n - 1), 1.0 if gap == 0 else 0.0
    t_stat = gap / math.sqrt(s2n)
    df = float(n - 1)
    return "one-sample t", t_stat, df, _two_sided_p(t_stat, df)


_RECOMPUTABLE = {
    "accuracy": "classification",
    "acc": "classification",
    "error": "classification",
    "error_rate": "classification",
    "mae": "regression",
    "mse": "regression",
    "rmse": "regression",
}


def recompute_metric(run_dir: str | Path, metric: str) -> float | None:
    """The metric recomputed by the harness from the run's predictions.parquet, for the metrics it knows
    (accuracy/error for classification, MAE/MSE/RMSE for regression); None when it cannot be recomputed."""
    name = metric.lower().rsplit("/", 1)[-1]
    base = next((k for k in _RECOMPUTABLE if name == k or name.endswith("_" + k)), None)
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
    if task != _RECOMPUTABLE[base]:
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


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def compare_one(
    target: Any,
    runs: Sequence[Any],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    not_run_reason: str | None = None,
) -> Verdict:
    """The verdict for one target against the runs that measured it (rules in the module docstring)."""
    claim_id = str(_get(target, "claim_id"))
    metric = str(_get(target, "metric"))
    direction = _get(target, "direction", "max") or "max"
    tolerance = float(_get(target, "tolerance", 0.0) or 0.0)
    reported = _get(target, "reported")
    reported = None if reported is None else float(reported)
    reported_std = _get(target, "reported_std")
    reported_std = None if reported_std is None else float(reported_std)
    reported_n = _get(target, "reported_n")
    reported_n = None if reported_n is None else int(reported_n)
    base = dict(
        claim_id=claim_id,
        metric=metric,
        reported=reported,
        reported_std=reported_std,
        reported_n=reported_n,
        direction=direction,
        tolerance=tolerance,
        seeds_planned=_get(target, "seeds"),
    )
    not_run_reason = not_run_reason or _get(target, "not_run_reason")
    if not_run_reason:
        return Verdict(**base, verdict="not run", reason=str(not_run_reason))
    if reported is None:
        return Verdict(**base, verdict="not run", reason="the target has no reported value to compare against")

    values: list[float] = []
    used: list[Any] = []
    failed: list[str] = []
    missing: list[str] = []
    seen: set[str] = set()
    for run in runs:
        identity = str(_get(run, "identity", "") or id(run))
        if identity in seen:  # a skipped rerun returns the earlier record: count it once
            continue
        seen.add(identity)
        if _is_smoke(run):
            continue
        if _get(run, "status") != "completed":
            failed.append(f"{_get(run, 'name', identity)} ({_get(run, 'status')}, {_get(run, 'exit_reason')})")
            continue
        value = _metric_value(_get(run, "metrics", {}) or {}, claim_id, metric)
        if value is None:
            missing.append(f"{_get(run, 'name', identity)} has {sorted((_get(run, 'metrics', {}) or {}).keys())}")
            continue
        values.append(value)
        used.append(run)

    if not values:
        if failed:
            reason = "no completed run: " + "; ".join(failed)
        elif missing:
            reason = f"metric {metric!r} was not measured: " + "; ".join(missing)
        else:
            reason = "no run was made for this claim"
        return Verdict(**base, verdict="not run", reason=reason)

    # The printed metric is what the script claims; where the harness can recompute it from the saved
    # predictions, a disagreement is flagged (the value is still the one reported, so nothing is hidden).
    warnings = []
    for run, value in zip(used, values, strict=True):
        again = recompute_metric(str(_get(run, "run_dir", "")), metric) if math.isfinite(value) else None
        if again is not None and abs(again - value) > 1e-4 * max(1.0, abs(value)):
            warnings.append(
                f"{_get(run, 'name', '')} ({_get(run, 'identity', '')}): reported {metric}={value:.6g} but the "
                f"harness recomputes {again:.6g} from predictions.parquet"
            )
    run_info = dict(
        values=values,
        runs=[str(_get(r, "identity", "")) for r in used],
        run_dirs=[str(_get(r, "run_dir", "")) for r in used],
        n=len(values),
        warnings=warnings,
    )
    if not all(math.isfinite(v) for v in values):
        return Verdict(
            **base,
            **run_info,
            verdict="diverged",
            reason=f"measured {metric} is not a finite number in {sum(not math.isfinite(v) for v in values)} "
            f"of {len(values)} runs (NaN/inf: the run is broken)",
        )

    mean, std, lo, hi = t_interval(values, confidence)
    gap = mean - reported
    stat_info = dict(measured_mean=mean, measured_std=std, ci_low=lo, ci_high=hi, gap=gap)
    if abs(gap) <= tolerance:
        return Verdict(
            **base,
            **run_info,
            **stat_info,
            verdict="replicated",
            reason=f"|gap| {abs(gap):.4g} is within the tolerance {tolerance:.4g}",
        )
    test, t_stat, df, p = gap_test(values, reported, reported_std, reported_n)
    test_info = dict(test=test, statistic=t_stat, df=df, p_value=p)
    test_text = "" if p is None else f"{test}, t={_fmt(t_stat, 3)}, df={_fmt(df, 3)}, p={p:.3g}"
    if p is not None and p >= alpha:
        return Verdict(
            **base,
            **run_info,
            **stat_info,
            **test_info,
            verdict="replicated",
            reason=f"gap {gap:+.4g} exceeds the tolerance {tolerance:.4g} but is within the noise ({test_text} "
            f">= {alpha}); more seeds would tell them apart",
        )
    good = gap > 0 if direction == "max" else gap < 0
    kind: VerdictKind = "better" if good else "diverged"
    if p is None:
        why = (
            f"gap {gap:+.4g} exceeds the tolerance {tolerance:.4g}; a single run and no reported spread, so "
            "no significance test was possible"
        )
    else:
        why = f"gap {gap:+.4g} exceeds the tolerance {tolerance:.4g} and is significant ({test_text} < {alpha})"
    return Verdict(**base, **run_info, **stat_info, **test_info, verdict=kind, reason=why)


def compare(
    targets: Iterable[Any],
    runs: Sequence[Any] | Mapping[str, Sequence[Any]],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    not_run: Mapping[str, str] | None = None,
) -> list[Verdict]:
    """One `Verdict` per target, in the targets' order (use `worst_first` to sort for display).

    `runs` is either one list of RunRecords (every target looks in every run for `<claim_id>/<metric>` or
    `<metric>`), or a mapping claim_id -> its own runs when different claims were measured by different configs.
    `not_run` maps claim ids to the reason they were not run (data unavailable, over budget, ...).
    """
    not_run = dict(not_run or {})
    verdicts = []
    for target in targets:
        claim_id = str(_get(target, "claim_id"))
        own_runs = runs.get(claim_id, []) if isinstance(runs, Mapping) else runs
        verdicts.append(
            compare_one(target, own_runs, alpha=alpha, confidence=confidence, not_run_reason=not_run.get(claim_id))
        )
    return verdicts


_ORDER = {"diverged": 0, "not run": 1, "better": 2, "replicated": 3}


def worst_first(verdicts: Iterable[Verdict]) -> list[Verdict]:
    """Diverged (largest shortfall first), then not run, then better (suspicious: check for leaks), then replicated."""

    def key(v: Verdict) -> tuple[int, float]:
        shortfall = v.shortfall
        return (_ORDER[v.verdict], -shortfall if math.isfinite(shortfall) else -math.inf)

    return sorted(verdicts, key=key)


def summary_line(verdicts: Sequence[Verdict]) -> str:
    """E.g. "1 of 3 claims replicated (1 diverged, 1 not run)"."""
    counts = {kind: sum(v.verdict == kind for v in verdicts) for kind in _ORDER}
    rest = [f"{counts[k]} {k}" for k in ("better", "diverged", "not run") if counts[k]]
    noun = "claim" if len(verdicts) == 1 else "claims"
    line = f"{counts['replicated']} of {len(verdicts)} {noun} replicated"
    return line + (f" ({', '.join(rest)})" if rest else "")


# --- tamper guard ---------------------------------------------------------------------------------------------

_HARNESS_DIR = Path(__file__).resolve().parent


def hash_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def harness_fingerprint(root: str | Path | None = None) -> dict[str, str]:
    """sha256 of every source file of the harness (the `mlexp` package), keyed "mlexp/<relative path>"."""
    root = Path(root) if root is not None else _HARNESS_DIR
    out = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        out[f"{root.name}/{path.relative_to(root).as_posix()}"] = hash_file(path)
    return out


def data_fingerprint(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of data files; a directory contributes every file under it (hidden files skipped), keyed by path."""
    out = {}
    for item in paths:
        item = Path(item)
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if any(part.startswith(".") for part in path.relative_to(item).parts):
                    continue
                out[str(path)] = hash_file(path)
        elif item.is_file():
            out[str(item)] = hash_file(item)
        else:
            out[str(item)] = "missing"
    return out


def fingerprint_changes(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Human-readable list of what changed between two fingerprints: modified, removed and added files."""
    problems = []
    for name in sorted(set(recorded) | set(current)):
        if name not in current:
            problems.append(f"{name}: removed since it was recorded")
        elif name not in recorded:
            problems.append(f"{name}: added since the fingerprint was recorded")
        elif recorded[name] != current[name]:
            problems.append(f"{name}: content changed (sha256 {recorded[name][:12]} -> {current[name][:12]})")
    return problems


def tamper_check(
    recorded_harness: Mapping[str, str] | None = None,
    recorded_data: Mapping[str, str] | None = None,
    *,
    data_paths: Iterable[str | Path] | None = None,
) -> list[str]:
    """Compare recorded fingerprints with the files as they are now; an empty list means nothing changed.

    `data_paths` are the files/directories the data fingerprint was taken over (so files added to a data
    directory are flagged too); by default the recorded file names themselves are re-hashed.
    """
    problems = []
    if recorded_harness is not None:
        problems += [f"harness {p}" for p in fingerprint_changes(recorded_harness, harness_fingerprint())]
    if recorded_data is not None:
        current = data_fingerprint(list(data_paths) if data_paths is not None else list(recorded_data))
        problems += [f"data {p}" for p in fingerprint_changes(recorded_data, current)]
    return problems


def write_guard(path: str | Path, data_paths: Iterable[str | Path] = ()) -> dict[str, Any]:
    """Record the harness and data fingerprints in `path` (JSON, written atomically) before runs start."""
    data_paths = [str(Path(p).resolve()) for p in data_paths if p]
    guard = {
        "harness": harness_fingerprint(),
        "data_paths": data_paths,
        "data": data_fingerprint(data_paths),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(guard, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return guard


def check_guard(path: str | Path) -> list[str]:
    """What changed since `write_guard(path, ...)`: harness source files and data files. [] when nothing did;
    one problem line when the guard file itself is missing or unreadable (the check could not be made)."""
    try:
        guard = json.loads(Path(path).read_text(encoding="utf-8"))
        return tamper_check(guard["harness"], guard["data"], data_paths=guard.get("data_paths") or None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"tamper guard {path} cannot be read ({type(exc).__name__}: {exc}): harness integrity not verified"]
