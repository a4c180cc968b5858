"""What the paper index hands back (search hits with snippets, import statistics, add reports), and the `--before`
date rule."""

from __future__ import annotations

import re
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


@dataclass(frozen=True)
class StemPattern:
    regex: re.Pattern[str]
    term_of: dict[str, str]  # matched prefix -> the query term it stands for


def stem_pattern(terms: set[str]) -> StemPattern | None:
    """A regex finding where the query's stemmed terms start a word of raw text (lower case).

    Snowball's English stems are prefixes of the words they come from ("augment" of "augmentation"), except where a
    final "y" became "i" ("studi" of "study"): such a stem also matches without its "i". Analysing each hit's text
    with the engine's analyser instead cost ~0.2 ms a hit, a fifth of a whole keyword search at 1M units."""
    if not terms:
        return None
    term_of = {t[:-1]: t for t in terms if len(t) > 3 and t.endswith("i")}
    term_of |= {t: t for t in terms if t}
    body = "|".join(re.escape(t) for t in sorted(term_of, key=len, reverse=True))
    return StemPattern(re.compile(rf"\b(?:{body})"), term_of)


def snippet(text: str, pattern: StemPattern | None, width: int = 300) -> str:
    """The sentence (and its neighbours, up to `width` chars) where the most distinct query terms start words
    (`pattern` from `stem_pattern`)."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    if not sentences:
        return ""
    if pattern is None:
        best = 0
    else:
        found = [len({pattern.term_of[m] for m in pattern.regex.findall(s.lower())}) for s in sentences]
        best = max(range(len(sentences)), key=lambda i: (found[i], -i))
    out = sentences[best]
    j = best + 1
    while j < len(sentences) and len(out) + len(sentences[j]) < width:
        out += " " + sentences[j]
        j += 1
    return out if len(out) <= width else out[: width - 1].rsplit(" ", 1)[0] + "…"
