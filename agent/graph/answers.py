"""What a paused replication asks, and the closed set of answers each review accepts.

A review node calls `interrupt(payload)` once; the CLI (agent.cli.flow) resumes it with one of these answers as a
plain dict (the checkpointer stores JSON), and the node validates it back into its model. An answer outside the set
is a bug of ours (the CLI only sends these) and raises.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

Review = Literal["spec", "run", "hypotheses", "question", "code"]
SpecAction = Literal["approve", "edit", "reject"]
RunAction = Literal["approve", "budget", "stop"]
HypothesesAction = Literal["approve", "reject"]
QuestionAction = Literal["retry", "stop"]
CodeAction = Literal["approve", "stop"]  # the researcher's code (agent.graph.nodes.manual.await_code)
BudgetKey = Literal["seeds", "eta_minutes", "wall_limit_minutes", "cost_usd"]
BUDGET_KEYS: tuple[BudgetKey, ...] = get_args(BudgetKey)
# The nodes an approved question sends the flow back to (ask_researcher's retry targets).
RetryNode = Literal["draft_spec", "implement_code", "fix_code", "run_full"]


class SpecAnswer(BaseModel):
    action: SpecAction
    feedback: str = ""  # reject: what the LLM should change


class RunAnswer(BaseModel):
    action: RunAction
    budget: dict[BudgetKey, float] = Field(default_factory=dict)  # action "budget": the new limits
    feedback: str = ""  # stop: why


class HypothesesAnswer(BaseModel):
    action: HypothesesAction
    feedback: str = ""  # reject: what the LLM should reconsider


class CodeAnswer(BaseModel):
    action: CodeAction
    code: str = ""  # approve: the folder to take the code from (absolute); empty: as left in runs/<ID>/code/
    feedback: str = ""  # stop: why


class QuestionAnswer(BaseModel):
    action: QuestionAction
    feedback: str = ""  # retry: a hint for the retried node; stop: why


def choices(action: Any) -> list[str]:
    """The answers of one review, in order, for its interrupt payload (`answers`)."""
    return list(get_args(action))


def wire(answer: BaseModel) -> dict[str, object]:
    """An answer as the resume value: plain JSON, defaults left out."""
    return answer.model_dump(exclude_defaults=True)
