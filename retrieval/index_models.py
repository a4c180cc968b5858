"""What the paper index hands back (search hits with snippets, import statistics, add reports), and the `--before`
date rule."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime

from retrieval.errors import PaperIndexError


@dataclass
class Hit:
    id: str
    title: str
    year: int | None
    score: float
    snippet: str
    page: int | None = None
    chunk: int | None = None
    source: str = "arxiv"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImportStats:
    file: str
    lines: int = 0  # lines read in this run
    imported: int = 0  # new papers stored in this run
    duplicates: int = 0  # records whose id was already in the index
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    resumed_from_line: int = 0
    already_done: bool = False
    seconds: float = 0.0
    bm25_seconds: float = 0.0  # the keyword side's own share (tantivy commits and merges after the last batch)

    @property
    def rate(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "rate": round(self.rate, 1)}


@dataclass
class AddReport:
    added: list[str] = field(default_factory=list)  # paper ids
    skipped: list[str] = field(default_factory=list)  # paths unchanged since they were added
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line error)
    chunks: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def as_date(before: str | date | datetime | None) -> int | None:
    if before is None or before == "":
        return None
    if isinstance(before, datetime):
        before = before.date()
    if isinstance(before, date):
        return int(before.strftime("%Y%m%d"))
    try:
        return int(date.fromisoformat(str(before)[:10]).strftime("%Y%m%d"))
    except ValueError as exc:
        raise PaperIndexError(f"bad --before date {before!r}: expected YYYY-MM-DD") from exc


_SENTENCE_MARK = "qqsentencebreakqq"  # kept as it is by the analyser: one analyser call per text, not per sentence


def snippet(text: str, terms: set[str], terms_of: Callable[[str], list[str]], width: int = 300) -> str:
    """The sentence (and its neighbours, up to `width` chars) with the most query terms (as `terms_of` analyses)."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    if not sentences:
        return ""
    per_sentence: list[set[str]] = [set()]
    for term in terms_of(f" {_SENTENCE_MARK} ".join(sentences)):
        if term == _SENTENCE_MARK:
            per_sentence.append(set())
        else:
            per_sentence[-1].add(term)
    if len(per_sentence) != len(sentences):  # a sentence that itself contains the mark: analyse one by one
        per_sentence = [set(terms_of(s)) for s in sentences]
    best = max(range(len(sentences)), key=lambda i: (len(terms & per_sentence[i]), -i))
    out = sentences[best]
    j = best + 1
    while j < len(sentences) and len(out) + len(sentences[j]) < width:
        out += " " + sentences[j]
        j += 1
    return out if len(out) <= width else out[: width - 1].rsplit(" ", 1)[0] + "…"
