"""Check that a cited passage really is in the cited paper.

An LLM asked for literature support will happily invent paper ids and paraphrase passages into "quotes". A citation
counts as verified only when the id exists in the local paper index and the quote appears in that paper's indexed
text. The comparison forgives what PDF extraction and copying do to text (line breaks, hyphenation at line ends,
ligatures, curly quotes, case, accents) and nothing else: a changed word, number or order fails.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Protocol

from pydantic import BaseModel

# Hyphen-like characters, soft hyphen included. Together with any whitespace after them they are deleted, so
# "tech-\nniques", "tech- niques" and "techniques" compare equal, as do "drop-in" and "drop-\nin".
_HYPHENS = "-\u00ad\u2010\u2011\u2012\u2013\u2014\u2212"
_HYPHEN_RE = re.compile(f"[{_HYPHENS}]\\s*")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"'})
_ELLIPSIS_RE = re.compile(r"\s*(?:\.\s*\.\s*\.|\u2026|\[\s*\.\.\.\s*\])\s*")
_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)

# A "quote" of a couple of words proves nothing: it appears in almost any paper.
MIN_QUOTE_CHARS = 20
MIN_QUOTE_WORDS = 4


class TextSource(Protocol):
    def get_text(self, paper_id: str) -> str | None: ...


class CitationCheck(BaseModel):
    """The outcome of one check, with the reason a citation was rejected."""

    ok: bool
    reason: str


def _fold(text: str) -> str:
    """NFKC (ligatures), strip accents, casefold, straight quotes, hyphenation removed."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.translate(_QUOTES).casefold()
    return _HYPHEN_RE.sub("", text)


def normalize_text(text: str) -> str:
    """Words only, single-spaced: what two renderings of the same passage have in common."""
    return " ".join(_TOKEN_RE.findall(_fold(text)))


def quote_fragments(quote: str) -> list[str]:
    """A quote with ellipses ("a ... b") is several fragments that must appear in this order."""
    return [frag for frag in (normalize_text(part) for part in _ELLIPSIS_RE.split(quote)) if frag]


def check_quote_in_text(text: str, quote: str) -> CitationCheck:
    """Is `quote` (possibly with ellipses) a passage of `text`, up to whitespace, case and hyphenation?"""
    fragments = quote_fragments(quote)
    joined = " ".join(fragments)
    if len(joined) < MIN_QUOTE_CHARS or len(joined.split()) < MIN_QUOTE_WORDS:
        return CitationCheck(
            ok=False,
            reason=f"quote too short to verify (need {MIN_QUOTE_WORDS} words and {MIN_QUOTE_CHARS} characters)",
        )
    haystack = f" {normalize_text(text)} "
    squeezed = haystack.replace(" ", "")
    pos = 0
    for frag in fragments:
        found = haystack.find(f" {frag} ", pos)
        if found >= 0:
            pos = found + len(frag) + 1
            continue
        # Word boundaries can differ when the PDF split or joined words ("data set" vs "dataset"); accept the
        # fragment if its letters appear in order without gaps anywhere after the previous fragment.
        squeezed_pos = len(haystack[:pos].replace(" ", ""))
        if squeezed.find(frag.replace(" ", ""), squeezed_pos) >= 0:
            continue
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


def check_citation(index: Any, paper_id: str, quote: str) -> CitationCheck:
    """Verify one citation against a PaperIndex (or anything with `get_text(id) -> str | None`)."""
    if not paper_id or not str(paper_id).strip():
        return CitationCheck(ok=False, reason="no paper id given")
    if index is None:
        return CitationCheck(ok=False, reason="no paper index available to verify against")
    text = None
    for pid in _id_variants(str(paper_id)):
        try:
            text = index.get_text(pid)
        except Exception as exc:  # an index that cannot answer cannot vouch for the citation
            return CitationCheck(ok=False, reason=f"index lookup failed: {type(exc).__name__}: {exc}")
        if text:
            break
    if not text:
        return CitationCheck(ok=False, reason=f"paper id {paper_id!r} is not in the index")
    return check_quote_in_text(text, quote or "")


def verify_citation(index: Any, paper_id: str, quote: str) -> bool:
    """True only if `paper_id` is in the index and `quote` appears in that paper's indexed text."""
    return check_citation(index, paper_id, quote).ok


class TextIndex:
    """A fixed id -> text mapping with the `get_text` of a PaperIndex: the paper being replicated is citable too.

    Wraps an optional real index; ids in `texts` are answered from here, everything else is passed through.
    """

    def __init__(self, texts: dict[str, str], fallback: Any = None) -> None:
        self.texts = dict(texts)
        self.fallback = fallback

    def get_text(self, paper_id: str) -> str | None:
        if paper_id in self.texts:
            return self.texts[paper_id]
        return self.fallback.get_text(paper_id) if self.fallback is not None else None
