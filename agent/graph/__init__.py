"""The replication graph: one LangGraph state machine per paper, checkpointed in SQLite.

`flow` wires the nodes and holds the operations the CLI needs (open, invoke, snapshot, list); `state` is the graph
state and where a replication's files live; `settings` is the per-invocation configuration (which LLM, auto-approve);
`answers` is the closed set of answers each review accepts; `nodes/` holds the nodes, grouped by the stretch of the
flow they cover (spec, code, results). Conventions: docs/architecture.md.
"""
