"""Nodes from finished runs to the report: compare_results, propose_hypotheses, review_hypotheses, write_report.

The comparison is the fixed harness's (`mlexp.compare.compare`), never generated code's. Hypotheses and the report
come from agent.hypotheses and agent.report; this module wires them into the graph and keeps their outputs on disk
(runs/<ID>/verdicts.json, hypotheses.json, report/) with the small values in state.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, interrupt

from agent import paths
from agent.errors import LLMOutputError
from agent.graph import tamper_guard
from agent.graph.answers import HypothesesAction, HypothesesAnswer, choices
from agent.graph.nodes import common, manual
from agent.graph.state import State, replication_dir, report_dir
from mlexp import atomic


def _records(state: State) -> list[Any]:
    from mlexp.record import RunRecord

    return [RunRecord.load(run["run_dir"]) for run in state.get("full_runs", [])]


def _runs_by_claim(state: State, records: list[Any]) -> dict[str, list[Any]]:
    by_claim: dict[str, list[Any]] = {}
    for run, record in zip(state.get("full_runs", []), records, strict=True):
        for claim_id in run["claim_ids"]:
            by_claim.setdefault(claim_id, []).append(record)
    return by_claim


def compare_results(state: State, config: RunnableConfig) -> Command[Literal["propose_hypotheses"]]:
    from mlexp.compare import compare, summary_line

    spec = common.spec_of(state)
    records = _records(state)
    verdicts = compare(spec.targets, _runs_by_claim(state, records))
    dumped = [v.model_dump(mode="json") for v in verdicts]
    atomic.write_json(replication_dir(state["id"]) / "verdicts.json", dumped)
    common.say(f"Comparison: {summary_line(verdicts)}")
    update: dict[str, Any] = {"verdicts": dumped, "stage": "compare_results"}
    problems = tamper_guard.guard_problems(state)  # harness, data and ledger as hashed before the first run
    if problems:
        warnings = list(state.get("warnings", []))
        for problem in problems:
            common.say(f"WARNING: {problem}", style="red")
            warnings.append(f"tamper guard: {problem}")
        update["warnings"] = warnings
    return Command(goto="propose_hypotheses", update=update)


def _index_or_none() -> Any:
    index_path = paths.index_dir()
    if not index_path.exists() or not any(index_path.iterdir()):
        return None
    from retrieval.errors import PaperIndexError
    from retrieval.index import PaperIndex

    try:
        index = PaperIndex(index_path)
        return index if len(index) else None
    except PaperIndexError:
        return None


def _verdict_objects(state: State) -> list[Any]:
    from mlexp.compare import Verdict

    return [Verdict.model_validate(v) for v in state.get("verdicts", [])]


def propose_hypotheses(state: State, config: RunnableConfig) -> Command[Literal["review_hypotheses"]]:
    from agent.hypotheses.checklist import run_checklist
    from agent.hypotheses.literature import propose_hypotheses as propose
    from agent.hypotheses.related import checklist_and_passages

    paper, spec = common.load_paper(state), common.spec_of(state)
    verdicts, records = _verdict_objects(state), _records(state)
    warnings = list(state.get("warnings", []))
    if manual.no_model(state, config):  # the checklist, plus the index's passages marked as search results
        with common.progress("Checking the gaps (checklist, related passages from the index; no model)"):
            found = checklist_and_passages(paper, spec, verdicts, records, _index_or_none())
    else:
        with common.progress("Proposing hypotheses for the gaps (checklist, LLM, related work)"):
            try:
                model = common.chat_model(config)
                found = propose(
                    model, paper, spec, verdicts, records, _index_or_none(),
                    log_dir=common.log_dir(state), feedback=state.get("feedback") or "",
                )  # fmt: skip
            except LLMOutputError as exc:  # the LLM failed (after retries): the deterministic checklist stands
                warnings = common.add_warning(state, f"LLM hypotheses failed, checklist only: {exc}")
                found = run_checklist(paper, spec, verdicts, records)
    dumped = [h.model_dump(mode="json") for h in found]
    atomic.write_json(replication_dir(state["id"]) / "hypotheses.json", dumped)
    searched = sum(h.source == "search" for h in found)
    also = f", {searched} index search results" if searched else ""
    common.say(f"{len(dumped) - searched} hypotheses proposed{also}")
    return Command(
        goto="review_hypotheses",
        update={
            "hypotheses": dumped,
            "warnings": warnings,
            "feedback": "",
            "llm_usage": common.usage(state),
            "stage": "propose_hypotheses",
        },
    )


def review_payload(state: State) -> dict[str, Any]:
    return {
        "review": "hypotheses",
        "answers": choices(HypothesesAction),
        "verdicts": [f"{v['claim_id']}: {v['verdict']}" for v in state.get("verdicts", [])],
        "hypotheses": [h.get("statement", str(h))[:200] for h in state.get("hypotheses", [])],
        "file": str(replication_dir(state["id"]) / "hypotheses.json"),
    }


def review_hypotheses(state: State, config: RunnableConfig) -> Command[Literal["write_report", "propose_hypotheses"]]:
    if common.auto_approve(config):
        answer = HypothesesAnswer(action="approve")
    else:
        answer = HypothesesAnswer(**interrupt(review_payload(state)))
    if answer.action == "approve":
        return Command(goto="write_report", update={"stage": "review_hypotheses"})
    return Command(goto="propose_hypotheses", update={"feedback": answer.feedback, "stage": "review_hypotheses"})


def write_report(state: State, config: RunnableConfig) -> Command[Literal["__end__"]]:
    from agent.hypotheses.model import Hypothesis
    from agent.report.experiment_log import append_experiment_log
    from agent.report.write import write_report as write_report_files

    # Reaching this node means the researcher approved the hypotheses shown at review_hypotheses.
    found = [Hypothesis.model_validate({**h, "approved": True}) for h in state.get("hypotheses", [])]
    out = report_dir(state["id"])
    out.mkdir(parents=True, exist_ok=True)
    with common.progress("Writing the report"):
        html, md = write_report_files(
            out,
            paper=common.load_paper(state),
            spec=common.spec_of(state),
            verdicts=_verdict_objects(state),
            hypotheses=found,
            runs=_records(state),
            warnings=state.get("warnings", []),
            llm_usage=state.get("llm_usage") or None,
        )
    append_experiment_log(  # key findings across iterations (helper E); keyed, so a resumed node logs once
        replication_dir(state["id"]),
        verdicts=_verdict_objects(state),
        hypotheses=found,
        runs=_records(state),
        report=html,
        key=f"{state['id']}:{len(state.get('full_runs', []))}:{state.get('spec_version', 0)}",
    )
    common.say(f"Report: {html}")
    return Command(goto="__end__", update={"report": {"html": str(html), "md": str(md)}, "stage": "write_report"})
