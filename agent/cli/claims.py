"""`replicate claims add|list`: targets the researcher adds where the paper reports results the ledger cannot hold
(a value read off a figure, a number in prose). They are merged into the paper's ledger for every later step."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from agent import paths, researcher_claims
from agent.errors import AgentError

out = Console(highlight=False, soft_wrap=True, markup=False)
claims_app = typer.Typer(help="Claims the researcher adds to a paper's ledger (values read off figures, prose).")


def paper_dir_of(target: str) -> Path:
    """The ingested paper's folder for a replication ID, a paper slug, or a paper folder / paper.json path."""
    state = paths.runs_dir() / target / "state.json"
    if state.exists():
        paper_json = json.loads(state.read_text(encoding="utf-8")).get("paper_json")
        if paper_json:
            return Path(paper_json).parent
        raise AgentError(f"replication {target} has not ingested its paper yet; run `replicate resume {target}`")
    for candidate in (paths.papers_dir() / target, Path(target), Path(target).parent):
        if (candidate / "paper.json").is_file():
            return candidate
    raise AgentError(f"no replication or ingested paper {target!r} (give a replication ID, a slug under papers/, or "
                     "a paper folder)")  # fmt: skip


def add(
    target: str = typer.Argument(..., metavar="ID|SLUG", help="A replication ID or an ingested paper's slug."),
    value: float = typer.Option(..., "--value", help="The value the paper reports."),
    page: int = typer.Option(..., "--page", help="The page it is printed on (1-based)."),
    metric: str = typer.Option(..., "--metric", help="What it measures, e.g. 'test accuracy'."),
    figure: str | None = typer.Option(None, "--figure", help="The figure it was read off, e.g. 'Figure 2'."),
    quote: str | None = typer.Option(None, "--quote", help="The sentence on that page that states it."),
    dataset: str | None = typer.Option(None, "--dataset"),
    method: str | None = typer.Option(None, "--method"),
    std: float | None = typer.Option(None, "--std", help="The reported spread, if any."),
    lower_is_better: bool = typer.Option(False, "--lower-is-better", help="The metric is a loss or an error."),
    claim_id: str | None = typer.Option(None, "--id", help="An id of your choice (default R1, R2, ...)."),
) -> None:
    """Add a claim the paper reports (marked as the researcher's), e.g. a value read off a figure."""
    from retrieval.ingest import load_paper

    folder = paper_dir_of(target)
    paper = load_paper(folder / "paper.json")
    claim = researcher_claims.add(
        paper, folder, value=value, page=page, metric=metric, figure=figure, quote=quote, dataset=dataset,
        method=method, std=std, higher_is_better=not lower_is_better, claim_id=claim_id,
    )  # fmt: skip
    out.print(f"added {claim.id}: {claim.metric} = {claim.text} (p. {claim.page}) to {folder.name}")
    out.print("  a spec may now target it; to redraft: replicate reject ID --feedback 'target " + claim.id + "'")


def list_claims(target: str = typer.Argument(..., metavar="ID|SLUG")) -> None:
    """List the researcher's claims of a paper."""
    folder = paper_dir_of(target)
    found = researcher_claims.load(folder)
    if not found:
        out.print(f"no researcher claims for {folder.name}")
    for claim in found:
        out.print(f"{claim.id}: {claim.metric} = {claim.value:g} (p. {claim.page}, {claim.table or claim.quote})")


def register(app: typer.Typer) -> None:
    claims_app.command("add")(add)
    claims_app.command("list")(list_claims)
    app.add_typer(claims_app, name="claims")
