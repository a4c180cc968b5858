"""A replication whose last checkpoint was cut short, and how `replicate resume` goes on from it.

Every way the graph really ends sets `report` (write_report) or `stopped` (a researcher's stop); a checkpoint with
nothing left to run and neither of them was cut short, typically by a full disk while it was being written (the
step's values were stored, the route to the next node was not). It used to read as "finished" and `resume` did
nothing. Such a replication is reported as incomplete, and resume runs its last recorded step again: nodes are written
to be re-run (a kill loses at most the step that was running), and the step routes on to the next node itself.
"""

from __future__ import annotations

from typing import Any

from langgraph.types import Command

from agent.graph.settings import run_config

FIRST_NODE = "ingest_paper"


def cut_short(snapshot: Any) -> bool:
    """True for a checkpoint that has nothing left to run yet never reached an end (no report, not stopped)."""
    values = dict(snapshot.values or {})
    return bool(values) and not snapshot.next and not values.get("report") and not values.get("stopped")


def redo_step(snapshot: Any) -> str:
    """The node resume runs again: the last one that finished (the first node when none did)."""
    return str(dict(snapshot.values).get("stage") or FIRST_NODE)


def rearm(graph: Any, rid: str) -> str:
    """Route a cut-short replication back into its last step, so the next invoke runs it; returns that node."""
    config = run_config(rid)
    node = redo_step(graph.get_state(config))
    graph.update_state(config, Command(goto=node), as_node=node)
    return node
