"""Fetch arXiv metadata (and optionally PDFs) through the `arxiv` package, for papers the local snapshot lacks.

Results are written as one JSONL file in the snapshot layout and imported through the same path as a snapshot, so a
fetched paper is indistinguishable from an imported one. Offline (DNS failure, refused connection, timeout), the
fetch stops with one `OfflineError` line instead of the package's retry loop and traceback.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from retrieval.errors import OfflineError

ARXIV_API = "https://export.arxiv.org/api/query?{}"


def _reachable(url: str, timeout: float = 5.0) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise OfflineError(
            f"cannot reach the arXiv API at {host}:{port} ({exc.strerror or exc}); "
            "`replicate index arxiv` needs network access - import a metadata snapshot offline instead"
        ) from exc


def fetch_records(query: str, max_results: int, *, api_url: str | None = None, pdf_dir: Path | None = None) -> list:
    """arXiv API results for `query` as snapshot-layout dicts; with `pdf_dir`, PDFs are downloaded there too."""
    import arxiv

    url = api_url or os.environ.get("REPLICATE_ARXIV_API") or ARXIV_API
    _reachable(url)
    client = arxiv.Client(page_size=min(max(max_results, 1), 100), delay_seconds=3.0, num_retries=1)
    client.query_url_format = url
    records = []
    try:
        for res in client.results(arxiv.Search(query=query, max_results=max_results)):
            short = res.get_short_id().split("v")[0] if "v" in res.get_short_id() else res.get_short_id()
            records.append(
                {
                    "id": short,
                    "title": res.title,
                    "abstract": res.summary,
                    "authors": ", ".join(a.name for a in res.authors),
                    "categories": " ".join(res.categories),
                    "update_date": res.updated.date().isoformat(),
                    "versions": [{"version": "v1", "created": res.published.strftime("%a, %d %b %Y %H:%M:%S GMT")}],
                }
            )
            if pdf_dir is not None:
                pdf_dir.mkdir(parents=True, exist_ok=True)
                res.download_pdf(dirpath=str(pdf_dir), filename=f"{short.replace('/', '_')}.pdf")
    except (arxiv.ArxivError, OSError) as exc:
        raise OfflineError(f"arXiv fetch failed: {str(exc).splitlines()[0][:160]}") from exc
    except Exception as exc:  # requests' ConnectionError/Timeout are OSError subclasses; anything else is the API
        if type(exc).__module__.startswith(("requests", "urllib3")):
            raise OfflineError(f"arXiv fetch failed: {str(exc).splitlines()[0][:160]}") from exc
        raise
    return records


def write_jsonl(records: list[dict], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="arxiv-fetch-", suffix=".jsonl", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    return Path(name)
