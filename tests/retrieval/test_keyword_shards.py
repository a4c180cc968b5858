"""The keyword side's shards (retrieval/keyword.py): one index's ranking, and no unit lost or doubled by a kill.

Real data: a slice of the shared arXiv CS metadata file. The indexes are built with `KeywordIndex` directly, as
`PaperIndex` does, so the cases a real import can only reach by a kill at one exact moment are set up by hand.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import retrieval.keyword as keyword_mod
from retrieval.keyword import KeywordIndex, KeywordUnit


def units(arxiv_jsonl: Path, n: int) -> list[KeywordUnit]:
    with gzip.open(arxiv_jsonl, "rt") as fh:
        recs = [json.loads(line) for line in itertools.islice(fh, n)]
    return [
        KeywordUnit(i, r["id"], " ".join(r["title"].split()), r["abstract"], r["categories"], "2025-01-01")
        for i, r in enumerate(recs, 1)
    ]


def build(folder: Path, rows: list[KeywordUnit]) -> KeywordIndex:
    ki = KeywordIndex(folder, title_boost=2)
    ki.add(rows)
    ki.commit(final=True)
    return ki


QUERIES = ("graph neural network for molecules", "large language model reasoning benchmark",
           "diffusion models image generation", "reinforcement learning robot control")  # fmt: skip


def test_sharded_scores_are_one_index_scores(arxiv_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each shard's BM25 on its own statistics would rank a term that is rare in one shard above the same match in
    the other; the global-IDF boosts make the merged scores those of a single index (up to each shard's average
    length)."""
    rows = units(arxiv_jsonl, 400)
    monkeypatch.setattr(keyword_mod, "SHARDS", 1)
    one = build(tmp_path / "one", rows)
    monkeypatch.setattr(keyword_mod, "SHARDS", 2)
    two = build(tmp_path / "two", rows)
    assert [s.n_docs for s in two.shards] == [200, 200] and one.n_docs == two.n_docs == 400
    for q in QUERIES:
        u1, s1 = one.search(q, 50)
        u2, s2 = two.search(q, 50)
        assert len(u1) == len(u2) == 50
        by_uid = dict(zip(u2.tolist(), s2.tolist(), strict=True))
        common = [u for u in u1[:20].tolist() if u in by_uid]
        assert len(common) >= 19, q
        for u, s in zip(u1.tolist(), s1.tolist(), strict=True):
            if u in by_uid:
                assert by_uid[u] == pytest.approx(s, rel=0.02), (q, u)
        assert np.all(np.diff(s2) <= 0)  # merged best first
        # a hybrid search walks the shards in its own thread (the dense side has the other core): same answer
        u3, s3 = two.search(q, 50, parallel=False)
        assert np.array_equal(u3, u2) and np.array_equal(s3, s2)


def test_a_shard_ahead_after_a_kill_holds_each_unit_once(arxiv_jsonl: Path, tmp_path: Path):
    """A kill after shard 0's commit and before shard 1's (and before covered.json): the rerun re-sends every unit
    from covered_hi, shard 0 replaces the copies it holds, and a paper replaced within that range keeps only its
    new units."""
    rows = units(arxiv_jsonl, 120)
    ki = KeywordIndex(tmp_path / "kw", title_boost=2)
    ki.add(rows[:60])
    ki.commit()
    assert ki.covered_hi == 61
    # the next batch reaches shard 0's segment files only: what a SIGKILL between the two commits leaves
    ki.add(rows[60:])
    ki.shards[0].writer.commit()
    ki.shards[1].writer.rollback()
    ki.close()
    again = KeywordIndex(tmp_path / "kw", title_boost=2)
    assert again.covered_hi == 61 and again.shards[0].n_docs == 60 and again.shards[1].n_docs == 30
    # the rerun: a paper of the re-sent range comes back as full text under a new uid (its old unit is deleted)
    old = rows[70]
    replaced = KeywordUnit(121, old.paper_id, "Quokka husbandry", "zebrafinch okapi quokka", old.categories, "")
    again.delete_papers([old.paper_id])
    again.add([r for r in rows[60:] if r.uid != old.uid] + [replaced])
    again.commit(final=True)
    assert again.covered_hi == 122 and again.n_docs == 120
    for r in rows[60:90]:
        hits, _ = again.search(r.title, 120)
        assert hits.tolist().count(r.uid) == (0 if r.uid == old.uid else 1)
    assert again.search("quokka okapi", 5)[0].tolist() == [121]


