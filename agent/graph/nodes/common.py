"""What every node shares: the model for this invocation, progress display, and loading the paper and spec.

The nodes themselves live in spec.py (ingest_paper .. review_spec), code.py (implement_code .. run_full,
ask_researcher) and results.py (compare_results .. write_report). Conventions (docs/architecture.md):
- a node is a `verb_noun(state, config) -> Command[Literal[...]]` function: its routes are in its signature;
- a review node calls `interrupt()` once, with a closed set of answers, and does nothing with side effects before
  that call (the node re-runs from the top when resumed);
- a failure the LLM caused (malformed output after retries, code that crashes, code writing outside its dir) is
  recorded in state and routed to a retry or to `ask_researcher`; a bug of ours propagates.
Per-invocation settings (the LLM, auto-approve) come from `config["configurable"]` (agent.graph.settings), not from
state, so a researcher can resume with another model.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from rich.console import Console
from rich.markup import escape

from agent.graph.answers import RetryNode
from agent.graph.settings import settings_of
from agent.graph.state import Failure, FailureKind, Question, State, failure, llm_log_dir
from agent.llm.seam import load_chat_model, usage_summary
from agent.spec import Spec, load_spec
from retrieval.models import Paper

console = Console(stderr=True, highlight=False)

MAX_FIX_ATTEMPTS = 3  # fix_code rounds after a failed smoke run before the agent stops and asks
MAX_LLM_RETRIES = 2  # re-asks inside one structured_call (error shown to the model)
MAX_NODE_RETRIES = 1  # re-runs of implement_code after a confinement violation before asking


def auto_approve(config: RunnableConfig | None) -> bool:
    return settings_of(config)["auto_approve"]


def chat_model(config: RunnableConfig | None) -> BaseChatModel:
    """The model for this invocation: `--llm` (carried in the config) or REPLICATE_LLM or the served endpoint."""
    return load_chat_model(settings_of(config)["llm"])


def log_dir(state: State) -> Path:
    return llm_log_dir(state["id"])


def usage(state: State) -> dict[str, Any]:
    summary = usage_summary(log_dir(state))
    return {key: summary.get(key) for key in ("calls", "input_tokens", "output_tokens", "cost_usd")}


def load_paper(state: State) -> Paper:
    from agent.researcher_claims import with_researcher_claims
    from retrieval.ingest import load_paper as load_paper_json

    path = Path(state["paper_json"])
    return with_researcher_claims(load_paper_json(path), path.parent)  # the ledger plus `replicate claims add`


def spec_of(state: State) -> Spec:
    return load_spec(Path(state["spec_json"]))


def add_failure(state: State, node: str, kind: FailureKind, message: str) -> list[Failure]:
    return [*state.get("failures", []), failure(node, kind, message)]


def add_warning(state: State, message: str) -> list[str]:
    return [*state.get("warnings", []), message]


def ask(reason: str, question: str, retry: RetryNode) -> Question:
    """The question ask_researcher puts to the researcher; `retry` is the node an approve sends the flow back to."""
    return {"reason": reason, "question": question, "retry": retry}


def llm_failed(
    state: State, node: RetryNode, exc: Exception, message: str, **update: Any
) -> Command[Any]:  # Any: Command is invariant, and every caller's route set includes "ask_researcher"
    """An LLM reply that stayed invalid after its retries: record it and ask the researcher (approve retries `node`)."""
    question = ask(f"{node} failed", message, node)
    failures = add_failure(state, node, "llm_output", str(exc))
    return Command(goto="ask_researcher", update={**update, "failures": failures, "question": question})


@contextmanager
def progress(message: str) -> Iterator[Any]:
    """A rich spinner on a terminal; one plain line otherwise (logs, tests). Yields a function to update the text."""
    from agent.llm.endpoint import progress_sink

    if console.is_terminal and not os.environ.get("REPLICATE_PLAIN"):
        with console.status(escape(message)) as status:

            def update(text: str) -> None:
                status.update(f"{escape(message)} [dim]{escape(text[:100])}[/dim]")

            token = progress_sink.set(update)  # a streamed LLM call shows its tokens and seconds here
            try:
                yield update
            finally:
                progress_sink.reset(token)
    else:
        print(f"... {message}", file=sys.stderr, flush=True)
        yield lambda text: None


def say(message: str, *, style: str | None = None) -> None:
    """Print a line for the researcher. No rich markup: messages carry log text, paths and errors verbatim."""
    console.print(message, style=style, markup=False)


def code_ready(cdir: Path, commit: str | None, **extra: Any) -> Command[Any]:  # Any: callers route to run_smoke
    """implement_code's way on once the code dir holds committed code (the model's or the researcher's): the smoke
    run, with the fix counter and the feedback reset."""
    update: dict[str, Any] = {
        "code_dir": str(cdir),
        "code_commit": commit or "",
        "fix_attempts": 0,
        "feedback": "",
        "stage": "implement_code",
        **extra,
    }
    return Command(goto="run_smoke", update=update)
