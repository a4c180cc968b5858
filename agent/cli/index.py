"""CLI commands: `replicate index import|add|embed|arxiv|stats` and `replicate search`. A thin layer over
`retrieval.PaperIndex`; every option that picks the index (`--index-dir`, `--embedding-model`, `--chroma-url`) is
shared, and the default index lives under `agent.paths.index_dir()` (REPLICATE_HOME/index)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from agent import paths
from retrieval.errors import PaperIndexError

index_app = typer.Typer(help="Build and inspect the local paper index (arXiv metadata + full-text PDFs).")

IndexDir = Annotated[Path | None, typer.Option("--index-dir", help="Index folder (default: REPLICATE_HOME/index).")]
EmbeddingModel = Annotated[
    str | None,
    typer.Option("--embedding-model", help="sentence-transformers model folder (default: all-MiniLM-L6-v2, offline)."),
]
ChromaUrl = Annotated[str | None, typer.Option("--chroma-url", help="Use a Chroma server, e.g. http://127.0.0.1:8000.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _open(index_dir: Path | None, embedding_model: str | None, chroma_url: str | None):
    from retrieval.index import PaperIndex

    return PaperIndex(index_dir or paths.index_dir(), embedding_model=embedding_model, chroma_url=chroma_url)


def _echo_json(obj: object) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


@index_app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="arXiv metadata snapshot layout, .jsonl or .jsonl.gz")],
    index_dir: IndexDir = None,
    embedding_model: EmbeddingModel = None,
    chroma_url: ChromaUrl = None,
    as_json: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Stream metadata records into the index (BM25 side; resumable). Then run `replicate index embed`."""
    ix = _open(index_dir, embedding_model, chroma_url)
    stats = ix.import_jsonl(file, progress=not quiet)
    if as_json:
        _echo_json(stats.to_dict())
        return
    if stats.already_done:
        typer.echo(f"{file}: already imported; {len(ix):,} papers in the index")
        return
    resumed = f" (resumed at line {stats.resumed_from_line:,})" if stats.resumed_from_line else ""
    typer.echo(
        f"imported {stats.imported:,} new papers from {stats.lines:,} lines{resumed} in {stats.seconds:.1f} s "
        f"({stats.rate:,.0f} records/s); {stats.duplicates:,} already present, {stats.malformed:,} malformed"
    )
    for example in stats.malformed_examples:
        typer.echo(f"  malformed {example}", err=True)
    typer.echo(f"{len(ix):,} papers searchable by keyword now; run `replicate index embed` for dense vectors")


