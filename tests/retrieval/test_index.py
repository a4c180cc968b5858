"""Paper index: import (streaming, resumable, malformed lines), BM25 search with filters, lookups, empty index.

Real data: a slice of the shared arXiv CS metadata file (snapshot layout). No embeddings here (see
test_index_dense.py), so these tests stay fast.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import retrieval.index as index_mod
from retrieval import PaperIndex, PaperIndexError
from retrieval.arxiv_import import parse_line, publication_date
from retrieval.chunking import chunk_pages

REPO = Path(__file__).resolve().parents[2]


def write_slice(src: Path, dest: Path, n: int, start: int = 0) -> list[dict]:
    """The lines [start, start+n) of the shared gz file, written gzipped to `dest`; returns them parsed."""
    with gzip.open(src, "rb") as fh:
        lines = list(itertools.islice(fh, start, start + n))
    with gzip.open(dest, "wb") as out:
        out.writelines(lines)
    return [json.loads(line) for line in lines]


@pytest.fixture
def slice300(arxiv_jsonl: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    dest = tmp_path / "slice300.jsonl.gz"
    return dest, write_slice(arxiv_jsonl, dest, 300)


def test_import_slice_and_search(slice300, tmp_path: Path) -> None:
    path, records = slice300
    ix = PaperIndex(tmp_path / "ix")
    stats = ix.import_jsonl(path, progress=False)
    assert (stats.lines, stats.imported, stats.duplicates, stats.malformed) == (300, 300, 0, 0)
    assert len(ix) == 300
    # a known item: search its exact title, it must come first, with a snippet from its abstract
    target = records[123]
    hits = ix.search(target["title"], k=5, mode="bm25")
    assert hits[0].id == target["id"]
    assert hits[0].source == "arxiv" and hits[0].page is None and hits[0].chunk is None
    assert hits[0].snippet and hits[0].snippet.split()[0] in " ".join(target["abstract"].split())
    assert ix.get_text(target["id"]).startswith(" ".join(target["title"].split()))
    meta = ix.get_meta(target["id"])
    assert meta["title"] == " ".join(target["title"].split())
    assert set(meta["categories"]) <= set(target["categories"].split())
    assert ix.get_meta("no-such-id") is None and ix.get_text("no-such-id") is None
    st = ix.stats(with_dense=False)
    assert st["papers"] == 300 and st["bm25_units"] == 300 and st["bm25_pending"] == 0
    # importing the same file again reads nothing and adds nothing
    again = ix.import_jsonl(path, progress=False)
    assert again.already_done and len(ix) == 300


def test_overlapping_file_counts_duplicates(arxiv_jsonl: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write_slice(arxiv_jsonl, a, 100)
    write_slice(arxiv_jsonl, b, 100, start=60)  # 40 records overlap
    ix = PaperIndex(tmp_path / "ix")
    ix.import_jsonl(a, progress=False)
    stats = ix.import_jsonl(b, progress=False)
    assert (stats.imported, stats.duplicates) == (60, 40)
    assert len(ix) == 160 and ix.stats(with_dense=False)["bm25_units"] == 160


def test_malformed_lines_are_counted_and_import_goes_on(slice300, tmp_path: Path) -> None:
    _, records = slice300
    path = tmp_path / "mixed.jsonl"
    good = [json.dumps(r) for r in records[:5]]
    lines = [good[0], "{not json", good[1], "[1, 2, 3]", good[2], json.dumps({"title": "no id"}), good[3], "", good[4]]
    path.write_text("\n".join(lines) + "\n")
    ix = PaperIndex(tmp_path / "ix")
    stats = ix.import_jsonl(path, progress=False)
    assert stats.imported == 5 and stats.malformed == 3
    assert stats.malformed_examples[0].startswith("line 2: invalid JSON")
    assert any(e.startswith("line 4: not a JSON object") for e in stats.malformed_examples)
    assert any(e.startswith("line 6: missing id") for e in stats.malformed_examples)


KILLER = """
import os, signal, sys
from pathlib import Path
from retrieval.docstore import DocStore
from retrieval.index import PaperIndex
real = DocStore.add_arxiv_batch
calls = [0]
def add_then_die(self, *args, **kwargs):
    out = real(self, *args, **kwargs)
    calls[0] += 1
    if calls[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # a hard kill: no finally blocks, no cleanup
    return out
DocStore.add_arxiv_batch = add_then_die
PaperIndex(Path(sys.argv[1])).import_jsonl(Path(sys.argv[2]), progress=False, batch_size=40)
"""


def test_killed_import_resumes_without_duplicates(slice300, tmp_path: Path) -> None:
    path, records = slice300
    ix_dir = tmp_path / "ix"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(ix_dir), str(path)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    ix = PaperIndex(ix_dir)
    (ck,) = ix.docs.import_summaries()
    assert ck["done"] == 0 and ck["lines"] == 120 and len(ix) == 120
    # the committed part is searchable at once (BM25 catches up on the first search)
    assert ix.search(records[50]["title"], k=3, mode="bm25")[0].id == records[50]["id"]
    stats = ix.import_jsonl(path, progress=False, batch_size=40)
    assert stats.resumed_from_line == 120 and stats.lines == 180 and stats.imported == 180
    assert stats.duplicates == 0
    assert len(ix) == 300 == len({r["id"] for r in records})
    n_units = ix.docs.db.execute("SELECT COUNT(*), COUNT(DISTINCT paper_id) FROM units").fetchone()
    assert n_units == (300, 300)
    assert ix.stats(with_dense=False)["bm25_units"] == 300
    assert ix.search(records[250]["title"], k=3, mode="bm25")[0].id == records[250]["id"]


def test_filters_by_category_and_date(slice300, tmp_path: Path) -> None:
    path, _ = slice300
    ix = PaperIndex(tmp_path / "ix")
    ix.import_jsonl(path, progress=False)
    query = "learning model data"
    hits = ix.search(query, k=50, category="cs.CL", mode="bm25")
    assert hits and all("cs.CL" in ix.get_meta(h.id)["categories"] for h in hits)
    assert len(hits) < len(ix.search(query, k=50, mode="bm25"))
    cutoff = "2025-05-01"
    old = ix.search(query, k=50, before=cutoff, mode="bm25")
    assert old and all(ix.get_meta(h.id)["date"] < cutoff for h in old)
    both = ix.search(query, k=50, before=cutoff, category="cs.CL", mode="bm25")
    assert both and all(ix.get_meta(h.id)["date"] < cutoff and "cs.CL" in ix.get_meta(h.id)["categories"] for h in both)
    assert ix.search(query, k=5, before="1990-01-01", mode="bm25") == []
    with pytest.raises(PaperIndexError, match="bad --before date"):
        ix.search(query, before="May 2025")


def test_cached_filter_bitmaps_give_the_engines_own_filtered_answer(slice300, tmp_path: Path) -> None:
    # a broad filter post-filters the unfiltered ranking through a cached bitmap (retrieval/filters.py): it must give
    # exactly the ranking tantivy gives the filtered query, and the bitmap exactly the units the filter keeps
    path, records = slice300
    ix = PaperIndex(tmp_path / "ix")
    ix.import_jsonl(path, progress=False)
    for category, before in (("cs", None), (None, "2025-11-26"), ("cs.LG", None), ("cs.CL", "2025-05-08")):
        filt, key, kept = ix._filter(category, before)
        for query in ("learning model data", "language", "graph neural networks for molecules"):
            engine = ix.keyword.search(query, 30, filt)[0]
            assert np.array_equal(ix._filters.keyword_rank(query, key, filt, kept, 30), engine), (category, before)
        mask = ix._filters.mask(key, filt, kept)
        passing = {
            uid
            for uid, r in enumerate(records, 1)
            if (category is None or any(c == category or c.startswith(category + ".") for c in r["categories"].split()))
            and (before is None or ix.get_meta(r["id"])["date"] < before)
        }
        assert set(np.flatnonzero(mask).tolist()) == passing and kept == len(passing)
        some = np.arange(1, 301, dtype=np.int64)[::-1]
        assert ix._filters.keep(some, key, filt, kept).tolist() == [u for u in some.tolist() if u in passing]


def test_filter_counts_are_cached_and_refreshed_by_new_units(arxiv_jsonl: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    first = write_slice(arxiv_jsonl, a, 150)
    rest = write_slice(arxiv_jsonl, b, 150, start=150)
    ix = PaperIndex(tmp_path / "ix")
    ix.import_jsonl(a, progress=False)
    assert ix._filter(None, None)[0] is None
    n_first = sum("cs.CL" in r["categories"].split() for r in first)
    assert 0 < ix._filter("cs.CL", None)[2] == n_first
    n_cs = sum(any(c.startswith("cs.") for c in r["categories"].split()) for r in first)
    assert ix._filter("cs", None)[2] == n_cs  # an archive matches all its categories
    ix.import_jsonl(b, progress=False)  # new units: a cached count must not hide them
    n_all = n_first + sum("cs.CL" in r["categories"].split() for r in rest)
    assert ix._filter("cs.CL", None)[2] == n_all > n_first
    hits = ix.search("language models", k=300, category="cs.CL", mode="bm25")
    assert any(h.id in {r["id"] for r in rest} for h in hits)


def test_empty_index_and_bad_queries(tmp_path: Path) -> None:
    ix = PaperIndex(tmp_path / "ix")
    with pytest.raises(PaperIndexError, match="empty"):
        ix.search("anything")
    with pytest.raises(PaperIndexError, match="no such file"):
        ix.import_jsonl(tmp_path / "missing.jsonl")


def test_incremental_keyword_index_equals_one_build(monkeypatch: pytest.MonkeyPatch, slice300, tmp_path: Path) -> None:
    """Commits during an import (segments) share corpus-wide statistics: scores equal one build's, and BM25's."""
    path, records = slice300
    one = PaperIndex(tmp_path / "one")
    one.import_jsonl(path, progress=False)
    monkeypatch.setattr(index_mod, "KEYWORD_COMMIT", 30)
    many = PaperIndex(tmp_path / "many")
    many.import_jsonl(path, progress=False, batch_size=25)
    query = "graph neural network for molecules"
    u1, s1 = one.keyword.search(query, 300)
    u2, s2 = many.keyword.search(query, 300)
    assert len(u1) == len(u2) and s1.max() > 0
    by_uid = dict(zip(u2.tolist(), s2.tolist(), strict=True))  # equal scores may come in another order
    assert all(by_uid[u] == pytest.approx(s, rel=1e-5) for u, s in zip(u1.tolist(), s1.tolist(), strict=True))
    # check the best score by hand against the BM25 formula (Lucene IDF, k1=1.2, b=0.75); tantivy stores document
    # lengths in one byte, so allow its rounding
    terms = one.keyword.terms
    boost = one._title_boost  # title terms count this many times
    docs = {
        r["id"]: terms(" ".join(r["title"].split())) * boost + terms(" ".join(r["abstract"].split())) for r in records
    }
    avgdl = sum(map(len, docs.values())) / len(docs)
    best = docs[one.docs.unit_rows([int(u1[0])])[int(u1[0])][0]]
    expect = 0.0
    for term in set(terms(query)):
        df = sum(term in d for d in docs.values())
        tf = best.count(term)
        if tf:
            idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            expect += idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * len(best) / avgdl))
    assert s1[0] == pytest.approx(expect, rel=0.03)


def test_keyword_units_match_the_doc_store_after_a_pdf_replaces_a_record(slice300, tmp_path: Path) -> None:
    """A paper stored again (as full text) replaces its old units in the engine too: no ghost hits."""
    path, records = slice300
    ix = PaperIndex(tmp_path / "ix")
    ix.import_jsonl(path, progress=False)
    rec = records[10]
    meta = {"title": "Completely different words", "path": str(tmp_path / "x.pdf"), "sha256": "0" * 64}
    ix.docs.add_pdf_paper(rec["id"], meta, "zebra quokka", [(0, 1, "zebra quokka okapi")])
    ix._sync_keyword()
    assert ix.keyword.n_docs == 300
    hits = ix.search(rec["title"], k=5, mode="bm25")
    assert rec["id"] not in [h.id for h in hits[:1]] or hits[0].source == "pdf"
    assert ix.search("quokka okapi", k=1, mode="bm25")[0].id == rec["id"]


def test_keyword_search_goes_deeper_when_one_papers_chunks_fill_the_ranking(slice300, tmp_path: Path) -> None:
    """Keyword-only search ranks 3k units; 40 chunks of one paper outranking every other unit must not leave the
    second paper out."""
    path, records = slice300
    ix = PaperIndex(tmp_path / "ix")
    ix.import_jsonl(path, progress=False)
    meta = {"title": "Zebra quokka", "path": str(tmp_path / "z.pdf"), "sha256": "1" * 64}
    chunks = [(i, i + 1, f"zebra quokka okapi zebra quokka, part {i}") for i in range(40)]
    ix.docs.add_pdf_paper("zq-many", meta, "zebra quokka", chunks)
    other = {"title": "On okapis", "path": str(tmp_path / "o.pdf"), "sha256": "2" * 64}
    ix.docs.add_pdf_paper("zq-other", other, "okapi", [(0, 1, "an okapi, and a word on the zebra")])
    ix._sync_keyword()
    hits = ix.search("zebra quokka okapi", k=2, mode="bm25")
    assert [h.id for h in hits] == ["zq-many", "zq-other"]
    assert hits[0].page is not None


def test_publication_date_rules() -> None:
    v1 = {"id": "0704.0001", "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}]}
    assert publication_date(v1) == "2007-04-02"
    # no versions: the id's month; update_date when it falls in that month, else the month's last day
    assert publication_date({"id": "1812.06145", "update_date": "2025-10-13", "versions": []}) == "2018-12-31"
    assert publication_date({"id": "2502.00001", "update_date": "2025-02-11"}) == "2025-02-11"
    assert publication_date({"id": "hep-th/9901001", "update_date": "2008-01-01"}) == "1999-01-31"
    line = b'{"id": "2502.00001", "title": " A\\n title ", "abstract": "x", "categories": "cs.LG 68T45, I.2.6"}'
    rec = parse_line(line)
    assert rec.title == "A title" and rec.categories == ["cs.LG"] and rec.year == 2025


def test_chunking_keeps_pages() -> None:
    words = " ".join(f"w{i}" for i in range(400))
    chunks = chunk_pages([(1, words), (2, ""), (3, "short page")], words=180, overlap=40)
    assert [c.page for c in chunks] == [1, 1, 1, 3]
    assert chunks[1].text.split()[0] == "w140" and chunks[-1].text == "short page"
    assert [c.chunk for c in chunks] == [0, 1, 2, 3]


def test_cli_import_search_batch_and_errors(slice300, tmp_path: Path) -> None:
    """The CLI as a user runs it: --json, --queries batch, stats; a failure is one stderr line and exit 1."""
    from typer.testing import CliRunner

    from agent.cli import app

    path, records = slice300
    runner = CliRunner()
    out = runner.invoke(app, ["index", "import", str(path), "--quiet"])
    assert out.exit_code == 0, out.output
    assert "imported 300 new papers" in out.stdout
    res = runner.invoke(app, ["search", records[7]["title"], "--k", "3", "--mode", "bm25", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["hits"][0]["id"] == records[7]["id"]
    assert set(payload["hits"][0]) >= {"id", "title", "year", "score", "snippet", "page", "chunk", "source"}
    exact = runner.invoke(app, ["search", records[7]["title"], "--k", "3", "--mode", "bm25", "--exact-bm25", "--json"])
    assert exact.exit_code == 0 and json.loads(exact.stdout)["hits"][0]["id"] == records[7]["id"], exact.output
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        "\n".join(json.dumps({"_id": f"q{i}", "text": records[i]["title"]}) for i in (3, 30)) + "\n{bad\n"
    )
    batch = runner.invoke(app, ["search", "--queries", str(queries), "--k", "2", "--mode", "bm25", "--json"])
    assert batch.exit_code == 0, batch.output
    lines = [json.loads(x) for x in batch.stdout.splitlines() if x.startswith("{")]
    assert [x["query_id"] for x in lines] == ["q3", "q30"] and lines[1]["hits"][0]["id"] == records[30]["id"]
    assert set(lines[0]["hits"][0]) == {"id", "score"}
    stats = runner.invoke(app, ["index", "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    st = json.loads(stats.stdout)
    assert st["papers"] == 300 and st["lacking_embeddings"] == 300 and st["embedded_units"] == 0
    bad = runner.invoke(app, ["search", "x", "--before", "yesterday"])
    assert isinstance(bad.exception, PaperIndexError) and "bad --before date" in str(bad.exception)

    # through the real entry point: an empty index is one line on stderr and exit status 1
    env = {**os.environ, "REPLICATE_HOME": str(tmp_path / "empty-home")}
    proc = subprocess.run(
        [sys.executable, "-c", "from agent.cli import main; main()", "search", "anything", "--mode", "bm25"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("replicate: error:") and "empty" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_rebuild_keyword_index_from_doc_store(slice300, tmp_path: Path) -> None:
    path, records = slice300
    ix = PaperIndex(tmp_path / "ix", title_boost=3)
    ix.import_jsonl(path, progress=False)
    fresh = PaperIndex(tmp_path / "fresh", title_boost=1)
    fresh.import_jsonl(path, progress=False)
    query = records[42]["title"]
    assert not np.allclose(ix.keyword.search(query, 50)[1], fresh.keyword.search(query, 50)[1])
    old_identity = ix.stats(with_dense=False)["keyword_engine"]
    assert ix.rebuild_keyword(title_boost=1) == 300
    assert np.allclose(ix.keyword.search(query, 50)[1], fresh.keyword.search(query, 50)[1])
    reopened = PaperIndex(tmp_path / "ix")
    assert reopened._title_boost == 1  # remembered
    assert reopened.stats(with_dense=False)["keyword_engine"] != old_identity
    assert "tantivy" in old_identity and "title-x3" in old_identity


def test_exact_bm25_switches_the_common_terms_ranking_off(slice300, tmp_path: Path, monkeypatch) -> None:
    """`exact_bm25=True` is plain BM25 whatever the index size: the same papers as with the common-terms path out of
    reach (keyword-only search)."""
    import retrieval.keyword as keyword_mod

    path, records = slice300
    ix = PaperIndex(tmp_path / "ix")
    ix.import_jsonl(path, progress=False)
    queries = [records[i]["title"] for i in (1, 40, 99)] + ["graph neural networks for molecules and proteins"]
    monkeypatch.setattr(keyword_mod, "COMMON", 0.1)  # 300 papers: make "common" start at 30 of them
    monkeypatch.setattr(keyword_mod, "COMMON_MIN_POSTINGS", 10**15)
    plain = [[h.id for h in ix.search(q, k=5, mode="bm25")] for q in queries]
    monkeypatch.setattr(keyword_mod, "COMMON_MIN_POSTINGS", 0)
    assert [[h.id for h in ix.search(q, k=5, mode="bm25", exact_bm25=True)] for q in queries] == plain
