"""Why may a number differ from the paper, and what to try next: structured, evidence-backed hypotheses.

Two sources feed one list:
- the deterministic checklist (agent.checklist), which always runs, LLM or not: silent failures (practices §13),
  paper-vs-run setup mismatches, too few seeds for the gap, metric-definition mismatches, run diagnostics;
- the LLM (`propose_hypotheses`), which first asks for literature searches, gets the hits from the local paper index,
  and then proposes hypotheses with quoted passages. Every citation is checked (agent.citations): a cited id must be
  in the index (or be the paper being replicated) and the quote must appear in its text. A hypothesis with a citation
  that fails is kept but marked `unsupported` (or dropped with `drop_unsupported=True`); it is never shown as backed.

An approved hypothesis carries a concrete config change (`Ablation.change`), which `ablation_configs` turns into new
run configs and `queue_ablations` runs through mlexp: run -> compare -> hypothesise -> run.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.citations import TextIndex, check_citation

log = logging.getLogger(__name__)

Priority = Literal["high", "medium", "low"]
Direction = Literal["increase", "decrease", "no change", "unknown"]
Category = Literal["silent_failure", "setup_mismatch", "seeds", "metric_definition", "diagnostics", "literature"]
_PRIORITY_ORDER = {"high": 0, "medium": 1, "low": 2}


class Citation(BaseModel):
    paper_id: str
    quote: str
    title: str | None = None
    verified: bool = False
    note: str = ""  # the verification outcome: why a citation was rejected


class Ablation(BaseModel):
    """A concrete change to the run config, and what it should do to the claim's metric."""

    change: dict[str, Any] = Field(default_factory=dict)  # config key (dotted for nested) -> new value
    expected_direction: Direction = "unknown"  # effect on the metric's value, not on "goodness"
    metric: str | None = None
    seeds: int | None = None  # run the changed (or unchanged) config with this many seeds
    description: str = ""


class Hypothesis(BaseModel):
    id: str
    statement: str
    category: Category
    source: Literal["checklist", "llm"] = "checklist"
    claim_ids: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)  # from this run: setup diff, diagnostics, curves
    citations: list[Citation] = Field(default_factory=list)  # verified only
    rejected_citations: list[Citation] = Field(default_factory=list)  # failed verification, with the reason
    support: Literal["backed", "unsupported", "no literature"] = "no literature"
    ablation: Ablation | None = None
    priority: Priority = "medium"
    approved: bool = False

    @property
    def backed(self) -> bool:
        return self.support == "backed"


def sort_hypotheses(hypotheses: Sequence[Hypothesis]) -> list[Hypothesis]:
    """High priority first; within a priority, checklist findings (facts about this run) before LLM ideas."""
    return sorted(hypotheses, key=lambda h: (_PRIORITY_ORDER[h.priority], h.source != "checklist"))


def run_checklist(paper: Any, spec: Any, verdicts: Sequence[Any], runs: Any) -> list[Hypothesis]:
    """The deterministic checklist; see agent.checklist. Needs no LLM and always runs."""
    from agent.checklist import run_checklist as _run

    return _run(paper, spec, verdicts, runs)


# --------------------------------------------------------------------------- the LLM's part

HYPOTHESIS_QUERIES = """Some results of a replication differ from the paper. Propose searches of the local paper index
that could find literature explaining the differences (known sensitivities, implementation details, reported variance).

# Paper
{title}

# Verdicts (worst first)
{verdicts}

# What the deterministic checklist already found
{checklist}

Give at most 5 short keyword queries."""

HYPOTHESES = """Some results of a replication differ from the paper. Propose hypotheses for why, each testable by a
concrete change to the run config.

# Paper
id: {paper_id}
title: {title}

# Verdicts (worst first)
{verdicts}

# Run config (keys an ablation may change)
{config}

# Setup the paper states
{setup}

# What the deterministic checklist already found (do not repeat these)
{checklist}

# Literature from the local paper index (id, title, passage)
{literature}

# The researcher's feedback on earlier hypotheses (empty on the first round)
{feedback}

Rules:
- evidence: facts from this run only (config values, verdict numbers, diagnostics above).
- citations: only papers listed above (or the paper itself, id {paper_id}); the quote must be copied word for word
  from the passage shown. Never invent an id or a quote: unverifiable citations are rejected and shown as such.
- ablation.change: keys from the run config above, with the new value; expected_direction: "increase",
  "decrease", "no change" or "unknown" for the metric named in ablation.metric.
- priority: "high", "medium" or "low"."""


class _Queries(BaseModel):
    queries: list[str] = Field(default_factory=list, max_length=5)


class _LLMCitation(BaseModel):
    paper_id: str
    quote: str


class _LLMAblation(BaseModel):
    change: dict[str, Any]
    expected_direction: Direction = "unknown"
    metric: str | None = None


class _LLMHypothesis(BaseModel):
    statement: str
    claim_ids: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)
    citations: list[_LLMCitation] = Field(default_factory=list)
    ablation: _LLMAblation | None = None
    priority: Priority = "medium"


