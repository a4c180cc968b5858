"""`PaperIndex`: the searchable literature (arXiv metadata + added full-text PDFs), hybrid BM25 + dense search.

Layout of an index folder:
    docs.sqlite        papers, units (abstracts / page-tagged chunks), import checkpoints, bad files, meta (the
                       source of truth: everything else can be rebuilt from it)
    keyword/<h>/       the tantivy index for keyword-settings hash <h> (retrieval/keyword.py)
    vectors/<h>.f16    float16 vectors by unit id for dense-recipe hash <h>
    chroma/            the embedded chromadb store (unless a Chroma server URL is given)

Search fuses a BM25 ranking (tantivy) and a dense ranking (chromadb HNSW) by reciprocal rank (weights and constant
tuned on the SciTLDR train split, see benchmarks/retrieval_quality.py), then keeps each paper's best unit, so a
full-text paper's hit carries the chunk and page it matched on. Category and date filters are tantivy query
clauses on both sides: the keyword query carries them, and the dense side either over-fetches from HNSW and keeps
the candidates tantivy says pass, or, when the filter keeps few units, scores those units exactly from the local
vector file. docs/index.md is the reference (engine, recipe, filters, commands, figures).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import shutil
import time
import uuid
import zlib
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from retrieval.arxiv_import import file_size, read_batches
from retrieval.chunking import chunk_pages
from retrieval.docstore import DocStore
from retrieval.errors import IngestError, PaperIndexError
from retrieval.filters import BROAD, EXACT_MAX, FilterCache
from retrieval.import_lock import one_importer
from retrieval.index_models import AddReport, Hit, ImportStats, as_date, snippet, stem_pattern
from retrieval.keyword import KeywordIndex, KeywordUnit
from retrieval.progress import Progress
from retrieval.recipe import DEFAULT_EMBEDDING_MODEL, Recipe, keyword_hash, parser_version

# Fusion parameters, tuned on the SciTLDR train split (dev is only reported): see benchmarks/retrieval_quality.py.
RRF_K = 10
W_BM25 = 1.25
W_DENSE = 1.0
TITLE_BOOST = 2  # see docs/index.md: 3 is train-optimal by R@5 for tantivy but lowers dev MRR below the gate
CANDIDATES = 100  # depth of each ranking fed to the fusion
FETCH_CAP = 4_000
SYNC_ON_SEARCH_MAX = 20_000  # pending keyword units a search indexes before answering (a killed import leaves some)
KEYWORD_COMMIT = 200_000  # units an import queues in tantivy between commits (search sees them after each)


def _unit(uid: int, rec) -> KeywordUnit:
    return KeywordUnit(uid, rec.id, rec.title, rec.abstract, " ".join(rec.categories), rec.date)


_POOL = None


def _pool():
    """One shared worker thread for the dense side of hybrid searches (created on first use)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dense-search")
    return _POOL