def test_an_empty_shard_does_not_look_incomplete(arxiv_jsonl: Path, tmp_path: Path):
    (row,) = units(arxiv_jsonl, 1)
    ki = build(tmp_path / "kw", [row])
    assert ki.covered_hi == 2 and ki.n_docs == 1 and ki.shards[0].n_docs == 0
    assert ki.search(row.title, 5)[0].tolist() == [1]
    assert KeywordIndex(tmp_path / "kw", title_boost=2).covered_hi == 2  # read back from covered.json


def test_common_terms_search_scores_the_units_with_a_rare_term_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An unfiltered search whose common terms hold many postings ranks only the units that contain one of its rare
    terms, each by its exact BM25 score over every query term; with fewer such units than asked for, or no rare
    term at all (an unknown word is not rare, it is absent), the search is the exact one."""
    filler = [f"filler text number {i} about nothing in particular" for i in range(300)]
    texts = filler[:280] + [
        "graph graph graph learning learning learning",  # common terms only: the best exact score
        "graph learning for zeolite frameworks with a long abstract that goes on and on about other things",
        "zeolite",
    ] + [f"graph learning note {i}" for i in range(17)]  # fmt: skip
    rows = [KeywordUnit(i, f"p{i}", "", t, "cs.LG", "2025-01-01") for i, t in enumerate(texts, 1)]
    ki = build(tmp_path / "kw", rows)
    monkeypatch.setattr(keyword_mod, "COMMON_MIN_POSTINGS", 10**15)  # off: the exact search
    exact_uids, exact_scores = ki.search("zeolite graph learning", 300)
    exact = dict(zip(exact_uids.tolist(), exact_scores.tolist(), strict=True))
    assert exact_uids[0] == 281  # the common-terms-only unit outscores both rare-term units
    monkeypatch.setattr(keyword_mod, "COMMON_MIN_POSTINGS", 0)  # on, at any size
    uids, scores = ki.search("zeolite graph learning", 2)
    assert sorted(uids.tolist()) == [282, 283]
    for u, s in zip(uids.tolist(), scores.tolist(), strict=True):
        assert s == pytest.approx(exact[u], rel=1e-5)  # the common terms still count where the rare one is
    assert np.array_equal(ki.search("zeolite graph learning", 3)[0], exact_uids[:3])  # only 2 hold it: exact
    unknown = ki.search("qqqzzz graph learning", 5)  # no rare term: exact
    monkeypatch.setattr(keyword_mod, "COMMON_MIN_POSTINGS", 10**15)
    assert np.array_equal(unknown[0], ki.search("qqqzzz graph learning", 5)[0]) and len(unknown[0]) == 5
    filt = ki.filter_query("cs.LG", None)
    monkeypatch.setattr(keyword_mod, "COMMON_MIN_POSTINGS", 0)
    assert ki.search("zeolite graph learning", 2, filt)[0][0] == 281  # filtered searches stay exact


def test_common_terms_keep_real_scores(arxiv_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """On real abstracts, every unit the common-terms search returns carries its exact score, in order."""
    ki = build(tmp_path / "kw", units(arxiv_jsonl, 400))
    monkeypatch.setattr(keyword_mod, "COMMON", 0.1)  # 400 units: "graph", "robot", "reinforc" are rare at 10%
    monkeypatch.setattr(keyword_mod, "COMMON_MIN_POSTINGS", 0)
    assert sum(ki._common_terms_queries(ki._stats(q)) is not None for q in QUERIES) >= 2  # the path runs here
    for q in QUERIES:
        monkeypatch.setattr(keyword_mod, "COMMON_MIN_POSTINGS", 10**15)
        exact = dict(zip(*(a.tolist() for a in ki.search(q, 400)), strict=True))
        monkeypatch.setattr(keyword_mod, "COMMON_MIN_POSTINGS", 0)
        uids, scores = ki.search(q, 10)
        assert len(uids) == 10 and np.all(np.diff(scores) <= 0)
        assert all(s == pytest.approx(exact[u], rel=1e-5) for u, s in zip(uids.tolist(), scores.tolist(), strict=True))
