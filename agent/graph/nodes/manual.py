"""The steps a researcher does when no model does them: the spec (a skeleton to fill in, or their own spec file) and
the code (their own folder), plus the review that waits for that code.

A step is the researcher's when no model serves this invocation: the replication was started with `--no-llm`, or
no LLM is configured at all (no `--llm`, no REPLICATE_LLM, no served endpoint); an explicit `--llm` on a later command
hands the next model step back to a model. Code the researcher gave (`--code DIR` at the start, or
`replicate approve ID --code DIR`, or files put into runs/<ID>/code/ directly) is committed to the replication's code
repository and stays theirs: a failing smoke run comes back to them at the code review (`await_code`, which shows the
run's digest), never to a model's fix loop. Everything after the code — smoke run, post-run check, run review, full
runs per seed, comparison, checklist, report — is the same graph as with a model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, interrupt

from agent import codedir
from agent.codedir import ENTRY
from agent.graph import skeleton
from agent.graph.answers import CodeAction, CodeAnswer, choices
from agent.graph.edited_spec import reread_edited_spec
from agent.graph.nodes.common import add_failure, add_warning, code_ready, say
from agent.graph.settings import settings_of
from agent.graph.state import State, code_dir, spec_dir
from agent.spec import Spec, SpecError, save_spec
from retrieval.models import Paper

# Not copied from a researcher's code folder: version control, caches, and what runs leave behind.
IGNORED_NAMES = {".git", "__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
IGNORED_SUFFIXES = {".pyc", ".pyo"}
CONTRACT_DOC = "docs/mlexp.md"  # the run contract a researcher's script follows
NO_MODEL_NOTE = (
    "No LLM configured (--llm, REPLICATE_LLM or `replicate llm serve`), so the spec and the code are yours; pass "
    "--no-llm to say so, or --llm to have a model draft"
)
SKELETON_TODO = (
    "spec.md is a skeleton: fill in its TODO marks (targets by claim id from the ledger at its end, data, method, "
    "hyperparameters, config, budget), then `replicate approve ID --edit`"
)


def no_model(state: State, config: RunnableConfig | None) -> bool:
    """Whether this step is the researcher's: no `--llm` on this command, and `--no-llm` at the start or no LLM
    configured at all."""
    from agent.llm.seam import configured_spec

    if settings_of(config)["llm"]:
        return False
    return bool(state.get("no_llm")) or configured_spec() is None


def entry() -> str:
    return ENTRY


# --------------------------------------------------------------------------- the spec


def researcher_spec(path: Path, paper: Paper) -> Spec:
    """The researcher's spec file (spec.md or spec.json), validated exactly as an edited draft is, for this paper,
    with its data found on this machine. Raises SpecError (DataNotFoundError when the data is missing)."""
    return reread_edited_spec(path, paper)


def draft_without_model(state: State, paper: Paper) -> Command[Any]:  # Any: the caller's routes include these
    """draft_spec's researcher branch: their spec file (`--spec`), else the skeleton for them to fill in."""
    folder = spec_dir(paper.slug, state["id"])
    base = {"feedback": "", "stage": "draft_spec", "spec_version": state.get("spec_version", 0) + 1}
    if state.get("given_spec"):
        try:
            spec = researcher_spec(Path(state["given_spec"]), paper)
        except SpecError as exc:  # checkpointed before this node: the researcher fixes the file and resumes
            raise SpecError(f"{state['id']}: {exc}; fix it, then `replicate resume {state['id']}`") from exc
        json_path, md_path = save_spec(spec, folder, title=paper.title)
        say(f"Spec from {state['given_spec']}: {md_path}")
        update = {**base, "spec_json": str(json_path), "spec_md": str(md_path), "spec_skeleton": False}
        return Command(goto="review_spec", update=update)
    md_path = folder / "spec.md"
    if state.get("spec_skeleton") and md_path.exists():
        say(f"Spec skeleton kept as you left it: {md_path}")  # a reject without a model redrafts nothing
    else:
        md_path = skeleton.write_skeleton(paper, folder)
        say(f"Spec skeleton: {md_path} ({len(paper.claims)} ledger claims listed in it)")
    if not state.get("no_llm"):
        say(NO_MODEL_NOTE, style="yellow")
    update = {**base, "spec_json": str(folder / "spec.json"), "spec_md": str(md_path), "spec_skeleton": True}
    return Command(goto="review_spec", update=update)


def skeleton_payload(state: State) -> dict[str, Any]:
    """The spec review's payload while spec.md is a skeleton (there is no spec.json yet)."""
    from agent.graph.answers import SpecAction

    return {
        "review": "spec",
        "answers": choices(SpecAction),
        "skeleton": True,
        "spec_md": state["spec_md"],
        "targets": [],
        "open_questions": [SKELETON_TODO.replace("ID", state["id"])],
        "eta_minutes": None,
    }


# --------------------------------------------------------------------------- the code


def code_problem(source: Path) -> str | None:
    """Why `source` cannot be taken as the experiment code, or None."""
    if not source.is_dir():
        return f"{source} is not a folder"
    if not (source / entry()).is_file():
        return f"{source} has no {entry()}: the harness runs `python {entry()}` (the run contract: {CONTRACT_DOC})"
    return None


