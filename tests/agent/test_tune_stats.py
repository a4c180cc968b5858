"""The noise-aware keep/discard rule of `replicate tune`, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from agent.tune.stats import Noise, decide, diff_ci, pooled_noise, threshold
from agent.tune.target import Knob, parse_duration


def test_pooled_noise_by_hand() -> None:
    # groups [1, 3] (ss 2) and [2, 4, 6] (ss 8): df 1 + 2 = 3, s = sqrt(10 / 3)
    noise = pooled_noise([[1, 3], [2, 4, 6], [9.0]])  # a single value adds nothing
    assert noise.df == 3 and noise.std == pytest.approx(math.sqrt(10 / 3))
    assert not pooled_noise([[1.0], [2.0]]).known


def test_threshold_by_hand() -> None:
    # t_{0.95, 4} = 2.131847; sqrt(1/1 + 1/3) = 1.154701
    assert threshold(Noise(0.1, 4), 1, 3, 0.95) == pytest.approx(2.131847 * 0.1 * 1.154701, rel=1e-5)
    assert threshold(Noise(0.1, 4), 1, 3, 0.95, min_delta=0.5) == 0.5
    assert threshold(Noise(float("nan"), 0), 1, 3, 0.95) == math.inf  # unknown noise: nothing is kept


@pytest.mark.parametrize(
    ("trial", "verdict"),
    [
        ([1.0], "keep"),  # gain 0.3 > 0.2462
        ([1.1], "more_seeds"),  # gain 0.2 < 0.2462 now, but > 0.1628 (the threshold at 4 seeds)
        ([1.25], "discard"),  # gain 0.05: more seeds could not make it significant
        ([1.4], "discard"),  # worse
        ([1.1, 1.1, 1.1, 1.1], "keep"),  # the close call after more seeds: 0.2 > 0.1628
    ],
)
def test_decide_min_metric(trial: list[float], verdict: str) -> None:
    d = decide(trial, [1.3, 1.3, 1.3], Noise(0.1, 4), direction="min", confidence=0.95, max_seeds=4)
    assert d.verdict == verdict, d.reason
    assert d.improvement == pytest.approx(1.3 - sum(trial) / len(trial))


def test_decide_max_metric() -> None:
    d = decide([0.95], [0.90, 0.90], Noise(0.01, 10), direction="max")
    assert d.verdict == "keep" and d.improvement == pytest.approx(0.05)
    assert decide([0.85], [0.90, 0.90], Noise(0.01, 10), direction="max").verdict == "discard"


def test_welch_interval_by_hand() -> None:
    # means 2 and 5, variances 1 and 1, n 3 and 3: se = sqrt(2/3), df = 4, t_{0.975,4} = 2.776445
    d = diff_ci([1, 2, 3], [4, 5, 6])
    half = 2.776445 * math.sqrt(2 / 3)
    assert d.diff == pytest.approx(-3) and d.low == pytest.approx(-3 - half, rel=1e-5)
    assert d.high == pytest.approx(-3 + half, rel=1e-5)
    assert math.isinf(diff_ci([1.0], [2.0, 3.0]).low)


def test_knob_ranges_and_durations() -> None:
    lr = Knob(type="float", low=1e-4, high=1e-2, log=True)
    assert lr.problem(1e-3) is None and "outside" in lr.problem(0.5) and "not a finite" in lr.problem("x")
    heads = Knob(type="categorical", choices=[1, 2, 4])
    assert heads.problem(4) is None and "not one of" in heads.problem(3)
    assert "not an integer" in Knob(type="int", low=1, high=8).problem(2.5)
    with pytest.raises(ValueError):
        Knob(type="float", low=0.0, high=1.0, log=True)
    assert parse_duration("5m") == 300 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert parse_duration("45") == 45
