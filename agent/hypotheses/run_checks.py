"""Checklist: what the runs themselves show. Silent failures (practices §13) found in the generated code,
the resolved config and the logs; failed runs and post-run-check problems; training curves still improving or
turning NaN; results too good to trust (§10); printed metrics that disagree with the saved predictions.
agent.hypotheses.checklist runs these with the other checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.hypotheses.config_keys import TRAINING_LENGTH, canonical, num
from agent.hypotheses.inputs import completed, resolved_config, toward
from agent.hypotheses.model import Ablation, Hypothesis
from agent.runs import Runs, code_text, log_text, read_curves, run_list
from agent.spec import Spec
from mlexp.compare import Verdict
from mlexp.record import RunRecord
from retrieval.models import Paper

SILENT_PATTERNS: list[tuple[str, str, re.Pattern[str], str, str]] = [
    # (id, where: code|log, pattern, statement, priority)
    (
        "device-map-auto",
        "code",
        re.compile(r"device_map\s*=\s*['\"]auto['\"]"),
        'device_map="auto" silently uses pipeline parallelism (one GPU idle during training); a time-limited run '
        "then does fewer steps than planned",
        "medium",
    ),
    (
        "padding-max-length",
        "code",
        re.compile(r"padding\s*=\s*['\"]max_length['\"]"),
        'padding="max_length" pads every sequence to max_length: with a large max_length training is many times '
        "slower with no error, and a time or step budget buys less training",
        "medium",
    ),
    (
        "pad-eos",
        "code",
        re.compile(r"pad_token(?:_id)?\s*=\s*[\w.\[\]'\"]*eos_token"),
        "pad_token is set to eos_token: if padding is not masked out of the loss the model learns to predict EOS "
        "everywhere",
        "medium",
    ),
    (
        "truncation",
        "log",
        re.compile(
            r"Token indices sequence length is longer than|longer than the specified maximum sequence length|"
            r"truncat(?:ed|ing) to \d+|exceeds the maximum (?:sequence|position)",
            re.IGNORECASE,
        ),
        "inputs were silently truncated to the model's maximum length: no error, just wrong results on long inputs",
        "high",
    ),
    (
        "not-converged",
        "log",
        re.compile(
            r"ConvergenceWarning|failed to converge|did not converge|max_iter was reached|"
            r"TOTAL NO\.? OF ITERATIONS REACHED LIMIT|Maximum number of iteration reached",
            re.IGNORECASE,
        ),
        "the optimiser stopped at its iteration limit before converging (only a warning): the model is under-trained",
        "high",
    ),
]


# --------------------------------------------------------------------------- silent failures and diagnostics


def _first_match(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    if not match:
        return None
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end >= 0 else None].strip()[:200]


def _training_length(config: Mapping[str, Any]) -> tuple[str, float] | None:
    """The config key that sets how long training runs (epochs, iterations), with its value."""
    for key, value in config.items():
        length = num(value)
        if canonical(key) in TRAINING_LENGTH and length is not None:
            return key, length
    return None


# Logged series that are settings or counters, not a measure of how well training goes.
_NOT_QUALITY = frozenset({"epoch", "lr", "learning_rate"})


def _curve_series(run_dir: Path) -> dict[str, list[float]]:
    return {key: [v for _, v in points] for key, points in read_curves(run_dir).items() if key not in _NOT_QUALITY}


def _curve_direction(key: str) -> int | None:
    """+1 when higher is better for a logged series, -1 when lower is, None when unknown."""
    k = key.lower()
    if any(w in k for w in ("loss", "error", "perplexity", "ppl", "mse", "mae", "rmse", "nll")):
        return -1
    if any(w in k for w in ("acc", "f1", "auc", "score", "precision", "recall", "bleu", "rouge")):
        return 1
    return None


def still_improving(values: Sequence[float], sign: int, *, tail: float = 0.25, share: float = 0.10) -> bool:
    """True when the last `tail` of the curve still brought more than `share` of the total improvement."""
    if len(values) < 4:
        return False
    start = values[int(len(values) * (1 - tail)) - 1]
    total = sign * (values[-1] - values[0])
    late = sign * (values[-1] - start)
    return total > 0 and late > share * total


def silent_failures(
    paper: Paper | None, spec: Spec | None, verdicts: Sequence[Verdict], runs: Runs
) -> list[Hypothesis]:
    out: dict[str, Hypothesis] = {}
    all_runs = run_list(runs)
    verdict_by_claim = {v.claim_id: v for v in verdicts}

    def claims_of(run: RunRecord) -> list[Verdict]:
        if isinstance(runs, Mapping):
            return [verdict_by_claim[c] for c, group in runs.items() if run in group and c in verdict_by_claim]
        return list(verdicts)

    for run in all_runs:
        if run.smoke:
            continue
        name = run.name or run.identity
        vs = claims_of(run)
        config = resolved_config(run)
        code, logs = code_text(run), log_text(run)
        length = _training_length(config)
        for hid, where, pattern, statement, priority in SILENT_PATTERNS:
            line = _first_match(pattern, code if where == "code" else logs)
            if hid == "device-map-auto" and str(config.get("device_map", "")).lower() == "auto":
                line = line or "config device_map=auto"
            if line is None:
                continue
            hyp = out.get(hid)
            if hyp is None:
                ablation = None
                if hid == "not-converged" and length is not None:
                    length_key, steps = length
                    new = int(steps * 4)
                    ablation = Ablation(
                        change={length_key: new},
                        expected_direction=toward(vs[0]) if vs else "unknown",
                        metric=vs[0].metric if vs else None,
                        description=f"let the optimiser run longer: {length_key} {config[length_key]} -> {new}",
                    )
                hyp = out[hid] = Hypothesis(
                    id=f"silent-{hid}",
                    statement=statement[0].upper() + statement[1:],
                    category="silent_failure",
                    claim_ids=sorted({v.claim_id for v in vs}),
                    ablation=ablation,
                    priority=priority if any(v.verdict != "replicated" for v in vs) else "low",
                )
            hyp.evidence.append(f"{name}: {line}")
        _accumulation_check(out, name, config, logs, paper, vs)
        _curve_checks(out, run, name, config, vs, length)
    return list(out.values())


def _accumulation_check(
    out: dict[str, Hypothesis],
    name: str,
    config: dict[str, Any],
    logs: str,
    paper: Paper | None,
    vs: list[Verdict],
) -> None:
    accum_key = next((k for k in config if "accum" in k.lower()), None)
    accum = num(config.get(accum_key)) if accum_key else None
    if not accum or accum <= 1:
        return
    batch_key = next((k for k in config if canonical(k) == "batch_size"), None)
    batch = num(config.get(batch_key)) if batch_key else None
    effective = batch * accum if batch else None
    evidence = [
        f"{name}: {accum_key}={accum:g}"
        + (f", {batch_key}={batch:g} -> effective batch {effective:g}" if effective else "")
    ]
    if not re.search(r"effective[ _]batch", logs, re.IGNORECASE):
        evidence.append(f"{name}: the log never states the effective batch size")
    stated = None
    for item in paper.setup.items if paper is not None else []:
        if canonical(item.key) == "batch_size" and num(item.value) is not None:
            stated = num(item.value)
    ablation = None
    if stated and effective and not math.isclose(stated, effective) and batch:
        new_accum = stated / batch
        if new_accum >= 1 and float(new_accum).is_integer():
            ablation = Ablation(
                change={accum_key: int(new_accum)},
                expected_direction=toward(vs[0]) if vs else "unknown",
                metric=vs[0].metric if vs else None,
                description=f"match the paper's batch size {stated:g}",
            )
        evidence.append(f"the paper's batch size is {stated:g}, the effective batch size here is {effective:g}")
    hyp = out.setdefault(
        "grad-accum",
        Hypothesis(
            id="silent-grad-accum",
            statement="Gradient accumulation changes the effective batch size (and with it the learning-rate "
            "scale) without any error",
            category="silent_failure",
            claim_ids=sorted({v.claim_id for v in vs}),
            ablation=ablation,
            priority="high" if ablation else "medium",
        ),
    )
    hyp.evidence.extend(e for e in evidence if e not in hyp.evidence)


def _curve_checks(
    out: dict[str, Hypothesis],
    run: RunRecord,
    name: str,
    config: dict[str, Any],
    vs: list[Verdict],
    length: tuple[str, float] | None,
) -> None:
    for key, values in _curve_series(Path(run.run_dir)).items():
        if any(not math.isfinite(v) for v in values):
            nan = out.setdefault(
                "nan-curve",
                Hypothesis(
                    id="diag-nan-curve",
                    statement="Training diverged numerically: a logged curve contains NaN/inf",
                    category="diagnostics",
                    claim_ids=sorted({v.claim_id for v in vs}),
                    priority="high",
                ),
            )
            first_bad = next(i for i, v in enumerate(values) if not math.isfinite(v))
            nan.evidence.append(f"{name}: {key} becomes non-finite at logged point {first_bad}")
            continue
        sign = _curve_direction(key)
        if sign is None or not still_improving(values, sign):
            continue
        hyp = out.get("still-improving")
        if hyp is None:
            ablation = None
            if length is not None:
                length_key, steps = length
                new = int(steps * 2)
                ablation = Ablation(
                    change={length_key: new},
                    expected_direction=toward(vs[0]) if vs else "unknown",
                    metric=vs[0].metric if vs else None,
                    description=f"train longer: {length_key} {config[length_key]} -> {new}",
                )
            hyp = out["still-improving"] = Hypothesis(
                id="diag-still-improving",
                statement="Training had not converged: the curves were still improving when the run stopped",
                category="diagnostics",
                claim_ids=sorted({v.claim_id for v in vs}),
                ablation=ablation,
                priority="high" if any(v.verdict == "diverged" for v in vs) else "low",
            )
        first, last = values[0], values[-1]
        hyp.evidence.append(f"{name}: {key} went {first:.4g} -> {last:.4g} and still moved in the last quarter")


def run_diagnostics(
    paper: Paper | None, spec: Spec | None, verdicts: Sequence[Verdict], runs: Runs
) -> list[Hypothesis]:
    out = []
    failed = [r for r in run_list(runs) if r.status == "failed" and not r.smoke]
    if failed:
        out.append(
            Hypothesis(
                id="diag-failed-runs",
                statement=f"{len(failed)} run(s) failed, so fewer seeds were measured than planned",
                category="diagnostics",
                evidence=[f"{r.name}: {r.exit_reason}: {(r.error or '')[:200]}" for r in failed],
                priority="high",
            )
        )
    problems = []
    for run in completed(run_list(runs)):
        for problem in run.check.problems if run.check is not None else []:
            problems.append(f"{run.name}: {problem}")
    if problems:
        out.append(
            Hypothesis(
                id="diag-post-run-check",
                statement="The post-run check found problems in the outputs; the metric may be computed on broken "
                "or incomplete predictions",
                category="diagnostics",
                evidence=problems[:20],
                priority="high",
            )
        )
    for v in verdicts:
        if getattr(v, "warnings", None):
            out.append(
                Hypothesis(
                    id=f"diag-metric-integrity-{v.claim_id}",
                    statement=f"{v.claim_id}: the printed {v.metric} disagrees with the value the harness recomputes "
                    "from the saved predictions; the metric code (or the predictions) is wrong",
                    category="diagnostics",
                    claim_ids=[v.claim_id],
                    evidence=list(v.warnings),
                    priority="high",
                )
            )
        if v.verdict == "better":
            out.append(
                Hypothesis(
                    id=f"diag-too-good-{v.claim_id}",
                    statement=f"{v.claim_id} is significantly better than the paper: check for test-set leakage "
                    "(preprocessing fitted on test data, duplicates across the split) before trusting it",
                    category="diagnostics",
                    claim_ids=[v.claim_id],
                    evidence=[f"measured {v.measured_mean:.4g} vs reported {v.reported:.4g}: {v.reason}"],
                    priority="high",
                )
            )
    return out
