"""Is this quote in that text? The one rule for every quote the agent checks: a spec's hyperparameter quote against
its page, an LLM's citation against the cited paper.

The comparison forgives what PDF extraction and copying do to text (line breaks, hyphenation at line ends,
ligatures, curly quotes, case, accents, words split or joined by the PDF) and nothing else: a changed word, number or
order fails. A quote with ellipses ("a ... b") is several fragments that must appear in this order.
"""

from __future__ import annotations

import re
import unicodedata

# Hyphen-like characters, soft hyphen included. Together with any whitespace after them they are deleted, so
# "tech-\nniques", "tech- niques" and "techniques" compare equal, as do "drop-in" and "drop-\nin".
_HYPHENS = "-\u00ad\u2010\u2011\u2012\u2013\u2014\u2212"
_HYPHEN_RE = re.compile(f"[{_HYPHENS}]\\s*")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"'})
_ELLIPSIS_RE = re.compile(r"\s*(?:\.\s*\.\s*\.|\u2026|\[\s*\.\.\.\s*\])\s*")
_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)


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


def missing_fragment(text: str, quote: str) -> str | None:
    """The first fragment of `quote` (normalised) that is not in `text`; None when the whole quote is there."""
    haystack = f" {normalize_text(text)} "
    squeezed = haystack.replace(" ", "")
    pos = 0
    for frag in quote_fragments(quote):
        found = haystack.find(f" {frag} ", pos)
        if found >= 0:
            pos = found + len(frag) + 1
            continue
        # Word boundaries can differ when the PDF split or joined words ("data set" vs "dataset"); accept the
        # fragment if its letters appear in order without gaps anywhere after the previous fragment.
        squeezed_pos = len(haystack[:pos].replace(" ", ""))
        if squeezed.find(frag.replace(" ", ""), squeezed_pos) >= 0:
            continue
        return frag
    return None


def quote_in_text(text: str, quote: str) -> bool:
    return missing_fragment(text, quote) is None