class _LLMHypotheses(BaseModel):
    hypotheses: list[_LLMHypothesis] = Field(default_factory=list, max_length=8)


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _run_list(runs: Any) -> list[Any]:
    if isinstance(runs, Mapping):
        seen, out = set(), []
        for group in runs.values():
            for run in group:
                if id(run) not in seen:
                    seen.add(id(run))
                    out.append(run)
        return out
    return list(runs or [])


def base_config_of(runs: Any) -> dict[str, Any]:
    """The resolved config of the first completed, non-smoke run (seed and smoke keys removed)."""
    for run in _run_list(runs):
        if getattr(run, "status", None) == "completed" and not getattr(run, "smoke", False):
            return {k: v for k, v in dict(run.config).items() if k not in ("seed", "smoke")}
    return {}


def _paper_text(paper: Any) -> str:
    if paper is None:
        return ""
    pages = getattr(paper, "pages", None) or []
    return "\n".join(p.text for p in pages) or f"{getattr(paper, 'title', '')}\n{getattr(paper, 'abstract', '')}"


def _search_literature(
    index: Any, queries: Sequence[str], *, k: int = 4, limit: int = 12, mode: str = "hybrid"
) -> list[dict[str, Any]]:
    hits: dict[str, dict[str, Any]] = {}
    for query in queries:
        try:
            found = index.search(query, k=k, mode=mode)
        except Exception as exc:  # an empty or broken index leaves the LLM without literature, not the run broken
            log.warning("literature search %r failed: %s", query, exc)
            continue
        for hit in found:
            if hit.id not in hits and len(hits) < limit:
                hits[hit.id] = {"id": hit.id, "title": hit.title, "year": hit.year, "passage": hit.snippet}
    return list(hits.values())


def verify_hypothesis(hyp: Hypothesis, sources: Any) -> Hypothesis:
    """Check every citation against `sources` (a PaperIndex or TextIndex); set `support` accordingly."""
    verified, rejected = [], list(hyp.rejected_citations)
    for cit in hyp.citations:
        result = check_citation(sources, cit.paper_id, cit.quote)
        if result.ok:
            verified.append(cit.model_copy(update={"verified": True, "note": result.reason}))
        else:
            rejected.append(cit.model_copy(update={"verified": False, "note": result.reason}))
    support = "unsupported" if rejected else ("backed" if verified else "no literature")
    return hyp.model_copy(update={"citations": verified, "rejected_citations": rejected, "support": support})


def _verdict_lines(verdicts: Sequence[Any]) -> str:
    from mlexp.compare import worst_first

    lines = []
    for v in worst_first(verdicts):
        measured = "n/a" if v.measured_mean is None else f"{v.measured_mean:.4g}"
        std = "" if v.measured_std is None else f" ± {v.measured_std:.2g}"
        lines.append(
            f"- {v.claim_id} ({v.metric}, {v.direction}): reported {v.reported}, measured {measured}{std} "
            f"(n={v.n}), verdict {v.verdict}: {v.reason}"
        )
    return "\n".join(lines) or "(none)"


