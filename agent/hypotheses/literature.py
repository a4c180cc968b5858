"""The LLM's hypotheses, backed by literature it actually retrieved, on top of the deterministic checklist.

`propose_hypotheses` runs the checklist (agent.hypotheses.checklist), which needs no LLM, and then, with a model:
asks it for searches of the local paper index (prompt `hypothesis_queries`), runs them, and asks for hypotheses with
quoted passages (prompt `hypotheses`; both prompts live in agent.llm.prompts). Every citation is checked
(agent.hypotheses.citations): a cited id must be in the index (or be the paper being replicated) and the quote must
appear in its text. A hypothesis with a citation that fails is kept but marked `unsupported` (or dropped with
`drop_unsupported=True`); it is never shown as backed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from agent.errors import LLMOutputError
from agent.hypotheses.checklist import run_checklist
from agent.hypotheses.citations import TextIndex, TextSource, check_citation
from agent.hypotheses.config_keys import flat
from agent.hypotheses.inputs import base_config_of
from agent.hypotheses.model import Ablation, Citation, Direction, Hypothesis, Priority, sort_hypotheses
from agent.llm import prompts
from agent.runs import Runs
from agent.spec import Spec
from mlexp.compare import Verdict, worst_first
from retrieval.errors import RetrievalError
from retrieval.models import Paper

if TYPE_CHECKING:  # langchain and the index cost seconds to import; only the types are needed here
    from langchain_core.language_models import BaseChatModel

    from retrieval.index import PaperIndex

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- what the LLM replies with


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


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class _Context:
    """What both prompts are told about this replication."""

    paper_id: str
    title: str
    verdicts: str
    checklist: str
    config: dict[str, Any]
    claim_ids: frozenset[str]
    setup: str
    sections: Any  # the paper sections about the diverged claims (a budget Fittable, agent.paper_context)


def paper_text(paper: Paper | None) -> str:
    if paper is None:
        return ""
    return "\n".join(p.text for p in paper.pages) or f"{paper.title}\n{paper.abstract}"


def search_literature(
    index: PaperIndex, queries: Sequence[str], *, k: int = 4, limit: int = 12, mode: str = "hybrid"
) -> list[dict[str, Any]]:
    hits: dict[str, dict[str, Any]] = {}
    for query in queries:
        try:
            found = index.search(query, k=k, mode=mode)
        except RetrievalError as exc:  # an empty or broken index leaves the LLM without literature, not the run broken
            log.warning("literature search %r failed: %s", query, exc)
            continue
        for hit in found:
            if hit.id not in hits and len(hits) < limit:
                hits[hit.id] = {"id": hit.id, "title": hit.title, "year": hit.year, "passage": hit.snippet}
    return list(hits.values())


def verify_hypothesis(hyp: Hypothesis, sources: TextSource | None) -> Hypothesis:
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


def verdict_lines(verdicts: Sequence[Verdict]) -> str:
    lines = []
    for v in worst_first(verdicts):
        measured = "n/a" if v.measured_mean is None else f"{v.measured_mean:.4g}"
        std = "" if v.measured_std is None else f" ± {v.measured_std:.2g}"
        lines.append(
            f"- {v.claim_id} ({v.metric}, {v.direction}): reported {v.reported}, measured {measured}{std} "
            f"(n={v.n}), verdict {v.verdict}: {v.reason}"
        )
    return "\n".join(lines) or "(none)"


def _context(paper: Paper | None, verdicts: Sequence[Verdict], runs: Runs, checklist: list[Hypothesis]) -> _Context:
    from agent.paper_context import claim_sections  # imports the LLM seam's budget (langchain): only when prompting

    setup = paper.setup.items if paper is not None else []
    return _Context(
        paper_id=(paper.slug if paper is not None else None) or "paper",
        title=(paper.title or paper.slug) if paper is not None else "",
        verdicts=verdict_lines(verdicts),
        checklist="\n".join(f"- [{h.category}] {h.statement}" for h in checklist) or "(nothing)",
        config=base_config_of(runs),
        claim_ids=frozenset(v.claim_id for v in verdicts),
        setup="\n".join(f"- {s.key}: {s.value} (p.{s.page})" for s in setup) or "(none)",
        sections=claim_sections(paper, [v.claim_id for v in verdicts if v.verdict != "replicated"]),
    )


def _find_literature(
    model: BaseChatModel, index: PaperIndex | None, ctx: _Context, *, log_dir: Path | None, search_mode: str
) -> list[dict[str, Any]]:
    """Ask the LLM what to search for, then search the index. Nothing without an index."""
    from agent.llm.seam import structured_call

    if index is None:
        return []
    variables = {"title": ctx.title, "verdicts": ctx.verdicts, "checklist": ctx.checklist}
    queries = structured_call(
        model, "hypothesis_queries", prompts.HYPOTHESIS_QUERIES, variables, _Queries, log_dir=log_dir
    )
    return search_literature(index, queries.queries, mode=search_mode)


def _ask_for_hypotheses(
    model: BaseChatModel, ctx: _Context, literature: list[dict[str, Any]], *, log_dir: Path | None, feedback: str
) -> _LLMHypotheses:
    from agent.llm.seam import structured_call

    known_keys = set(flat(ctx.config))

    def check(reply: _LLMHypotheses) -> None:
        # A config change with keys the script does not know is not a concrete ablation: ask again.
        for i, hyp in enumerate(reply.hypotheses):
            unknown = sorted(set(hyp.ablation.change) - known_keys) if hyp.ablation and ctx.config else []
            if unknown:
                raise ValueError(f"hypotheses[{i}].ablation.change uses keys not in the run config: {unknown}")
            bad = sorted(set(hyp.claim_ids) - ctx.claim_ids)
            if bad:
                raise ValueError(f"hypotheses[{i}].claim_ids not among the verdicts: {bad}")

    variables = {
        "paper_id": ctx.paper_id,
        "title": ctx.title,
        "verdicts": ctx.verdicts,
        "config": json.dumps(flat(ctx.config), indent=1, default=str) if ctx.config else "(no completed run)",
        "setup": ctx.setup,
        "paper": ctx.sections,
        "checklist": ctx.checklist,
        "literature": "\n".join(f"- {h['id']} | {h['title']} ({h['year']}) | {h['passage']}" for h in literature)
        or "(no index or no hits)",
        "feedback": feedback.strip() or "(none)",
    }
    return structured_call(
        model, "hypotheses", prompts.HYPOTHESES, variables, _LLMHypotheses, log_dir=log_dir, check=check
    )


def _checked_hypotheses(
    reply: _LLMHypotheses,
    literature: list[dict[str, Any]],
    sources: TextSource,
    *,
    drop_unsupported: bool,
) -> list[Hypothesis]:
    """The LLM's hypotheses as Hypothesis objects, every citation verified against `sources`."""
    titles = {h["id"]: h["title"] for h in literature}
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
    return proposed


def propose_hypotheses(
    model: BaseChatModel | None,
    paper: Paper | None,
    spec: Spec | None,
    verdicts: Sequence[Verdict],
    runs: Runs,
    index: PaperIndex | None,
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
    ctx = _context(paper, verdicts, runs, checklist)
    try:
        literature = _find_literature(model, index, ctx, log_dir=log_dir, search_mode=search_mode)
        reply = _ask_for_hypotheses(model, ctx, literature, log_dir=log_dir, feedback=feedback)
    except LLMOutputError as exc:
        if strict:
            raise
        log.warning("LLM hypotheses skipped, checklist only: %s", exc)
        return sort_hypotheses(checklist)
    sources = TextIndex({ctx.paper_id: paper_text(paper)}, fallback=index)
    return sort_hypotheses(
        checklist + _checked_hypotheses(reply, literature, sources, drop_unsupported=drop_unsupported)
    )
