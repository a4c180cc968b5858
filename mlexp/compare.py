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

The tamper guard lives in `mlexp.guard` (`record_guard` / `verify_guard`); `write_guard` and `check_guard` are
re-exported here for callers that import them from this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field
from scipy import stats

from mlexp.guard import check_guard, write_guard
from mlexp.metrics import disagrees, recompute_metric

__all__ = ["Verdict", "check_guard", "compare", "compare_one", "gap_test", "recompute_metric", "summary_line",
           "t_interval", "worst_first", "write_guard"]  # fmt: skip

VerdictKind = Literal["replicated", "better", "diverged", "not run"]
TestName = Literal["welch", "one-sample t", "prediction t", "known-variance t", "none"]

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
    test: TestName = "none"
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


def _welch_df(s2n: float, n: int, v_paper: float, n_paper: int) -> float:
    """Welch-Satterthwaite degrees of freedom (scipy's from-stats test does not return them)."""
    return (s2n + v_paper) ** 2 / ((s2n**2) / (n - 1) + (v_paper**2) / (n_paper - 1))


def _paper_spread_test(values: Sequence[float], reported: float, reported_std: float,
                       reported_n: int | None) -> tuple[TestName, float, float, float]:  # fmt: skip
    """The tests that use the paper's printed spread (module docstring, rule 3, first three cases)."""
    n = len(values)
    mean, std, _, _ = t_interval(values)
    s2n = (std**2 / n) if std is not None else 0.0
    sp2 = reported_std**2
    if reported_n is not None and reported_n >= 2 and n >= 2 and std is not None:
        result = stats.ttest_ind_from_stats(mean, std, n, reported, reported_std, reported_n, equal_var=False)
        return "welch", float(result.statistic), _welch_df(s2n, n, sp2 / reported_n, reported_n), float(result.pvalue)
    if reported_n is not None and reported_n >= 2:
        se2, df, name = sp2 * (1 + 1 / reported_n), float(reported_n - 1), "prediction t"
    else:
        se2 = s2n + sp2
        df = se2**2 / (s2n**2 / (n - 1)) if (n >= 2 and s2n > 0) else math.inf
        name = "known-variance t"
    t_stat = (mean - reported) / math.sqrt(se2)
    return name, t_stat, df, _two_sided_p(t_stat, df)  # type: ignore[return-value]


def gap_test(
    values: Sequence[float],
    reported: float,
    reported_std: float | None = None,
    reported_n: int | None = None,
) -> tuple[TestName, float | None, float | None, float | None]:
    """Test H0 "our runs and the paper measure the same mean". Returns (test name, statistic, df, two-sided p).

    See the module docstring for which test applies when. (None, None, None) for the numbers means no test is
    possible: one run and no printed spread.
    """
    if reported_std is not None and reported_std > 0:
        return _paper_spread_test(values, reported, reported_std, reported_n)
    n = len(values)
    if n < 2:
        return "none", None, None, None
    mean, std, _, _ = t_interval(values)
    gap = mean - reported
    if not std:
        # No seed-to-seed variation at all: the gap is systematic (or exactly zero).
        t_stat = 0.0 if gap == 0 else math.copysign(math.inf, gap)
        return "one-sample t", t_stat, float(n - 1), 1.0 if gap == 0 else 0.0
    result = stats.ttest_1samp(values, reported)
    return "one-sample t", float(result.statistic), float(n - 1), float(result.pvalue)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _target_fields(target: Any) -> dict[str, Any]:
    """The target's fields every Verdict carries, typed."""

    def number(name: str, kind: type) -> Any:
        value = _get(target, name)
        return None if value is None else kind(value)

    return dict(
        claim_id=str(_get(target, "claim_id")), metric=str(_get(target, "metric")), reported=number("reported", float),
        reported_std=number("reported_std", float), reported_n=number("reported_n", int),
        direction=_get(target, "direction", "max") or "max", tolerance=float(_get(target, "tolerance", 0.0) or 0.0),
        seeds_planned=_get(target, "seeds"),
    )  # fmt: skip


@dataclass
class _Measured:
    """The runs of one target sorted into used (with their values), failed and lacking the metric."""

    values: list[float] = field(default_factory=list)
    used: list[Any] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def not_run_reason(self, metric: str) -> str:
        if self.failed:
            return "no completed run: " + "; ".join(self.failed)
        if self.missing:
            return f"metric {metric!r} was not measured: " + "; ".join(self.missing)
        return "no run was made for this claim"


