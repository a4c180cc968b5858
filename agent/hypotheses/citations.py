"""Check that a cited passage really is in the cited paper.

An LLM asked for literature support will happily invent paper ids and paraphrase passages into "quotes". A citation
counts as verified only when the id exists in the local paper index and the quote appears in that paper's indexed
text, by agent.quotes' rule (the one the spec's quotes are checked by too), and is long enough to prove something.
"""

from __future__ import annotations

import re
from typing import Protocol

from pydantic import BaseModel

from agent.quotes import missing_fragment, quote_fragments
from retrieval.errors import RetrievalError

# A "quote" of a couple of words proves nothing: it appears in almost any paper.
MIN_QUOTE_CHARS = 20
MIN_QUOTE_WORDS = 4


class TextSource(Protocol):
    def get_text(self, paper_id: str) -> str | None: ...


class CitationCheck(BaseModel):
    """The outcome of one check, with the reason a citation was rejected."""

    ok: bool
    reason: str


def check_quote_in_text(text: str, quote: str) -> CitationCheck:
    """Is `quote` (possibly with ellipses) a passage of `text` (agent.quotes' rule), and long enough to prove it?"""
    joined = " ".join(quote_fragments(quote))
    if len(joined) < MIN_QUOTE_CHARS or len(joined.split()) < MIN_QUOTE_WORDS:
        return CitationCheck(
            ok=False,
            reason=f"quote too short to verify (need {MIN_QUOTE_WORDS} words and {MIN_QUOTE_CHARS} characters)",
        )
    frag = missing_fragment(text, quote)
    if frag is not None:
        shown = frag if len(frag) <= 60 else frag[:57] + "..."
        return CitationCheck(ok=False, reason=f"passage not found in the paper's text: {shown!r}")
    return CitationCheck(ok=True, reason="quote found in the paper's indexed text")


def _id_variants(paper_id: str) -> list[str]:
    """The id as given, then without an "arXiv:" prefix or a version suffix (1708.07747v2 -> 1708.07747)."""
    pid = paper_id.strip()
    out = [pid]
    bare = re.sub(r"^(arxiv:|arXiv:|https?://arxiv\.org/(abs|pdf)/)", "", pid, flags=re.IGNORECASE)
    for cand in (bare, re.sub(r"v\d+$", "", bare)):
        if cand and cand not in out:
            out.append(cand)
    return out


def check_citation(index: TextSource | None, paper_id: str, quote: str) -> CitationCheck:
    """Verify one citation against a PaperIndex (or anything with `get_text(id) -> str | None`)."""
    if not paper_id or not str(paper_id).strip():
        return CitationCheck(ok=False, reason="no paper id given")
    if index is None:
        return CitationCheck(ok=False, reason="no paper index available to verify against")
    text = None
    for pid in _id_variants(str(paper_id)):
        try:
            text = index.get_text(pid)
        except (RetrievalError, OSError) as exc:  # an index that cannot answer cannot vouch for the citation
            return CitationCheck(ok=False, reason=f"index lookup failed: {type(exc).__name__}: {exc}")
        if text:
            break
    if not text:
        return CitationCheck(ok=False, reason=f"paper id {paper_id!r} is not in the index")
    return check_quote_in_text(text, quote or "")


def verify_citation(index: TextSource | None, paper_id: str, quote: str) -> bool:
    """True only if `paper_id` is in the index and `quote` appears in that paper's indexed text."""
    return check_citation(index, paper_id, quote).ok


class TextIndex:
    """A fixed id -> text mapping with the `get_text` of a PaperIndex: the paper being replicated is citable too.

    Wraps an optional real index; ids in `texts` are answered from here, everything else is passed through.
    """

    def __init__(self, texts: dict[str, str], fallback: TextSource | None = None) -> None:
        self.texts = dict(texts)
        self.fallback = fallback

    def get_text(self, paper_id: str) -> str | None:
        if paper_id in self.texts:
            return self.texts[paper_id]
        return self.fallback.get_text(paper_id) if self.fallback is not None else None
