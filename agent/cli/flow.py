"""CLI commands of the replication flow: start (`replicate paper.pdf`), status, approve, reject, resume.

Thin: each command opens the graph, sends the initial state / a resume answer, and prints where the replication now
stands. Answers are validated here, before the graph is touched, so a wrong answer (an edited spec.md that does not
validate, `--edit` when no spec is under review) is one line on stderr and leaves the replication exactly as it was.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from filelock import FileLock, Timeout
from rich.console import Console
from rich.table import Table

from agent import paths
from agent.cli import manual as researcher
from agent.cli.interrupted import HELD
from agent.errors import AgentError, LLMNotConfiguredError, ReviewError
from agent.graph.state import new_id, replication_dir
from retrieval.arxiv_fetch import arxiv_id, download_pdf
from retrieval.errors import RetrievalError

out = Console(highlight=False, soft_wrap=True, markup=False)  # data is printed verbatim, never as markup


class _LazyFlow:
    """agent.graph.flow imported on first use: langgraph costs seconds to import, and other commands do not need it."""

    def __getattr__(self, name: str) -> Any:
        from agent.graph import flow as graph_flow

        return getattr(graph_flow, name)


flow: Any = _LazyFlow()
EXIT_WAITING_UNATTENDED = 2  # --auto-approve stopped at a question only a person can answer

LLM_OPTION = typer.Option(None, "--llm", help="openai:MODEL | openrouter:MODEL | vllm:MODEL@URL | scripted:PATH")
AUTO_OPTION = typer.Option(False, "--auto-approve", help="Approve every review unattended (questions still stop).")
CONTEXT_OPTION = typer.Option(
    None, "--context-tokens", min=512, help="The model's context window in tokens (else REPLICATE_CONTEXT_TOKENS, "
    "what the server reports, the known window, or 8192)."
)  # fmt: skip


def _llm_settings(llm: str | None, context_tokens: int | None) -> None:
    """Check --llm (or REPLICATE_LLM) before anything is done, and carry --context-tokens to the LLM seam."""
    from agent.llm.seam import configured_spec, load_chat_model

    if context_tokens is not None:
        os.environ["REPLICATE_CONTEXT_TOKENS"] = str(context_tokens)  # read by agent.llm.budget for this process
    if configured_spec(llm):
        load_chat_model(llm)  # a malformed spec or a missing key is one line now, before ingestion and search


def _describe(rid: str, snapshot: Any) -> dict[str, Any]:
    values = dict(snapshot.values)
    waiting = flow.waiting_for(snapshot)
    if waiting:
        state = f"waiting for {waiting['review']} review" if waiting["review"] != "question" else "waiting: question"
    elif values.get("stopped"):
        state = "stopped"
    elif not snapshot.next and _cut_short(snapshot):
        step = values.get("stage") or "ingest_paper"
        state = f"incomplete: the checkpoint of {step} was cut short (disk full?): `replicate resume {rid}` redoes it"
    elif not snapshot.next:
        state = "finished"
    else:
        from agent.cli.interrupted import interrupted_state  # a kill, a dead server, or another process: say which

        state = interrupted_state(rid, list(snapshot.next))
    needs_you = _human_step(rid, waiting)
    if needs_you:
        state += " (needs you)"
    return {
        "id": rid,
        "state": state,
        "needs_you": needs_you,
        "stage": values.get("stage"),
        "title": values.get("title"),
        "waiting": waiting,
        "next": list(snapshot.next),
        "values": values,
    }


def _print_outcome(rid: str, info: dict[str, Any]) -> None:
    waiting, values = info["waiting"], info["values"]
    out.print(f"{rid}: {info['state']}", style="bold")
    if waiting and waiting["review"] == "spec":
        out.print(f"  spec: {waiting['spec_md']}")
        for line in waiting.get("targets", []):
            out.print(f"  target {line}")
        for question in waiting.get("open_questions", []):
            out.print(f"  open question: {question}")
        out.print(f"  next: replicate approve {rid} [--edit] | replicate reject {rid} --feedback '...'")
    elif waiting and waiting["review"] == "run":
        out.print(f"  smoke metrics: {waiting.get('smoke_metrics')}  ({waiting.get('smoke_run_dir')})")
        pace = f", {waiting.get('smoke_s_per_step'):.3g} s/step" if waiting.get("smoke_s_per_step") else ""
        out.print(f"  smoke took {waiting.get('smoke_duration_s')} s{pace}")
        check = waiting.get("check") or {}
        out.print(f"  post-run check: {'ok' if check.get('ok') else 'problems'} {check.get('problems') or ''}")
        out.print(
            f"  full run: {waiting.get('full_runs')} runs ({waiting.get('seeds')} seeds), "
            f"ETA {waiting.get('eta_minutes')} min, "
            f"limit {waiting.get('wall_limit_minutes')} min/run (worst case {waiting.get('worst_case_minutes')} min), "
            f"cost ${waiting.get('cost_usd')}, device {waiting.get('device')}"
        )
        out.print(f"  next: replicate approve {rid} [--budget seeds=N] | replicate reject {rid} (stop)")
    elif waiting and waiting["review"] == "hypotheses":
        for line in waiting.get("verdicts", []):
            out.print(f"  verdict {line}")
        for line in waiting.get("hypotheses", []):
            out.print(f"  hypothesis: {line}")
        out.print(f"  next: replicate approve {rid} | replicate reject {rid} --feedback '...'")
    elif waiting and waiting["review"] == "code":
        researcher.print_code_review(out, rid, waiting)
    elif waiting:
        out.print(f"  {waiting.get('reason')}: {waiting.get('question')}")
        out.print(f"  next: replicate approve {rid} [--feedback hint] (retry) | replicate reject {rid} (stop)")
    if info.get("needs_you"):
        out.print(f"  needs you: {info['needs_you']}")
    if values.get("stopped"):
        out.print(f"  {values['stopped']}")
    if values.get("report"):
        out.print(f"  report: {values['report'].get('html')}")


def _human_step(rid: str, waiting: dict[str, Any] | None) -> str | None:
    from agent.graph.nodes.manual import human_step  # langgraph: imported on first use, like the graph

    return human_step(rid, waiting)


def _load(rid: str) -> tuple[Any, dict[str, Any]]:
    with flow.open_graph() as graph:
        return graph, _describe(rid, flow.snapshot_of(graph, rid))


@contextmanager
def _exclusive(rid: str) -> Iterator[None]:
    """One process advances a replication at a time (an OS lock: a killed holder releases it)."""
    folder = replication_dir(rid)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".advance.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        raise AgentError(f"{rid} is being advanced by another replicate process; wait for it to pause") from exc
    HELD.add(rid)
    try:
        yield
    finally:
        HELD.discard(rid)
        lock.release()


def _cut_short(snapshot: Any) -> bool:
    from agent.graph.recovery import cut_short

    return cut_short(snapshot)


def _advance(
    rid: str, payload: Any, *, llm: str | None, auto_approve: bool, expect: str | None = None, redo: bool = False
) -> None:
    """Run the graph, then print where it stands; explain what to set when no LLM is configured.

    `expect` is the review an answer was made for: checked again under the lock, so an answer never reaches a
    later review that another process moved the replication to in the meantime.
    """
    from agent.llm.seam import (
        LLMCallError,  # here, not at the top: it imports langchain, which other commands do not need
    )

    with _exclusive(rid), flow.open_graph() as graph:
        if redo:  # a cut-short checkpoint (see agent.graph.recovery): run its last step again
            from agent.graph.recovery import rearm

            out.print(f"{rid}: the last checkpoint was cut short; running {rearm(graph, rid)} again")
        if expect is not None:
            waiting = flow.waiting_for(flow.snapshot_of(graph, rid))
            if not waiting or waiting["review"] != expect:
                raise ReviewError(f"{rid} no longer waits for the {expect} review; see `replicate status {rid}`")
        try:
            flow.invoke(graph, rid, payload, llm=llm, auto_approve=auto_approve)
        except LLMNotConfiguredError as exc:
            values = dict(graph.get_state(flow.run_config(rid)).values)
            done = ""
            if values.get("paper_json"):
                done = (
                    f"paper ingested ({values.get('n_claims', 0)} claims, {values['paper_json']}) and related work "
                    f"searched ({len(values.get('related') or [])} hits); "
                )
            raise LLMNotConfiguredError(f"{rid}: {done}{exc}; then run `replicate resume {rid}`") from exc
        except LLMCallError as exc:
            raise LLMCallError(f"{rid}: {exc}; the state is kept, `replicate resume {rid}` retries") from exc
        info = _describe(rid, flow.snapshot_of(graph, rid))
    _print_outcome(rid, info)
    if info["state"] == "finished":
        for line in researcher.verdict_lines(info["values"]):
            out.print(line)
    if auto_approve and info["waiting"]:
        raise typer.Exit(EXIT_WAITING_UNATTENDED)


def start(
    paper_arg: str = typer.Argument(
        ..., metavar="PAPER", help="The paper's PDF, or arxiv:ID / an arXiv abs or pdf URL (downloaded)."
    ),
    llm: str | None = LLM_OPTION,
    auto_approve: bool = AUTO_OPTION,
    context_tokens: int | None = CONTEXT_OPTION,
    no_llm: bool = researcher.NO_LLM_OPTION,
    spec: Path | None = researcher.SPEC_OPTION,
    code: Path | None = researcher.CODE_OPTION,
) -> None:
    """Start a replication of PAPER and run it to the first checkpoint (`replicate paper.pdf` does the same)."""
    paper_id = arxiv_id(paper_arg)  # a str, not a Path: Path would fold the URL's "//"
    paper = Path(paper_arg)
    if paper_id is None and not paper.is_file():
        raise AgentError(f"no such file: {paper}")
    given = researcher.start_inputs(no_llm=no_llm, llm=llm, spec=spec, code=code)  # docs/no-llm.md
    if not no_llm:
        _llm_settings(llm, context_tokens)
    if paper_id is not None:  # after the option checks: a bad --llm never costs a download
        paper = download_pdf(paper_id, paths.papers_dir() / "arxiv")
        out.print(f"Downloaded arXiv {paper_id} to {paper}")
    rid = new_id(paper)
    out.print(f"Replication {rid}", style="bold")
    try:
        _advance(rid, {"id": rid, "pdf": str(paper.resolve()), **given}, llm=llm, auto_approve=auto_approve)
    except RetrievalError:
        # The PDF could not be read: nothing was done, so leave no half-started replication behind.
        with flow.open_graph() as graph:
            graph.checkpointer.delete_thread(rid)
        shutil.rmtree(replication_dir(rid), ignore_errors=True)
        raise


def status(
    rid: str | None = typer.Argument(None, metavar="[ID]"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """All replications, or one: its stage and what it waits for."""
    ids = [rid] if rid else flow.list_replications()
    with flow.open_graph() as graph:
        infos = [_describe(one, flow.snapshot_of(graph, one)) for one in ids]
    if as_json:
        out.print_json(json.dumps(infos if not rid else infos[0], default=str))
        return
    if rid:
        info = infos[0]
        _print_outcome(rid, info)
        values = info["values"]
        for warning in values.get("warnings") or []:
            out.print(f"  warning: {warning}")
        for failure in (values.get("failures") or [])[-5:]:
            out.print(f"  failure [{failure['node']}/{failure['kind']}]: {failure['message'][:200]}")
        for run in values.get("full_runs") or []:
            out.print(f"  run seed {run['seed']}: {run['metrics']} ({run['run_dir']})")
        for verdict in values.get("verdicts") or []:
            out.print(f"  {verdict['claim_id']}: {verdict['verdict']} ({verdict.get('reason', '')})")
        if values.get("llm_usage"):
            out.print(f"  LLM usage: {values['llm_usage']}")
        return
    if not infos:
        out.print("No replications yet. Start one with `replicate paper.pdf`.")
        return
    table = Table("id", "paper", "stage", "state")
    table.columns[0].no_wrap = True
    for info in infos:
        table.add_row(info["id"], (info["title"] or "")[:50], info["stage"] or "-", info["state"])
    out.print(table)


def _waiting(rid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    _, info = _load(rid)
    if not info["waiting"]:
        raise ReviewError(f"{rid} is not waiting for a review ({info['state']})")
    return info["waiting"], info["values"]


def _edit_spec(values: dict[str, Any]) -> None:
    """Open spec.md in $VISUAL/$EDITOR (when set), then validate it; a bad edit raises SpecError, state unchanged."""
    from agent.graph.edited_spec import reread_edited_spec
    from agent.researcher_claims import with_researcher_claims
    from retrieval.ingest import load_paper

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if editor:
        result = subprocess.run([*shlex.split(editor), values["spec_md"]])
        if result.returncode != 0:
            raise ReviewError(f"editor {editor!r} exited with {result.returncode}; spec not approved")
    # Raises SpecError (an AgentError) with what is wrong.
    paper_json = Path(values["paper_json"])
    reread_edited_spec(Path(values["spec_md"]), with_researcher_claims(load_paper(paper_json), paper_json.parent))


def _budget(items: list[str]) -> dict[str, float]:
    budget: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        allowed = ("seeds", "eta_minutes", "wall_limit_minutes", "cost_usd")
        if not sep or key not in allowed:
            raise ReviewError(f"--budget takes KEY=VALUE with KEY one of {', '.join(allowed)}; got {item!r}")
        try:
            budget[key] = float(value)
        except ValueError as exc:
            raise ReviewError(f"--budget {item!r}: {value!r} is not a number") from exc
    return budget


def _checked_budget(values: dict[str, Any], items: list[str]) -> dict[str, float]:
    """--budget parsed and applied to the spec now: a refused value never reaches the graph (see review_checks)."""
    from agent.graph.review_checks import budgeted_spec
    from agent.spec import load_spec

    budget = _budget(items)
    budgeted_spec(load_spec(Path(values["spec_json"])), budget)  # type: ignore[arg-type]  # keys checked by _budget
    return budget


def approve(
    rid: str = typer.Argument(..., metavar="ID"),
    edit: bool = typer.Option(False, "--edit", help="Re-read the spec.md you edited (opens $EDITOR when set)."),
    feedback: str | None = typer.Option(None, "--feedback", help="A hint for the retry, when answering a question."),
    budget: list[str] = typer.Option([], "--budget", help="At the run review: KEY=VALUE (seeds, wall_limit_minutes)."),
    llm: str | None = LLM_OPTION,
    auto_approve: bool = AUTO_OPTION,
    code: Path | None = researcher.CODE_OPTION,
) -> None:
    """Approve what ID waits for (spec, your code, smoke run, hypotheses), or retry after a question."""
    waiting, values = _waiting(rid)
    review = waiting["review"]
    if code is not None and review != "code":
        raise ReviewError(f"--code applies to the code review; {rid} waits for the {review} review")
    if edit and review != "spec":
        raise ReviewError(f"--edit applies to the spec review; {rid} waits for the {review} review")
    if budget and review != "run":
        raise ReviewError(f"--budget applies to the run review; {rid} waits for the {review} review")
    if feedback and review != "question":  # approving a spec, run or hypotheses sends nothing back to the LLM
        instead = (
            f"to send the LLM a change use `replicate reject {rid} --feedback '...'`"
            if review in ("spec", "hypotheses")
            else "approve it without --feedback"
        )
        raise ReviewError(f"approve --feedback is a hint for a retried question; {rid} waits for the {review} "
                          f"review, which takes none: {instead}")  # fmt: skip
    if review == "spec":
        if edit:
            _edit_spec(values)
        elif waiting.get("skeleton"):
            raise ReviewError(f"{waiting['spec_md']} is a skeleton, not a spec: fill it in, then `replicate approve "
                              f"{rid} --edit`")  # fmt: skip
        elif not waiting.get("targets"):
            from agent.graph.edited_spec import NO_TARGETS

            raise ReviewError(NO_TARGETS.replace("ID", rid))
        answer: dict[str, Any] = {"action": "edit" if edit else "approve"}
    elif review == "run":
        answer = {"action": "budget", "budget": _checked_budget(values, budget)} if budget else {"action": "approve"}
    elif review == "question":
        answer = {"action": "retry", "feedback": feedback or ""}
    elif review == "code":
        answer = researcher.code_answer(rid, waiting, code)
    else:
        answer = {"action": "approve"}
    _advance(rid, flow.Command(resume=answer), llm=llm, auto_approve=auto_approve, expect=review)


def reject(
    rid: str = typer.Argument(..., metavar="ID"),
    feedback: str = typer.Option("", "--feedback", help="What to change (sent back to the LLM), or why you stop."),
    llm: str | None = LLM_OPTION,
    auto_approve: bool = AUTO_OPTION,
) -> None:
    """Reject what ID waits for: a spec or hypotheses go back to the LLM with your feedback; a run review stops."""
    waiting, _ = _waiting(rid)
    review = waiting["review"]
    if review in ("spec", "hypotheses"):
        if not feedback.strip():
            raise ReviewError(f"rejecting the {review} needs --feedback saying what to change")
        answer = {"action": "reject", "feedback": feedback}
    else:
        answer = {"action": "stop", "feedback": feedback}
    _advance(rid, flow.Command(resume=answer), llm=llm, auto_approve=auto_approve, expect=review)


def resume(
    rid: str = typer.Argument(..., metavar="ID"),
    llm: str | None = LLM_OPTION,
    auto_approve: bool = AUTO_OPTION,
    context_tokens: int | None = CONTEXT_OPTION,
) -> None:
    """Continue ID after a crash, a kill or a missing LLM; at a review, say what it waits for."""
    _llm_settings(llm, context_tokens)
    _, info = _load(rid)
    if info["waiting"]:
        if not auto_approve:
            _print_outcome(rid, info)
            return
        if info["waiting"]["review"] == "question" or info.get("needs_you"):  # only a person can answer these
            _print_outcome(rid, info)
            raise typer.Exit(EXIT_WAITING_UNATTENDED)
        payload: Any = flow.Command(resume={"action": "approve"})
    elif not info["next"] and not info["state"].startswith("incomplete"):
        _print_outcome(rid, info)
        return
    else:
        payload = None
    redo = not info["waiting"] and not info["next"]  # incomplete: redo the step whose checkpoint was cut short
    _advance(rid, payload, llm=llm, auto_approve=auto_approve, expect=(info["waiting"] or {}).get("review"), redo=redo)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `replicate` app (agent.cli.app calls it)."""
    app.command("start")(start)
    app.command("status")(status)
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("resume")(resume)
