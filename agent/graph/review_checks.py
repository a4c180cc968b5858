"""Checks of a review answer that need the replication's files, run by the CLI before the graph is resumed.

A resume value is written into the checkpoint as soon as the graph is resumed with it; if the node then fails on it,
every later `approve`/`reject` replays the same stored answer and fails the same way (the review is wedged). So an
answer is checked here first, with the same models the node applies, and a bad one is one line (ReviewError) that
leaves the review exactly as it was, still answerable. The node calls the same functions, so both agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from agent.errors import ReviewError
from agent.graph.answers import BudgetKey
from agent.spec import Spec


def budgeted_spec(spec: Spec, budget: Mapping[BudgetKey, float]) -> Spec:
    """`spec` with the run review's new seeds and limits, validated; ReviewError names the value that is refused."""
    limits = dict(budget)
    for key, value in limits.items():
        if not math.isfinite(value):
            raise ReviewError(f"--budget {key}={value}: not a finite number")
    seeds = limits.pop("seeds", None)
    data = spec.model_dump()
    if seeds is not None:
        if seeds != int(seeds):
            raise ReviewError(f"--budget seeds={_number(seeds)}: seeds is a whole number")
        for target in data["targets"]:
            target["seeds"] = int(seeds)
    data["budget"] = {**data["budget"], **{key: float(value) for key, value in limits.items()}}
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        refused = "; ".join(_problem(err, budget) for err in exc.errors()[:3])
        raise ReviewError(f"--budget refused: {refused}; the run review still waits for an answer") from exc


def _problem(err: ErrorDetails, budget: Mapping[BudgetKey, float]) -> str:
    loc = [str(part) for part in err["loc"]]
    key = "seeds" if "seeds" in loc else (loc[-1] if loc else "budget")
    given = dict(budget).get(key)  # type: ignore[call-overload]  # a str key of a BudgetKey mapping
    shown = f"{key}={_number(given)}" if given is not None else key
    return f"{shown}: {err['msg'].lower()}"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)  # 1000000, not 1e+06
