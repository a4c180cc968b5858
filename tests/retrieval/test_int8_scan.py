"""Exact dense search over a filter's units (retrieval/int8_scan.py) and the pread row reader it uses.

The int8 scan only shortlists; the answer must be the float32 brute-force ranking of the same vectors, including
on the hard cases for it: groups of near-duplicate vectors (an arXiv snapshot holds versions and near-copies of a
paper), whose int8 scores tie, and random queries, whose scores crowd near 0 so that the n-th and the 150th differ
by less than the int8 error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import retrieval.dense as dense_mod
from retrieval.dense import VectorFile
from retrieval.int8_scan import Int8Rows

DIM = 384


def unit_rows(rng: np.random.Generator, n: int, copies: int = 1) -> np.ndarray:
    """n random unit vectors; with `copies`, in groups of that many near-copies (cosine ~0.9998 within a group,
    versions of one paper): their int8 scores tie, only the exact re-scoring orders them."""
    centres = rng.standard_normal((-(-n // copies), DIM)).astype(np.float32)
    x = np.repeat(centres, copies, axis=0)[:n]
    if copies > 1:
        x = x + 0.02 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def vector_file(tmp_path: Path) -> tuple[VectorFile, np.ndarray]:
    rng = np.random.default_rng(0)
    vecs = np.vstack([unit_rows(rng, 6_000), unit_rows(rng, 6_000, copies=8), unit_rows(rng, 150, copies=150)])
    vf = VectorFile(tmp_path / "v.f16", DIM)
    uids = np.arange(1, len(vecs) + 1)
    vf.write(uids, vecs)
    return vf, vf.rows(uids)  # the float16 values as float32: what exact search must rank by


def brute(stored: np.ndarray, uids: np.ndarray, q: np.ndarray, n: int) -> np.ndarray:
    sims = stored[uids - 1] @ q
    return uids[np.lexsort((uids, -sims))[:n]]


@pytest.mark.parametrize("keep", ["every third", "random half", "near-copies", "one big group", "tiny"])
def test_int8_scan_returns_the_exact_ranking(vector_file, keep: str) -> None:
    vf, stored = vector_file
    rng = np.random.default_rng(1)
    all_uids = np.arange(1, len(stored) + 1)
    uids = {
        "every third": all_uids[::3],
        "random half": np.sort(rng.choice(all_uids, len(all_uids) // 2, replace=False)),
        "near-copies": all_uids[6_000:12_000],
        # 150 near-copies of one vector: more ties than the first re-scoring (n + 50) takes, so it must go deeper
        "one big group": np.r_[all_uids[:3_000], all_uids[12_000:]],
        "tiny": all_uids[[4, 9, 6_500]],  # fewer units than asked for
    }[keep]
    rows = Int8Rows(uids, DIM, vf.gather)
    assert rows.mat.dtype == np.int8 and rows.mat.shape == (DIM, len(uids))
    queries = [unit_rows(rng, 1)[0] for _ in range(5)] + [stored[u - 1] for u in uids[:: max(len(uids) // 5, 1)]]
    queries += [stored[u - 1] for u in uids[-3:]]
    for q in queries:
        for n in (10, 100):
            assert np.array_equal(rows.top(q, n), brute(stored, uids, q, n)), (keep, n)


def test_int8_scan_of_an_empty_set() -> None:
    rows = Int8Rows(np.zeros(0, np.int64), DIM, lambda u: np.zeros((len(u), DIM), np.float32))
    assert rows.top(np.ones(DIM, np.float32) / np.sqrt(DIM), 10).size == 0


def test_gather_reads_the_rows_the_memory_map_reads(vector_file, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sparse uids (one read each), dense runs (span reads) and runs longer than one read's span."""
    vf, stored = vector_file
    monkeypatch.setattr(dense_mod, "SPAN", 500)  # so the 12,000-row file needs many span reads
    rng = np.random.default_rng(2)
    n = len(stored)
    cases = [
        np.array([1]),
        np.array([n]),
        np.sort(rng.choice(np.arange(1, n + 1), 40, replace=False)),  # far apart
        np.arange(1, n + 1),  # every row
        np.arange(1, n + 1)[::7],  # gaps under GAP: span reads
        np.r_[np.arange(3, 900), [5_000, 9_000], np.arange(11_000, 11_050)],  # both kinds
    ]
    for uids in cases:
        assert np.array_equal(vf.gather(uids), stored[uids - 1]), uids[:5]
    assert vf.gather(np.zeros(0, np.int64)).shape == (0, DIM)
