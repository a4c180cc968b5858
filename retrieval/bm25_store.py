"""BM25 over sharded term-frequency matrices with corpus-wide statistics, memory-mapped at query time.

Why not one bm25s index: bm25s must hold the whole tokenised corpus in memory to build and bakes the IDF into its
stored scores, so it cannot grow by appending. Here each shard (up to SHARD_SIZE units) stores raw term frequencies
as a CSC matrix (one column per term of the global vocabulary) in `.npy` files that are memory-mapped when searching.
Document frequencies, the average length and hence IDF are summed over all shards when the store opens, so scores
are those of one BM25 index over the whole corpus (Lucene's IDF, k1=1.2, b=0.75) and a shard never needs rebuilding
when another is added. Build memory is bounded by one shard's postings plus the vocabulary dictionary.

Tokens: lower-cased alphanumeric runs, English stop words removed, Snowball-stemmed (PyStemmer); title tokens are
counted `title_boost` times, tuned on the SciTLDR train split (benchmarks/retrieval_quality.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

SHARD_SIZE = 200_000
SMALL_TAIL = 20_000  # a tail shard smaller than this is rebuilt together with new units instead of adding a shard
K1, B = 1.2, 0.75
_WORD_RE = re.compile(r"[a-z0-9]+")
_MAX_TERM = 32  # longer "words" are hashes/URLs: never useful as search terms, and they bloat the vocabulary


def date_int(date: str) -> int:
    digits = date[:10].replace("-", "")
    return int(digits) if digits.isdigit() and len(digits) == 8 else 0


class Tokenizer:
    """Text -> stemmed term strings, caching the stem of every distinct word (PyStemmer is C, the cache is a dict)."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._cache: dict[str, str | None] = {w: None for w in STOPWORDS_EN}

    def terms(self, text: str) -> list[str]:
        cache = self._cache
        out = []
        for word in _WORD_RE.findall(text.lower()):
            term = cache.get(word, "")
            if term == "":
                term = None if len(word) > _MAX_TERM else self._stemmer.stemWord(word)
                if len(cache) < 2_000_000:
                    cache[word] = term
            if term is not None:
                out.append(term)
        return out


class Shard:
    """One memory-mapped shard: rows are units `uids[0..n)`, columns are global term ids `< n_terms`."""

    def __init__(self, folder: Path):
        self.folder = folder
        load = lambda name: np.load(folder / f"{name}.npy", mmap_mode="r")  # noqa: E731
        self.uids = np.asarray(load("uids"))
        self.doclen = np.asarray(load("doclen"), dtype=np.float32)
        self.indptr = load("indptr")
        self.indices = load("indices")
        self.tf = load("tf")
        self.dates = np.asarray(load("dates"))
        self.cat_indptr = np.asarray(load("cat_indptr"))
        self.cat_rows = np.asarray(load("cat_rows"))
        self.n_terms = len(self.indptr) - 1
        self.norm = np.empty(0, dtype=np.float32)

    def df(self) -> np.ndarray:
        return np.diff(np.asarray(self.indptr)).astype(np.int64)


