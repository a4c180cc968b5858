"""What a hypothesis is: a statement about why a number differs, its evidence, citations and a concrete ablation.

Both sources of hypotheses (the deterministic checklist and the LLM, agent.hypotheses.literature) produce these, and
the report, the graph state (as JSON) and `ablations` read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

Priority = Literal["high", "medium", "low"]
Direction = Literal["increase", "decrease", "no change", "unknown"]
Category = Literal["silent_failure", "setup_mismatch", "seeds", "metric_definition", "diagnostics", "literature"]
# "search result": an index passage shown without a model (agent.hypotheses.related); it supports nothing.
Support = Literal["backed", "unsupported", "no literature", "search result"]
PRIORITY_ORDER = {"high": 0, "medium": 1, "low": 2}


class Citation(BaseModel):
    paper_id: str
    quote: str
    title: str | None = None
    verified: bool = False
    note: str = ""  # the verification outcome: why a citation was rejected


class Ablation(BaseModel):
    """A concrete change to the run config, and what it should do to the claim's metric."""

    change: dict[str, Any] = Field(default_factory=dict)  # config key (dotted for nested) -> new value
    expected_direction: Direction = "unknown"  # effect on the metric's value, not on "goodness"
    metric: str | None = None
    seeds: int | None = None  # run the changed (or unchanged) config with this many seeds
    description: str = ""


class Hypothesis(BaseModel):
    id: str
    statement: str
    category: Category
    source: Literal["checklist", "llm", "search"] = "checklist"  # search: an index passage, not a hypothesis
    claim_ids: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)  # from this run: setup diff, diagnostics, curves
    citations: list[Citation] = Field(default_factory=list)  # verified only
    rejected_citations: list[Citation] = Field(default_factory=list)  # failed verification, with the reason
    support: Support = "no literature"
    ablation: Ablation | None = None
    priority: Priority = "medium"
    approved: bool = False

    @property
    def backed(self) -> bool:
        return self.support == "backed"


def sort_hypotheses(hypotheses: Sequence[Hypothesis]) -> list[Hypothesis]:
    """High priority first; within a priority, checklist findings (facts about this run) before LLM ideas."""
    return sorted(hypotheses, key=lambda h: (PRIORITY_ORDER[h.priority], h.source != "checklist"))
