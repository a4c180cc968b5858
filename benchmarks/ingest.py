"""Ingestion speed in ms/page, tables and claims included: the shared Fashion-MNIST paper and generated 50-page PDFs.

    .venv/bin/python benchmarks/ingest.py [--repeat 3] [--pages 50] [--docs 2]

Prints one line per document (best of --repeat runs of `parse_pdf`, which is all of ingestion except writing the
folder) and the time of `ingest_pdf` with the writes. Target: at most 150 ms/page on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the PDF generator lives with the tests

import pdfgen  # noqa: E402

from retrieval.ingest import ingest_pdf, parse_pdf  # noqa: E402

TARGET_MS = 150.0


def bench(path: Path, repeat: int) -> tuple[float, int, int, int]:
    best = float("inf")
    paper = None
    for _ in range(repeat):
        start = time.perf_counter()
        paper = parse_pdf(path)
        best = min(best, time.perf_counter() - start)
    return best * 1000 / paper.n_pages, paper.n_pages, len(paper.tables), len(paper.claims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--docs", type=int, default=2, help="how many generated documents")
    args = parser.parse_args()
    shared = REPO.parent / "shared" / "papers" / "fashion-mnist-xiao2017.pdf"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        docs = [shared] if shared.exists() else []
        for seed in range(args.docs):
            docs.append(pdfgen.long_paper(Path(tmp) / f"long-{seed}.pdf", n_pages=args.pages, seed=seed))
        print(f"{'document':34} {'pages':>5} {'tables':>6} {'claims':>6} {'ms/page':>8}")
        for doc in docs:
            ms, pages, tables, claims = bench(doc, args.repeat)
            results.append((ms, pages))
            print(f"{doc.name:34} {pages:5d} {tables:6d} {claims:6d} {ms:8.1f}")
        start = time.perf_counter()
        paper = ingest_pdf(docs[-1], Path(tmp) / "papers")
        write_ms = (time.perf_counter() - start) * 1000 / paper.n_pages
        print(f"{'ingest_pdf with writes, ' + docs[-1].name:34} {paper.n_pages:5d} {'':6} {'':6} {write_ms:8.1f}")
    total_ms = sum(ms * pages for ms, pages in results) / sum(pages for _, pages in results)
    verdict = "OK" if total_ms <= TARGET_MS else "OVER TARGET"
    print(f"overall: {total_ms:.1f} ms/page (target <= {TARGET_MS:.0f} ms/page: {verdict})")


if __name__ == "__main__":
    main()