def nesting_problem(source: Path, cdir: Path) -> str | None:
    """Why `source` cannot be copied into the code dir `cdir`: one inside the other (copying would delete the source,
    or copy the replication's own runs into its code), or None."""
    source, cdir = source.resolve(), cdir.resolve()
    if source != cdir and cdir in source.parents:
        return f"{source} is inside the code dir {cdir}: give the code dir itself, or a folder outside it"
    if source != cdir and source in cdir.parents:
        return f"{source} holds the replication's own code dir {cdir}: give the folder with just your code"
    return None


def _copy_tree(source: Path, target: Path) -> list[str]:
    """Make `target` (a git work tree) hold exactly the files of `source`; returns the relative paths copied."""
    for old in target.iterdir():
        if old.name in (".git", ".gitignore"):
            continue
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    copied = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if set(relative.parts) & IGNORED_NAMES or path.suffix in IGNORED_SUFFIXES or not path.is_file():
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / relative)
        copied.append(str(relative))
    return copied


def take_code(state: State, source: Path) -> Command[Any]:  # Any: Command is invariant; callers route to both
    """Commit the researcher's code (from `source`, or as they left it in runs/<ID>/code/) and go to the smoke run."""
    cdir = code_dir(state["id"])
    codedir.ensure_repo(cdir)
    problem = code_problem(source) or nesting_problem(source, cdir)
    if problem:  # the CLI checks first; this is a folder that changed in between
        return Command(goto="await_code", update={"warnings": add_warning(state, f"code not taken: {problem}")})
    if source.resolve() != cdir.resolve():
        _copy_tree(source, cdir)
    where = "runs/<ID>/code/" if source.resolve() == cdir.resolve() else str(source)
    commit = codedir.commit_all(cdir, f"the researcher's code, from {where}") or codedir.head(cdir)
    say(f"Your code is in {cdir} (commit {str(commit)[:8]})")
    return code_ready(cdir, commit, code_by="researcher")


def code_step(state: State) -> Command[Any]:  # Any: implement_code routes to run_smoke and await_code
    """implement_code's researcher branch: the code given at the start, else wait for it."""
    if state.get("given_code"):
        return take_code(state, Path(state["given_code"]))
    say(f"The code is yours: put it in {code_dir(state['id'])} (entry {entry()}) or use --code DIR", style="yellow")
    return Command(goto="await_code", update={"stage": "implement_code"})


def smoke_failed(state: State, update: dict[str, Any], problems: list[str]) -> Command[Any]:  # Any: invariant
    """run_smoke's branch for the researcher's code: record the failure and wait for their fix (no model loop)."""
    failures = add_failure(state, "run_smoke", "smoke_failed", "; ".join(problems)[:2000])
    say("The code is yours to fix; the digest is in `replicate status " + state["id"] + "`", style="red")
    return Command(goto="await_code", update={**update, "failures": failures})


def code_payload(state: State) -> dict[str, Any]:
    smoke = state.get("smoke") or {}
    failed = bool(smoke) and bool(smoke.get("problems"))
    return {
        "review": "code",
        "answers": choices(CodeAction),
        "code_dir": str(code_dir(state["id"])),
        "entry": entry(),
        "contract": CONTRACT_DOC,
        "smoke_problems": list(smoke.get("problems") or []) if failed else [],
        "smoke_digest": (smoke.get("digest") or "")[-3000:] if failed else "",
        "smoke_run_dir": smoke.get("run_dir") if failed else None,
    }


def await_code(state: State, config: RunnableConfig) -> Command[Literal["run_smoke", "await_code", "__end__"]]:
    """Wait for the researcher's code (first time, or a fix after a failed smoke run). Never auto-approved."""
    answer = CodeAnswer(**interrupt(code_payload(state)))
    if answer.action == "stop":
        reason = f"stopped by the researcher at the code review: {answer.feedback or 'no reason given'}"
        return Command(goto="__end__", update={"stopped": reason, "stage": "await_code"})
    return take_code(state, Path(answer.code) if answer.code else code_dir(state["id"]))


# --------------------------------------------------------------------------- status


def human_step(rid: str, waiting: dict[str, Any] | None) -> str | None:
    """What only the researcher can do at this pause (`--auto-approve` does not do it), or None."""
    if not waiting:
        return None
    review = waiting.get("review")
    if review == "spec" and waiting.get("skeleton"):
        return SKELETON_TODO.replace("ID", rid)
    if review == "spec" and not waiting.get("targets"):
        return f"the spec has no targets: add them to {waiting.get('spec_md')}, then `replicate approve {rid} --edit`"
    if review == "code":
        fix = "fix your code" if waiting.get("smoke_problems") else "give your code"
        return (
            f"{fix}: `replicate approve {rid} --code DIR`, or edit it in {waiting.get('code_dir')} and "
            f"`replicate approve {rid}` (entry {waiting.get('entry')}, run contract in {waiting.get('contract')})"
        )
    if review == "question":
        return f"answer the question: `replicate approve {rid}` (retry) or `replicate reject {rid}` (stop)"
    return None
