"""Which errors become the one-line "corrupt PDF page": only mupdf's own, raised while a page of the user's file is
parsed. A bug in our page reader must surface with its traceback, not pass for a damaged file (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from retrieval import pdf
from retrieval.errors import IngestError
from retrieval.ingest import ingest_pdf
from tests import pdfgen


@pytest.fixture
def one_page(tmp_path: Path) -> Path:
    return pdfgen.layout_pdf(tmp_path / "one.pdf", "caption_above")


def test_mupdf_error_on_a_page_is_one_line(one_page, tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise pymupdf.mupdf.FzErrorFormat("syntax error in content stream")

    monkeypatch.setattr(pymupdf.Page, "get_textpage", broken)
    with pytest.raises(IngestError, match=r"one\.pdf: corrupt PDF page 1 \(.*syntax error") as err:
        ingest_pdf(one_page, tmp_path / "papers")
    assert "\n" not in str(err.value)
    papers = tmp_path / "papers"
    assert not papers.exists() or not any(papers.iterdir())  # nothing half-written


def test_our_bug_in_read_page_is_not_a_corrupt_pdf(one_page, monkeypatch):
    def bug(*args, **kwargs):
        raise KeyError("bbox")  # what a mistake of ours in read_page looks like

    monkeypatch.setattr(pdf, "read_page", bug)
    with pytest.raises(KeyError):
        pdf.read_pdf(one_page)
