"""Checklist: too few seeds for the gap, or fewer runs than the paper averages."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from agent.hypotheses.config_keys import canonical
from agent.hypotheses.model import Ablation, Hypothesis
from agent.runs import Runs
from agent.spec import Spec
from mlexp.compare import Verdict
from retrieval.models import Paper

_REPEATS_RE = re.compile(
    r"(?:repeated|run|trained|averaged over)\s+(\d+|two|three|four|five|ten)\s+times|"
    r"(?:mean|average|averaged)\s+(?:of|over|across)\s+(\d+|two|three|four|five|ten)\s+"
    r"(?:independent\s+)?(?:runs|seeds|trials|repetitions|random seeds)",
    re.IGNORECASE,
)
_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "ten": 10}


def paper_repeats(paper: Paper | None) -> int | None:
    """How many runs the paper averages, from a setup item or a sentence like "repeated 5 times"."""
    if paper is None:
        return None
    for item in paper.setup.items:
        if canonical(item.key) == "seeds":
            match = re.search(r"\d+", item.value)
            if match:
                return int(match.group())
    text = " ".join(p.text for p in paper.pages)
    match = _REPEATS_RE.search(re.sub(r"\s+", " ", text))
    if match:
        word = (match.group(1) or match.group(2)).lower()
        return int(_WORDS.get(word, word))
    return None


_Z_975, _Z_80 = 1.959964, 0.841621  # two-sided 5 % test, 80 % power


def seeds_needed(std: float, gap: float) -> int:
    """Seeds for a one-sample test to detect `gap` with 80 % power at 5 %: ((z_.975 + z_.8) * s / gap)^2, +1."""
    if gap == 0 or std <= 0:
        return 2
    return min(100, max(2, math.ceil(((_Z_975 + _Z_80) * std / abs(gap)) ** 2) + 1))


def seed_checks(paper: Paper | None, spec: Spec | None, verdicts: Sequence[Verdict], runs: Runs) -> list[Hypothesis]:
    out = []
    repeats = paper_repeats(paper)
    for v in verdicts:
        if v.verdict == "not run" or v.gap is None or not math.isfinite(v.gap):
            continue
        outside = abs(v.gap) > v.tolerance
        paper_note = f"the paper averages {repeats} runs" if repeats else "the paper does not say how many runs"
        if v.n < 2 and outside:
            want = max(3, repeats or 0)
            out.append(
                Hypothesis(
                    id=f"seeds-single-{v.claim_id}",
                    statement=f"{v.claim_id}: a single run cannot separate a {v.gap:+.3g} gap from seed noise",
                    category="seeds",
                    claim_ids=[v.claim_id],
                    evidence=[f"n=1, gap {v.gap:+.4g} > tolerance {v.tolerance:.3g}; {paper_note}"],
                    ablation=Ablation(
                        seeds=want,
                        expected_direction="no change",
                        metric=v.metric,
                        description=f"rerun with {want} seeds",
                    ),
                    priority="high" if v.verdict != "replicated" else "medium",
                )
            )
        elif outside and v.verdict == "replicated" and v.measured_std is not None:
            need = max(v.n + 1, seeds_needed(v.measured_std or (v.reported_std or 0.0), v.gap))
            out.append(
                Hypothesis(
                    id=f"seeds-inconclusive-{v.claim_id}",
                    statement=f"{v.claim_id}: the {v.gap:+.3g} gap exceeds the tolerance but is within the noise of "
                    f"{v.n} seeds; about {need} seeds are needed to tell",
                    category="seeds",
                    claim_ids=[v.claim_id],
                    evidence=[f"std {v.measured_std:.3g} over n={v.n}, p={v.p_value:.3g}; {paper_note}"],
                    ablation=Ablation(
                        seeds=need,
                        expected_direction="no change",
                        metric=v.metric,
                        description=f"rerun with {need} seeds",
                    ),
                    priority="medium",
                )
            )
        elif v.verdict == "diverged" and repeats and v.n < repeats:
            out.append(
                Hypothesis(
                    id=f"seeds-fewer-{v.claim_id}",
                    statement=f"{v.claim_id}: fewer runs ({v.n}) than the paper averages ({repeats})",
                    category="seeds",
                    claim_ids=[v.claim_id],
                    evidence=[f"n={v.n}; {paper_note}"],
                    ablation=Ablation(seeds=repeats, expected_direction="no change", metric=v.metric),
                    priority="low",
                )
            )
    return out
