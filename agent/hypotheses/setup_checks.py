"""Checklist: what the paper states (setup items, `key=value` parameters printed in a claim's table row), what the
approved spec says, and what the run's resolved config actually used (epochs, batch size, learning rate, split...)."""

from __future__ import annotations

import re
from collections.abc import Sequence
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


def setup_mismatches(
    paper: Paper | None, spec: Spec | None, verdicts: Sequence[Verdict], runs: Runs
) -> list[Hypothesis]:
    targets = {t.claim_id: t for t in spec.targets} if spec is not None else {}
    found: dict[str, dict[str, Any]] = {}
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
                    entry = found.setdefault(
                        f"setup-unset-{canon}",
                        dict(key=key, run_key=None, expected=expected, actual=None, verdicts=[], evidence=[]),
                    )
                    entry["verdicts"].append(verdict)
                    entry["evidence"].append(f"{where} states {key}={expected}; the run config has no {key!r} key")
                continue
            for run_key in run_keys:
                if same_value(actual[run_key], expected):
                    continue
                if canon.startswith("split:") and min(num(actual[run_key]) or 0, num(expected) or 0) <= 1:
                    continue  # a fraction (train_size=0.8) is not comparable with a count
                entry = found.setdefault(
                    f"setup-{run_key}",
                    dict(
                        key=key,
                        run_key=run_key,
                        expected=expected,
                        actual=actual[run_key],
                        verdicts=[],
                        evidence=[],
                        from_paper=from_paper,
                    ),  # fmt: skip
                )
                if verdict not in entry["verdicts"]:
                    entry["verdicts"].append(verdict)
                line = f"{where} says {key}={expected}; the run used {run_key}={actual[run_key]}"
                if line not in entry["evidence"]:
                    entry["evidence"].append(line)
    out = []
    for hid, entry in found.items():
        canon, vs = canonical(entry["key"]), entry["verdicts"]
        claim_ids = sorted({v.claim_id for v in vs})
        evidence = entry["evidence"] + [f"{v.claim_id}: {v.verdict}, gap {v.gap:+.4g}" for v in vs if v.gap is not None]
        if entry["run_key"] is None:
            statement = (
                f"The paper's {entry['key']}={entry['expected']} is not set by the run config; the code's own "
                f"default may differ from the paper's setting"
            )
            out.append(
                Hypothesis(
                    id=hid,
                    statement=statement,
                    category="setup_mismatch",
                    claim_ids=claim_ids,
                    evidence=evidence,
                    priority=priority_for(vs, canon in IMPORTANT) if canon in IMPORTANT else priority_for(vs, False),
                )
            )
            continue
        shorter = ""
        a, e = num(entry["actual"]), num(parse_value(entry["expected"]))
        if canon in TRAINING_LENGTH and a is not None and e is not None and a < e:
            shorter = f" (trained for {a:g} instead of {e:g} {entry['run_key']}: under-trained)"
        out.append(
            Hypothesis(
                id=hid,
                statement=f"The run's {entry['run_key']}={entry['actual']} differs from {entry['key']}="
                f"{entry['expected']} stated in {'the paper' if entry['from_paper'] else 'the approved spec'}{shorter}",
                category="setup_mismatch",
                claim_ids=claim_ids,
                evidence=evidence,
                ablation=Ablation(
                    change={entry["run_key"]: parse_value(entry["expected"])},
                    # A different test/validation set changes what is measured, not how well the model learns.
                    expected_direction="unknown" if canon in ("split:test", "split:val") else toward(vs[0]),
                    metric=vs[0].metric,
                    description=f"rerun with {entry['run_key']}={entry['expected']} as stated",
                ),
                priority=priority_for(vs, canon in IMPORTANT),
            )
        )
    return out
