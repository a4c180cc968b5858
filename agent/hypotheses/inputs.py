"""What the checklist reads, and how it picks from it: the paper, the approved spec, the verdicts, and the runs
(either shape of agent.runs.Runs). `runs_for` picks the runs that measured one claim."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent.hypotheses.config_keys import IGNORED_RUN_KEYS, flat, same_value
from agent.hypotheses.model import Direction, Priority
from agent.runs import Runs, run_list
from agent.spec import Spec
from mlexp.compare import Verdict
from mlexp.record import RunRecord
from retrieval.models import Claim, Paper


def claim_of(paper: Paper | None, claim_id: str) -> Claim | None:
    for claim in paper.claims if paper is not None else []:
        if claim.id == claim_id:
            return claim
    return None


def completed(runs: Iterable[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.status == "completed" and not r.smoke]


def runs_for(runs: Runs, claim_id: str, spec: Spec | None = None) -> list[RunRecord]:
    """The runs that measured a claim: from a claim_id -> runs mapping, or picked out of a flat list by the
    target's own config overrides when the spec has several target groups (one Table 3 row = one config)."""
    if isinstance(runs, Mapping):
        return list(runs.get(claim_id, []))
    flat_runs = list(runs or [])
    targets = spec.targets if spec is not None else []
    own = next((t for t in targets if t.claim_id == claim_id), None)
    overrides = dict(own.config) if own is not None else {}
    if overrides and len({json.dumps(t.config, sort_keys=True) for t in targets}) > 1:
        mine = [r for r in flat_runs if all(same_value(r.config.get(k), v) for k, v in overrides.items())]
        return mine or flat_runs
    return flat_runs


def resolved_config(run: RunRecord) -> dict[str, Any]:
    """The run's config as it ran, flattened (dotted keys), without the keys that say nothing about the setup."""
    return {k: v for k, v in flat(run.config).items() if k not in IGNORED_RUN_KEYS}


def toward(verdict: Verdict | None) -> Direction:
    """The direction a fix that closes the gap should move the metric's value."""
    if verdict is None or verdict.gap is None or verdict.verdict not in ("diverged", "better"):
        return "unknown"
    return "increase" if verdict.gap < 0 else "decrease"


def priority_for(verdicts: Sequence[Verdict], important: bool) -> Priority:
    if any(v.verdict in ("diverged", "better") for v in verdicts):
        return "high" if important else "medium"
    return "medium" if important else "low"


def base_config_of(runs: Runs) -> dict[str, Any]:
    """The resolved config of the first completed, non-smoke run (seed and smoke keys removed)."""
    for run in completed(run_list(runs)):
        return {k: v for k, v in run.config.items() if k not in ("seed", "smoke")}
    return {}
