"""Search filters (category, first-version date): decided by the keyword engine, remembered as bitmaps.

tantivy decides which units a filter keeps (`KeywordIndex.filter_query`); the answer is kept per filter and index
generation as a boolean array over uids (1 MB per million units), as Lucene's filter cache does, because the same
filter comes back again and again: an agent's searches for one paper all use that paper's date as `--before`.
The bitmap then serves the three places a filter costs time at 1M units:

  * the dense side's over-fetched HNSW candidates are kept by a bitmap lookup (a tantivy uid term-set query for
    the same job cost ~3 ms a search);
  * a broad filter (keeping >= `BROAD` of the index) on the keyword side: intersecting the query's postings with
    half a million filter documents cost ~6 ms more than the query alone, so the unfiltered top `n / kept * 1.3`
    units are taken and the bitmap keeps those that pass. The filter clause scores 0, so this is the same ranking
    as the filtered query; when too few pass, the filtered query runs after all;
  * a filter that is not broad and keeps <= `EXACT_MAX` units on the dense side: its units' vectors are gathered
    once, as int8 rows, and every one is scored (`exact_set`, retrieval/int8_scan.py).

Building a bitmap is one engine query over what the filter keeps (~0.1 s for 500k units), paid by the first search
with that filter; the cache holds `MASKS` filters and `EXACT_SETS` vector sets, oldest out first.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from retrieval.int8_scan import Int8Rows
from retrieval.keyword import KeywordIndex

BROAD = 0.3  # kept fraction from which a filter is broad: the keyword side post-filters the unfiltered ranking, the
# dense side over-fetches from HNSW
EXACT_MAX = 200_000  # a filter keeping at most this many units is scored exactly (int8 rows kept per filter)
# instead of over-fetching from HNSW. At 1M units the scan costs ~27 ns a kept unit and the over-fetch ~2 ms + 6.5 us
# a fetched candidate (1.5 n / kept-fraction of them): they meet near 230k kept units (docs/index.md)
COUNTS = 64  # filters whose unit count is kept
MASKS = 8  # bitmaps kept (1 MB each per million units)
EXACT_SETS = 4  # filters whose int8 rows stay in memory (<= 80 MB each at 384 dims)


class FilterCache:
    """Per-index cache of what filters keep; `key` is the caller's (category, cutoff, keyword generation)."""

    def __init__(self, keyword: KeywordIndex):
        self.keyword = keyword
        self._counts: dict[tuple, int] = {}
        self._masks: dict[tuple, np.ndarray] = {}
        self._exact: dict[tuple, Int8Rows] = {}
        self._lock = threading.Lock()  # the keyword and dense sides of one hybrid search run in two threads

    def clear(self) -> None:
        with self._lock:
            self._counts, self._masks, self._exact = {}, {}, {}

    def kept(self, key: tuple, filt) -> int:
        """How many units the filter keeps (one engine count per filter and generation)."""
        if key not in self._counts:
            if len(self._counts) >= COUNTS:
                self._counts.clear()
            self._counts[key] = self.keyword.count(filt)
        return self._counts[key]

    def mask(self, key: tuple, filt, kept: int) -> np.ndarray:
        """bool array over uids: True where the unit is indexed, live and passes the filter."""
        with self._lock:
            hit = self._masks.get(key)
            if hit is None:
                uids = self.keyword.filtered_uids(filt, max(kept, 1))
                hit = np.zeros(max(self.keyword.covered_hi, int(uids[-1]) + 1 if len(uids) else 0), dtype=bool)
                hit[uids] = True
                if len(self._masks) >= MASKS:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[key] = hit
        return hit

    def keep(self, uids: np.ndarray, key: tuple, filt, kept: int) -> np.ndarray:
        """The subset of `uids` (order kept) that passes the filter."""
        mask = self.mask(key, filt, kept)
        inside = uids < len(mask)
        passed = np.zeros(len(uids), dtype=bool)
        passed[inside] = mask[uids[inside]]
        return uids[passed]

    def keyword_rank(
        self, query: str, key: tuple, filt, kept: int, n: int, *, parallel: bool = True, exact: bool = False
    ) -> np.ndarray:
        """uids of the best `n` keyword matches that pass the filter, best first (`parallel`, `exact`: see
        `KeywordIndex.search`)."""
        if filt is None:
            return self.keyword.search(query, n, parallel=parallel, exact=exact)[0]
        frac = kept / max(self.keyword.n_docs, 1)
        if frac >= BROAD:
            fetch = int(math.ceil(n / frac * 1.3)) + 10
            uids = self.keyword.search(query, fetch, parallel=parallel, exact=exact)[0]
            passed = self.keep(uids, key, filt, kept)
            if len(passed) >= n or len(uids) < fetch:  # enough, or every matching unit was seen
                return passed[:n]
        return self.keyword.search(query, n, filt, parallel=parallel)[0]

    def exact_set(self, key: tuple, filt, kept: int, embedded_hi: int, vectors) -> Int8Rows:
        """The embedded units a filter keeps, as int8 rows for exact search (retrieval/int8_scan.py), built from the
        vector file `vectors` on the filter's first dense search: reading them costs far more than scoring them."""
        hit = self._exact.get(key + (embedded_hi,))
        if hit is None:
            uids = np.flatnonzero(self.mask(key, filt, kept)).astype(np.int64)
            uids = uids[uids < embedded_hi]
            hit = Int8Rows(uids, vectors.dim, vectors.gather)
            with self._lock:
                if len(self._exact) >= EXACT_SETS:
                    self._exact.pop(next(iter(self._exact)))
                self._exact[key + (embedded_hi,)] = hit
        return hit