def _collect(runs: Sequence[Any], claim_id: str, metric: str) -> _Measured:
    out = _Measured()
    seen: set[str] = set()
    for run in runs:
        identity = str(_get(run, "identity", "") or id(run))
        if identity in seen:  # a skipped rerun returns the earlier record: count it once
            continue
        seen.add(identity)
        if _is_smoke(run):
            continue
        if _get(run, "status") != "completed":
            out.failed.append(f"{_get(run, 'name', identity)} ({_get(run, 'status')}, {_get(run, 'exit_reason')})")
            continue
        metrics = _get(run, "metrics", {}) or {}
        value = _metric_value(metrics, claim_id, metric)
        if value is None:  # a value the harness refused (NaN, "oops") is a broken run, not a missing one
            value = _metric_value(_get(run, "invalid_metrics", {}) or {}, claim_id, metric)
        if value is None:
            out.missing.append(f"{_get(run, 'name', identity)} has {sorted(metrics.keys())}")
            continue
        out.values.append(value)
        out.used.append(run)
    return out


def _recompute_warnings(measured: _Measured, metric: str) -> list[str]:
    """The printed metric is what the script claims; where the harness can recompute it from the saved
    predictions, a disagreement is flagged (the value is still the one reported, so nothing is hidden)."""
    warnings = []
    for run, value in zip(measured.used, measured.values, strict=True):
        again = recompute_metric(str(_get(run, "run_dir", "")), metric) if math.isfinite(value) else None
        if again is not None and disagrees(value, again):
            warnings.append(
                f"{_get(run, 'name', '')} ({_get(run, 'identity', '')}): reported {metric}={value:.6g} but the "
                f"harness recomputes {again:.6g} from predictions.parquet"
            )
    return warnings


def _decide(base: dict[str, Any], values: list[float], *, alpha: float, confidence: float) -> dict[str, Any]:
    """Rules 2-4 of the module docstring on finite values: the statistics, the verdict and its reason."""
    reported, tolerance, direction = base["reported"], base["tolerance"], base["direction"]
    mean, std, lo, hi = t_interval(values, confidence)
    gap = mean - reported
    out: dict[str, Any] = dict(measured_mean=mean, measured_std=std, ci_low=lo, ci_high=hi, gap=gap)
    if abs(gap) <= tolerance:
        reason = f"|gap| {abs(gap):.4g} is within the tolerance {tolerance:.4g}"
        return {**out, "verdict": "replicated", "reason": reason}
    test, t_stat, df, p = gap_test(values, reported, base["reported_std"], base["reported_n"])
    out.update(test=test, statistic=t_stat, df=df, p_value=p)
    test_text = "" if p is None else f"{test}, t={_fmt(t_stat, 3)}, df={_fmt(df, 3)}, p={p:.3g}"
    if p is not None and p >= alpha:
        reason = (f"gap {gap:+.4g} exceeds the tolerance {tolerance:.4g} but is within the noise ({test_text} "
                  f">= {alpha}); more seeds would tell them apart")  # fmt: skip
        return {**out, "verdict": "replicated", "reason": reason}
    good = gap > 0 if direction == "max" else gap < 0
    if p is None:
        why = (
            f"gap {gap:+.4g} exceeds the tolerance {tolerance:.4g}; a single run and no reported spread, so "
            "no significance test was possible"
        )
    else:
        why = f"gap {gap:+.4g} exceeds the tolerance {tolerance:.4g} and is significant ({test_text} < {alpha})"
    return {**out, "verdict": "better" if good else "diverged", "reason": why}


def compare_one(
    target: Any,
    runs: Sequence[Any],
    *,
    alpha: float = 0.05,
    confidence: float = 0.95,
    not_run_reason: str | None = None,
) -> Verdict:
    """The verdict for one target against the runs that measured it (rules in the module docstring)."""
    base = _target_fields(target)
    not_run_reason = not_run_reason or _get(target, "not_run_reason")
    if not_run_reason:
        return Verdict(**base, verdict="not run", reason=str(not_run_reason))
    if base["reported"] is None:
        return Verdict(**base, verdict="not run", reason="the target has no reported value to compare against")
    measured = _collect(runs, base["claim_id"], base["metric"])
    if not measured.values:
        return Verdict(**base, verdict="not run", reason=measured.not_run_reason(base["metric"]))
    run_info = dict(
        values=measured.values, runs=[str(_get(r, "identity", "")) for r in measured.used],
        run_dirs=[str(_get(r, "run_dir", "")) for r in measured.used], n=len(measured.values),
        warnings=_recompute_warnings(measured, base["metric"]),
    )  # fmt: skip
    broken = sum(not math.isfinite(v) for v in measured.values)
    if broken:
        reason = (f"measured {base['metric']} is not a finite number in {broken} of {len(measured.values)} runs "
                  "(NaN/inf: the run is broken)")  # fmt: skip
        return Verdict(**base, **run_info, verdict="diverged", reason=reason)
    return Verdict(**base, **run_info, **_decide(base, measured.values, alpha=alpha, confidence=confidence))


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
