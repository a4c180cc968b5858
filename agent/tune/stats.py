"""Noise-aware keep/discard for `replicate tune`.

A tuning run that keeps every change that happened to score better keeps noise. The baseline is therefore run on
several seeds first; the spread of the metric across seeds (pooled over every configuration that has more than one
seed) is the noise floor. A trial is kept only when its improvement over the incumbent is larger than what that noise
could produce at the chosen confidence: a one-sided Welch-style test with the pooled seed standard deviation,

    threshold = t_{confidence, df} * s_noise * sqrt(1/n_trial + 1/n_incumbent)

A trial whose improvement is positive but below the threshold is a close call: it gets more seeds (which shrinks the
threshold) until it clears it, falls back, or reaches the seed cap. An A/B comparison of two arms reports the
difference of means with a Welch confidence interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from scipy import stats


@dataclass(frozen=True)
class Noise:
    """Pooled seed-to-seed standard deviation of the metric and its degrees of freedom."""

    std: float
    df: int

    @property
    def known(self) -> bool:
        return self.df > 0


def pooled_noise(groups: Sequence[Sequence[float]]) -> Noise:
    """Pooled within-group standard deviation over all groups of >= 2 finite values (one group = one config)."""
    ss, df = 0.0, 0
    for values in groups:
        vals = [v for v in values if math.isfinite(v)]
        if len(vals) >= 2:
            mean = statistics.fmean(vals)
            ss += sum((v - mean) ** 2 for v in vals)
            df += len(vals) - 1
    return Noise(std=math.sqrt(ss / df) if df else float("nan"), df=df)


Keep = Literal["keep", "discard", "more_seeds"]


@dataclass(frozen=True)
class Decision:
    verdict: Keep
    improvement: float  # positive = better than the incumbent, in metric units
    threshold: float  # the improvement needed at this confidence with these seed counts
    reason: str


def improvement(trial_mean: float, incumbent_mean: float, direction: Literal["min", "max"]) -> float:
    """How much better the trial is than the incumbent (positive = better) for a 'min' or 'max' metric."""
    return incumbent_mean - trial_mean if direction == "min" else trial_mean - incumbent_mean


def threshold(noise: Noise, n_trial: int, n_incumbent: int, confidence: float, min_delta: float = 0.0) -> float:
    """The improvement that seed noise alone would exceed with probability 1 - confidence (one-sided)."""
    if not noise.known:
        return math.inf
    t = float(stats.t.ppf(confidence, noise.df))
    return max(t * noise.std * math.sqrt(1.0 / n_trial + 1.0 / n_incumbent), min_delta)


def decide(
    trial: Sequence[float],
    incumbent: Sequence[float],
    noise: Noise,
    *,
    direction: Literal["min", "max"],
    confidence: float = 0.95,
    max_seeds: int = 4,
    min_delta: float = 0.0,
) -> Decision:
    """Keep, discard, or ask for more seeds (a close call that more seeds could still settle)."""
    if not trial:
        return Decision("discard", math.nan, math.nan, "no metric values")
    gain = improvement(statistics.fmean(trial), statistics.fmean(incumbent), direction)
    need = threshold(noise, len(trial), len(incumbent), confidence, min_delta)
    conf = f"{confidence:.0%}"
    if gain > need:
        return Decision("keep", gain, need, f"better by {gain:.4g} > noise threshold {need:.4g} at {conf}")
    if gain > 0 and len(trial) < max_seeds:
        # Would the threshold at the seed cap be cleared by this gain? Only then are more seeds worth their cost.
        at_cap = threshold(noise, max_seeds, len(incumbent), confidence, min_delta)
        if gain > at_cap:
            return Decision("more_seeds", gain, need, f"close call: better by {gain:.4g}, threshold {need:.4g}")
    if gain > 0:
        return Decision("discard", gain, need, f"better by {gain:.4g}, within noise (threshold {need:.4g} at {conf})")
    return Decision("discard", gain, need, f"not better ({gain:+.4g})")


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with a two-sided Welch confidence interval."""

    diff: float
    low: float
    high: float
    confidence: float
    n_a: int
    n_b: int

    def describe(self, unit: str = "") -> str:
        ci = f"{self.confidence:.0%} CI {self.low:+.4g} to {self.high:+.4g}"
        return f"{self.diff:+.4g}{unit} ({ci}; n={self.n_a}/{self.n_b})"


def diff_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Welch's t interval for mean(a) - mean(b) (scipy.stats.ttest_ind, unequal variances); infinite bounds when
    either arm has fewer than two values, a point when neither arm varies."""
    a = [v for v in a if math.isfinite(v)]
    b = [v for v in b if math.isfinite(v)]
    if not a or not b:
        return Difference(math.nan, math.nan, math.nan, confidence, len(a), len(b))
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, -math.inf, math.inf, confidence, len(a), len(b))
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        return Difference(diff, diff, diff, confidence, len(a), len(b))
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return Difference(diff, float(interval.low), float(interval.high), confidence, len(a), len(b))


@dataclass
class Incumbent:
    """The best configuration so far: its code (a commit of the work repo), its config and its measured values."""

    commit: str
    config: dict[str, Any]
    values: list[float] = field(default_factory=list)
    trial: int = 0
