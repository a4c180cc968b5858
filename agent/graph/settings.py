"""The per-invocation configuration of the graph: which LLM, whether reviews are approved unattended.

It travels in LangGraph's `config["configurable"]`, not in the state, so a researcher can resume a replication with
another model, and `--auto-approve` applies to one command, not to the replication forever.
"""

from __future__ import annotations

from typing import TypedDict

from langchain_core.runnables import RunnableConfig

RECURSION_LIMIT = 500  # run_full loops once per (config, seed); fix loops are bounded by the nodes


class Settings(TypedDict):
    thread_id: str  # the replication id: one replication is one LangGraph thread
    llm: str | None  # --llm, else REPLICATE_LLM or the served endpoint (agent.llm.seam.configured_spec)
    auto_approve: bool  # approve every review unattended; questions still stop


def run_config(rid: str, *, llm: str | None = None, auto_approve: bool = False) -> RunnableConfig:
    settings: Settings = {"thread_id": rid, "llm": llm, "auto_approve": auto_approve}
    return {"configurable": dict(settings), "recursion_limit": RECURSION_LIMIT}


def settings_of(config: RunnableConfig | None) -> Settings:
    given = dict((config or {}).get("configurable") or {})
    return {
        "thread_id": str(given.get("thread_id", "")),
        "llm": given.get("llm"),
        "auto_approve": bool(given.get("auto_approve")),
    }