@index_app.command("add")
def add_cmd(
    paths: Annotated[list[Path], typer.Argument(help="PDF files or folders of PDFs")],
    index_dir: IndexDir = None,
    embedding_model: EmbeddingModel = None,
    chroma_url: ChromaUrl = None,
    no_embed: Annotated[bool, typer.Option("--no-embed", help="Skip embedding the new chunks.")] = False,
    as_json: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Add full-text PDFs (parsed, chunked with page numbers). Unchanged files are skipped; bad files reported."""
    ix = _open(index_dir, embedding_model, chroma_url)
    report = ix.add_pdfs(paths, progress=not quiet)
    embedded = 0
    if report.added and not no_embed:
        # embedding runs in unit order: embed the new chunks now only if nothing older is still waiting
        # (otherwise this would silently start embedding a whole imported snapshot)
        if ix.stats(with_dense=False)["lacking_embeddings"] <= report.chunks:
            embedded = ix.embed(progress=not quiet)
        else:
            typer.echo("new chunks are searchable by keyword; run `replicate index embed` for their vectors", err=True)
    if as_json:
        _echo_json({**report.to_dict(), "embedded": embedded})
    else:
        typer.echo(
            f"added {len(report.added)} papers ({report.chunks} chunks, {embedded} embedded), "
            f"skipped {len(report.skipped)} unchanged, {len(report.failed)} failed"
        )
        for path, error in report.failed:
            typer.echo(f"  failed {path}: {error}", err=True)
    if report.failed and not report.added and not report.skipped:
        raise typer.Exit(1)


@index_app.command("embed")
def embed_cmd(
    index_dir: IndexDir = None,
    embedding_model: EmbeddingModel = None,
    chroma_url: ChromaUrl = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Texts per forward pass (GPU default 1024; CPU: 512 tokens, equal lengths)."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cuda, cpu, mps (default: auto-detect).")] = None,
    limit: Annotated[int | None, typer.Option(help="Embed at most this many units now.")] = None,
    quiet: Quiet = False,
) -> None:
    """Embed every unit that lacks a vector for the current recipe (resumable; GPU when present)."""
    import time

    ix = _open(index_dir, embedding_model, chroma_url)
    if len(ix) == 0:
        raise PaperIndexError(f"the paper index at {ix.path} is empty: add papers with `replicate index import`")
    t0 = time.perf_counter()
    n = ix.embed(batch_size=batch_size, device=device, progress=not quiet, limit=limit)
    secs = time.perf_counter() - t0
    rate = f" ({n / secs:,.1f}/s on {ix.embedder.device}, model load included)" if n else ""
    typer.echo(f"embedded {n:,} units in {secs:.1f} s{rate}; recipe {ix.recipe.hash}")


@index_app.command("arxiv")
def arxiv_cmd(
    query: Annotated[str, typer.Option("--query", help="arXiv API query, e.g. 'ti:\"fashion mnist\"'.")],
    max_results: Annotated[int, typer.Option("--max", help="Maximum number of papers.")] = 20,
    pdfs: Annotated[bool, typer.Option("--pdfs", help="Also download and add the PDFs.")] = False,
    index_dir: IndexDir = None,
    embedding_model: EmbeddingModel = None,
    chroma_url: ChromaUrl = None,
) -> None:
    """Fetch metadata (and optionally PDFs) from the arXiv API into the index. Needs network access."""
    ix = _open(index_dir, embedding_model, chroma_url)
    stats, added = ix.fetch_arxiv(query, max_results, pdfs=pdfs)
    typer.echo(f"fetched {stats.lines} records from arXiv: {stats.imported} new, {stats.duplicates} already present")
    if added is not None:
        typer.echo(f"PDFs: added {len(added.added)}, skipped {len(added.skipped)}, failed {len(added.failed)}")


@index_app.command("stats")
def stats_cmd(
    index_dir: IndexDir = None,
    embedding_model: EmbeddingModel = None,
    chroma_url: ChromaUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Counts, embedding model, size on disk, and how many papers still lack embeddings."""
    ix = _open(index_dir, embedding_model, chroma_url)
    st = ix.stats()
    if as_json:
        _echo_json(st)
        return
    src = ", ".join(f"{v:,} {k}" for k, v in sorted(st["by_source"].items())) or "none"
    typer.echo(f"index       {st['path']}")
    typer.echo(f"papers      {st['papers']:,} ({src}); {st['units']:,} searchable units")
    typer.echo(f"bm25        {st['bm25_units']:,} units in {st['bm25_shards']} shards, {st['bm25_pending']:,} pending")
    typer.echo(
        f"embeddings  {st['embedding_model']} (recipe {st['recipe_hash'] or 'not embedded yet'}), "
        f"{st['embedded_units']:,} embedded, "
        f"{st['lacking_embeddings']:,} lacking; chroma {st['chroma']} holds {st['chroma_vectors']:,}"
    )
    typer.echo(f"disk        {st['disk_bytes'] / 1e6:,.1f} MB")
    for imp in st["imports"]:
        state = "done" if imp["done"] else "INCOMPLETE (rerun the import to resume)"
        counts = f"{imp['imported']:,} imported, {imp['malformed']:,} malformed"
        typer.echo(f"import      {imp['source']}: {counts}, {state}")
    for bad in st["bad_files"]:
        typer.echo(f"bad file    {bad['path']}: {bad['error']}")


def search_cmd(
    query: Annotated[str | None, typer.Argument(help="Search text")] = None,
    k: Annotated[int, typer.Option("--k", help="Number of papers.")] = 10,
    category: Annotated[str | None, typer.Option(help="arXiv category, e.g. cs.LG (or an archive: cs).")] = None,
    before: Annotated[str | None, typer.Option(help="Only papers first published before YYYY-MM-DD.")] = None,
    queries: Annotated[Path | None, typer.Option("--queries", help='Batch: JSONL lines {"_id", "text"}.')] = None,
    mode: Annotated[str, typer.Option(help="hybrid, bm25 or dense.")] = "hybrid",
    exact_bm25: Annotated[
        bool, typer.Option("--exact-bm25", help="Plain BM25 over every unit (default at scale: common terms).")
    ] = False,
    index_dir: IndexDir = None,
    embedding_model: EmbeddingModel = None,
    chroma_url: ChromaUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Search the paper index (hybrid BM25 + dense, fused by reciprocal rank)."""
    if (query is None) == (queries is None):
        raise PaperIndexError("give either a QUERY or --queries FILE.jsonl")
    ix = _open(index_dir, embedding_model, chroma_url)
    if queries is not None:
        _batch(ix, queries, k=k, category=category, before=before, mode=mode, exact_bm25=exact_bm25)
        return
    hits = ix.search(query, k=k, category=category, before=before, mode=mode, exact_bm25=exact_bm25)
    note = ix.incomplete()  # hits found while an import is still keyword-indexing: say the list may be short
    if note:
        typer.echo(f"note: {note}", err=True)
    if as_json:
        _echo_json({"query": query, "hits": [h.to_dict() for h in hits]})
        return
    if not hits:
        typer.echo("no matching papers")
    for rank, h in enumerate(hits, 1):
        where = f" p.{h.page} chunk {h.chunk}" if h.page is not None else ""
        typer.echo(f"{rank:2d}. [{h.id}] {h.title} ({h.year or '?'}) score {h.score:.4f}{where}")
        typer.echo(f"    {h.snippet}")


def _batch(ix, path: Path, **kw) -> None:
    """One output line per input line: {"query_id", "hits": [{"id", "score"}]}; a bad line is an error on stderr."""
    if not path.is_file():
        raise PaperIndexError(f"cannot read queries: {path} does not exist")
    bad: list[int] = []
    answered = 0
    with open(path, "rb") as fh:  # decoded line by line: a line that is not UTF-8 is one malformed line
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))  # UnicodeDecodeError is a ValueError
                qid, text = str(obj["_id"]), str(obj["text"])
            except (ValueError, KeyError, TypeError):
                bad.append(n)
                continue
            hits = ix.search(text, **kw)
            answered += 1
            _echo_json({"query_id": qid, "hits": [{"id": h.id, "score": h.score} for h in hits]})
    if bad and not answered:  # a binary file or another format: one line, not one note per "line"
        raise PaperIndexError(
            f'cannot read queries: no line of {path} is a JSON query {{"_id", "text"}} ({len(bad)} malformed lines, '
            "or not UTF-8 text)"
        )
    for n in bad[:5]:
        print(f'replicate: skipped malformed query line {n} (want {{"_id", "text"}})', file=sys.stderr)
    if bad:
        print(f"replicate: {len(bad)} malformed query lines skipped", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `replicate` app (agent.cli.app calls it)."""
    app.command("search")(search_cmd)
    app.add_typer(index_app, name="index")
