"""Split a full-text paper into overlapping word windows that keep their page number.

A window never spans two pages, so every hit can say which page its text is on (needed to verify quotes). Windows of
~180 words fit MiniLM's 256-token limit with room for the title prefix; the overlap keeps a sentence that straddles a
window boundary findable as a whole in at least one window.
"""

from __future__ import annotations

from dataclasses import dataclass

CHUNK_WORDS = 180
CHUNK_OVERLAP = 40
CHUNKING_VERSION = f"page-words-{CHUNK_WORDS}-{CHUNK_OVERLAP}-v1"


@dataclass(frozen=True)
class Chunk:
    chunk: int  # 0-based position in the paper
    page: int  # 1-based page number
    text: str


def chunk_pages(pages: list[tuple[int, str]], *, words: int = CHUNK_WORDS, overlap: int = CHUNK_OVERLAP) -> list[Chunk]:
    """Chunks for `(page_number, text)` pairs, in page order. Empty pages give no chunk."""
    if overlap >= words:
        raise ValueError("overlap must be smaller than the window")
    out: list[Chunk] = []
    step = words - overlap
    for page, text in pages:
        tokens = text.split()
        if not tokens:
            continue
        start = 0
        while True:
            window = tokens[start : start + words]
            out.append(Chunk(chunk=len(out), page=page, text=" ".join(window)))
            if start + words >= len(tokens):
                break
            start += step
    return out
