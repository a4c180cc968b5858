"""The replication graph: wiring of the nodes, the SQLite checkpointer, and the few operations the CLI needs.

    ingest_paper -> find_related -> draft_spec -> review_spec (pause) -> implement_code -> run_smoke
      -> [fix_code -> run_smoke]* -> review_run (pause) -> run_full* -> compare_results -> propose_hypotheses
      -> review_hypotheses (pause) -> write_report
    any LLM-caused dead end -> ask_researcher (pause) -> retry or stop
    without a model (--no-llm, or none configured; agent.graph.nodes.manual): draft_spec writes a skeleton (or takes
      --spec), implement_code takes the researcher's code or waits at await_code (pause), where a failed smoke run
      also comes back to them

Routing lives in the nodes' `Command(goto=...)`, declared in their return annotations; the graph only registers the
nodes. One replication is one LangGraph thread (thread_id = replication id), checkpointed after every step with
durability "sync" so a SIGKILL loses at most the step that was running. Every call opens the database, runs, and
closes it: a replication can wait at a checkpoint for days and continue in any later process.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command

from agent import paths
from agent.errors import ReplicationNotFoundError
from agent.graph import checkpoints
from agent.graph.nodes.code import ask_researcher, fix_code, implement_code, review_run, run_full, run_smoke
from agent.graph.nodes.manual import await_code
from agent.graph.nodes.results import compare_results, propose_hypotheses, review_hypotheses, write_report
from agent.graph.nodes.spec import draft_spec, find_related, ingest_paper, review_spec
from agent.graph.settings import run_config
from agent.graph.state import State, save_snapshot

__all__ = ["Command", "open_graph", "invoke", "snapshot_of", "waiting_for", "list_replications", "run_config"]

NODES = [
    ingest_paper,
    find_related,
    draft_spec,
    review_spec,
    implement_code,
    await_code,
    run_smoke,
    fix_code,
    review_run,
    run_full,
    compare_results,
    propose_hypotheses,
    review_hypotheses,
    write_report,
    ask_researcher,
]


def build_graph() -> StateGraph:
    graph = StateGraph(State)
    for node in NODES:
        graph.add_node(node.__name__, node)
    graph.add_edge(START, "ingest_paper")
    return graph


@contextmanager
def open_graph() -> Iterator[Any]:
    """The compiled graph with its SQLite checkpointer; the connection closes when the block ends."""
    with checkpoints.connect() as conn:  # an empty, damaged, locked or read-only database is one line
        saver = SqliteSaver(conn)
        saver.setup()
        yield build_graph().compile(checkpointer=saver)


def invoke(graph: Any, rid: str, payload: Any, *, llm: str | None = None, auto_approve: bool = False) -> None:
    """Run until the next pause or the end. `payload` is the initial state, a `Command(resume=...)`, or None."""
    config = run_config(rid, llm=llm, auto_approve=auto_approve)
    try:
        graph.invoke(payload, config, durability="sync")
    finally:
        snapshot = graph.get_state(config)
        if snapshot.values:
            save_snapshot(rid, dict(snapshot.values), {"next": list(snapshot.next), "waiting": waiting_for(snapshot)})


def snapshot_of(graph: Any, rid: str) -> Any:
    snapshot = graph.get_state(run_config(rid))
    if not snapshot.values and not snapshot.next:
        raise ReplicationNotFoundError(f"no replication {rid!r} (see `replicate status` for the list)")
    return snapshot


def waiting_for(snapshot: Any) -> dict[str, Any] | None:
    """The interrupt payload the replication waits on (review, answers, ...), or None."""
    for task in snapshot.tasks:
        for pending in task.interrupts:
            return dict(pending.value)
    return None


def list_replications() -> list[str]:
    """Every replication id in the checkpointer database, oldest first."""
    db = paths.checkpoint_db()
    if not db.exists():
        return []
    with checkpoints.connect() as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='checkpoints'").fetchone():
            return []  # created, never written to
        try:
            rows = conn.execute(
                "SELECT thread_id, MIN(rowid) FROM checkpoints GROUP BY thread_id ORDER BY MIN(rowid)"
            ).fetchall()
        except sqlite3.DatabaseError as exc:  # a damaged page: named by checkpoints, not an empty list
            raise (checkpoints.explain(exc, db) or exc) from exc
    return [row[0] for row in rows]
