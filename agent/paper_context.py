"""Which parts of the paper each prompt gets, as budget Fittables (agent.llm.budget) over the paper view.

- draft_spec: the whole view (cut to the window in SELECTION_ORDER) and the whole ledger (condensed when large).
- implement_code / fix_code: the sections the spec cites (pages of its hyperparameter quotes and of its targets)
  plus the method, setup, experiments, data and appendix sections.
- propose_hypotheses: the sections holding each diverged claim (its page), plus method and setup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent.llm.budget import Ledger, PaperText
from agent.spec import Spec
from retrieval.models import Paper
from retrieval.paper_view import PaperView, ViewSection, build_view

HOW_KINDS = ("method", "setup", "experiments", "data", "appendix")


def _on_pages(view: PaperView, pages: Iterable[int]) -> list[ViewSection]:
    wanted = set(pages)
    return [
        s for s in view.sections
        if s.kind != "references" and any(s.page_start <= p <= s.page_end for p in wanted)
    ]  # fmt: skip


def _titles(sections: Sequence[ViewSection]) -> list[str]:
    seen: list[str] = []
    for section in sections:
        if section.title not in seen:
            seen.append(section.title)
    return seen


def whole_paper(paper: Paper) -> PaperText:
    return PaperText(build_view(paper))


def ledger(paper: Paper) -> Ledger:
    return Ledger(list(paper.claims))


def spec_sections(paper: Paper, spec: Spec) -> PaperText:
    """For the code prompts: the sections the spec cites first, then how the method is run."""
    view = build_view(paper)
    pages = [hp.page for hp in spec.hyperparameters if hp.page is not None]
    claims = {c.id: c for c in paper.claims}
    pages += [claims[t.claim_id].page for t in spec.targets if t.claim_id in claims]
    pages += [t.page for t in spec.targets if t.page is not None]
    cited = _on_pages(view, pages)
    how = [s for s in view.sections if s.kind in HOW_KINDS]
    names = _titles([*cited, *how])
    return PaperText(view, only=names or None, forced=_titles(cited))


def claim_sections(paper: Paper | None, claim_ids: Iterable[str]) -> PaperText | str:
    """For the hypotheses prompt: the sections where the given (diverged) claims are printed, then method/setup."""
    if paper is None:
        return "(paper not available)"
    view = build_view(paper)
    claims = {c.id: c for c in paper.claims}
    pages = [claims[cid].page for cid in claim_ids if cid in claims]
    near = _on_pages(view, pages)
    how = [s for s in view.sections if s.kind in ("method", "setup")]
    names = _titles([*near, *how])
    return PaperText(view, only=names or None, forced=_titles(near), share=2.0)
