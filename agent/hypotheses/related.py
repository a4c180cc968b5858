"""Without a model: the paper index's passages related to each claim that did not replicate, as search results.

No model reads these passages or says what they mean, so they are not hypotheses: each one is a `Hypothesis` record
with `source="search"` and `support="search result"`, a statement that says it is a search result, the query that
found it, and the passage itself as a citation checked against the index (the quote must be in the indexed text,
as any citation's must). The report shows the source and support tags beside each entry, so nobody mistakes a
search hit for a model's or the checklist's explanation. The queries are built from the claim (method, setting,
dataset, metric, as the ledger has them) and from the checklist's high-priority findings for the claim.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.hypotheses.checklist import run_checklist
from agent.hypotheses.citations import TextSource, check_citation
from agent.hypotheses.inputs import claim_of
from agent.hypotheses.model import Citation, Hypothesis, sort_hypotheses
from agent.runs import Runs
from agent.spec import Spec
from mlexp.compare import Verdict, worst_first
from retrieval.errors import RetrievalError
from retrieval.models import Paper

if TYPE_CHECKING:  # the index costs seconds to import; only the type is needed here
    from retrieval.index import PaperIndex

log = logging.getLogger(__name__)

GAP_VERDICTS = ("diverged", "better")  # the claims whose gap the researcher wants explained
PASSAGES_PER_CLAIM = 3
MAX_QUERIES_PER_CLAIM = 3


def claim_queries(paper: Paper | None, verdict: Verdict, checklist: Sequence[Hypothesis]) -> list[str]:
    """What to search for one claim: what the ledger says it measures, then the checklist's leads for it."""
    claim = claim_of(paper, verdict.claim_id)
    parts = [claim.method, claim.row, claim.dataset, claim.metric] if claim is not None else []
    words = " ".join(str(p) for p in parts if p) or f"{verdict.metric}"
    queries = [re.sub(r"[/|=_]+", " ", words)]
    for hyp in checklist:
        if verdict.claim_id in hyp.claim_ids and hyp.priority == "high" and hyp.source == "checklist":
            queries.append(f"{claim.method if claim and claim.method else ''} {hyp.statement[:160]}".strip())
    unique = list(dict.fromkeys(q for q in queries if q.strip()))
    return unique[:MAX_QUERIES_PER_CLAIM]


def related_passages(
    paper: Paper | None,
    verdicts: Sequence[Verdict],
    checklist: Sequence[Hypothesis],
    index: PaperIndex | None,
    *,
    search_mode: str = "hybrid",
) -> list[Hypothesis]:
    """Up to PASSAGES_PER_CLAIM index passages for each diverged (or better-than-paper) claim, worst first.

    Nothing without an index. The paper being replicated is left out (its own text is not related work). A search
    that fails is logged and skipped: the checklist still stands.
    """
    if index is None:
        return []
    own = {paper.slug, paper.arxiv_id} if paper is not None else set()
    found: list[Hypothesis] = []
    for verdict in worst_first(list(verdicts)):
        if verdict.verdict not in GAP_VERDICTS:
            continue
        seen: set[str] = set()
        for query in claim_queries(paper, verdict, checklist):
            try:
                hits = index.search(query, k=PASSAGES_PER_CLAIM + 1, mode=search_mode)
            except RetrievalError as exc:
                log.warning("related-passage search %r failed: %s", query, exc)
                continue
            for hit in hits:
                if hit.id in seen or hit.id in own or not (hit.snippet or "").strip():
                    continue
                if len(seen) >= PASSAGES_PER_CLAIM:
                    break
                seen.add(hit.id)
                found.append(_as_record(len(found) + 1, verdict, query, hit.id, hit.title, hit.year, hit.snippet,
                                        index))  # fmt: skip
    return found


def _as_record(
    number: int,
    verdict: Verdict,
    query: str,
    paper_id: str,
    title: str,
    year: int | None,
    passage: str,
    index: TextSource,
) -> Hypothesis:
    checked = check_citation(index, paper_id, passage)
    citation = Citation(paper_id=paper_id, quote=passage, title=title, verified=checked.ok, note=checked.reason)
    when = f" ({year})" if year else ""
    return Hypothesis(
        id=f"search-{number}",
        statement=(
            f"Search result, not a hypothesis (no model read it): the paper index returns {title or paper_id}{when} "
            f"for claim {verdict.claim_id} ({verdict.verdict})"
        ),
        category="literature",
        source="search",
        claim_ids=[verdict.claim_id],
        evidence=[f"index query: {query}"],
        citations=[citation] if checked.ok else [],
        rejected_citations=[] if checked.ok else [citation],
        support="search result",
        priority="low",
    )


def checklist_and_passages(
    paper: Paper | None, spec: Spec | None, verdicts: Sequence[Verdict], runs: Runs, index: PaperIndex | None
) -> list[Hypothesis]:
    """The hypotheses step without a model: the deterministic checklist, then the index's passages for each claim
    that did not replicate (search results, marked as such), highest priority first."""
    checklist = run_checklist(paper, spec, verdicts, runs)
    return sort_hypotheses([*checklist, *related_passages(paper, verdicts, checklist, index)])
