"""The keyword side of the paper index: tantivy full-text indexes (BM25, memory-mapped segments, filters inside).

One tantivy document per searchable unit (an arXiv abstract or a page-tagged chunk of a full-text paper):

    uid   u64, indexed + fast   the unit's row id in docs.sqlite; the join key with the vectors
    pid   raw string            the paper id: replacing a full-text paper deletes its old units by this term
    text  tokenised, freq only  the title `title_boost` times, then the abstract or chunk (no positions: no phrase
                                queries are needed, and leaving positions out makes the index smaller and faster)
    cat   raw strings           every arXiv category of the paper and its archive ("cs.LG" and "cs")
    date  i64, indexed + fast   the first-version date as YYYYMMDD (0 when unknown)

Scoring is BM25 (k1 = 1.2, b = 0.75, Lucene's IDF) over the whole index. Text is analysed by one analyser for
documents and queries alike: tantivy's `simple` tokenizer, terms longer than 32 characters dropped (hashes, URLs),
lower case, the bm25s English stop-word list, Snowball English stemmer. A query is the disjunction of its distinct
terms, so no user text can be a query-syntax error. Category and date filters are clauses of the same tantivy query
(scored 0, so they change which units match, never their order).

Shards: the units are split over `SHARDS` tantivy indexes by uid (`uid % SHARDS`) and a query runs in all of them
at once, one thread each. tantivy-py collects hits through a MultiCollector, which scores every unit matching any
query term (no block-max WAND), so a query's cost grows with the index; two half-size indexes searched side by side
cut a keyword search at 1M units by ~40% on two cores (docs/index.md). Each shard would score with its own term
statistics; the query boosts every term by idf(whole index) / idf(shard), so the merged ranking is the ranking of
one index (top-10 identical on 220 title queries at 1M units, top-100 99.9%).

Common terms (Lucene's CommonTermsQuery, Elasticsearch's `cutoff_frequency`): since nothing prunes, a query's cost
is the postings of its terms, and most of them belong to its few common terms ("learning", "model"). An unfiltered
search whose common terms (in more than `COMMON` of the units) hold at least `COMMON_MIN_POSTINGS` postings ranks the
units that contain at least one of its rare terms: their scores are the exact BM25 of every query term (each common
term is scored only on those units, through an intersection that skips through its postings), and units holding
only common terms are left out. If fewer than n units contain a rare term, the search is the exact one. At 1M
units of the scale benchmark this cut keyword-only search by ~40% with top-10 lists identical to the exact ones;
on distinct real records about one result in seven of a top 10 changes (known items stay found; docs/index.md).
`exact=True` turns it off. Filtered searches stay exact: rareness is measured on the whole index, not on what a
filter keeps.

Crash safety: docs.sqlite is the source of truth. Units reach the shards in uid order, each shard's commit is
atomic, and `covered.json` (covered_hi: every live unit below it is indexed) is replaced only after every shard has
committed. A process killed mid-import loses only uncommitted keyword work, which `PaperIndex` re-adds from SQLite
from `covered_hi` on; a shard that committed before the kill holds some of those units already, and each of them
replaces its copy (`add` deletes the uid first), so nothing is ever added twice.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import tantivy
from bm25s.stopwords import STOPWORDS_EN

from retrieval.errors import PaperIndexError

ENGINE = "tantivy"
ANALYSER = "simple/remove-long-32/lower/stop-bm25s-en/snowball-en"
MAX_TERM = 32
WRITER_HEAP = 192_000_000  # bytes over all shards' writers; larger segments mean fewer merges during an import
SHARDS = 2  # tantivy indexes, searched in parallel: unit `uid` lives in shard `uid % SHARDS` (see the docstring)
COMMON = 0.01  # a query term in more than this fraction of the units is common (see the docstring)
COMMON_MIN_POSTINGS = 200_000  # common-term postings below which the exact search is cheap enough (~1.5 ms at 1M)
DOC_FREQ_CACHE = 100_000  # terms whose document frequency each shard remembers until its next reload
COVERED = "covered.json"
T = TypeVar("T")


def engine_version() -> str:
    from importlib.metadata import version

    return version("tantivy")


class _TermStats(NamedTuple):
    terms: list[str]  # the query's distinct terms, analysed
    shard_dfs: list[list[int]]  # per shard, per term
    dfs: list[int]  # over the whole index
    idf: list[float]  # over the whole index


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


def analyser(*, stem: bool = True) -> tantivy.TextAnalyzer:
    """The keyword index's analyser (`ANALYSER`); `stem=False` leaves out its last filter, the Snowball stemmer
    (benchmarks/cpu_ceilings.py times what stemming costs)."""
    chain = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(MAX_TERM + 1))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.custom_stopword(sorted(STOPWORDS_EN)))
    )
    return (chain.filter(tantivy.Filter.stemmer("english")) if stem else chain).build()


def _schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_unsigned_field("uid", indexed=True, fast=True)
    sb.add_text_field("pid", tokenizer_name="raw", index_option="basic")
    sb.add_text_field("text", tokenizer_name="replicate_en", index_option="freq")
    sb.add_text_field("cat", tokenizer_name="raw", index_option="basic")
    sb.add_integer_field("date", indexed=True, fast=True)
    return sb.build()


class _Shard:
    """One tantivy index: its searcher, its writer, and what it holds (for the merge and the resume)."""

    def __init__(self, folder: Path, schema: tantivy.Schema, analyser: tantivy.TextAnalyzer, heap: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        try:
            self.index = tantivy.Index(schema, path=str(folder), reuse=True)
        except (OSError, ValueError) as exc:
            raise PaperIndexError(f"cannot open the keyword index at {folder}: {exc}") from exc
        self.index.register_tokenizer("replicate_en", analyser)
        self.index.config_reader(reload_policy="Manual")  # this process reloads after its own commits
        self.heap = heap
        self.writer: tantivy.IndexWriter | None = None
        self.dirty = False
        self.refresh()

    def refresh(self) -> None:
        self.index.reload()
        self.searcher = self.index.searcher()
        self.n_docs = int(self.searcher.num_docs)
        self.doc_freqs: dict[str, int] = {}
        self.max_uid = 0  # the largest uid this shard holds: a resumed import upserts the units up to it
        if self.n_docs:
            agg = self.searcher.aggregate(tantivy.Query.all_query(), {"hi": {"max": {"field": "uid"}}})
            self.max_uid = int(agg["hi"]["value"] or 0)

    def doc_freq(self, term: str) -> int:
        df = self.doc_freqs.get(term)
        if df is None:
            if len(self.doc_freqs) >= DOC_FREQ_CACHE:
                self.doc_freqs.clear()
            df = self.doc_freqs[term] = int(self.searcher.doc_freq("text", term))
        return df

    def run(self, q: tantivy.Query | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(uids, scores) of this shard's best `n` units for `q`."""
        if q is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        res = self.searcher.search(q, limit=n, count=False)
        if not res.hits:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = np.fromiter((s for s, _ in res.hits), dtype=np.float32, count=len(res.hits))
        uids = np.array(self.searcher.fast_field_values("uid", [a for _, a in res.hits]), dtype=np.int64)
        return uids, scores

    def w(self) -> tantivy.IndexWriter:
        if self.writer is None:
            try:
                self.writer = self.index.writer(heap_size=self.heap, num_threads=1)
            except ValueError as exc:  # tantivy's writer lock: one writing process per index
                raise PaperIndexError(
                    f"another process is writing the keyword index at {self.folder.parent} (an import or `index "
                    "add`?): wait for it to finish, then retry"
                ) from exc
        return self.writer


