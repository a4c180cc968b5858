"""Fetch arXiv metadata (and optionally PDFs) through the `arxiv` package, for papers the local snapshot lacks.

Results are written as one JSONL file in the snapshot layout and imported through the same path as a snapshot, so a
fetched paper is indistinguishable from an imported one. Offline (DNS failure, refused connection, timeout), the
fetch stops with one `OfflineError` line instead of the package's retry loop and traceback.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from retrieval.errors import OfflineError

ARXIV_API = "https://export.arxiv.org/api/query?{}"
ARXIV_PDF = "https://arxiv.org/pdf/{}"  # REPLICATE_ARXIV_PDF overrides it (a mirror; the tests' local server)
# `arxiv:2501.10120`, `arXiv:2501.10120v2`, an abs/pdf URL, or an old-style id (`cs/0112017`).
ARXIV_REF = re.compile(
    r"^(?:arxiv:|https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/)"
    r"(?P<id>\d{4}\.\d{4,5}(?:v\d+)?|[a-z][a-z.-]*/\d{7}(?:v\d+)?)(?:\.pdf)?/?$",
    re.IGNORECASE,
)


INDEX_HINT = "`replicate index arxiv` needs network access - import a metadata snapshot offline instead"


def _reachable(url: str, *, what: str = "the arXiv API at", hint: str = INDEX_HINT, timeout: float = 5.0) -> None:
    """One OfflineError line when `url`'s host does not answer, instead of a library's retry loop and traceback."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise OfflineError(f"cannot reach {what} {host}:{port} ({exc.strerror or exc}); {hint}") from exc


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
            if pdf_dir is not None:  # arxiv 2.x dropped Result.download_pdf: fetch its pdf_url ourselves
                download_pdf(short, pdf_dir, url=res.pdf_url)
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


def arxiv_id(ref: str) -> str | None:
    """The arXiv id in `ref` (`arxiv:ID`, an arxiv.org abs/pdf URL), or None when `ref` names no arXiv paper."""
    match = ARXIV_REF.match(ref.strip())
    return match.group("id") if match else None


def download_pdf(paper_id: str, folder: Path, *, url: str | None = None, timeout: float = 60.0) -> Path:
    """Download arXiv paper `paper_id`'s PDF into folder/<id>.pdf (atomically) and return the path.

    An existing download is reused. Offline, or when the server answers with anything but a PDF, one OfflineError
    line that names the address and says to download the PDF by hand.
    """
    import requests

    target = Path(folder) / f"{paper_id.replace('/', '_')}.pdf"
    if target.is_file() and target.read_bytes()[:5] == b"%PDF-":
        return target
    address = url or (os.environ.get("REPLICATE_ARXIV_PDF") or ARXIV_PDF).format(paper_id)
    hint = f"download the PDF by hand and run `replicate PATH.pdf` (arXiv {paper_id}: {address})"
    _reachable(address, what="arXiv at", hint=hint)
    try:
        reply = requests.get(address, timeout=timeout)
    except requests.RequestException as exc:
        raise OfflineError(f"arXiv download failed ({type(exc).__name__}); {hint}") from exc
    if reply.status_code != 200 or not reply.content.startswith(b"%PDF-"):
        raise OfflineError(f"arXiv answered {reply.status_code} without a PDF; {hint}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".arxiv-", suffix=".pdf.tmp", dir=target.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(reply.content)
    os.replace(tmp, target)
    return target