class PaperIndex:
    def __init__(
        self,
        path: Path,
        *,
        embedding_model: str | None = None,
        chroma_url: str | None = None,
        title_boost: int | None = None,
    ):
        """Open (or create) the index at `path`. `title_boost` only applies when the index is created."""
        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        self.docs = DocStore(self.path / "docs.sqlite")
        stored = self.docs.get_meta("embedding_model")
        if embedding_model:
            from retrieval.dense import resolve_model

            resolve_model(embedding_model)  # an unknown model fails here, before any work, with a clear message
        self.embedding_model = embedding_model or stored or DEFAULT_EMBEDDING_MODEL
        self.chroma_url = chroma_url
        if self.docs.get_meta("title_boost") is None:
            self.docs.set_meta("title_boost", str(title_boost or TITLE_BOOST))
        if self.docs.get_meta("index_id") is None:  # this index's own identity: names its Chroma collection
            self.docs.set_meta("index_id", uuid.uuid4().hex[:16])
        self.index_id = str(self.docs.get_meta("index_id"))
        self._title_boost = int(self.docs.get_meta("title_boost") or TITLE_BOOST)
        self._attach_keyword()
        self._embedder: Any = None  # retrieval.dense.Embedder, ChromaSide, VectorFile: imported on first use
        self._recipe: Recipe | None = None
        self._chroma: Any = None
        self._client: Any = None
        if chroma_url:  # a named server must be reachable now, not at the first dense query
            from retrieval.dense import chroma_client

            self._client = chroma_client(self.path / "chroma", chroma_url)
        self._vectors: Any = None
        self._deleted: np.ndarray | None = None

    def _attach_keyword(self) -> None:
        """Open the keyword side and the cache of what its filters keep (retrieval/filters.py), which belongs to it."""
        self.keyword = self._open_keyword()
        self._filters = FilterCache(self.keyword)

    def _open_keyword(self) -> KeywordIndex:
        """The tantivy index for the current keyword settings; indexes of other settings are removed (they are
        rebuilt from the doc store, never mixed)."""
        settings = KeywordIndex.settings(self._title_boost)
        folder = self.path / "keyword" / keyword_hash(settings)
        if self.docs.get_meta("keyword_settings") != settings:
            for old in (self.path / "keyword").glob("*"):
                if old != folder:
                    shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(self.path / "bm25", ignore_errors=True)  # the hand-written BM25 store of earlier versions
            self.docs.set_meta("keyword_settings", settings)
        return KeywordIndex(folder, title_boost=self._title_boost)

    def close(self) -> None:
        self.keyword.close()
        self.docs.close()

    def __len__(self) -> int:
        return self.docs.count_papers()

    # -- dense side, created on first use (loading the model takes seconds) ------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            from retrieval.dense import Embedder

            self._embedder = Embedder(self.embedding_model)
        return self._embedder

    @property
    def recipe(self) -> Recipe:
        """The current recipe. Its vector size is remembered after the first embed (no model load to name things)."""
        if self._recipe is None:
            from retrieval.dense import resolve_model

            name = resolve_model(self.embedding_model)[0]
            dim = self.docs.get_meta(f"dim:{name}")
            if dim is None:
                dim = str(self.embedder.dim)
                self.docs.set_meta(f"dim:{name}", dim)
            keyword = str(self.docs.get_meta("keyword_settings"))
            self._recipe = Recipe(name, int(dim), parser=parser_version(), keyword=keyword)
        return self._recipe

    def _ever_embedded(self) -> bool:
        """Whether any vector exists for the current model (without loading the model)."""
        from retrieval.dense import resolve_model

        return self.docs.get_meta(f"dim:{resolve_model(self.embedding_model)[0]}") is not None

    @property
    def chroma(self):
        if self._chroma is None:
            from retrieval.dense import ChromaSide, chroma_client

            client = self._client or chroma_client(self.path / "chroma", self.chroma_url)
            name = self.recipe.collection_name(self.index_id)
            self._chroma = ChromaSide(client, name, self.recipe.as_dict(), self.chroma_url, self.index_id)
        return self._chroma

    @property
    def vectors(self):
        if self._vectors is None:
            from retrieval.dense import VectorFile

            path = self.path / "vectors" / f"{self.recipe.dense_hash}.f16"
            self._vectors = VectorFile(path, self.recipe.embedding_dim)
        return self._vectors

    def _embedded_key(self) -> str:
        return f"embedded_hi:{self.recipe.dense_hash}@{self.chroma_url or 'embedded'}"

    def _embedded_hi(self) -> int:
        """Units with uid < this value have vectors for the current recipe in this Chroma (embedded in uid order)."""
        if not self._ever_embedded():
            return 1
        return int(self.docs.get_meta(self._embedded_key()) or 1)

    def _vectors_elsewhere(self) -> str | None:
        """Where this index's vectors are, when they are not in the Chroma store it is opened with."""
        if not self._ever_embedded() or self._embedded_hi() > 1:
            return None
        prefix = f"embedded_hi:{self.recipe.dense_hash}"  # without "@place": written by versions before 0.2
        rows = self.docs.db.execute("SELECT key, value FROM meta WHERE key LIKE ?", (prefix + "%",)).fetchall()
        others = [k[len(prefix) + 1 :] or "an earlier version's Chroma collection" for k, v in rows if int(v) > 1]
        return others[0] if others else None

    # -- import ------------------------------------------------------------------------------------------------
    @one_importer  # a second importer into this index is refused with what to do (retrieval.import_lock)
    def import_jsonl(self, path: str | Path, *, progress: bool = True, batch_size: int = 5000) -> ImportStats:
        """Stream an arXiv-snapshot-layout JSONL(.gz) file into the index; resumes from its last committed batch."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise PaperIndexError(f"cannot import {path}: no such file")
        source = f"{path.resolve()}:{file_size(path)}"
        ck = self.docs.checkpoint(source)
        stats = ImportStats(file=str(path))
        state = ck or {"offset": 0, "lines": 0, "imported": 0, "duplicates": 0, "malformed": 0, "done": 0}
        self._sync_keyword(progress=progress)  # what a killed run committed to SQLite but not to tantivy
        if ck and ck["done"]:
            stats.already_done = True
            return stats
        stats.resumed_from_line = state["lines"]
        t0 = time.perf_counter()
        bar = Progress("import", total=file_size(path), unit="B", enabled=progress, count_label="records")
        queued = 0
        try:
            for batch in self._batches(path, state, batch_size):
                state["offset"] = batch.end_offset
                state["lines"] += batch.lines
                state["malformed"] += len(batch.malformed)
                new, dupes, first = self.docs.add_arxiv_batch(batch.records, source, state)
                stats.lines += batch.lines
                stats.imported += len(new)
                stats.duplicates += dupes
                stats.malformed += len(batch.malformed)
                for line_no, reason in batch.malformed:
                    if len(stats.malformed_examples) < 5:
                        stats.malformed_examples.append(f"line {line_no}: {reason}")
                self._refuse_if_nothing_parses(path, source, stats, ck)
                queued += self.keyword.add(_unit(first + i, rec) for i, rec in enumerate(new))
                if queued >= KEYWORD_COMMIT:  # keep search usable (and a kill cheap) during a long import
                    self.keyword.commit()
                    queued = 0
                bar.update(batch.raw_pos, count=batch.lines)
            self.docs.finish_import(source, state)
        finally:
            bar.close()
            t1 = time.perf_counter()
            self.keyword.commit(final=True)  # what reached SQLite reaches tantivy, even when the import failed
            stats.bm25_seconds += time.perf_counter() - t1
            self._invalidate()
        stats.seconds = time.perf_counter() - t0
        return stats

    def _batches(self, path: Path, state: dict, batch_size: int):
        """`read_batches` with a corrupt or truncated gzip turned into one line that names the file and the cause."""
        try:
            yield from read_batches(
                path, start_offset=state["offset"], start_line=state["lines"], batch_size=batch_size
            )
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            cause = "the file is truncated" if isinstance(exc, EOFError) else f"corrupt gzip data ({exc})"
            raise PaperIndexError(
                f"cannot read {path}: {cause} after line {state['lines']:,}; the records before it are imported "
                "- replace the file and rerun the import to finish"
            ) from exc

    def _refuse_if_nothing_parses(self, path: Path, source: str, stats: ImportStats, ck: dict | None) -> None:
        """A binary file, a PDF or another format read as JSONL: refuse it (and forget it) instead of 'importing' it.
        Judged after each batch of a fresh import, so a first batch without one record stops it."""
        if ck is not None or stats.imported or stats.duplicates or not stats.malformed:
            return
        self.docs.drop_checkpoint(source)
        example = stats.malformed_examples[0] if stats.malformed_examples else ""
        raise PaperIndexError(
            f"cannot import {path}: not one line is an arXiv metadata record ({stats.malformed:,} malformed lines, "
            f"first: {example}); expected JSON lines in the arXiv snapshot layout (.jsonl or .jsonl.gz)"
        )

    def _sync_keyword(self, *, progress: bool = False) -> int:
        """Index in tantivy every live unit of the doc store it lacks (after an add, a killed run, new settings)."""
        lo, hi = self.keyword.covered_hi, self.docs.max_uid() + 1
        if lo >= hi:
            return 0
        bar = Progress("keyword", total=hi - lo, unit="units", enabled=progress)
        n = 0
        try:
            for rows in self.docs.iter_keyword_units(lo, hi):
                # a full-text paper may replace an older version (or its arXiv record) already in tantivy
                self.keyword.delete_papers({r[1] for r in rows if r[6] == "pdf"})
                n += self.keyword.add(KeywordUnit(*r[:6]) for r in rows)
                bar.advance(len(rows))
            self.keyword.commit(final=True)
        finally:
            bar.close()
        self._invalidate()
        return n

    def _invalidate(self) -> None:
        self._deleted = None
        self._filters.clear()

    def rebuild_keyword(self, *, title_boost: int | None = None, progress: bool = False) -> int:
        """Rebuild the keyword side from the doc store (e.g. with another title boost, or after losing keyword/)."""
        self.keyword.close()
        if title_boost is not None:
            self.docs.set_meta("title_boost", str(title_boost))
            self._title_boost = title_boost
        self.docs.set_meta("keyword_settings", "")  # forces a fresh folder
        shutil.rmtree(self.path / "keyword", ignore_errors=True)
        self._attach_keyword()
        self._recipe = None
        return self._sync_keyword(progress=progress)

    # -- full-text PDFs ----------------------------------------------------------------------------------------
    def add_pdfs(self, paths: list[Path], *, progress: bool = True) -> AddReport:
        """Parse each PDF (retrieval.ingest.parse_pdf), chunk its pages, store it; bad files are recorded, skipped."""
        from retrieval.ingest import parse_pdf

        files: list[Path] = []
        report = AddReport()
        for p in map(Path, paths):
            p = p.expanduser()
            if p.is_dir():
                found = sorted(q for q in p.rglob("*") if q.suffix.lower() == ".pdf" and q.is_file())
                if not found:
                    raise PaperIndexError(f"no PDF files in {p}: nothing to add")
                files.extend(found)
            elif p.exists():
                files.append(p)
            else:
                report.failed.append((str(p), "no such file"))
                self.docs.record_bad_file(str(p), None, "no such file")
        bar = Progress("add", total=len(files), unit="files", enabled=progress)
        for f in files:
            bar.advance(1)
            try:
                sha = hashlib.sha256(f.read_bytes()).hexdigest()
            except OSError as exc:
                report.failed.append((str(f), f"cannot read: {exc.strerror}"))
                self.docs.record_bad_file(str(f), None, f"cannot read: {exc.strerror}")
                continue
            if self.docs.paper_by_sha(sha):
                report.skipped.append(str(f))
                continue
            try:
                paper = parse_pdf(f)
            except IngestError as exc:
                report.failed.append((str(f), str(exc)))
                self.docs.record_bad_file(str(f), sha, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - one unparseable file must not stop a batch of hundreds
                msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                report.failed.append((str(f), msg))
                self.docs.record_bad_file(str(f), sha, msg)
                continue
            paper_id = re.sub(r"v\d+$", "", paper.arxiv_id) if paper.arxiv_id else f"pdf:{paper.slug or sha[:12]}"
            chunks = chunk_pages([(pg.page, pg.text) for pg in paper.pages])
            fulltext = "\n\n".join(pg.text for pg in paper.pages)
            year = paper.year or 0
            meta = {
                "title": paper.title,
                "authors": ", ".join(paper.authors),
                "abstract": paper.abstract,
                "date": f"{year:04d}-12-31" if year else "",
                "year": year,
                "sha256": paper.sha256 or sha,
                "path": str(f.resolve()),
                "parser": paper.parser,
            }
            self.docs.add_pdf_paper(paper_id, meta, fulltext, [(c.chunk, c.page, c.text) for c in chunks])
            report.added.append(paper_id)
            report.chunks += len(chunks)
        bar.close()
        self._sync_keyword(progress=False)  # appends the new chunks (and deletes replaced ones) in one commit
        return report

    def fetch_arxiv(
        self, query: str, max_results: int = 20, *, pdfs: bool = False, api_url: str | None = None
    ) -> tuple[ImportStats, AddReport | None]:
        """Fetch metadata (and with `pdfs`, the PDFs, which are then added as full text) from the arXiv API."""
        from retrieval.arxiv_fetch import fetch_records, write_jsonl

        pdf_dir = self.path / "pdfs" if pdfs else None
        records = fetch_records(query, max_results, api_url=api_url, pdf_dir=pdf_dir)
        jsonl = write_jsonl(records, self.path / "fetched")
        stats = self.import_jsonl(jsonl, progress=False)
        added = None
        if pdf_dir is not None:
            ids = {r["id"].replace("/", "_") for r in records}
            added = self.add_pdfs([pdf_dir / f"{i}.pdf" for i in sorted(ids)], progress=False)
        return stats, added

    # -- embeddings --------------------------------------------------------------------------------------------
    def embed(
        self,
        *,
        batch_size: int | None = None,
        device: str | None = None,
        progress: bool = True,
        limit: int | None = None,
    ) -> int:
        """Embed every unit that lacks a vector for the current recipe, in uid blocks committed one at a time.

        Vectors already in the local vector file (embedded into another Chroma store, e.g. before moving to a
        Chroma server) are uploaded from it instead of being embedded again."""
        if device:
            from retrieval.dense import Embedder

            self._embedder = Embedder(self.embedding_model, device=device)
        recipe, chroma, vectors = self.recipe, self.chroma, self.vectors  # fail early: model, server
        self.docs.set_meta("embedding_model", self.embedding_model)
        self.docs.set_meta(f"recipe:{recipe.hash}", str(recipe.as_dict()))
        hi = self.docs.max_uid() + 1
        lo = self._embedded_hi()
        if limit is not None:
            hi = min(hi, lo + limit)
        key = self._embedded_key()
        copied = self._copy_local_vectors(lo, hi, key)
        lo += copied
        block = 65_536 if self.embedder.device.startswith("cuda") else 2_048
        bar = Progress("embed", total=max(hi - lo, 0), unit="units", enabled=progress)
        done = 0

        def store(uids: np.ndarray, vecs: np.ndarray) -> np.ndarray:
            vectors.write(uids, vecs)
            chroma.upsert(uids, vecs)
            return uids

        # Pipelined: chromadb ingests block i (its HNSW insert is the slow part, ~1.5k vectors/s on 2 cores) while
        # the model embeds block i+1. The checkpoint moves only after a block is fully stored, so a kill loses at
        # most the blocks in flight and a rerun re-embeds them (upsert: no duplicates).
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as writer:
            pending = None
            try:
                for rows in self.docs.iter_units(lo, hi, chunk=block):
                    uids = np.array([r[0] for r in rows], dtype=np.int64)
                    texts = [f"{r[1] or ''}. {r[2] or ''}" for r in rows]
                    vecs = self.embedder.encode(texts, batch_size=batch_size)
                    if pending is not None:
                        stored = pending.result()
                        self.docs.set_meta(key, str(int(stored[-1]) + 1))
                    pending = writer.submit(store, uids, vecs)
                    done += len(uids)
                    bar.advance(len(uids))
                if pending is not None:
                    pending.result()
                    pending = None
                if hi > lo:
                    self.docs.set_meta(key, str(hi))
            finally:
                if pending is not None:
                    pending.cancel()
                bar.close()
        return done + copied

    def _copy_local_vectors(self, lo: int, hi: int, key: str) -> int:
        """Upload to this Chroma store the vectors of [lo, hi) that the vector file already holds; returns how many
        units that covered (from `lo` on)."""
        prefix = f"embedded_hi:{self.recipe.dense_hash}"  # any place, and the key of versions before 0.2
        rows = self.docs.db.execute("SELECT value FROM meta WHERE key LIKE ? AND key != ?", (prefix + "%", key))
        have = max([int(v) for (v,) in rows], default=1)
        top = min(have, hi)
        for s in range(lo, top, 20_000):
            uids = np.arange(s, min(s + 20_000, top), dtype=np.int64)
            self.chroma.upsert(uids, self.vectors.rows(uids))
            self.docs.set_meta(key, str(int(uids[-1]) + 1))
        return max(top - lo, 0)

    # -- search ------------------------------------------------------------------------------------------------
    def _filter(self, category: str | None, before: str | date | None):
        """(tantivy filter query or None, filter cache key, units it keeps)."""
        cutoff = as_date(before)
        filt = self.keyword.filter_query(category or None, cutoff)
        key = (category or None, cutoff, self.keyword.generation)
        if filt is None:
            return None, key, self.keyword.n_docs
        return filt, key, self._filters.kept(key, filt)

    def _deleted_uids(self) -> np.ndarray:  # tombstoned units (replaced PDFs): Chroma still holds their vectors
        if self._deleted is None:
            self._deleted = np.array(self.docs.deleted_uids(), dtype=np.int64)
        return self._deleted

    def _dense_rank(
        self, query: str, filt, n: int, kept: int | None = None, embedded_hi: int | None = None, key: tuple = ()
    ) -> np.ndarray:
        """uids of the best dense matches, best first. Given `embedded_hi`, it touches no SQLite (so it can run in
        the search worker thread)."""
        embedded_hi = self._embedded_hi() if embedded_hi is None else embedded_hi
        if embedded_hi <= 1:
            return np.zeros(0, dtype=np.int64)
        qvec = self.embedder.encode_query(query)
        if filt is not None:
            key = key or (id(filt),)  # a direct call without the search's key: cached for this filter object only
            kept = self.keyword.count(filt) if kept is None else kept
            if kept == 0:
                return np.zeros(0, dtype=np.int64)
            # Score every kept unit (int8 scan, exact re-scoring: retrieval/int8_scan.py) unless there are many or the
            # filter is broad: HNSW then needs few extra candidates (at 200k units, 56% kept: 8.3 ms against 10.4)
            if kept <= EXACT_MAX and kept < BROAD * self.keyword.n_docs:
                with threadpool_limits(1, user_api="blas"):  # small products: BLAS threads only add wake-ups
                    return self._filters.exact_set(key, filt, kept, embedded_hi, self.vectors).top(qvec, n)
            frac = kept / max(self.keyword.n_docs, 1)
            fetch = min(FETCH_CAP, int(math.ceil(n / frac * 1.5)) + 10)
        else:
            fetch = n + min(len(self._deleted_uids()), FETCH_CAP)
        uids, _sims = self.chroma.query(qvec, fetch)
        if filt is not None and kept is not None:
            uids = self._filters.keep(uids, key, filt, kept)  # the engine's verdict, cached
        elif len(self._deleted_uids()):
            uids = uids[~np.isin(uids, self._deleted_uids())]
        return uids[:n]

    def incomplete(self) -> str | None:
        """Why keyword search may miss papers now (units stored but not keyword-indexed yet), or None."""
        pending = self.docs.max_uid() + 1 - self.keyword.covered_hi
        if pending <= 0:
            return None
        return (
            f"the index is incomplete: {pending:,} stored units are not keyword-indexed yet (an import is running, "
            "or one was stopped) - wait for the running import, or rerun `replicate index import FILE` to finish it"
        )

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        category: str | None = None,
        before: str | date | None = None,
        mode: str = "hybrid",
        exact_bm25: bool = False,
    ) -> list[Hit]:
        """The best `k` papers for `query`. `exact_bm25`: rank keyword matches by plain BM25 over every unit, even where
        the keyword side would rank only the units holding a rare query term (retrieval/keyword.py, "Common terms")."""
        if mode not in ("hybrid", "bm25", "dense"):
            raise PaperIndexError(f"unknown search mode {mode!r}: use hybrid, bm25 or dense")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise PaperIndexError(f"bad number of results k={k!r}: give a whole number >= 1")
        if self.docs.max_uid() == 0:  # O(1), unlike COUNT(*) over 1M papers
            raise PaperIndexError(f"the paper index at {self.path} is empty: add papers with `replicate index import`")
        if not query.strip():
            raise PaperIndexError("empty search query")
        self._catch_up()
        filt, key, kept = self._filter(category, before)
        if mode == "dense" and self._embedded_hi() <= 1:
            raise PaperIndexError(self._no_vectors_message())
        if mode == "hybrid" and self._embedded_hi() <= 1 and self._vectors_elsewhere():
            raise PaperIndexError(self._no_vectors_message())
        # The fusion wants each ranking CANDIDATES deep. The keyword ranking alone needs only enough units for k
        # papers, and a shorter top-n is cheaper in the engine (at 1M units ~0.7 ms of a keyword search for 10
        # instead of 100); when a few papers' chunks fill it, the search goes deeper.
        n = 3 * k if mode == "bm25" else max(CANDIDATES, 3 * k)
        while True:
            fused = self._fused(query, mode, filt, key, kept, n, exact_bm25)
            hits = self._hits(query, fused, k)
            if mode != "bm25" or len(hits) >= k or len(fused) < n or n >= FETCH_CAP:
                break
            n = min(n * 4, FETCH_CAP)
        if not fused and mode != "dense" and self.incomplete():
            raise PaperIndexError(f"no matching papers, but {self.incomplete()}")
        return hits

    def _fused(self, query: str, mode: str, filt, key: tuple, kept: int, n: int, exact: bool) -> dict[int, float]:
        """uid -> reciprocal-rank fusion score of the top `n` of each ranking that `mode` uses."""
        fused: dict[int, float] = {}
        dense = None
        embedded_hi = self._embedded_hi() if mode != "bm25" else 1
        if mode == "hybrid" and embedded_hi > 1:
            # The dense side (query embedding + HNSW) and the keyword search both release the GIL for most of their
            # time: run them side by side. The lazily opened parts are opened here, in the caller's thread (SQLite
            # objects are per thread).
            _ = self.recipe, self.vectors, self.chroma, self._deleted_uids()
            dense = _pool().submit(self._dense_rank, query, filt, n, kept, embedded_hi, key)
        if mode in ("hybrid", "bm25"):
            # With the dense side busy on one core, the keyword shards take turns in this thread: three threads on
            # two cores searched 10-15% slower at 1M units (interleaved A/B, docs/index.md).
            ranked = self._filters.keyword_rank(query, key, filt, kept, n, parallel=dense is None, exact=exact)
            for rank, uid in enumerate(ranked, 1):
                fused[int(uid)] = fused.get(int(uid), 0.0) + W_BM25 / (RRF_K + rank)
        if mode in ("hybrid", "dense"):
            uids = dense.result() if dense is not None else self._dense_rank(query, filt, n, kept, embedded_hi, key)
            for rank, uid in enumerate(uids, 1):
                fused[int(uid)] = fused.get(int(uid), 0.0) + W_DENSE / (RRF_K + rank)
        return fused

    def _catch_up(self) -> None:
        """See what another process committed; index a few pending units (a killed import's) when none is writing."""
        pending = self.docs.max_uid() + 1 - self.keyword.covered_hi
        if pending <= 0:
            return
        self.keyword.reopen()
        pending = self.docs.max_uid() + 1 - self.keyword.covered_hi
        if 0 < pending <= SYNC_ON_SEARCH_MAX and self.keyword.writable():
            self._sync_keyword()
        self._invalidate()

    def _no_vectors_message(self) -> str:
        elsewhere = self._vectors_elsewhere()
        if elsewhere is None:
            return "no embeddings for this recipe yet: run `replicate index embed`"
        here = f"the Chroma server at {self.chroma_url}" if self.chroma_url else "the embedded Chroma store"
        if elsewhere.startswith("an earlier"):
            return f"this index's vectors are in {elsewhere}: run `replicate index embed` to copy them into {here}"
        there = "the embedded Chroma store" if elsewhere == "embedded" else f"the Chroma server at {elsewhere}"
        flag = "without --chroma-url" if elsewhere == "embedded" else f"with --chroma-url {elsewhere}"
        return (
            f"this index's vectors are in {there}, not in {here}: search {flag}, or run `replicate index embed` "
            f"with the same options to copy them into {here}"
        )

    def _hits(self, query: str, fused: dict[int, float], k: int) -> list[Hit]:
        ranked = sorted(fused.items(), key=lambda kv: -kv[1])
        pattern = stem_pattern(set(self.keyword.terms(query)))
        hits: list[Hit] = []
        seen: set[str] = set()
        # Look units up in windows: the top ranks nearly always give the k papers, so reading all ~200 fused units'
        # texts from SQLite is wasted work. A later window is read only when chunks of one paper fill the first.
        info: dict[int, tuple] = {}
        step = k + max(5, k // 2)
        for i, (uid, score) in enumerate(ranked):
            if i % step == 0:
                info = self.docs.unit_rows([u for u, _ in ranked[i : i + step]])
            if uid not in info:
                continue
            paper_id, chunk, page, text, title, year, source, abstract = info[uid]
            if paper_id in seen:
                continue
            seen.add(paper_id)
            body = text if text is not None else abstract
            hits.append(
                Hit(
                    id=paper_id,
                    title=title or "",
                    year=year or None,
                    score=round(float(score), 6),
                    snippet=snippet(body or "", pattern),
                    page=page,
                    chunk=chunk,
                    source=source,
                )
            )
            if len(hits) >= k:
                break
        return hits

    # -- lookups -----------------------------------------------------------------------------------------------
    def get_text(self, paper_id: str) -> str | None:
        row = self.docs.paper(paper_id)
        if row is None:
            return None
        if row["fulltext"]:
            return row["fulltext"]
        return f"{row['title'] or ''}\n\n{row['abstract'] or ''}".strip()

    def get_meta(self, paper_id: str) -> dict | None:
        row = self.docs.paper(paper_id)
        if row is None:
            return None
        return {
            "id": row["id"],
            "title": row["title"],
            "authors": row["authors"],
            "year": row["year"] or None,
            "categories": (row["categories"] or "").split(),
            "date": row["date"] or None,
            "source": row["source"],
            "sha256": row["sha256"],
            "path": row["path"],
        }

    def stats(self, *, with_dense: bool = True) -> dict:
        pending = max(self.docs.max_uid() + 1 - self.keyword.covered_hi, 0)
        out = {
            "path": str(self.path),
            "index_id": self.index_id,
            "papers": len(self),
            "by_source": self.docs.count_by_source(),
            "units": self.docs.count_units(),
            "keyword_engine": self.docs.get_meta("keyword_settings"),
            "bm25_units": self.keyword.n_docs,  # keyword-indexed units (the key names are kept for scripts)
            "bm25_pending": pending,
            "bm25_shards": self.keyword.num_segments,
            "embedding_model": self.embedding_model,
            "chroma": self.chroma_url or "embedded",
            "imports": self.docs.import_summaries(),
            "bad_files": self.docs.bad_files(),
            "disk_bytes": sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file()),
        }
        embedded = self.docs.db.execute(
            "SELECT COUNT(*) FROM units WHERE uid < ? AND deleted = 0", (self._embedded_hi(),)
        ).fetchone()[0]
        out.update(embedded_units=embedded, lacking_embeddings=out["units"] - embedded)
        out.update(recipe_hash=None, recipe=None, chroma_vectors=0, vectors_elsewhere=None)
        if with_dense and self._ever_embedded():  # otherwise there is nothing to count, and no model to load
            out.update(recipe_hash=self.recipe.hash, recipe=self.recipe.as_dict(), chroma_vectors=self.chroma.count())
            out.update(vectors_elsewhere=self._vectors_elsewhere())
        return out
