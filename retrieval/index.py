"""`PaperIndex`: the searchable literature (arXiv metadata + added full-text PDFs), hybrid BM25 + dense search.

Layout of an index folder:
    docs.sqlite      papers, units (abstracts / page-tagged chunks), import checkpoints, bad files, meta
    bm25/            sharded term-frequency matrices + global vocabulary (retrieval/bm25_store.py)
    vectors/<h>.f16  float16 vectors by unit id for recipe hash <h>
    chroma/          the embedded chromadb store (unless a Chroma server URL is given)

Search fuses a BM25 ranking and a dense ranking by reciprocal rank (weights and constant tuned on the SciTLDR train
split, see benchmarks/retrieval_quality.py), then keeps each paper's best unit, so a full-text paper's hit carries the
chunk and page it matched on. Category and date filters are boolean masks over the BM25 rows, applied to both sides:
BM25 scores every unit anyway, and the dense side over-fetches from HNSW or scores the kept units exactly.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np

from retrieval.arxiv_import import file_size, read_batches
from retrieval.bm25_store import SHARD_SIZE, BM25Store
from retrieval.chunking import chunk_pages
from retrieval.docstore import DocStore
from retrieval.errors import IngestError, PaperIndexError
from retrieval.progress import Progress
from retrieval.recipe import DEFAULT_EMBEDDING_MODEL, Recipe, parser_version

# Fusion parameters, tuned on the SciTLDR train split (dev is only reported): see benchmarks/retrieval_quality.py.
RRF_K = 10
W_BM25 = 1.25
W_DENSE = 1.0
TITLE_BOOST = 2
CANDIDATES = 100  # depth of each ranking fed to the fusion
EXACT_MAX = 10_000  # a filter keeping at most this many units is scored exactly (~5 ms) instead of over-fetching
FETCH_CAP = 4_000
SYNC_ON_SEARCH_MAX = 20_000  # pending BM25 units a search will index before answering (a killed import leaves some)


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
    bm25_seconds: float = 0.0

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


def _as_date(before: str | date | datetime | None) -> int | None:
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
        self.bm25 = BM25Store(self.path / "bm25")
        stored = self.docs.get_meta("embedding_model")
        if embedding_model:
            from retrieval.dense import resolve_model

            resolve_model(embedding_model)  # an unknown model fails here, before any work, with a clear message
        self.embedding_model = embedding_model or stored or DEFAULT_EMBEDDING_MODEL
        self.chroma_url = chroma_url
        if self.docs.get_meta("title_boost") is None:
            self.docs.set_meta("title_boost", str(title_boost or TITLE_BOOST))
        self._title_boost = int(self.docs.get_meta("title_boost") or TITLE_BOOST)
        self._embedder = None
        self._recipe: Recipe | None = None
        self._chroma = None
        self._client = None
        if chroma_url:  # a named server must be reachable now, not at the first dense query
            from retrieval.dense import chroma_client

            self._client = chroma_client(self.path / "chroma", chroma_url)
        self._vectors = None
        self._deleted: np.ndarray | None = None
        self._masks: dict[tuple, tuple[np.ndarray, int]] = {}  # (category, cutoff) -> (mask & ~deleted, kept)

    def close(self) -> None:
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
        """The current recipe. Its vector size is remembered after the first embed, so that search and stats on an
        index need not load the model just to name the collection."""
        if self._recipe is None:
            from retrieval.dense import resolve_model

            name = resolve_model(self.embedding_model)[0]
            dim = self.docs.get_meta(f"dim:{name}")
            if dim is None:
                dim = str(self.embedder.dim)
                self.docs.set_meta(f"dim:{name}", dim)
            self._recipe = Recipe(name, int(dim), parser=parser_version())
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
            self._chroma = ChromaSide(client, self.recipe.collection_name, self.recipe.as_dict(), self.chroma_url)
        return self._chroma

    @property
    def vectors(self):
        if self._vectors is None:
            from retrieval.dense import VectorFile

            self._vectors = VectorFile(self.path / "vectors" / f"{self.recipe.hash}.f16", self.recipe.embedding_dim)
        return self._vectors

    def _embedded_hi(self) -> int:
        """Units with uid < this value have vectors for the current recipe (embedding is done in uid order)."""
        if not self._ever_embedded():
            return 1
        return int(self.docs.get_meta(f"embedded_hi:{self.recipe.hash}") or 1)

    # -- import ------------------------------------------------------------------------------------------------
    def import_jsonl(self, path: str | Path, *, progress: bool = True, batch_size: int = 5000) -> ImportStats:
        """Stream an arXiv-snapshot-layout JSONL(.gz) file into the index; resumes from its last committed batch."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise PaperIndexError(f"cannot import {path}: no such file")
        source = f"{path.resolve()}:{file_size(path)}"
        ck = self.docs.checkpoint(source)
        stats = ImportStats(file=str(path))
        state = ck or {"offset": 0, "lines": 0, "imported": 0, "duplicates": 0, "malformed": 0, "done": 0}
        if ck and ck["done"]:
            stats.already_done = True
            self._sync_bm25(progress=progress)
            return stats
        stats.resumed_from_line = state["lines"]
        t0 = time.perf_counter()
        bar = Progress("import", total=file_size(path), unit="B", enabled=progress, count_label="records")
        try:
            for batch in read_batches(
                path, start_offset=state["offset"], start_line=state["lines"], batch_size=batch_size
            ):
                state["offset"] = batch.end_offset
                state["lines"] += batch.lines
                state["malformed"] += len(batch.malformed)
                new, dupes = self.docs.add_arxiv_batch(batch.records, source, state)
                stats.lines += batch.lines
                stats.imported += new
                stats.duplicates += dupes
                stats.malformed += len(batch.malformed)
                for line_no, reason in batch.malformed:
                    if len(stats.malformed_examples) < 5:
                        stats.malformed_examples.append(f"line {line_no}: {reason}")
                bar.update(batch.raw_pos, count=batch.lines)
                if self.docs.max_uid() + 1 - self.bm25.covered_hi >= SHARD_SIZE:
                    t_sync = time.perf_counter()
                    self._sync_bm25(progress=False)  # keep search usable during a long import
                    stats.bm25_seconds += time.perf_counter() - t_sync
            self.docs.finish_import(source, state)
        finally:
            bar.close()
        stats.seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        self._sync_bm25(progress=progress)
        stats.bm25_seconds += time.perf_counter() - t1
        stats.seconds += time.perf_counter() - t1  # seconds: the whole import; bm25_seconds: its BM25 part
        return stats

    def _sync_bm25(self, *, progress: bool = False) -> int:
        """Index in BM25 every stored unit not yet there (after an import, an add, or a killed run)."""
        hi = self.docs.max_uid() + 1
        if self.bm25.covered_hi >= hi:
            return 0
        tail_lo = self.bm25.drop_small_tail()
        lo = min(tail_lo, self.bm25.covered_hi) if tail_lo else self.bm25.covered_hi
        bar = Progress("bm25", total=hi - lo, unit="units", enabled=progress)
        try:
            n = self.bm25.build(
                self.docs.iter_units(lo, hi), title_boost=self._title_boost, on_rows=lambda m: bar.advance(m)
            )
        finally:
            bar.close()
        self._deleted = None
        self._masks = {}
        return n

    def rebuild_bm25(self, *, title_boost: int | None = None, progress: bool = False) -> int:
        """Rebuild the keyword side from the doc store (e.g. with another title boost, or after losing bm25/)."""
        import shutil

        if title_boost is not None:
            self.docs.set_meta("title_boost", str(title_boost))
            self._title_boost = title_boost
        shutil.rmtree(self.path / "bm25", ignore_errors=True)
        self.bm25 = BM25Store(self.path / "bm25")
        return self._sync_bm25(progress=progress)

    # -- full-text PDFs ----------------------------------------------------------------------------------------
    def add_pdfs(self, paths: list[Path], *, progress: bool = True) -> AddReport:
        """Parse each PDF (retrieval.ingest.parse_pdf), chunk its pages, store it; bad files are recorded, skipped."""
        from retrieval.ingest import parse_pdf

        files: list[Path] = []
        report = AddReport()
        for p in map(Path, paths):
            p = p.expanduser()
            if p.is_dir():
                files.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() == ".pdf" and q.is_file()))
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
        self._sync_bm25(progress=False)
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
        """Embed every unit that lacks a vector for the current recipe, in uid blocks committed one at a time."""
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
        block = 65_536 if self.embedder.device.startswith("cuda") else 2_048
        bar = Progress("embed", total=max(hi - lo, 0), unit="units", enabled=progress)
        done = 0
        key = f"embedded_hi:{recipe.hash}"

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
        return done

    # -- search ------------------------------------------------------------------------------------------------
    def _mask(self, category: str | None, before: str | date | None) -> np.ndarray | None:
        """Rows a filter keeps, deleted units already removed (None: no filter). Cached per filter until the next
        BM25 sync: building it costs several 1M-element array passes, which a selective query cannot afford."""
        return self._filter(category, before)[0]

    def _filter(self, category: str | None, before: str | date | None) -> tuple[np.ndarray | None, int]:
        cutoff = _as_date(before)
        if not category and cutoff is None:
            return None, self.bm25.n_units
        key = (category or None, cutoff, self.bm25.n_units)
        hit = self._masks.get(key)
        if hit is not None:
            return hit
        mask = None
        if category:
            mask = self.bm25.category_mask(category).copy()
        if cutoff is not None:
            dmask = (self.bm25.dates < cutoff) & (self.bm25.dates > 0)
            mask = dmask if mask is None else (mask & dmask)
        mask[self._deleted_rows()] = False
        if len(self._masks) >= 32:
            self._masks.clear()
        self._masks[key] = (mask, int(mask.sum()))
        return self._masks[key]

    def _deleted_rows(self) -> np.ndarray:
        if self._deleted is None:
            uids = np.array(self.docs.deleted_uids(), dtype=np.int64)
            rows = np.searchsorted(self.bm25.uids, uids)
            ok = rows < len(self.bm25.uids)
            rows = rows[ok][self.bm25.uids[rows[ok]] == uids[ok]]
            self._deleted = rows
        return self._deleted

    def _bm25_rank(self, query: str, mask: np.ndarray | None, n: int) -> np.ndarray:
        scores = self.bm25.scores(query)
        scores[self._deleted_rows()] = 0.0
        cand = np.flatnonzero(scores)
        if mask is not None:  # filter the (few) matching rows, not the 1M-row score array
            cand = cand[mask[cand]]
        if len(cand) > n:
            cand = cand[np.argpartition(-scores[cand], n)[:n]]
        return cand[np.argsort(-scores[cand], kind="stable")]

    def _dense_rank(
        self, query: str, mask: np.ndarray | None, n: int, kept: int | None = None, embedded_hi: int | None = None
    ) -> np.ndarray:
        """Row numbers (BM25 row space) of the best dense matches, best first. `mask` comes from `_mask` (deleted
        rows already removed); `kept` is its count when the caller has it. Given `embedded_hi`, it touches no SQLite
        (so it can run in the search worker thread)."""
        embedded_hi = self._embedded_hi() if embedded_hi is None else embedded_hi
        if embedded_hi <= 1:
            return np.zeros(0, dtype=np.int64)
        qvec = self.embedder.encode_query(query)
        all_uids = self.bm25.uids
        if mask is not None:
            kept = int(mask.sum()) if kept is None else kept
            if kept == 0:
                return np.zeros(0, dtype=np.int64)
            if kept <= EXACT_MAX:  # few units kept: score them exactly from the local vector file
                rows = np.flatnonzero(mask)
                rows = rows[all_uids[rows] < embedded_hi]
                sims = self.vectors.rows(all_uids[rows]) @ qvec
                top = np.argsort(-sims, kind="stable")[:n]
                return rows[top]
            frac = kept / max(len(all_uids), 1)
            fetch = min(FETCH_CAP, int(math.ceil(n / frac * 1.5)) + 10)
        else:
            fetch = n + min(len(self._deleted_rows()), FETCH_CAP)
        uids, _sims = self.chroma.query(qvec, fetch)
        rows = np.searchsorted(all_uids, uids)
        ok = rows < len(all_uids)
        ok[ok] = all_uids[rows[ok]] == uids[ok]  # drop units BM25 does not cover yet
        rows = rows[ok]
        if mask is not None:
            rows = rows[mask[rows]]
        elif len(self._deleted_rows()):
            rows = rows[~np.isin(rows, self._deleted_rows())]
        return rows[:n]

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        category: str | None = None,
        before: str | date | None = None,
        mode: str = "hybrid",
    ) -> list[Hit]:
        if mode not in ("hybrid", "bm25", "dense"):
            raise PaperIndexError(f"unknown search mode {mode!r}: use hybrid, bm25 or dense")
        if self.docs.max_uid() == 0:  # O(1), unlike COUNT(*) over 1M papers
            raise PaperIndexError(f"the paper index at {self.path} is empty: add papers with `replicate index import`")
        if not query.strip():
            raise PaperIndexError("empty search query")
        pending = self.docs.max_uid() + 1 - self.bm25.covered_hi
        if 0 < pending <= SYNC_ON_SEARCH_MAX:
            self._sync_bm25()
        mask, kept = self._filter(category, before)
        n = max(CANDIDATES, 3 * k)
        fused: dict[int, float] = {}
        if mode == "dense" and self._embedded_hi() <= 1:
            raise PaperIndexError("no embeddings for this recipe yet: run `replicate index embed`")
        dense = None
        embedded_hi = self._embedded_hi() if mode != "bm25" else 1
        if mode == "hybrid" and embedded_hi > 1:
            # The dense side (query embedding + HNSW) and BM25 scoring both release the GIL for most of their time:
            # run them side by side (measured at 1M units: ~18 ms embedding + 10-30 ms HNSW vs ~18 ms BM25). The
            # lazily opened parts are opened here, in the caller's thread (SQLite objects are per thread).
            _ = self.recipe, self.vectors, self.chroma, self._deleted_rows()
            dense = _pool().submit(self._dense_rank, query, mask, n, kept, embedded_hi)
        if mode in ("hybrid", "bm25"):
            for rank, row in enumerate(self._bm25_rank(query, mask, n), 1):
                fused[int(row)] = fused.get(int(row), 0.0) + W_BM25 / (RRF_K + rank)
        if mode in ("hybrid", "dense"):
            rows = dense.result() if dense is not None else self._dense_rank(query, mask, n, kept, embedded_hi)
            for rank, row in enumerate(rows, 1):
                fused[int(row)] = fused.get(int(row), 0.0) + W_DENSE / (RRF_K + rank)
        return self._hits(query, fused, k)

    def _hits(self, query: str, fused: dict[int, float], k: int) -> list[Hit]:
        ranked = sorted(fused.items(), key=lambda kv: -kv[1])
        terms = set(self.bm25.tokenizer.terms(query))
        hits: list[Hit] = []
        seen: set[str] = set()
        # Look units up in windows: the top ranks nearly always give the k papers, so reading all ~200 fused units'
        # texts from SQLite is wasted work. A later window is read only when chunks of one paper fill the first.
        info: dict[int, tuple] = {}
        step = max(4 * k, 40)
        for i, (row, score) in enumerate(ranked):
            if i % step == 0:
                info = self.docs.unit_rows([int(self.bm25.uids[r]) for r, _ in ranked[i : i + step]])
            uid = int(self.bm25.uids[row])
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
                    snippet=self._snippet(body or "", terms),
                    page=page,
                    chunk=chunk,
                    source=source,
                )
            )
            if len(hits) >= k:
                break
        return hits

    def _snippet(self, text: str, terms: set[str], width: int = 300) -> str:
        """The sentence (and its neighbours, up to `width` chars) with the most query terms."""
        sentences = re.split(r"(?<=[.!?])\s+", text)
        if not sentences:
            return ""
        terms_of = self.bm25.tokenizer.terms
        best = max(range(len(sentences)), key=lambda i: (len(terms & set(terms_of(sentences[i]))), -i))
        out = sentences[best]
        j = best + 1
        while j < len(sentences) and len(out) + len(sentences[j]) < width:
            out += " " + sentences[j]
            j += 1
        return out if len(out) <= width else out[: width - 1].rsplit(" ", 1)[0] + "…"

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
        out = {
            "path": str(self.path),
            "papers": len(self),
            "by_source": self.docs.count_by_source(),
            "units": self.docs.count_units(),
            "bm25_units": self.bm25.n_units,
            "bm25_pending": max(self.docs.max_uid() + 1 - self.bm25.covered_hi, 0),
            "bm25_shards": len(self.bm25.shards),
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
        out.update(recipe_hash=None, recipe=None, chroma_vectors=0)
        if with_dense and self._ever_embedded():  # otherwise there is nothing to count, and no model to load
            out.update(recipe_hash=self.recipe.hash, recipe=self.recipe.as_dict(), chroma_vectors=self.chroma.count())
        return out
