"""The replication's tamper guard: the harness, the data and the ledger hashed before its first run.

Verdicts rest on files a run must not change: the harness source (`mlexp`: runner, metric parsing, comparison), the
data the spec names, and the claims the verdicts compare against (the paper's ledger, plus claims the researcher
added). `mlexp.guard.record_guard` hashes them into runs/<ID>/harness_guard.json before the smoke run, so an edit made
during the smoke run is caught too; the seal it returns (the guard file's own sha256) is kept in the graph state,
which lives in the checkpointer under REPLICATE_HOME where no sandboxed run can write. compare_results re-hashes
them with `verify_guard` and turns every change into a warning in the state and the report.
"""

from __future__ import annotations

from pathlib import Path

from agent.graph.state import State, replication_dir
from agent.spec import Spec
from mlexp.guard import hash_file, record_guard, verify_guard

GUARD_FILE = "harness_guard.json"
RESEARCHER_CLAIMS = "researcher_claims.json"


def guard_path(state: State) -> Path:
    return replication_dir(state["id"]) / GUARD_FILE


def _data_paths(spec: Spec) -> list[str]:
    """The folders the runs read: spec.data.location and the full-run config's data_dir, where they exist."""
    found: list[str] = []
    for value in (spec.data.location, spec.run_config(smoke=False).get("data_dir")):
        if isinstance(value, str) and value and Path(value).exists() and value not in found:
            found.append(value)
    return found


def _evaluation_paths(state: State) -> list[str]:
    """The ledger the verdicts compare against: paper.json and, where present, the researcher's added claims."""
    if not state.get("paper_json"):  # a state built by hand (tests, tools) may name no paper: nothing to hash
        return []
    paper_json = Path(state["paper_json"])
    paths = [paper_json]
    extra = paper_json.parent / RESEARCHER_CLAIMS
    if extra.exists():
        paths.append(extra)
    return [str(p) for p in paths if p.exists()]


def seal_before_first_run(state: State, spec: Spec) -> dict[str, str]:
    """Record the guard before the replication's first run; the state update that keeps its seal.

    Later runs (a smoke run after a fix, the full runs) find the guard recorded and change nothing. A run killed
    after the guard was written but before the node returned leaves no seal in the state: the guard file's own
    hash is taken then, which still catches every later change (the file is read-only to every sandboxed run).
    """
    if state.get("guard_seal"):
        return {}
    path = guard_path(state)
    if path.exists():
        return {"guard_seal": hash_file(path)}
    seal = record_guard(path, data_paths=_data_paths(spec), evaluation_paths=_evaluation_paths(state))
    return {"guard_seal": seal}


def guard_problems(state: State) -> list[str]:
    """Every change since the guard was recorded; [] when none, or when no run ever started (no guard)."""
    path = guard_path(state)
    if not path.exists() and not state.get("guard_seal"):
        return []
    return verify_guard(path, seal=state.get("guard_seal"))
