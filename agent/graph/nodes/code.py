"""Nodes from an approved spec to finished runs: implement_code, run_smoke, fix_code, review_run, run_full, and
ask_researcher (the stop-and-ask every LLM-caused dead end routes to).

The generated code lives in runs/<ID>/code/, a git repository: mlexp's run identity is config hash + code commit, and
each fix is a commit, so `git log` in the code dir is the history of what the LLM changed and why. run_full runs one
(config group, seed) per visit and loops on itself, so every finished run is checkpointed in the graph state; after
a crash, mlexp's identity skip makes a repeated request for a finished run free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, interrupt
from pydantic import BaseModel, Field

from agent import codedir, paper_context
from agent.codedir import ENTRY
from agent.errors import LLMOutputError
from agent.graph import tamper_guard
from agent.graph.answers import BudgetKey, QuestionAction, QuestionAnswer, RunAction, RunAnswer, choices
from agent.graph.nodes import manual
from agent.graph.nodes.common import (
    MAX_FIX_ATTEMPTS,
    MAX_LLM_RETRIES,
    MAX_NODE_RETRIES,
    add_failure,
    ask,
    auto_approve,
    chat_model,
    code_ready,
    llm_failed,
    load_paper,
    log_dir,
    progress,
    say,
    spec_of,
    usage,
)
from agent.graph.review_checks import budgeted_spec  # the CLI runs the same check before resuming
from agent.graph.state import State, code_dir, experiments_dir
from agent.llm import prompts
from agent.llm.seam import structured_call
from agent.spec import Spec, save_spec

DATA_MARK = "DATA_UNAVAILABLE"


class FileEdit(BaseModel):
    path: str  # relative to the code dir
    content: str


class CodeChange(BaseModel):
    """What implement_code and fix_code reply with."""

    files: list[FileEdit] = Field(default_factory=list)
    notes: str = ""
    data_available: bool = True
    question: str | None = None


def _apply(state: State, change: CodeChange, message: str) -> str | None:
    """Write the files through the confined tool and commit. Raises ConfinementError before writing anything."""
    cdir = code_dir(state["id"])
    codedir.ensure_repo(cdir)
    codedir.write_files(cdir, [(f.path, f.content) for f in change.files])
    return codedir.commit_all(cdir, message) or codedir.head(cdir)


# Generators of made-up data. Seeing one in experiment code is the failure the seed notes describe (an LLM quietly
# "replicating" on synthetic data), so the change is refused and the LLM is told why.
SYNTHETIC = re.compile(
    r"\b(make_(?:classification|regression|blobs|moons|circles|friedman[123]?|gaussian_quantiles|hastie_10_2|"
    r"multilabel_classification|s_curve|swiss_roll|sparse_uncorrelated|low_rank_matrix)|FakeData)\b"
)


def synthetic_data_signals(files: list[FileEdit]) -> list[str]:
    hits = []
    for edit in files:
        for number, line in enumerate(edit.content.splitlines(), 1):
            match = SYNTHETIC.search(line.split("#", 1)[0])
            if match:
                hits.append(f"{edit.path}:{number} uses {match.group(1)}")
    return hits


def change_check(cdir: Path, spec: Spec | None = None):
    # A paper whose data is its own simulation (spec.data.generated, approved at review_spec) may generate data.
    generated = spec is not None and spec.data.generated

    def check(change: CodeChange) -> None:
        if change.data_available and not (cdir / ENTRY).exists() and ENTRY not in {f.path for f in change.files}:
            raise ValueError(f"the reply must write the entry point {ENTRY} (the harness runs `python {ENTRY}`)")
        signals = [] if generated else synthetic_data_signals(change.files)
        if signals:
            raise ValueError(
                "the code generates synthetic data (" + "; ".join(signals) + "): use the real dataset the spec "
                "names; if it cannot be obtained, set data_available to false and ask"
            )

    return check


def _data_question(
    state: State, node: str, what: str, **update: Any
) -> Command[Any]:  # Any: Command is invariant; every caller may route to "ask_researcher"
    question = ask(
        "the real data cannot be obtained",
        f"{what} The agent does not substitute synthetic data. Put the data in place (or say where it is with "
        "--feedback), then approve to retry; reject to stop.",
        "implement_code",
    )
    return Command(
        goto="ask_researcher",
        update={
            **update,
            "failures": add_failure(state, node, "data_unavailable", what),
            "question": question,
            "stage": node,
        },
    )


def _paper_sections(state: State, spec: Spec) -> Any:
    """The paper sections the spec cites plus the method/setup ones (a budget Fittable), or a note without a paper."""
    if not state.get("paper_json"):
        return "(no ingested paper: work from the spec alone)"
    return paper_context.spec_sections(load_paper(state), spec)


def implement_code(
    state: State, config: RunnableConfig
) -> Command[Literal["run_smoke", "implement_code", "ask_researcher", "await_code"]]:
    if state.get("given_code") or manual.no_model(state, config):
        return manual.code_step(state)  # the researcher's code: given at the start, or waited for at await_code
    spec = spec_of(state)
    cdir = code_dir(state["id"])
    codedir.ensure_repo(cdir)
    variables = {
        "spec": spec.model_dump_json(indent=1),
        "paper": _paper_sections(state, spec),
        "existing_files": codedir.read_code(cdir, max_chars=20_000),
        "feedback": state.get("feedback") or "(none)",
    }
    try:
        with progress("Writing the experiment code (LLM)"):
            change = structured_call(
                chat_model(config),
                "implement_code",
                prompts.IMPLEMENT_CODE,
                variables,
                CodeChange,
                log_dir=log_dir(state),
                retries=MAX_LLM_RETRIES,
                check=change_check(cdir, spec),
                metadata={"replication": state["id"]},
            )
    except LLMOutputError as exc:
        message = f"{exc}. Approve to retry (--feedback adds guidance), reject to stop."
        return llm_failed(state, "implement_code", exc, message, llm_usage=usage(state))
    if not change.data_available:
        return _data_question(state, "implement_code", change.question or "The LLM reports the data is unavailable.")
    try:
        commit = _apply(state, change, f"implement_code: {change.notes[:200] or 'first implementation'}")
    except codedir.ConfinementError as exc:
        failures = add_failure(state, "implement_code", "confinement", str(exc))
        retries = sum(1 for f in failures if f["node"] == "implement_code" and f["kind"] == "confinement")
        say(f"refused: {exc}", style="red")
        if retries <= MAX_NODE_RETRIES:
            feedback = f"Your previous reply was refused, nothing was written: {exc}. Use relative paths only."
            return Command(goto="implement_code", update={"failures": failures, "feedback": feedback})
        question = ask("the LLM keeps writing outside its code dir", str(exc), "implement_code")
        return Command(goto="ask_researcher", update={"failures": failures, "question": question})
    say(f"Code written to {cdir} (commit {str(commit)[:8]})")
    return code_ready(cdir, commit, llm_usage=usage(state))


def _readme(spec: Spec, purpose: str) -> dict[str, Any]:
    return {
        "purpose": purpose,
        "scope": spec.objective,
        "data": f"{spec.data.name} ({spec.data.source}); split: {spec.data.split}",
        "model": f"{spec.method.name}: {spec.method.description}",
        "metrics": {t.metric: {"direction": t.direction, "definition": f"claim {t.claim_id}"} for t in spec.targets},
    }


def _summary(record: Any, **extra: Any) -> dict[str, Any]:
    return {
        "run_dir": record.run_dir,
        "identity": record.identity,
        "status": record.status,
        "exit_reason": record.exit_reason,
        "skipped": record.skipped,
        "metrics": dict(record.metrics),
        "duration_s": record.duration_s,
        "digest": (record.digest or "")[-4000:],
        "error": record.error,
        "s_per_step": getattr(record, "s_per_step", None),
        **extra,
    }


def _run(state: State, spec: Spec, *, smoke: bool, group: int, seed: int, label: str) -> Any:
    import mlexp

    config, targets = spec.target_groups()[group]
    wall = spec.smoke.max_minutes if smoke else spec.budget.wall_limit_minutes
    with progress(label) as update:
        return mlexp.run_script(
            code_dir(state["id"]) / ENTRY,
            spec.run_config(smoke=smoke, target=targets[0]),
            runs_root=experiments_dir(state["id"]),
            name=f"{'smoke' if smoke else 'full'}-g{group}",
            smoke=smoke,
            seed=seed,
            wall_limit_s=wall * 60,
            readme=_readme(spec, f"{'smoke' if smoke else 'full'} run, config group {group}: {config or 'base'}"),
            on_line=update,
        )


def run_smoke(
    state: State, config: RunnableConfig
) -> Command[Literal["review_run", "fix_code", "ask_researcher", "await_code"]]:
    import mlexp

    spec = spec_of(state)
    sealed = tamper_guard.seal_before_first_run(state, spec)  # before any run: the smoke run cannot bless an edit
    record = _run(state, spec, smoke=True, group=0, seed=0, label="Smoke run")
    check = mlexp.post_run_check(Path(record.run_dir))
    wanted = {t.metric for t in spec.target_groups()[0][1]}
    missing = sorted(
        m for m in wanted if m not in record.metrics and not any(k.endswith("/" + m) for k in record.metrics)
    )
    problems = list(check.problems)
    if record.status != "completed":
        problems.insert(0, f"the run {record.status} ({record.exit_reason}): {record.error or 'see the digest'}")
    if missing and record.status == "completed":
        problems.append(f"the final metrics lack the spec's target metric(s): {', '.join(missing)}")
    smoke = _summary(record, problems=problems)
    check_dict = {"ok": check.ok and not problems, "problems": problems, "notes": list(check.notes)}
    update: dict[str, Any] = {"smoke": smoke, "smoke_check": check_dict, "stage": "run_smoke", **sealed}
    if not problems:
        say(f"Smoke run passed: {record.short() if hasattr(record, 'short') else record.metrics}")
        return Command(goto="review_run", update=update)
    say(f"Smoke run failed: {problems[0]}", style="red")
    if state.get("code_by") == "researcher":
        return manual.smoke_failed(state, update, problems)  # their code: back to them with the digest, no fix loop
    if DATA_MARK in (record.digest or "") or DATA_MARK in (record.error or ""):
        return _data_question(state, "run_smoke", f"The smoke run could not read the data: {problems[0]}", **update)
    failures = add_failure(state, "run_smoke", "smoke_failed", "; ".join(problems)[:2000])
    if state.get("fix_attempts", 0) < MAX_FIX_ATTEMPTS:
        return Command(goto="fix_code", update={**update, "failures": failures})
    question = ask(
        f"the smoke run still fails after {MAX_FIX_ATTEMPTS} fix attempts",
        f"Last problem: {problems[0]}. Look at {record.run_dir} and the code dir; approve to give the LLM "
        f"{MAX_FIX_ATTEMPTS} more attempts (--feedback with a hint helps), reject to stop.",
        "fix_code",
    )
    return Command(goto="ask_researcher", update={**update, "failures": failures, "question": question})


def fix_code(state: State, config: RunnableConfig) -> Command[Literal["run_smoke", "fix_code", "ask_researcher"]]:
    spec = spec_of(state)
    cdir = code_dir(state["id"])
    attempt = state.get("fix_attempts", 0) + 1
    smoke = state.get("smoke") or {}
    problem = "\n".join(smoke.get("problems") or ["(unknown)"])
    if state.get("feedback"):
        problem += f"\nNote: {state['feedback']}"
    variables = {
        "stage": "smoke",
        "spec": spec.model_dump_json(indent=1),
        "paper": _paper_sections(state, spec),
        "attempt": attempt,
        "max_attempts": MAX_FIX_ATTEMPTS,
        "problem": problem,
        "digest": smoke.get("digest") or "(no log)",
        "diff": codedir.diff_since_first(cdir),
        "files": codedir.read_code(cdir),
    }
    base = {"fix_attempts": attempt, "stage": "fix_code"}
    try:
        with progress(f"Fixing the code, attempt {attempt} of {MAX_FIX_ATTEMPTS} (LLM)"):
            change = structured_call(
                chat_model(config),
                "fix_code",
                prompts.FIX_CODE,
                variables,
                CodeChange,
                log_dir=log_dir(state),
                retries=MAX_LLM_RETRIES,
                check=change_check(cdir, spec),
                metadata={"replication": state["id"], "fix_attempt": attempt},
            )
    except LLMOutputError as exc:
        return llm_failed(state, "fix_code", exc, f"{exc}. Approve to retry, reject to stop.", **base)
    if not change.data_available:
        return _data_question(state, "fix_code", change.question or "The LLM reports the data is unavailable.")
    try:
        commit = _apply(state, change, f"fix_code attempt {attempt}: {change.notes[:200]}")
    except codedir.ConfinementError as exc:
        failures = add_failure(state, "fix_code", "confinement", str(exc))
        say(f"refused: {exc}", style="red")
        if attempt < MAX_FIX_ATTEMPTS:
            feedback = f"Your previous fix was refused, nothing was written: {exc}. Use relative paths only."
            return Command(goto="fix_code", update={**base, "failures": failures, "feedback": feedback})
        question = ask("the LLM writes outside its code dir", str(exc), "fix_code")
        return Command(goto="ask_researcher", update={**base, "failures": failures, "question": question})
    say(f"Fix {attempt} committed ({str(commit)[:8]}): {change.notes[:100]}")
    return Command(
        goto="run_smoke",
        update={**base, "code_commit": commit or "", "feedback": "", "llm_usage": usage(state)},
    )


def full_jobs(spec: Spec) -> list[tuple[int, int]]:
    """(config group, seed) pairs of the full run, in the order they run: all seeds of a config, then the next."""
    return [
        (g, seed)
        for g, (_, targets) in enumerate(spec.target_groups())
        for seed in range(max(t.seeds for t in targets))
    ]


def review_payload(state: State) -> dict[str, Any]:
    spec = spec_of(state)
    smoke = state.get("smoke") or {}
    return {
        "review": "run",
        "answers": choices(RunAction),
        "smoke_metrics": smoke.get("metrics"),
        "smoke_run_dir": smoke.get("run_dir"),
        "smoke_duration_s": smoke.get("duration_s"),
        "check": state.get("smoke_check"),
        "full_runs": len(full_jobs(spec)),
        "seeds": spec.seeds,
        "smoke_s_per_step": smoke.get("s_per_step"),
        "eta_minutes": spec.budget.eta_minutes,
        "wall_limit_minutes": spec.budget.wall_limit_minutes,
        "worst_case_minutes": spec.budget.wall_limit_minutes * len(full_jobs(spec)),
        "cost_usd": spec.budget.cost_usd,
        "device": spec.budget.device,
    }


def review_run(state: State, config: RunnableConfig) -> Command[Literal["run_full", "__end__"]]:
    answer = RunAnswer(action="approve") if auto_approve(config) else RunAnswer(**interrupt(review_payload(state)))
    if answer.action == "approve":
        return Command(goto="run_full", update={"stage": "review_run"})
    if answer.action == "stop":
        reason = f"stopped by the researcher at review_run: {answer.feedback or 'no reason given'}"
        return Command(goto="__end__", update={"stopped": reason, "stage": "review_run"})
    save_budget(state, answer.budget)  # "budget"
    return Command(goto="run_full", update={"stage": "review_run", "spec_version": state.get("spec_version", 0) + 1})


def save_budget(state: State, budget: Mapping[BudgetKey, float]) -> None:
    """The spec with the researcher's new seeds and limits from the run review, validated and saved."""
    spec = budgeted_spec(spec_of(state), budget)
    save_spec(spec, Path(state["spec_json"]).parent, title=state.get("title", ""))