class KeywordIndex:
    """A keyword index in `folder`: `SHARDS` tantivy indexes searched in parallel, their rankings merged with
    BM25 scores on the statistics of the whole index; `title_boost` is part of the settings (see `settings`)."""

    def __init__(self, folder: Path, *, title_boost: int):
        self.folder = folder
        self.title_boost = title_boost
        folder.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        self.analyser = analyser()
        self.shards = [_Shard(folder / f"shard-{i}", self.schema, self.analyser, WRITER_HEAP // SHARDS)
                       for i in range(SHARDS)]  # fmt: skip
        self.generation = 0
        self._refresh()

    @staticmethod
    def settings(title_boost: int) -> str:
        """What decides the keyword index's content: part of the index identity (retrieval/recipe.py)."""
        return (
            f"{ENGINE}-{engine_version()}/bm25-k1.2-b0.75-global-idf/{ANALYSER}/title-x{title_boost}/freq"
            f"/shards-{SHARDS}-uid-mod"
        )

    # -- reading ------------------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.covered_hi = _read_covered(self.folder)  # before the shards: they may hold more, never less
        for shard in self.shards:
            shard.refresh()
        self.n_docs = sum(s.n_docs for s in self.shards)
        self.generation += 1

    def reopen(self) -> None:
        """See what another process committed (an import running beside this reader)."""
        self._refresh()

    @property
    def num_segments(self) -> int:
        return sum(int(s.searcher.num_segments) for s in self.shards)

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

    def _stats(self, query: str) -> _TermStats:
        terms = sorted(set(self.terms(query)))
        shard_dfs = [[s.doc_freq(t) for t in terms] for s in self.shards]
        dfs = [sum(col) for col in zip(*shard_dfs, strict=True)]
        total = max(self.n_docs, 1)
        return _TermStats(terms, shard_dfs, dfs, [_idf(df, max(total, df)) for df in dfs])

    def _term(self, shard: _Shard, term: str, df: int, idf: float) -> tantivy.Query:
        """`term` in `shard`, boosted by idf(whole index) / idf(shard): the shard's scores are the BM25 scores of
        the whole index (up to the shard's own average length, within a fraction of a percent at any size that
        shards pay off), so the shards' rankings merge by score."""
        q = tantivy.Query.term_query(self.schema, "text", term, index_option="freq")
        return tantivy.Query.boost_query(q, idf / _idf(df, max(shard.n_docs, df)))

    def _shard_queries(self, st: _TermStats, filt: tantivy.Query | None) -> list[tantivy.Query | None]:
        """The exact query for each shard: the disjunction of the query's terms, and the filter."""
        out: list[tantivy.Query | None] = []
        for shard, shard_dfs in zip(self.shards, st.shard_dfs, strict=True):
            clauses = [
                (tantivy.Occur.Should, self._term(shard, t, df, idf))
                for t, df, idf in zip(st.terms, shard_dfs, st.idf, strict=True)
                if df  # no unit of this shard has the term: it adds nothing here
            ]
            if not clauses:
                out.append(None)
                continue
            q = tantivy.Query.boolean_query(clauses)
            if filt is not None:
                zero = tantivy.Query.const_score_query(filt, 0.0)
                q = tantivy.Query.boolean_query([(tantivy.Occur.Must, q), (tantivy.Occur.Must, zero)])
            out.append(q)
        return out

    def _common_terms_queries(self, st: _TermStats) -> list[tantivy.Query | None] | None:
        """The query for each shard over the units holding a rare term (see the docstring), or None where it does
        not apply: no rare term, or too few common postings to be worth it."""
        rare = [0 < df <= COMMON * self.n_docs for df in st.dfs]
        if not any(rare) or sum(df for df, r in zip(st.dfs, rare, strict=True) if not r) < COMMON_MIN_POSTINGS:
            return None
        should = tantivy.Occur.Should
        out: list[tantivy.Query | None] = []
        for shard, shard_dfs in zip(self.shards, st.shard_dfs, strict=True):
            picks = [(r, self._term(shard, t, df, idf))
                     for t, df, idf, r in zip(st.terms, shard_dfs, st.idf, rare, strict=True) if df]  # fmt: skip
            rare_terms = [(should, q) for r, q in picks if r]
            if not rare_terms:  # no unit of this shard holds a rare term
                out.append(None)
                continue
            any_rare = tantivy.Query.boolean_query(rare_terms)
            gate = tantivy.Query.const_score_query(any_rare, 0.0)  # matches where any_rare does, scores nothing
            # one intersection per common term: it steps through the few gated units and skips through the
            # term's postings (a union of the common terms under one gate would score them window by window)
            common = [
                (should, tantivy.Query.boolean_query([(tantivy.Occur.Must, gate), (tantivy.Occur.Must, q)]))
                for r, q in picks
                if not r
            ]
            out.append(tantivy.Query.boolean_query([(should, any_rare), *common]))
        return out

    def search(
        self, query: str, n: int, filt: tantivy.Query | None = None, *, parallel: bool = True, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(uids, BM25 scores) of the best `n` units matching `query` and the filter, best first (ties: lower uid
        first); unfiltered and not `exact`, over the units holding a rare query term where that applies (see the
        docstring).
        `parallel=False` searches the shards one after the other in this thread: for a caller that keeps the other
        core busy itself (a hybrid search's dense side), a third thread only adds contention."""
        st = self._stats(query)
        if filt is None and not exact and (common := self._common_terms_queries(st)) is not None:
            uids, scores = self._merged(common, n, parallel)
            if len(uids) >= n:
                return uids, scores
        return self._merged(self._shard_queries(st, filt), n, parallel)

    def _merged(self, queries: list[tantivy.Query | None], n: int, parallel: bool) -> tuple[np.ndarray, np.ndarray]:
        parts = _each_shard(lambda i: self.shards[i].run(queries[i], n), len(self.shards), parallel=parallel)
        uids = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        order = np.lexsort((uids, -scores))[:n]
        return uids[order], scores[order]

    def count(self, filt: tantivy.Query | None) -> int:
        if filt is None:
            return self.n_docs

        def one(i: int) -> int:
            res: Any = self.shards[i].searcher.search(filt, limit=1, count=True)  # the stubs lack SearchResult.count
            return int(res.count)

        return sum(_each_shard(one, len(self.shards)))

    def filtered_uids(self, filt: tantivy.Query, limit: int) -> np.ndarray:
        """Every uid the filter keeps (at most `limit`), ascending."""

        def one(i: int) -> np.ndarray:
            searcher = self.shards[i].searcher
            res = searcher.search(filt, limit=limit, count=False, order_by_field="uid", order=tantivy.Order.Asc)
            return np.fromiter((u for u, _ in res.hits), dtype=np.int64, count=len(res.hits))

        return np.sort(np.concatenate(_each_shard(one, len(self.shards))))[:limit]

    # -- writing ------------------------------------------------------------------------------------------------
    def writable(self) -> bool:
        """Whether this process can write now (no other process holds the writer lock)."""
        try:
            for shard in self.shards:
                shard.w()
        except PaperIndexError:
            return False
        return True

    def add(self, units: Iterable[KeywordUnit]) -> int:
        """Queue units (ascending uids, all >= covered_hi) for the next commit. A unit its shard may hold already
        (a run killed between two shards' commits left that shard ahead) replaces its copy there."""
        shards = self.shards
        writers = [s.w() for s in shards]
        held = [s.max_uid for s in shards]
        boost = self.title_boost
        hi = self.covered_hi
        n = 0
        for uid, paper_id, title, text, categories, day in units:
            i = uid % SHARDS
            if uid <= held[i]:  # by query: tantivy-py's delete by term misses u64 terms (it makes them i64)
                writers[i].delete_documents_by_query(tantivy.Query.term_query(self.schema, "uid", uid))
            doc = tantivy.Document()
            doc.add_unsigned("uid", uid)
            doc.add_text("pid", paper_id)
            doc.add_text("text", f"{(title + ' . ') * boost}{text or ''}" if title else (text or ""))
            for cat in _with_archives(categories):
                doc.add_text("cat", cat)
            doc.add_integer("date", date_int(day))
            writers[i].add_document(doc)
            shards[i].dirty = True
            hi = max(hi, uid + 1)
            n += 1
        self._queued_hi = max(getattr(self, "_queued_hi", 0), hi)
        return n

    def delete_papers(self, paper_ids: Iterable[str]) -> None:
        """Delete every unit of these papers (before re-adding their new units in the same commit)."""
        pids = list(paper_ids)
        for shard in self.shards:
            writer = shard.w()
            for pid in pids:
                writer.delete_documents_by_term("pid", pid)
                shard.dirty = True

    def commit(self, *, final: bool = False) -> None:
        """Publish everything queued: each shard's commit is atomic, and `covered.json` moves only after all of
        them. `final` also waits for background merges and frees the writers, so the segments a long import leaves
        are few and queries stay fast."""
        for shard in self.shards:
            if shard.writer is None:
                continue
            try:
                if shard.dirty:
                    shard.writer.commit()
                    shard.dirty = False
                if final:
                    shard.writer.wait_merging_threads()
                    shard.writer = None
            except (OSError, ValueError) as exc:  # tantivy reports I/O failures (disk full) as ValueError
                raise PaperIndexError(
                    f"cannot write the keyword index at {self.folder}: {exc}; free some disk space and rerun the "
                    "command (an import resumes where it stopped)"
                ) from exc
        hi = getattr(self, "_queued_hi", 0)
        if hi > self.covered_hi:
            _write_covered(self.folder, hi)
        self._queued_hi = 0
        self._refresh()

    def rollback(self) -> None:
        for shard in self.shards:
            if shard.writer is not None and shard.dirty:
                shard.writer.rollback()
                shard.dirty = False
        self._queued_hi = 0

    def close(self) -> None:
        self.rollback()
        for shard in self.shards:
            shard.writer = None

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())


def _idf(df: int, n_docs: int) -> float:
    """tantivy's (Lucene's) BM25 idf."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def _read_covered(folder: Path) -> int:
    """Every live unit below this uid is in its shard. Missing or damaged (never written, or by hand): 1, and the
    next sync re-adds everything, each unit its shard holds already replacing its copy, so nothing is doubled."""
    try:
        return max(int(json.loads((folder / COVERED).read_text())["covered_hi"]), 1)
    except (OSError, ValueError, KeyError, TypeError):
        return 1


def _write_covered(folder: Path, hi: int) -> None:
    tmp = folder / f"{COVERED}.tmp"
    try:
        tmp.write_text(json.dumps({"covered_hi": hi}))
        os.replace(tmp, folder / COVERED)
    except OSError as exc:
        raise PaperIndexError(
            f"cannot write the keyword index at {folder}: {exc}; free some disk space and rerun the command (an "
            "import resumes where it stopped)"
        ) from exc


_SHARD_POOL: ThreadPoolExecutor | None = None


def _each_shard(fn: Callable[[int], T], n: int, *, parallel: bool = True) -> list[T]:
    """[fn(0), ..., fn(n - 1)]: shard 0 in this thread, the others in a pool (tantivy releases the GIL while it
    searches, so the shards run on separate cores); all in this thread unless `parallel`."""
    global _SHARD_POOL
    if n == 1 or not parallel:
        return [fn(i) for i in range(n)]
    if _SHARD_POOL is None:
        _SHARD_POOL = ThreadPoolExecutor(max_workers=SHARDS - 1, thread_name_prefix="keyword-shard")
    futures = [_SHARD_POOL.submit(fn, i) for i in range(1, n)]
    first = fn(0)
    return [first] + [f.result() for f in futures]


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
