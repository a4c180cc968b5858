"""The command-line side of the researcher's own steps (agent.graph.nodes.manual): `--no-llm`, `--spec FILE` and
`--code DIR` at the start, `replicate approve ID --code DIR` at the code review, and how those pauses print.

Every input is checked here before a replication is created or resumed, so a wrong one is one line on stderr and
leaves nothing behind: the spec file must parse and its data must be on this machine (DataNotFoundError says where
to put it), the code folder must hold the entry script the harness runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from agent import paths
from agent.errors import AgentError, ReviewError

NO_LLM_OPTION = typer.Option(
    False, "--no-llm", help="No model: you fill in the spec skeleton and give the code; the tool does the rest."
)
SPEC_OPTION = typer.Option(None, "--spec", help="Your spec (spec.md or spec.json) instead of a draft.")
CODE_OPTION = typer.Option(None, "--code", help="Your code folder (entry train.py, the mlexp run contract).")


def start_inputs(
    *, no_llm: bool, llm: str | None, spec: Path | None, code: Path | None
) -> dict[str, Any]:  # the initial state's researcher fields
    """The researcher's part of the initial state, checked: `--spec` parses and its data is here, `--code` holds
    the entry script. Raises an AgentError (one line) before anything is created."""
    from agent.datafind import with_local_data
    from agent.graph.nodes.manual import code_problem
    from agent.spec import load_spec

    if no_llm and llm:
        raise AgentError("--no-llm and --llm contradict each other: give one")
    fields: dict[str, Any] = {"no_llm": no_llm}
    if spec is not None:
        if not spec.is_file():
            raise AgentError(f"--spec {spec}: no such file")
        with_local_data(load_spec(spec))  # types and data now; the ledger check runs once the paper is read
        fields["given_spec"] = str(spec.resolve())
    if code is not None:
        runs = paths.runs_dir().resolve()
        problem = code_problem(code)
        if problem is None and (runs == code.resolve() or code.resolve() in runs.parents):
            problem = f"{code} holds the project's runs/ folder: give the folder with just your code"
        if problem:
            raise AgentError(f"--code: {problem}")
        fields["given_code"] = str(code.resolve())
    return fields


def code_answer(rid: str, waiting: dict[str, Any], code: Path | None) -> dict[str, Any]:
    """The resume value for the code review, checked: the folder given, or the code left in runs/<ID>/code/."""
    from agent.graph.nodes.manual import code_problem, nesting_problem

    source = code if code is not None else Path(waiting["code_dir"])
    problem = code_problem(source) or nesting_problem(source, Path(waiting["code_dir"]))
    if problem:
        where = "--code" if code is not None else f"no --code given and {waiting['code_dir']}"
        raise ReviewError(f"{where}: {problem}; the code review of {rid} still waits")
    return {"action": "approve", "code": str(source.resolve())} if code is not None else {"action": "approve"}


def print_code_review(out: Console, rid: str, waiting: dict[str, Any]) -> None:
    if waiting.get("smoke_problems"):
        out.print(f"  the smoke run of your code failed ({waiting.get('smoke_run_dir')}):")
        for problem in waiting["smoke_problems"]:
            out.print(f"    {problem}")
        out.print("  digest (the end of the run's log):")
        for line in (waiting.get("smoke_digest") or "(empty)").splitlines()[-40:]:
            out.print(f"    | {line}")
    out.print(f"  code dir: {waiting.get('code_dir')} (entry {waiting.get('entry')})")
    out.print(f"  next: replicate approve {rid} [--code DIR] | replicate reject {rid} (stop)")


def verdict_lines(values: dict[str, Any]) -> list[str]:
    """One line per verdict, for the end of a run: claim, verdict, measured (mean ± std over n seeds) vs reported."""
    lines = []
    for v in values.get("verdicts") or []:
        mean, std = v.get("measured_mean"), v.get("measured_std")
        measured = "n/a" if mean is None else f"{mean:.4g}" + (f" ± {std:.2g}" if std is not None else "")
        lines.append(
            f"  verdict {v['claim_id']}: {v['verdict']}, measured {measured} (n={v.get('n')}) vs reported "
            f"{v.get('reported')}: {v.get('reason', '')}"
        )
    return lines
