"""Paper index under bad input (issue 15): corrupt, truncated and fake gzip files, binary files and PDFs given as
JSONL, odd field types and sizes, an empty folder to `index add`, bad `k`, and search while keyword indexing is
incomplete. Every failure is one clear line (a `PaperIndexError`, which the CLI prints as one line, exit 1) and
leaves the index as it was."""

from __future__ import annotations

import gzip
import itertools
import json
import sys
from pathlib import Path

import pytest

from retrieval import PaperIndex, PaperIndexError
from retrieval.arxiv_import import MAX_ABSTRACT, MAX_TITLE, parse_line


def gz_lines(src: Path, n: int) -> bytes:
    with gzip.open(src, "rb") as fh:
        return b"".join(itertools.islice(fh, n))


def test_corrupt_gzip_names_the_file_and_keeps_what_was_read(arxiv_jsonl: Path, tmp_path: Path) -> None:
    data = bytearray(gzip.compress(gz_lines(arxiv_jsonl, 200)))
    data[-8] ^= 0xFF  # the CRC32 in the trailer
    bad = tmp_path / "crc.jsonl.gz"
    bad.write_bytes(bytes(data))
    ix = PaperIndex(tmp_path / "ix")
    with pytest.raises(PaperIndexError, match=r"cannot read .*crc\.jsonl\.gz: corrupt gzip data") as err:
        ix.import_jsonl(bad, progress=False, batch_size=50)
    assert "\n" not in str(err.value)
    # the batches read before the bad trailer are committed, searchable, and the import is not marked done
    (ck,) = ix.docs.import_summaries()
    assert ck["done"] == 0 and len(ix) == ix.keyword.n_docs > 0


def test_truncated_and_fake_gzip_are_one_line(arxiv_jsonl: Path, tmp_path: Path) -> None:
    whole = gzip.compress(gz_lines(arxiv_jsonl, 200))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 8)  # gzip magic, then garbage
    ix = PaperIndex(tmp_path / "ix")
    with pytest.raises(PaperIndexError, match=r"cut\.jsonl\.gz: the file is truncated"):
        ix.import_jsonl(cut, progress=False)
    with pytest.raises(PaperIndexError, match=r"fake\.jsonl\.gz: corrupt gzip data"):
        ix.import_jsonl(fake, progress=False)


def test_cli_truncated_gzip_is_not_just_aborted(arxiv_jsonl: Path, tmp_path: Path) -> None:
    import subprocess

    whole = gzip.compress(gz_lines(arxiv_jsonl, 100))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    proc = subprocess.run(
        [sys.executable, "-c", "from agent.cli import main; main()", "index", "import", str(cut), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "cut.jsonl.gz" in err and "truncated" in err and "Aborted" not in err


@pytest.mark.parametrize("kind", ["binary", "pdf"])
def test_a_file_that_is_not_jsonl_is_refused(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"thing.{kind}"
    if kind == "pdf":
        import pymupdf

        doc = pymupdf.open()
        doc.new_page().insert_text((72, 72), "A paper, not a metadata file.")
        doc.save(path)
    else:
        path.write_bytes(bytes(range(256)) * 64)
    ix = PaperIndex(tmp_path / "ix")
    with pytest.raises(PaperIndexError, match="not one line is an arXiv metadata record"):
        ix.import_jsonl(path, progress=False)
    assert ix.docs.import_summaries() == [] and len(ix) == 0  # nothing recorded: not "done"


def test_odd_field_types_are_malformed_and_sizes_capped() -> None:
    assert parse_line(json.dumps({"id": {"a": 1}, "title": "t"}).encode()) == "id is not a string"
    assert parse_line(json.dumps({"id": "1", "title": ["a", "b"]}).encode()) == "title is a list, not a string"
    assert parse_line(json.dumps({"id": "x" * 500, "title": "t"}).encode()).startswith("id longer than")
    rec = parse_line(json.dumps({"id": "2501.00001", "title": "w " * 5000, "abstract": "a" * 10**6}).encode())
    assert len(rec.title) <= MAX_TITLE and len(rec.abstract) <= MAX_ABSTRACT
    rec = parse_line(json.dumps({"id": "2501.00001", "title": "t", "versions": {"v1": "?"}}).encode())
    assert rec.id == "2501.00001"


def test_add_of_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PaperIndexError, match="no PDF files in"):
        PaperIndex(tmp_path / "ix").add_pdfs([tmp_path / "empty"], progress=False)


def test_bad_k_is_refused(arxiv_jsonl: Path, tmp_path: Path) -> None:
    src = tmp_path / "s.jsonl"
    src.write_bytes(gz_lines(arxiv_jsonl, 20))
    ix = PaperIndex(tmp_path / "ix")
    ix.import_jsonl(src, progress=False)
    for k in (0, -3):
        with pytest.raises(PaperIndexError, match="bad number of results"):
            ix.search("learning", k=k, mode="bm25")


def test_search_while_keyword_indexing_is_pending_says_so(arxiv_jsonl: Path, tmp_path: Path) -> None:
    """Units stored in SQLite but not in tantivy, and another process holding the writer (an import running):
    a search that finds nothing says the index is incomplete and how to finish, instead of 'no matching papers'."""
    lines = gz_lines(arxiv_jsonl, 40)
    src = tmp_path / "s.jsonl"
    src.write_bytes(lines)
    ix = PaperIndex(tmp_path / "ix")
    ix.import_jsonl(src, progress=False)
    # what a running import has committed to SQLite but not yet to tantivy
    from retrieval.arxiv_import import Record

    rec = Record("2599.00001", "Quokka husbandry", "Zebrafinch okapi quokka.", "", ["q-bio.PE"], "2025-01-01", 2025)
    ix.docs.add_arxiv_batch([rec], "other-file", {"offset": 0, "lines": 1, "imported": 0, "duplicates": 0,
                                                  "malformed": 0})  # fmt: skip
    other = PaperIndex(tmp_path / "ix")
    assert other.keyword.writable()  # this "import" now holds tantivy's writer locks
    with pytest.raises(PaperIndexError, match="index is incomplete: 1 stored units are not keyword-indexed"):
        ix.search("quokka okapi", mode="bm25")
    assert "index import" in str(ix.incomplete())
    other.close()
    assert ix.search("quokka okapi", mode="bm25")[0].id == "2599.00001"  # writer free: caught up at once


def test_disk_full_during_import_is_one_line_and_resumable(
    arxiv_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's 'disk full' inside a batch's transaction (injected: this machine cannot mount a small tmpfs for
    every user): one line, the batch rolled back, the earlier batches kept, and the rerun finishes the file."""
    import sqlite3

    from retrieval.docstore import DocStore

    src = tmp_path / "s.jsonl"
    src.write_bytes(gz_lines(arxiv_jsonl, 120))
    real = DocStore._save_checkpoint
    calls = [0]

    def full_on_third(self, source, state):
        calls[0] += 1
        if calls[0] == 3:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, source, state)

    monkeypatch.setattr(DocStore, "_save_checkpoint", full_on_third)
    ix = PaperIndex(tmp_path / "ix")
    with pytest.raises(PaperIndexError, match="cannot write .*docs.sqlite: database or disk is full"):
        ix.import_jsonl(src, progress=False, batch_size=40)
    assert len(ix) == 80 == ix.keyword.n_docs  # two batches stored and keyword-indexed, the third rolled back
    monkeypatch.setattr(DocStore, "_save_checkpoint", real)
    stats = ix.import_jsonl(src, progress=False, batch_size=40)
    assert stats.resumed_from_line == 80 and len(ix) == 120 == ix.keyword.n_docs
