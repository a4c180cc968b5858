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
