"""Early stopping (§15): within a run (patience) and across a series of configs (stop scaling up).

Within a run:
    stopper = Patience(patience=3, min_delta=1e-3, mode="min")
    for epoch ...:
        if stopper.update(eval_loss):      # True = stop now
            log.info(stopper.reason); break
    stopper.best, stopper.best_step        # restore the best checkpoint, not the last one

Across a series (configs ordered small → large, each run to completion first, §14):
    decision = series_should_stop([0.61, 0.70, 0.705], direction="max", baseline=0.10, noise=0.01)
    decision.stop, decision.reason
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Patience:
    """Stop when the monitored value has not improved by more than `min_delta` for `patience` updates.

    Also stops at once on a non-finite value (diverged). `mode` is "min" for losses, "max" for accuracies.
    """

    patience: int = 3
    min_delta: float = 0.0
    mode: Literal["min", "max"] = "min"
    best: float | None = None
    best_step: int | None = None
    bad_count: int = 0
    steps: int = 0
    should_stop: bool = False
    reason: str = ""
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError("patience must be at least 1")
        if self.mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        if self.min_delta < 0:
            raise ValueError("min_delta must be >= 0")

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def update(self, value: float, step: int | None = None) -> bool:
        """Feed one evaluation; returns True when training should stop."""
        self.steps += 1
        step = self.steps if step is None else step
        value = float(value)
        self.history.append(value)
        if not math.isfinite(value):
            self.should_stop, self.reason = True, f"value became {value} at step {step}: diverged"
            return True
        if self._improved(value):
            self.best, self.best_step, self.bad_count = value, step, 0
            return False
        self.bad_count += 1
        if self.bad_count >= self.patience:
            self.should_stop = True
            self.reason = (
                f"no improvement over {self.best:.6g} (step {self.best_step}) by more than {self.min_delta:g}"
                f" for {self.bad_count} evaluations"
            )
        return self.should_stop

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("best", "best_step", "bad_count", "steps", "should_stop", "reason")}


def overfitting(train: Sequence[float], evals: Sequence[float], *, window: int = 3) -> bool:
    """True when train loss fell while eval loss rose over the last `window` evaluations: stop at once (§15)."""
    if len(train) < window or len(evals) < window:
        return False
    t, e = list(train)[-window:], list(evals)[-window:]
    return t[-1] < t[0] and all(b > a for a, b in zip(e, e[1:], strict=False))


@dataclass
class SeriesDecision:
    stop: bool
    action: Literal["continue", "investigate", "diminishing_returns", "target_reached"]
    reason: str


def series_should_stop(
    values: Sequence[float],
    *,
    direction: Literal["max", "min"] = "max",
    baseline: float | None = None,
    noise: float = 0.0,
    target: float | None = None,
) -> SeriesDecision:
    """Decide whether to run the next (larger) config, given each finished config's metric in order.

    - latest config not better than the baseline (e.g. random chance) → stop and investigate the pipeline;
    - latest config worse than the one before by more than `noise` → stop and investigate;
    - latest config within `noise` of the one before → diminishing returns, consider stopping the series;
    - the target (e.g. the paper's number) already reached → larger configs are optional;
    - otherwise continue.
    """
    if direction not in ("max", "min"):
        raise ValueError("direction must be 'max' or 'min'")
    if not values:
        return SeriesDecision(False, "continue", "no finished config yet")
    sign = 1.0 if direction == "max" else -1.0
    last = float(values[-1])
    n = len(values)
    if not math.isfinite(last):
        return SeriesDecision(True, "investigate", f"config {n} produced {last}: investigate before scaling up")
    if baseline is not None and sign * (last - baseline) <= 0:
        return SeriesDecision(
            True, "investigate", f"config {n} ({last:.6g}) is not better than the baseline {baseline:.6g}:"
            " investigate the pipeline before config {n + 1}".replace("{n + 1}", str(n + 1))
        )  # fmt: skip
    if n >= 2:
        prev = float(values[-2])
        delta = sign * (last - prev)
        if delta < -noise:
            return SeriesDecision(
                True, "investigate", f"config {n} ({last:.6g}) is worse than config {n - 1} ({prev:.6g}) beyond"
                f" noise {noise:g}: stop and investigate"
            )  # fmt: skip
        if abs(delta) <= noise:
            return SeriesDecision(
                True, "diminishing_returns", f"config {n} ({last:.6g}) is within noise {noise:g} of config {n - 1}"
                f" ({prev:.6g}): diminishing returns, consider stopping the series"
            )  # fmt: skip
    if target is not None and sign * (last - target) >= 0:
        return SeriesDecision(
            True, "target_reached", f"config {n} ({last:.6g}) already reaches the target {target:.6g}:"
            " larger configs are optional"
        )  # fmt: skip
    return SeriesDecision(False, "continue", f"config {n} ({last:.6g}) improves: continue with the next config")