class BM25Store:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer = Tokenizer()
        manifest = folder / "manifest.json"
        self.manifest = json.loads(manifest.read_text()) if manifest.exists() else {"shards": [], "n_terms": 0}
        self.manifest.setdefault("categories", [])
        self.vocab: dict[str, int] = {}
        vocab_file = folder / "vocab.txt"
        if vocab_file.exists():
            with open(vocab_file, encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if i >= self.manifest["n_terms"]:
                        break  # terms written by a build that died before its manifest: not part of the index
                    self.vocab[line.rstrip("\n")] = i
        self.categories: list[str] = list(self.manifest["categories"])
        self._cat_id = {c: i for i, c in enumerate(self.categories)}
        self._open_shards()

    # -- reading ------------------------------------------------------------------------------------------------
    def _open_shards(self) -> None:
        self.shards = [Shard(self.folder / s["dir"]) for s in self.manifest["shards"]]
        self.offsets = np.cumsum([0] + [len(s.uids) for s in self.shards])
        self.n_units = int(self.offsets[-1])
        n_terms = max([s.n_terms for s in self.shards], default=0)
        df = np.zeros(n_terms, dtype=np.int64)
        total_len = 0.0
        for shard in self.shards:
            df[: shard.n_terms] += shard.df()
            total_len += float(shard.doclen.sum())
        n = max(self.n_units, 1)
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
        avgdl = total_len / n if total_len else 1.0
        for shard in self.shards:
            shard.norm = (K1 * (1.0 - B + B * shard.doclen / avgdl)).astype(np.float32)
        self.uids = np.concatenate([s.uids for s in self.shards]) if self.shards else np.zeros(0, np.int64)
        self.dates = np.concatenate([s.dates for s in self.shards]) if self.shards else np.zeros(0, np.int32)
        self._cat_masks: dict[str, np.ndarray] = {}

    @property
    def covered_hi(self) -> int:
        """Units with uid < covered_hi are in the BM25 shards."""
        return int(self.manifest["shards"][-1]["hi"]) if self.manifest["shards"] else 1

    def query_terms(self, query: str) -> np.ndarray:
        ids = {self.vocab[t] for t in self.tokenizer.terms(query) if t in self.vocab}
        return np.array(sorted(ids), dtype=np.int64)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every unit (row order = `self.uids`); zero where no query term occurs."""
        out = np.zeros(self.n_units, dtype=np.float32)
        terms = self.query_terms(query)
        for shard, off in zip(self.shards, self.offsets[:-1], strict=False):
            view = out[off : off + len(shard.uids)]
            for t in terms[terms < shard.n_terms]:
                lo, hi = int(shard.indptr[t]), int(shard.indptr[t + 1])
                if lo == hi:
                    continue
                rows = shard.indices[lo:hi]
                tf = shard.tf[lo:hi].astype(np.float32)
                # rows are unique within a column, so fancy-index += is a correct scatter-add
                view[rows] += self.idf[t] * tf * (K1 + 1.0) / (tf + shard.norm[rows])
        return out

    def category_mask(self, category: str) -> np.ndarray:
        """Boolean row mask of units whose paper lists `category` (prefix `cs` matches every cs.* category)."""
        if category in self._cat_masks:
            return self._cat_masks[category]
        wanted = [i for c, i in self._cat_id.items() if c == category or c.startswith(category + ".")]
        mask = np.zeros(self.n_units, dtype=bool)
        for shard, off in zip(self.shards, self.offsets[:-1], strict=False):
            for cid in wanted:
                if cid + 1 < len(shard.cat_indptr):
                    rows = shard.cat_rows[shard.cat_indptr[cid] : shard.cat_indptr[cid + 1]]
                    mask[off + rows] = True
        if len(self._cat_masks) > 32:
            self._cat_masks.clear()
        self._cat_masks[category] = mask
        return mask

    # -- building -----------------------------------------------------------------------------------------------
    def build(self, rows_iter: Iterable[list[tuple]], *, title_boost: int = 1, on_rows=None) -> int:
        """Append shards for units given as (uid, title, text, categories, date) rows in uid order."""
        added = 0
        pending: list[tuple] = []
        for rows in rows_iter:
            pending.extend(rows)
            while len(pending) >= SHARD_SIZE:
                self._write_shard(pending[:SHARD_SIZE], title_boost)
                added += SHARD_SIZE
                pending = pending[SHARD_SIZE:]
            if on_rows:
                on_rows(len(rows))
        if pending:
            self._write_shard(pending, title_boost)
            added += len(pending)
        self._open_shards()
        return added

    def drop_small_tail(self) -> int | None:
        """Forget a small last shard so the next build re-tokenises it with the new units; returns its first uid."""
        shards = self.manifest["shards"]
        if not shards or shards[-1]["n"] >= SMALL_TAIL:
            return None
        tail = shards.pop()
        self._save_manifest()
        shutil.rmtree(self.folder / tail["dir"], ignore_errors=True)
        self._open_shards()
        return int(tail["lo"])

    def _word_id(self, word: str) -> int:
        """Global term id of a raw word (-1 for a stop word or junk), adding new terms to the vocabulary."""
        term = self.tokenizer.terms(word)
        if not term:
            wid = -1
        else:
            wid = self.vocab.get(term[0], -2)
            if wid == -2:
                wid = self.vocab[term[0]] = len(self.vocab)
                self._new_terms.append(term[0])
        if len(self._word_ids) < 5_000_000:  # bounded: beyond this, rare words just take the slow path
            self._word_ids[word] = wid
        return wid

    def _text_ids(self, text: str) -> list[int]:
        """Term ids of a text. Hot loop of the import: one C-level dict lookup per word via map()."""
        words = _WORD_RE.findall(text.lower())
        ids = list(map(self._word_ids.get, words))
        if None in ids:
            for j, (w, i) in enumerate(zip(words, ids, strict=True)):
                if i is None:
                    ids[j] = self._word_id(w)
        return ids

    def _write_shard(self, rows: list[tuple], title_boost: int) -> None:
        if not hasattr(self, "_word_ids"):
            self._word_ids: dict[str, int] = {}
        self._new_terms: list[str] = []
        new_terms = self._new_terms
        all_ids: list[int] = []
        lens = np.zeros(len(rows), dtype=np.int64)
        dates = np.zeros(len(rows), dtype=np.int32)
        cat_pairs: list[tuple[int, int]] = []
        text_ids = self._text_ids
        for r, (_uid, title, text, cats, date) in enumerate(rows):
            ids = text_ids(title or "") * title_boost + text_ids(text or "")
            all_ids.extend(ids)
            lens[r] = len(ids)
            dates[r] = date_int(date or "")
            for c in (cats or "").split():
                cid = self._cat_id.get(c)
                if cid is None:
                    cid = self._cat_id[c] = len(self.categories)
                    self.categories.append(c)
                cat_pairs.append((cid, r))
        cols_all = np.array(all_ids, dtype=np.int64)
        rows_all = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
        keep = cols_all >= 0  # stop words and junk were mapped to -1
        doc_cols, doc_rows = cols_all[keep], rows_all[keep]
        doclen = np.bincount(doc_rows, minlength=len(rows)).astype(np.int32)
        n_terms = len(self.vocab)
        if len(doc_cols):
            keys, counts = np.unique(doc_cols * len(rows) + doc_rows, return_counts=True)  # (term, row): CSC order
            term_of, row_of = np.divmod(keys, len(rows))
        else:
            term_of = row_of = counts = np.zeros(0, dtype=np.int64)
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_of, minlength=n_terms), out=indptr[1:])
        cat_arr = np.array(sorted(cat_pairs), dtype=np.int64).reshape(-1, 2)
        cat_indptr = np.zeros(len(self.categories) + 1, dtype=np.int64)
        np.cumsum(np.bincount(cat_arr[:, 0], minlength=len(self.categories)), out=cat_indptr[1:])
        uids = np.array([row[0] for row in rows], dtype=np.int64)
        name = f"shard-{int(uids[0]):010d}"
        tmp = self.folder / (name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        arrays = {
            "uids": uids,
            "doclen": doclen,
            "indptr": indptr,
            "indices": row_of.astype(np.int32),
            "tf": np.minimum(counts, 65535).astype(np.uint16),
            "dates": dates,
            "cat_indptr": cat_indptr,
            "cat_rows": cat_arr[:, 1].astype(np.int32),
        }
        for key_name, arr in arrays.items():
            np.save(tmp / f"{key_name}.npy", arr)
        self._append_vocab(new_terms, n_terms - len(new_terms))
        final = self.folder / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.manifest["shards"].append({"dir": name, "lo": int(uids[0]), "hi": int(uids[-1]) + 1, "n": len(rows)})
        self.manifest["n_terms"] = n_terms
        self.manifest["categories"] = self.categories
        self._save_manifest()

    def _append_vocab(self, new_terms: list[str], start: int) -> None:
        path = self.folder / "vocab.txt"
        with open(path, "a+b") as fh:
            fh.seek(0)
            # keep exactly `start` lines (what the manifest knows about: a crashed build may have left more)
            kept = 0
            pos = 0
            if start:
                for line in fh:
                    pos += len(line)
                    kept += 1
                    if kept == start:
                        break
            fh.truncate(pos)
        with open(path, "a", encoding="utf-8") as fh:
            fh.writelines(t + "\n" for t in new_terms)
            fh.flush()
            os.fsync(fh.fileno())

    def _save_manifest(self) -> None:
        tmp = self.folder / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest))
        os.replace(tmp, self.folder / "manifest.json")

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
