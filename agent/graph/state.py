"""The graph state of one replication, and where its files live.

Small values sit in the state itself (ids, paths, run summaries, verdicts); large ones (the paper, the spec, the code,
run outputs, LLM logs) live on disk and the state holds their paths. Every value is plain JSON (str, int, float,
bool, list, dict), so the SQLite checkpointer stores it without custom serialisers and `replicate status` can print
it. Nodes return the fields they change; lists are replaced whole (no reducers), so a re-run node cannot append twice.

Files of a replication `ID` (under the project dir, so a project folder is self-contained):
  papers/<slug>/              the ingested paper (retrieval.ingest)
  specs/<slug>/spec.{md,json} the spec (the researcher edits spec.md); specs/<slug>--<ID>/ for a second replication
  runs/<ID>/code/             the generated code, a git repository (fixes are commits)
  runs/<ID>/experiments/      mlexp run dirs (the runs_root handed to mlexp.run_script)
  runs/<ID>/llm_logs/         one plain-text file per LLM call + usage.json (tokens, cost)
  runs/<ID>/report/           report.html, report.md
  runs/<ID>/state.json        a copy of the latest graph state, for people and scripts
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict

from agent import paths
from agent.graph.answers import RetryNode
from mlexp import atomic

FailureKind = Literal["llm_output", "confinement", "smoke_failed", "check_failed", "data_unavailable", "run_failed"]


class Failure(TypedDict):
    node: str
    kind: FailureKind
    message: str
    at: str


class Question(TypedDict):
    """What ask_researcher asks; an approve sends the flow back to `retry`."""

    reason: str
    question: str
    retry: RetryNode


class State(TypedDict, total=False):
    id: str
    pdf: str
    paper_json: str
    slug: str
    title: str
    n_claims: int
    related: list[dict[str, Any]]
    warnings: list[str]
    spec_json: str
    spec_md: str
    spec_version: int
    feedback: str  # the researcher's words for the next LLM step (reject feedback, an answer to a question)
    code_dir: str
    code_commit: str
    fix_attempts: int
    failures: list[Failure]
    question: Question | None
    smoke: dict[str, Any] | None
    smoke_check: dict[str, Any] | None
    full_runs: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    hypotheses: list[dict[str, Any]]
    report: dict[str, str]
    llm_usage: dict[str, Any]
    stage: str  # the last node that finished
    # The researcher's part when no model does it (agent.graph.nodes.manual): `--no-llm`, `--spec`, `--code`.
    no_llm: bool
    given_spec: str
    given_code: str
    spec_skeleton: bool  # spec.md is the skeleton to fill in; there is no spec.json yet
    code_by: Literal["llm", "researcher"]
    stopped: str  # why the replication ended early, if it did
    guard_seal: str  # sha256 of runs/<ID>/harness_guard.json, kept here where no run can write


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def failure(node: str, kind: FailureKind, message: str) -> Failure:
    return {"node": node, "kind": kind, "message": message, "at": now()}


def new_id(pdf: Path) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", pdf.stem.lower()).strip("-")[:40] or "paper"
    return f"{stem}-{secrets.token_hex(3)}"


def replication_dir(rid: str) -> Path:
    return paths.runs_dir() / rid


def code_dir(rid: str) -> Path:
    return replication_dir(rid) / "code"


def experiments_dir(rid: str) -> Path:
    return replication_dir(rid) / "experiments"


def llm_log_dir(rid: str) -> Path:
    return replication_dir(rid) / "llm_logs"


def report_dir(rid: str) -> Path:
    return replication_dir(rid) / "report"


def spec_dir(slug: str, rid: str) -> Path:
    """specs/<slug>/, owned by the first replication of that paper; a second one gets specs/<slug>--<ID>/ so it
    never overwrites a spec another replication is waiting on."""
    folder = paths.specs_dir() / slug
    owner = folder / ".replication"
    if owner.exists() and owner.read_text(encoding="utf-8").strip() != rid:
        folder = paths.specs_dir() / f"{slug}--{rid}"
        owner = folder / ".replication"
    folder.mkdir(parents=True, exist_ok=True)
    if not owner.exists():
        owner.write_text(rid + "\n", encoding="utf-8")
    return folder


def save_snapshot(rid: str, values: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write runs/<ID>/state.json (atomically) so the state can be read without the checkpointer."""
    return atomic.write_json(replication_dir(rid) / "state.json", {**values, **(extra or {})})