def run_full(state: State, config: RunnableConfig) -> Command[Literal["run_full", "compare_results", "ask_researcher"]]:
    spec = spec_of(state)
    done = {(r["group"], r["seed"]) for r in state.get("full_runs", [])}
    jobs = full_jobs(spec)
    pending = [job for job in jobs if job not in done]
    if not pending:
        return Command(goto="compare_results", update={"stage": "run_full"})
    group, seed = pending[0]
    claim_ids = [t.claim_id for t in spec.target_groups()[group][1]]
    record = _run(
        state,
        spec,
        smoke=False,
        group=group,
        seed=seed,
        label=f"Full run {len(done) + 1}/{len(jobs)} (config {group}, seed {seed})",
    )
    if record.status != "completed":
        message = f"full run config {group} seed {seed} {record.status} ({record.exit_reason}): {record.error or ''}"
        question = ask(
            "a full run failed",
            f"{message}. See {record.run_dir}. Approve to run it again, reject to stop.",
            "run_full",
        )
        failures = add_failure(state, "run_full", "run_failed", message)
        return Command(goto="ask_researcher", update={"failures": failures, "question": question})
    summary = _summary(record, group=group, seed=seed, claim_ids=claim_ids)
    say(
        f"Full run {len(done) + 1}/{len(jobs)} done{' (already done, skipped)' if record.skipped else ''}: "
        f"{record.metrics}"
    )
    return Command(goto="run_full", update={"full_runs": [*state.get("full_runs", []), summary]})


def ask_researcher(
    state: State, config: RunnableConfig
) -> Command[Literal["draft_spec", "implement_code", "fix_code", "run_full", "__end__"]]:
    question = state.get("question") or ask("unknown", "(no question recorded)", "implement_code")
    # Asked even under --auto-approve: auto-approve answers reviews, it does not make decisions the agent could not.
    answer = QuestionAnswer(**interrupt({"review": "question", "answers": choices(QuestionAction), **question}))
    if answer.action == "retry":
        return Command(
            goto=question["retry"],
            update={
                "feedback": answer.feedback,
                "question": None,
                "fix_attempts": 0,
                "stage": "ask_researcher",
            },
        )
    reason = f"stopped: {question['reason']} ({answer.feedback or 'researcher chose to stop'})"
    return Command(goto="__end__", update={"stopped": reason, "stage": "ask_researcher"})
