"""Claims the researcher adds: results the paper reports where ingestion cannot read them (a value read off a
figure, a number in prose the ledger missed), kept beside the ingested paper and merged into its ledger.

They live in papers/<slug>.researcher-claims.json (a list of `Claim` records with source "researcher"), beside the
paper's folder rather than in it, so a re-ingestion of the PDF (which replaces the folder) keeps them; they are part
of the project folder. Every stage that loads the paper for the
agent (`with_researcher_claims`) sees them like ledger claims: the draft_spec prompt lists them (marked), a spec may
target them, the comparison gives them verdicts and the report shows them as the researcher's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import ValidationError

from agent.errors import AgentError
from mlexp import atomic
from retrieval.models import Claim, Paper

SUFFIX = ".researcher-claims.json"


class ResearcherClaimError(AgentError):
    """A researcher claim that cannot be added (no such paper, page, or an id already taken), or an unreadable file."""


def claims_file(paper_dir: Path) -> Path:
    paper_dir = Path(paper_dir)
    return paper_dir.parent / f"{paper_dir.name}{SUFFIX}"


def load(paper_dir: Path) -> list[Claim]:
    path = claims_file(paper_dir)
    if not path.exists():
        return []
    try:
        return [Claim.model_validate(item) for item in json.loads(path.read_text(encoding="utf-8"))]
    except (ValueError, ValidationError) as exc:
        raise ResearcherClaimError(f"{path} is unreadable ({exc}); fix or delete it") from exc


def with_researcher_claims(paper: Paper, paper_dir: Path) -> Paper:
    """`paper` with the researcher's claims appended to its ledger (ledger ids win on a clash)."""
    known = {claim.id for claim in paper.claims}
    extra = [claim for claim in load(paper_dir) if claim.id not in known]
    return paper.model_copy(update={"claims": [*paper.claims, *extra]}) if extra else paper


def next_id(existing: list[Claim]) -> str:
    numbers = [int(m.group(1)) for c in existing if (m := re.fullmatch(r"R(\d+)", c.id))]
    return f"R{max(numbers, default=0) + 1}"


def add(
    paper: Paper,
    paper_dir: Path,
    *,
    value: float,
    page: int,
    metric: str,
    figure: str | None = None,
    quote: str | None = None,
    dataset: str | None = None,
    method: str | None = None,
    std: float | None = None,
    higher_is_better: bool | None = None,
    claim_id: str | None = None,
) -> Claim:
    """Record one researcher claim (validated against the paper) and return it. Raises ResearcherClaimError."""
    if not 1 <= page <= paper.n_pages:
        raise ResearcherClaimError(f"page {page} is not in the paper ({paper.n_pages} pages)")
    if not (figure or "").strip() and not (quote or "").strip():
        raise ResearcherClaimError("say where the value is printed: --figure 'Figure 2' or --quote 'text on the page'")
    if quote:
        from agent.quotes import quote_in_text

        page_text = next((p.text for p in paper.pages if p.page == page), "")
        if not quote_in_text(page_text, quote):
            raise ResearcherClaimError(f"the quote is not on page {page}: {quote!r}")
    existing = load(paper_dir)
    claim_id = claim_id or next_id(existing)
    if claim_id in {c.id for c in paper.claims} | {c.id for c in existing}:
        raise ResearcherClaimError(f"claim id {claim_id!r} is already taken")
    where = figure or f"p. {page}"
    claim = Claim(
        id=claim_id,
        value=value,
        text=f"{value:g} [researcher, read off {where}]" if figure else f"{value:g} [researcher]",
        std=std,
        page=page,
        table=figure,
        metric=metric,
        dataset=dataset,
        method=method,
        higher_is_better=higher_is_better,
        quote=quote or f"(value read off {figure} by the researcher)",
        source="researcher",
    )
    atomic.write_json(claims_file(paper_dir), [c.model_dump(mode="json") for c in [*existing, claim]])
    return claim
