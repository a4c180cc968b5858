"""`replicate arxiv:ID` (or an arXiv abs/pdf URL) downloads the paper's PDF and goes on; offline it is one line.

The download is real HTTP: a local server on 127.0.0.1 stands in for arxiv.org (REPLICATE_ARXIV_PDF points at it),
serving a PDF built with pymupdf, so the test needs no network and still exercises the request, the PDF check and the
atomic write.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from retrieval.arxiv_fetch import arxiv_id, download_pdf
from retrieval.errors import OfflineError
from tests import pdfgen

REPLICATE = Path(sys.executable).parent / "replicate"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("arxiv:2501.10120", "2501.10120"),
        ("arXiv:2501.10120v2", "2501.10120v2"),
        ("https://arxiv.org/abs/2501.10120", "2501.10120"),
        ("https://arxiv.org/pdf/2501.10120v3.pdf", "2501.10120v3"),
        ("http://arxiv.org/abs/cs/0112017", "cs/0112017"),
        ("paper.pdf", None),
        ("arxiv:not-an-id", None),
    ],
)
def test_arxiv_references(ref: str, expected: str | None) -> None:
    assert arxiv_id(ref) == expected


@pytest.fixture
def pdf_server(tmp_path: Path) -> Iterator[str]:
    body = pdfgen.results_paper(tmp_path / "served.pdf").read_bytes()  # a paper with a results table

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.startswith("/pdf/2501.10120")
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/pdf" if ok else "text/plain")
            self.end_headers()
            self.wfile.write(body if ok else b"not found")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pdf/{{}}"
    server.shutdown()


def test_download_writes_the_pdf_and_a_missing_paper_is_one_line(
    tmp_path: Path, pdf_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATE_ARXIV_PDF", pdf_server)
    path = download_pdf("2501.10120", tmp_path / "dl")
    assert path == tmp_path / "dl" / "2501.10120.pdf" and path.read_bytes().startswith(b"%PDF-")
    assert [p.name for p in path.parent.iterdir()] == ["2501.10120.pdf"]  # no temp file left behind
    with pytest.raises(OfflineError, match="404 without a PDF"):
        download_pdf("2409.00001", tmp_path / "dl")


def test_start_from_an_arxiv_id_downloads_then_ingests(tmp_path: Path, pdf_server: str) -> None:
    env = {**os.environ, "REPLICATE_ARXIV_PDF": pdf_server, "REPLICATE_PROJECT_DIR": str(tmp_path / "project")}
    proc = subprocess.run([str(REPLICATE), "arxiv:2501.10120", "--no-llm"], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert "Downloaded arXiv 2501.10120" in proc.stdout, proc.stdout + proc.stderr
    assert (tmp_path / "project" / "papers" / "arxiv" / "2501.10120.pdf").is_file()
    assert "Traceback" not in proc.stderr


def test_start_from_an_arxiv_id_offline_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    # Port 9 on loopback: nothing listens, so the connection is refused at once, as offline.
    env = {**os.environ, "REPLICATE_ARXIV_PDF": "http://127.0.0.1:9/pdf/{}",
           "REPLICATE_PROJECT_DIR": str(tmp_path / "project")}  # fmt: skip
    proc = subprocess.run([str(REPLICATE), "https://arxiv.org/abs/2501.10120", "--no-llm"], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "cannot reach arXiv at 127.0.0.1:9" in proc.stderr
    assert "download the PDF by hand" in proc.stderr
    assert not (tmp_path / "project" / "runs").exists() or not any((tmp_path / "project" / "runs").iterdir())
