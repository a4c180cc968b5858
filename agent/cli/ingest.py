"""CLI commands: ingest. Registers its commands on `agent.cli.app`.

`replicate ingest PAPER.pdf [--json] [--out DIR]` parses the paper and writes papers/<slug>/ (paper.json, paper.md,
tables/*.csv). Bad input raises `IngestError`, which `agent.cli.main` prints as one line with exit status 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from agent.paths import papers_dir


def ingest(
    paper: Path = typer.Argument(..., help="The paper PDF to read."),
    json_out: bool = typer.Option(False, "--json", help="Print the paper record (paper.json) to stdout."),
    out: Path | None = typer.Option(None, "--out", help="Folder for papers/<slug>/ (default: ./papers)."),
) -> None:
    """Read a paper PDF: metadata, sections, tables, the claims ledger and the setup, into papers/<slug>/."""
    from retrieval.ingest import ingest_pdf  # imported here so `replicate --help` stays fast

    target = out if out is not None else papers_dir()
    record = ingest_pdf(paper, target)
    if json_out:
        sys.stdout.write(record.model_dump_json(indent=2) + "\n")
        return
    folder = target / record.slug
    from_tables = sum(1 for c in record.claims if c.table)
    typer.echo(f"{record.title or record.slug} ({record.n_pages} pages)")
    typer.echo(
        f"  {len(record.tables)} tables, {len(record.claims)} claims ({from_tables} from tables, "
        f"{len(record.claims) - from_tables} from text), {len(record.setup.items)} setup facts"
    )
    if record.setup.missing:
        typer.echo(f"  not stated in the paper: {', '.join(record.setup.missing)}")
    typer.echo(f"  wrote {folder / 'paper.json'} and {folder / 'paper.md'}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `replicate` app (agent.cli.app calls it)."""
    app.command("ingest")(ingest)
