"""Nodes from the PDF to an approved spec: ingest_paper, find_related, draft_spec, review_spec."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, interrupt

from agent import paper_context, paths
from agent.errors import LLMOutputError
from agent.graph.answers import SpecAction, SpecAnswer, choices
from agent.graph.edited_spec import reread_edited_spec
from agent.graph.nodes import manual
from agent.graph.nodes.common import (
    MAX_LLM_RETRIES,
    add_warning,
    auto_approve,
    chat_model,
    llm_failed,
    load_paper,
    log_dir,
    progress,
    say,
    spec_of,
    usage,
)
from agent.graph.state import State, spec_dir
from agent.llm import prompts
from agent.llm.seam import structured_call
from agent.spec import Spec, SpecError, check_against_paper, save_spec
from retrieval.errors import PaperIndexError
from retrieval.models import Paper

HITS_PER_QUERY = 5
def ingest_paper(state: State, config: RunnableConfig) -> Command[Literal["find_related"]]:
    from retrieval.ingest import ingest_pdf

    with progress(f"Reading {Path(state['pdf']).name} (tables, claims ledger, setup)"):
        paper = ingest_pdf(Path(state["pdf"]), paths.papers_dir())
    paper_json = paths.papers_dir() / paper.slug / "paper.json"
    say(f"Ingested {paper.title or paper.slug}: {len(paper.claims)} claims, {len(paper.tables)} tables")
    update = {
        "paper_json": str(paper_json),
        "slug": paper.slug,
        "title": paper.title,
        "n_claims": len(paper.claims),
        "warnings": state.get("warnings", []),
        "stage": "ingest_paper",
    }
    if not paper.claims:
        update["warnings"] = add_warning(state, "ingestion found no numeric claims: there is nothing to compare to")
    return Command(goto="find_related", update=update)


def related_queries(paper: Paper) -> list[tuple[str, str]]:
    """(purpose, query) pairs: the method (title + abstract head), each dataset, and the baselines in the ledger."""
    queries = [("method", f"{paper.title} {paper.abstract[:200]}".strip())]
    for item in paper.setup.get("dataset")[:3]:
        queries.append(("dataset", f"{item.value} dataset benchmark"))
    methods = []
    for claim in paper.claims:
        if claim.method and claim.method not in methods:
            methods.append(claim.method)
    for method in methods[:3]:
        queries.append(("baseline", method))
    return [(purpose, query) for purpose, query in queries if query.strip()]


def find_related(state: State, config: RunnableConfig) -> Command[Literal["draft_spec"]]:
    paper = load_paper(state)
    warnings = list(state.get("warnings", []))
    hits: list[dict[str, Any]] = []
    index_path = paths.index_dir()
    if not index_path.exists() or not any(index_path.iterdir()):
        warnings.append(
            f"no paper index at {index_path}: related work not searched (build one with "
            "`replicate index import FILE.jsonl[.gz]` or `replicate index add PDFS`)"
        )
    else:
        from retrieval.index import PaperIndex

        try:
            with progress("Searching the paper index for the method, datasets and baselines"):
                index = PaperIndex(index_path)
                seen: set[str] = set()
                for purpose, query in related_queries(paper):
                    for hit in index.search(query, k=HITS_PER_QUERY):
                        if hit.id in seen or not (hit.snippet or "").strip():
                            continue  # a hit without a quote cannot be cited
                        seen.add(hit.id)
                        hits.append(
                            {
                                "purpose": purpose,
                                "query": query[:120],
                                "id": hit.id,
                                "title": hit.title,
                                "year": hit.year,
                                "score": round(float(hit.score), 4),
                                "quote": hit.snippet,
                                "page": hit.page,
                                "source": hit.source,
                            }
                        )
        except PaperIndexError as exc:
            warnings.append(f"paper index unusable, related work not searched: {exc}")
    if hits:
        say(f"Related work: {len(hits)} papers with quotes")
    for warning in warnings[len(state.get("warnings", [])) :]:
        say(f"warning: {warning}", style="yellow")
    return Command(goto="draft_spec", update={"related": hits, "warnings": warnings, "stage": "find_related"})


def local_data_text() -> str:
    """Datasets the researcher has on disk: REPLICATE_DATA lists folders (os.pathsep-separated)."""
    listed = [p for p in os.environ.get("REPLICATE_DATA", "").split(os.pathsep) if p.strip()]
    if not listed:
        return "(none listed; the researcher can set REPLICATE_DATA to folders holding datasets)"
    lines = []
    for folder in map(Path, listed):
        if folder.is_dir():
            files = sorted(p.name for p in folder.iterdir())[:20]
            lines.append(f"{folder.resolve()}: {', '.join(files)}")
        else:
            lines.append(f"{folder}: (missing)")
    return "\n".join(lines)


def draft_variables(state: State, paper: Paper) -> dict[str, Any]:
    # Each fact carries ingestion's confidence: the prompt tells the model these are hints to check in the paper.
    setup = (
        "\n".join(f"{i.key} | {i.value} | p{i.page} | {i.confidence} | {i.quote}" for i in paper.setup.items)
        or "(none)"
    )
    related = "\n".join(f'[{h["id"]}] {h["title"]} ({h["year"]}): "{h["quote"][:300]}"' for h in state["related"])
    return {
        "title": paper.title,
        "slug": paper.slug,
        "paper": paper_context.whole_paper(paper),  # the page-anchored view, cut to the model's window if needed
        "claims": paper_context.ledger(paper),  # condensed (likely targets first, the rest by id) if needed
        "setup": setup,
        "missing": ", ".join(paper.setup.missing) or "(none)",
        "related": related or "(no related work found)",
        "local_data": local_data_text(),
        "feedback": state.get("feedback") or "(none)",
    }


def draft_spec(state: State, config: RunnableConfig) -> Command[Literal["review_spec", "ask_researcher"]]:
    paper = load_paper(state)
    if state.get("given_spec") or manual.no_model(state, config):
        return manual.draft_without_model(state, paper)  # the researcher's spec file, or a skeleton to fill in
    model = chat_model(config)  # LLMNotConfiguredError propagates: ingestion and retrieval are already checkpointed

    def check(spec: Spec) -> None:
        spec.paper_slug = paper.slug
        problems = check_against_paper(spec, paper)
        if problems:
            raise ValueError("the spec does not match the paper: " + "; ".join(problems))

    try:
        with progress("Drafting the experiment spec (LLM)"):
            spec = structured_call(
                model,
                "draft_spec",
                prompts.DRAFT_SPEC,
                draft_variables(state, paper),
                Spec,
                log_dir=log_dir(state),
                retries=MAX_LLM_RETRIES,
                check=check,
                metadata={"replication": state["id"]},
            )
    except LLMOutputError as exc:
        message = f"No valid spec from the LLM: {exc}. Approve to retry (--feedback adds guidance), reject to stop."
        return llm_failed(state, "draft_spec", exc, message, llm_usage=usage(state), stage="draft_spec")
    json_path, md_path = save_spec(spec, spec_dir(paper.slug, state["id"]), title=paper.title)
    say(f"Spec drafted: {md_path}")
    return Command(
        goto="review_spec",
        update={
            "spec_json": str(json_path),
            "spec_md": str(md_path),
            "spec_version": state.get("spec_version", 0) + 1,
            "spec_skeleton": False,  # a model's draft replaces a skeleton the researcher rejected
            "feedback": "",
            "llm_usage": usage(state),
            "stage": "draft_spec",
        },
    )


def review_payload(state: State) -> dict[str, Any]:
    spec = spec_of(state)
    return {
        "review": "spec",
        "answers": choices(SpecAction),
        "spec_md": state["spec_md"],
        "targets": [f"{t.claim_id}: {t.metric} {t.reported} ±{t.tolerance} x{t.seeds} seeds" for t in spec.targets],
        "open_questions": [q.question for q in spec.open_questions],
        "eta_minutes": spec.budget.eta_minutes,
    }


def review_spec(
    state: State, config: RunnableConfig
) -> Command[Literal["implement_code", "draft_spec", "review_spec"]]:
    skeleton_md = bool(state.get("spec_skeleton"))  # only the researcher can fill it in
    # no targets: only the researcher can say
    unattended = not skeleton_md and auto_approve(config) and bool(spec_of(state).targets)
    payload = manual.skeleton_payload(state) if skeleton_md else review_payload(state)
    answer = SpecAnswer(action="approve") if unattended else SpecAnswer(**interrupt(payload))
    if answer.action == "approve" and skeleton_md:  # the CLI refuses this; a skeleton is no spec to approve
        return Command(goto="review_spec", update={"warnings": add_warning(state, "a skeleton spec is not approved")})
    if answer.action == "approve":
        return Command(goto="implement_code", update={"stage": "review_spec"})
    if answer.action == "reject":
        return Command(goto="draft_spec", update={"feedback": answer.feedback, "stage": "review_spec"})
    try:  # "edit"
        spec = reread_edited_spec(Path(state["spec_md"]), load_paper(state))
    except SpecError as exc:
        # The CLI validates before resuming, so this means the file changed in between: ask again.
        return Command(goto="review_spec", update={"warnings": add_warning(state, f"edit not applied: {exc}")})
    save_spec(spec, Path(state["spec_md"]).parent, write_md=False)
    return Command(
        goto="implement_code",
        update={"spec_version": state.get("spec_version", 0) + 1, "spec_skeleton": False, "stage": "review_spec"},
    )