def propose_hypotheses(
    model: Any,
    paper: Any,
    spec: Any,
    verdicts: Sequence[Any],
    runs: Any,
    index: Any,
    *,
    log_dir: Path | None,
    drop_unsupported: bool = False,
    strict: bool = False,
    search_mode: str = "hybrid",
    feedback: str = "",
) -> list[Hypothesis]:
    """Checklist findings plus LLM hypotheses with verified citations, highest priority first.

    `model` None: the checklist alone. The LLM is asked twice: `hypothesis_queries` (searches of `index`), then
    `hypotheses` (with the hits). An LLM reply that does not validate after retries is logged and skipped (the
    checklist is still returned) unless `strict`. Citations are verified against the index and the paper itself.
    `search_mode` is PaperIndex.search's mode ("bm25" skips loading the embedding model); `feedback` is the
    researcher's answer when they rejected an earlier round (review_hypotheses).
    """
    checklist = run_checklist(paper, spec, verdicts, runs)
    if model is None:
        return sort_hypotheses(checklist)
    from agent.errors import LLMOutputError
    from agent.llm import structured_call

    title = getattr(paper, "title", "") or getattr(paper, "slug", "")
    paper_id = getattr(paper, "slug", None) or "paper"
    checklist_text = "\n".join(f"- [{h.category}] {h.statement}" for h in checklist) or "(nothing)"
    verdict_text = _verdict_lines(verdicts)
    config = base_config_of(runs)
    claim_ids = {v.claim_id for v in verdicts}
    try:
        literature: list[dict[str, Any]] = []
        if index is not None:
            queries = structured_call(
                model,
                "hypothesis_queries",
                HYPOTHESIS_QUERIES,
                {"title": title, "verdicts": verdict_text, "checklist": checklist_text},
                _Queries,
                log_dir=log_dir,
            )
            literature = _search_literature(index, queries.queries, mode=search_mode)
        setup = getattr(getattr(paper, "setup", None), "items", []) or []

        def check(reply: _LLMHypotheses) -> None:
            # A config change with keys the script does not know is not a concrete ablation: ask again.
            for i, hyp in enumerate(reply.hypotheses):
                unknown = sorted(set(hyp.ablation.change) - set(_flat(config))) if hyp.ablation and config else []
                if unknown:
                    raise ValueError(f"hypotheses[{i}].ablation.change uses keys not in the run config: {unknown}")
                bad = sorted(set(hyp.claim_ids) - claim_ids)
                if bad:
                    raise ValueError(f"hypotheses[{i}].claim_ids not among the verdicts: {bad}")

        reply = structured_call(
            model,
            "hypotheses",
            HYPOTHESES,
            {
                "paper_id": paper_id,
                "title": title,
                "verdicts": verdict_text,
                "config": json.dumps(_flat(config), indent=1, default=str) if config else "(no completed run)",
                "setup": "\n".join(f"- {s.key}: {s.value} (p.{s.page})" for s in setup) or "(none)",
                "checklist": checklist_text,
                "literature": "\n".join(
                    f"- {h['id']} | {h['title']} ({h['year']}) | {h['passage']}" for h in literature
                )
                or "(no index or no hits)",
                "feedback": feedback.strip() or "(none)",
            },
            _LLMHypotheses,
            log_dir=log_dir,
            check=check,
        )
    except LLMOutputError as exc:
        if strict:
            raise
        log.warning("LLM hypotheses skipped, checklist only: %s", exc)
        return sort_hypotheses(checklist)

    titles = {h["id"]: h["title"] for h in literature}
    sources = TextIndex({paper_id: _paper_text(paper)}, fallback=index)
    proposed = []
    for i, item in enumerate(reply.hypotheses, 1):
        hyp = Hypothesis(
            id=f"llm-{i}",
            statement=item.statement,
            category="literature",
            source="llm",
            claim_ids=item.claim_ids,
            evidence=item.evidence,
            citations=[
                Citation(paper_id=c.paper_id, quote=c.quote, title=titles.get(c.paper_id)) for c in item.citations
            ],
            ablation=Ablation(**item.ablation.model_dump()) if item.ablation else None,
            priority=item.priority,
        )
        hyp = verify_hypothesis(hyp, sources)
        if drop_unsupported and hyp.support == "unsupported":
            log.warning("dropped hypothesis %s: %s", hyp.id, "; ".join(c.note for c in hyp.rejected_citations))
            continue
        proposed.append(hyp)
    return sort_hypotheses(checklist + proposed)


# --------------------------------------------------------------------------- ablations -> runs


def _set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        if part in node and not isinstance(node[part], dict):
            break
        node = node.setdefault(part, {})
    else:
        node[parts[-1]] = value
        return
    config[key] = value  # a dotted key that is not a nested path: keep it as a plain key


def ablation_configs(
    hypotheses: Sequence[Hypothesis], base_config: Mapping[str, Any], *, approved_only: bool = False
) -> list[dict[str, Any]]:
    """One config per hypothesis with an ablation: the base config with the change applied (a "more seeds" ablation
    gives the base config itself, to be run with `ablation.seeds` seeds). Duplicates and changes that leave the
    config as it was are skipped. With `approved_only`, only approved hypotheses count."""
    return [config for _, config in ablation_plan(hypotheses, base_config, approved_only=approved_only)]


def ablation_plan(
    hypotheses: Sequence[Hypothesis], base_config: Mapping[str, Any], *, approved_only: bool = False
) -> list[tuple[Hypothesis, dict[str, Any]]]:
    """Like `ablation_configs`, paired with the hypothesis each config tests."""
    base_key = json.dumps(dict(base_config), sort_keys=True, default=str)
    plan, seen = [], set()
    for hyp in hypotheses:
        if approved_only and not hyp.approved:
            continue
        if hyp.ablation is None or not (hyp.ablation.change or hyp.ablation.seeds):
            continue
        config = copy.deepcopy(dict(base_config))
        for key, value in hyp.ablation.change.items():
            _set_dotted(config, key, value)
        key = json.dumps(config, sort_keys=True, default=str)
        if (key == base_key and not hyp.ablation.seeds) or (key, hyp.ablation.seeds) in seen:
            continue  # a no-op change, or the same experiment as an earlier hypothesis
        seen.add((key, hyp.ablation.seeds))
        plan.append((hyp, config))
    return plan


def queue_ablations(
    hypotheses: Sequence[Hypothesis],
    base_config: Mapping[str, Any],
    script: Path,
    *,
    runs_root: Path,
    seeds: int = 1,
    approved_only: bool = True,
    **run_kwargs: Any,
) -> list[Any]:
    """Run each approved ablation through mlexp (`seeds` seeds each, or the ablation's own count).
    Returns the RunRecords; completed identical runs are skipped by mlexp's identity check."""
    from mlexp import run_script

    records = []
    for hyp, config in ablation_plan(hypotheses, base_config, approved_only=approved_only):
        for seed in range(hyp.ablation.seeds or seeds):
            records.append(
                run_script(
                    Path(script), config, runs_root=Path(runs_root), name=f"ablation-{hyp.id}", seed=seed, **run_kwargs
                )
            )
    return records
