"""The keyword side of the paper index: a tantivy full-text index (BM25, memory-mapped segments, filters inside).

One tantivy document per searchable unit (an arXiv abstract or a page-tagged chunk of a full-text paper):

    uid   u64, indexed + fast   the unit's row id in docs.sqlite; the join key with the vectors
    pid   raw string            the paper id: replacing a full-text paper deletes its old units by this term
    text  tokenised, freq only  the title `title_boost` times, then the abstract or chunk (no positions: no phrase
                                queries are needed, and leaving positions out makes the index smaller and faster)
    cat   raw strings           every arXiv category of the paper and its archive ("cs.LG" and "cs")
    date  i64, indexed + fast   the first-version date as YYYYMMDD (0 when unknown)

Scoring is tantivy's BM25 (k1 = 1.2, b = 0.75, Lucene's IDF) over the whole index. Text is analysed by one
analyser for documents and queries alike: tantivy's `simple` tokenizer, terms longer than 32 characters dropped
(hashes, URLs), lower case, the bm25s English stop-word list, Snowball English stemmer. A query is the disjunction of
its distinct terms, so no user text can be a query-syntax error. Category and date filters are clauses of the same
tantivy query (scored 0, so they change which units match, never their order).

Crash safety: docs.sqlite is the source of truth. Units reach tantivy in uid order and a tantivy commit is atomic,
so the committed index always holds exactly the live units below `covered_hi` (the largest committed uid + 1); a
process killed mid-import loses only uncommitted keyword work, which `PaperIndex` re-adds from SQLite from
`covered_hi` on. Nothing is ever added twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tantivy
from bm25s.stopwords import STOPWORDS_EN

from retrieval.errors import PaperIndexError

ENGINE = "tantivy"
ANALYSER = "simple/remove-long-32/lower/stop-bm25s-en/snowball-en"
MAX_TERM = 32
WRITER_HEAP = 192_000_000  # bytes over all indexing threads; larger segments mean fewer merges during an import


def engine_version() -> str:
    from importlib.metadata import version

    return version("tantivy")


class KeywordUnit(NamedTuple):  # a tuple, not a dataclass: an import builds one per record (~5x cheaper)
    uid: int
    paper_id: str
    title: str
    text: str
    categories: str  # space separated
    date: str  # YYYY-MM-DD or ""


def date_int(date: str) -> int:
    digits = (date or "")[:10].replace("-", "")
    return int(digits) if digits.isdigit() and len(digits) == 8 else 0


def _analyser() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(MAX_TERM + 1))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.custom_stopword(sorted(STOPWORDS_EN)))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_unsigned_field("uid", indexed=True, fast=True)
    sb.add_text_field("pid", tokenizer_name="raw", index_option="basic")
    sb.add_text_field("text", tokenizer_name="replicate_en", index_option="freq")
    sb.add_text_field("cat", tokenizer_name="raw", index_option="basic")
    sb.add_integer_field("date", indexed=True, fast=True)
    return sb.build()


class KeywordIndex:
    """A tantivy index in `folder`; `title_boost` is part of the index settings (see `settings`)."""

    def __init__(self, folder: Path, *, title_boost: int):
        self.folder = folder
        self.title_boost = title_boost
        folder.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        try:
            self.index = tantivy.Index(self.schema, path=str(folder), reuse=True)
        except (OSError, ValueError) as exc:
            raise PaperIndexError(f"cannot open the keyword index at {folder}: {exc}") from exc
        self.analyser = _analyser()
        self.index.register_tokenizer("replicate_en", self.analyser)
        self.index.config_reader(reload_policy="Manual")  # this process reloads after its own commits
        self._writer: tantivy.IndexWriter | None = None
        self._dirty = False
        self._refresh()

    @staticmethod
    def settings(title_boost: int) -> str:
        """What decides the keyword index's content: part of the index identity (retrieval/recipe.py)."""
        return f"{ENGINE}-{engine_version()}/bm25-k1.2-b0.75/{ANALYSER}/title-x{title_boost}/freq"

    # -- reading ------------------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.index.reload()
        self.searcher = self.index.searcher()
        self.n_docs = int(self.searcher.num_docs)
        self.generation = getattr(self, "generation", 0) + 1
        if self.n_docs == 0:
            self.covered_hi = 1
            return
        agg = self.searcher.aggregate(tantivy.Query.all_query(), {"hi": {"max": {"field": "uid"}}})
        self.covered_hi = int(agg["hi"]["value"] or 0) + 1

    def reopen(self) -> None:
        """See what another process committed (an import running beside this reader)."""
        self._refresh()

    @property
    def num_segments(self) -> int:
        return int(self.searcher.num_segments)

    def terms(self, text: str) -> list[str]:
        return list(self.analyser.analyze(text))

    def filter_query(self, category: str | None, cutoff: int | None) -> tantivy.Query | None:
        """The filter as a tantivy query (None: no filter). `cutoff` is YYYYMMDD, exclusive; undated units never
        pass a date filter."""
        clauses = []
        if category:
            clauses.append(tantivy.Query.term_query(self.schema, "cat", category, index_option="basic"))
        if cutoff is not None:
            clauses.append(
                tantivy.Query.range_query(
                    self.schema, "date", tantivy.FieldType.Integer, 1, cutoff, include_upper=False
                )
            )
        if not clauses:
            return None
        if len(clauses) == 1:
            return clauses[0]
        return tantivy.Query.boolean_query([(tantivy.Occur.Must, c) for c in clauses])

    def _text_query(self, query: str) -> tantivy.Query | None:
        terms = sorted(set(self.terms(query)))
        if not terms:
            return None
        return tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "text", t, index_option="freq"))
                for t in terms
            ]
        )

    def search(self, query: str, n: int, filt: tantivy.Query | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(uids, BM25 scores) of the best `n` units matching `query` and the filter, best first."""
        q = self._text_query(query)
        if q is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if filt is not None:
            q = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, q), (tantivy.Occur.Must, tantivy.Query.const_score_query(filt, 0.0))]
            )
        return self._run(q, n)

    def _run(self, q: tantivy.Query, n: int) -> tuple[np.ndarray, np.ndarray]:
        res = self.searcher.search(q, limit=n, count=False)
        if not res.hits:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = np.fromiter((s for s, _ in res.hits), dtype=np.float32, count=len(res.hits))
        uids = np.array(self.searcher.fast_field_values("uid", [a for _, a in res.hits]), dtype=np.int64)
        return uids, scores

    def count(self, filt: tantivy.Query | None) -> int:
        if filt is None:
            return self.n_docs
        res: Any = self.searcher.search(filt, limit=1, count=True)  # the stubs lack SearchResult.count
        return int(res.count)

    def filtered_uids(self, filt: tantivy.Query, limit: int) -> np.ndarray:
        """Every uid the filter keeps (at most `limit`), ascending."""
        res = self.searcher.search(filt, limit=limit, count=False, order_by_field="uid", order=tantivy.Order.Asc)
        return np.fromiter((u for u, _ in res.hits), dtype=np.int64, count=len(res.hits))

    # -- writing ------------------------------------------------------------------------------------------------
    def _w(self) -> tantivy.IndexWriter:
        if self._writer is None:
            try:
                self._writer = self.index.writer(heap_size=WRITER_HEAP, num_threads=min(os.cpu_count() or 1, 4))
            except ValueError as exc:  # tantivy's writer lock: one writing process per index
                raise PaperIndexError(
                    f"another process is writing the keyword index at {self.folder} (an import or `index add`?): "
                    "wait for it to finish, then retry"
                ) from exc
        return self._writer

    def writable(self) -> bool:
        """Whether this process can write now (no other process holds the writer lock)."""
        try:
            self._w()
        except PaperIndexError:
            return False
        return True

    def add(self, units: Iterable[KeywordUnit]) -> int:
        """Queue units (ascending uids, all >= covered_hi) for the next commit."""
        writer = self._w()
        boost = self.title_boost
        n = 0
        for uid, paper_id, title, text, categories, day in units:
            doc = tantivy.Document()
            doc.add_unsigned("uid", uid)
            doc.add_text("pid", paper_id)
            doc.add_text("text", f"{(title + ' . ') * boost}{text or ''}" if title else (text or ""))
            for cat in _with_archives(categories):
                doc.add_text("cat", cat)
            doc.add_integer("date", date_int(day))
            writer.add_document(doc)
            n += 1
        self._dirty = self._dirty or n > 0
        return n

    def delete_papers(self, paper_ids: Iterable[str]) -> None:
        """Delete every unit of these papers (before re-adding their new units in the same commit)."""
        writer = self._w()
        for pid in paper_ids:
            writer.delete_documents_by_term("pid", pid)
            self._dirty = True

    def commit(self, *, final: bool = False) -> None:
        """Publish everything queued (atomic). `final` also waits for background merges and frees the writer, so
        the segments a long import leaves are few and queries stay fast."""
        if self._writer is None:
            return
        if self._dirty:
            try:
                self._writer.commit()
            except (OSError, ValueError) as exc:  # tantivy reports I/O failures (disk full) as ValueError
                raise PaperIndexError(
                    f"cannot write the keyword index at {self.folder}: {exc}; free some disk space and rerun the "
                    "command (an import resumes where it stopped)"
                ) from exc
            self._dirty = False
        if final:
            self._writer.wait_merging_threads()
            self._writer = None
        self._refresh()

    def rollback(self) -> None:
        if self._writer is not None and self._dirty:
            self._writer.rollback()
            self._dirty = False

    def close(self) -> None:
        if self._writer is not None:
            self.rollback()
            self._writer = None

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())


def _with_archives(categories: str) -> list[str]:
    """ "cs.LG cs.CV stat.ML" -> ["cs.LG", "cs", "cs.CV", "stat.ML", "stat"]: `--category cs` matches every cs.*
    paper; each value once."""
    out: list[str] = []
    for cat in (categories or "").split():
        if cat not in out:
            out.append(cat)
        archive = cat.partition(".")[0]
        if archive != cat and archive not in out:
            out.append(archive)
    return out
