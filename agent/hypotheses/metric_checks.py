"""Checklist: the run measures something other than what the paper reports (percent vs fraction, error vs
accuracy, the wrong direction, another metric, another split)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from agent.hypotheses.inputs import claim_of
from agent.hypotheses.model import Hypothesis
from agent.runs import Runs
from agent.spec import Spec
from mlexp.compare import Verdict
from retrieval.models import Claim, Paper

_FAMILIES = {
    "accuracy": ("accuracy", "acc"),
    "error": ("error", "err"),
    "f1": ("f1",),
    "auc": ("auc", "auroc"),
    "loss": ("loss", "nll"),
    "perplexity": ("perplexity", "ppl"),
    "bleu": ("bleu",),
    "rouge": ("rouge",),
    "mae": ("mae",),
    "mse": ("mse", "rmse"),
}


def _family(text: str) -> str | None:
    tokens = set(re.findall(r"[a-z0-9]+", text.lower()))
    for fam, words in _FAMILIES.items():
        if tokens & set(words) or any(w in text.lower() for w in words if len(w) > 3):
            return fam
    return None


Finding = tuple[str, str, str]  # (id suffix, statement, evidence)


def _scale_findings(v: Verdict) -> list[Finding]:
    """The gap is a unit or a complement: percent vs fraction, error rate vs accuracy."""
    assert v.measured_mean is not None and v.reported is not None
    m, r, tol = v.measured_mean, v.reported, max(v.tolerance, 1e-9)
    if abs(m - r) <= tol:
        return []
    if 0 <= r <= 1 and 1 < m <= 100 and abs(m / 100 - r) <= max(tol, 0.05):
        return [
            (
                "scale",
                "the run reports a percentage where the paper reports a fraction",
                f"measured {m:.4g} vs reported {r:.4g} (x100 = {r * 100:.4g})",
            )
        ]
    if 0 <= m <= 1 and 1 < r <= 100 and abs(m * 100 - r) <= max(tol, 5):
        return [
            (
                "scale",
                "the run reports a fraction where the paper reports a percentage",
                f"measured {m:.4g} vs reported {r:.4g}",
            )
        ]
    if 0 <= m <= 1 and 0 <= r <= 1 and abs((1 - m) - r) <= max(tol, 0.01):
        return [
            (
                "complement",
                "the run measures the complement of the paper's metric (error rate vs accuracy)",
                f"1 - measured = {1 - m:.4g} ~ reported {r:.4g}",
            )
        ]
    return []


def _claim_findings(v: Verdict, claim: Claim) -> list[Finding]:
    """What the paper says about the claim's metric against the run's: direction, metric family, split."""
    found: list[Finding] = []
    described = " ".join(str(x) for x in (claim.metric, claim.column, claim.table) if x)
    if claim.higher_is_better is not None and claim.higher_is_better != (v.direction == "max"):
        found.append(
            (
                "direction",
                f"the target's direction {v.direction!r} contradicts the paper "
                f"(higher is better: {claim.higher_is_better})",
                f"claim {claim.id}: {claim.text}",
            )
        )
    fam_paper, fam_run = _family(described), _family(v.metric)
    if fam_paper and fam_run and fam_paper != fam_run:
        found.append(
            (
                "name",
                f"the paper reports {fam_paper} ({described!r}) but the run measures {fam_run} ({v.metric!r})",
                f"claim {claim.id}: {claim.quote[:120]!r}",
            )
        )
    paper_split = "test" if re.search(r"\btest", described, re.I) else None
    run_split = (
        "validation"
        if re.search(r"val|dev", v.metric, re.I)
        else ("train" if re.search(r"train", v.metric, re.I) else None)
    )
    if paper_split and run_split:
        found.append(
            (
                "split",
                f"the paper reports {paper_split}-set numbers but the run's metric "
                f"{v.metric!r} is measured on the {run_split} set",
                f"claim {claim.id}: {described!r}",
            )
        )
    return found


def metric_checks(paper: Paper | None, spec: Spec | None, verdicts: Sequence[Verdict], runs: Runs) -> list[Hypothesis]:
    out = []
    for v in verdicts:
        if v.measured_mean is None or v.reported is None or not math.isfinite(v.measured_mean):
            continue
        claim = claim_of(paper, v.claim_id)
        found = _scale_findings(v) + (_claim_findings(v, claim) if claim is not None else [])
        for suffix, statement, evidence in found:
            out.append(
                Hypothesis(
                    id=f"metric-{suffix}-{v.claim_id}",
                    statement=f"{v.claim_id}: metric definition mismatch: {statement}",
                    category="metric_definition",
                    claim_ids=[v.claim_id],
                    evidence=[evidence, f"verdict {v.verdict}: {v.reason}"],
                    priority="high" if v.verdict in ("diverged", "better") else "medium",
                )
            )
    return out
