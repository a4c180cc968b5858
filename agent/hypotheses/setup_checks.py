"""Checklist: what the paper states (setup items, `key=value` parameters printed in a claim's table row), what the
approved spec says, and what the run's resolved config actually used (epochs, batch size, learning rate, split...)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.hypotheses.config_keys import (
    IGNORED_RUN_KEYS,
    IMPORTANT,
    TRAINING_LENGTH,
    canonical,
    comparable,
    flat,
    num,
    parse_value,
    same_value,
)
from agent.hypotheses.inputs import claim_of, completed, priority_for, resolved_config, runs_for, toward
from agent.hypotheses.model import Ablation, Hypothesis
from agent.runs import Runs
from agent.spec import Spec, Target
from mlexp.compare import Verdict
from retrieval.models import Claim, Paper

# "train=60,000; test=10,000" in a paper's split item, not "6,000 per class" (a different quantity).
_SPLIT_COUNT_RE = re.compile(
    r"\b(train|test|val|validation|dev)\w*\s*[=:]\s*([\d,]+)(?![\d,])(?!\s*(?:per|each|/))", re.I
)
_PARAM_RE = re.compile(r"(?<![\w.])([A-Za-z_][\w]*)\s*=\s*(\[[^\]]*\]|\([^)]*\)|[^\s,;]+)")


def _expected_settings(
    paper: Paper | None, spec: Spec | None, target: Target | None, claim: Claim | None
) -> list[tuple[str, Any, str, bool]]:
    """(key, value, where it is stated, from the paper?) in precedence order: paper first, then the spec."""
    out: list[tuple[str, Any, str, bool]] = []
    if claim is not None:
        row_text = " ".join(str(x) for x in (claim.row, claim.method, claim.column) if x)
        label = f"{claim.table or 'p.' + str(claim.page)} row {claim.row!r}" if claim.row else f"claim {claim.id}"
        for key, value in _PARAM_RE.findall(row_text):
            out.append((key, value, f"the paper ({label})", True))
    for item in paper.setup.items if paper is not None else []:
        where = f"the paper (p.{item.page}: {item.quote.strip()[:120]!r})"
        if canonical(item.key) == "split":
            for role, count in _SPLIT_COUNT_RE.findall(item.value):
                role = {"validation": "val", "dev": "val"}.get(role.lower(), role.lower())
                out.append((f"n_{role}", int(count.replace(",", "")), where, True))
        elif canonical(item.key) in IMPORTANT and comparable(item.value):
            out.append((item.key, item.value, where, True))
    for hp in spec.hyperparameters if spec is not None else []:
        if hp.source == "paper":
            out.append((hp.name, hp.value, f"the spec, from the paper (p.{hp.page}: {(hp.quote or '')[:120]!r})", True))
        else:
            out.append((hp.name, hp.value, f"the approved spec (assumed: {hp.reason})", False))
    if spec is not None and target is not None:
        approved = flat(spec.run_config(smoke=False, target=target))
        stated = {canonical(key): value for key, value, _, _ in out}
        for key, value in approved.items():
            if key not in IGNORED_RUN_KEYS and not same_value(stated.get(canonical(key), object()), value):
                out.append((key, value, "the approved spec's run config", False))
    return out


@dataclass
class _Mismatch:
    """One setting the run did not use as stated, with every verdict it may explain."""

    key: str  # as the paper or the spec names it
    run_key: str | None  # the run config's key; None when the run config does not set it at all
    expected: Any
    actual: Any
    from_paper: bool
    verdicts: list[Verdict] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def add(self, verdict: Verdict, line: str) -> None:
        if verdict not in self.verdicts:
            self.verdicts.append(verdict)
        if line not in self.evidence:
            self.evidence.append(line)


def _find_mismatches(
    paper: Paper | None, spec: Spec | None, verdicts: Sequence[Verdict], runs: Runs
) -> dict[str, _Mismatch]:
    """Each stated setting against the resolved config of the first completed run of each claim."""
    targets = {t.claim_id: t for t in spec.targets} if spec is not None else {}
    found: dict[str, _Mismatch] = {}
    for verdict in verdicts:
        measured = completed(runs_for(runs, verdict.claim_id, spec))
        if not measured:
            continue
        actual = resolved_config(measured[0])
        by_canon: dict[str, list[str]] = {}
        for key in actual:
            by_canon.setdefault(canonical(key), []).append(key)
        claim = claim_of(paper, verdict.claim_id)
        for key, expected, where, from_paper in _expected_settings(paper, spec, targets.get(verdict.claim_id), claim):
            canon = canonical(key)
            if canon == "seeds":
                continue  # seeds are the number of runs, checked by `seed_checks`
            run_keys = by_canon.get(canon, [])
            if not run_keys:
                if from_paper and (canon in IMPORTANT or claim is not None and key in str(claim.row or "")):
                    unset = found.setdefault(f"setup-unset-{canon}", _Mismatch(key, None, expected, None, True))
                    # Appended per verdict (not deduplicated): each claim's evidence says where it is stated.
                    unset.verdicts.append(verdict)
                    unset.evidence.append(f"{where} states {key}={expected}; the run config has no {key!r} key")
                continue
            for run_key in run_keys:
                if same_value(actual[run_key], expected):
                    continue
                if canon.startswith("split:") and min(num(actual[run_key]) or 0, num(expected) or 0) <= 1:
                    continue  # a fraction (train_size=0.8) is not comparable with a count
                mismatch = found.setdefault(
                    f"setup-{run_key}", _Mismatch(key, run_key, expected, actual[run_key], from_paper)
                )
                mismatch.add(verdict, f"{where} says {key}={expected}; the run used {run_key}={actual[run_key]}")
    return found


def _unset_hypothesis(hid: str, m: _Mismatch, evidence: list[str]) -> Hypothesis:
    """The paper states a setting the run config does not set: evidence only, no ablation to propose."""
    return Hypothesis(
        id=hid,
        statement=f"The paper's {m.key}={m.expected} is not set by the run config; the code's own "
        f"default may differ from the paper's setting",
        category="setup_mismatch",
        claim_ids=sorted({v.claim_id for v in m.verdicts}),
        evidence=evidence,
        priority=priority_for(m.verdicts, canonical(m.key) in IMPORTANT),
    )


def _differs_hypothesis(hid: str, m: _Mismatch, evidence: list[str]) -> Hypothesis:
    """The run used another value than stated: rerun with the stated one."""
    assert m.run_key is not None, "a differing setting has a run config key"
    canon, vs = canonical(m.key), m.verdicts
    shorter = ""
    a, e = num(m.actual), num(parse_value(m.expected))
    if canon in TRAINING_LENGTH and a is not None and e is not None and a < e:
        shorter = f" (trained for {a:g} instead of {e:g} {m.run_key}: under-trained)"
    return Hypothesis(
        id=hid,
        statement=f"The run's {m.run_key}={m.actual} differs from {m.key}={m.expected} stated in "
        f"{'the paper' if m.from_paper else 'the approved spec'}{shorter}",
        category="setup_mismatch",
        claim_ids=sorted({v.claim_id for v in vs}),
        evidence=evidence,
        ablation=Ablation(
            change={m.run_key: parse_value(m.expected)},
            # A different test/validation set changes what is measured, not how well the model learns.
            expected_direction="unknown" if canon in ("split:test", "split:val") else toward(vs[0]),
            metric=vs[0].metric,
            description=f"rerun with {m.run_key}={m.expected} as stated",
        ),
        priority=priority_for(vs, canon in IMPORTANT),
    )


def setup_mismatches(
    paper: Paper | None, spec: Spec | None, verdicts: Sequence[Verdict], runs: Runs
) -> list[Hypothesis]:
    out = []
    for hid, m in _find_mismatches(paper, spec, verdicts, runs).items():
        gaps = [f"{v.claim_id}: {v.verdict}, gap {v.gap:+.4g}" for v in m.verdicts if v.gap is not None]
        make = _unset_hypothesis if m.run_key is None else _differs_hypothesis
        out.append(make(hid, m, m.evidence + gaps))
    return out
