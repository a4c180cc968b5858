"""The deterministic hypothesis checklist: runs after every comparison, with or without an LLM.

It looks for the reasons a replication most often misses a number without any error being raised:
- setup mismatches: what the paper states (setup items, the `key=value` parameters printed in a claim's table row),
  what the approved spec says, and what the run's resolved config actually used (epochs, iterations, batch size,
  learning rate, optimiser, preprocessing, split, ...);
- silent failures (practices §13): device_map="auto", padding to a huge max_length, pad_token = eos_token, gradient
  accumulation changing the effective batch size, silent truncation, and optimisers stopping before convergence;
- run diagnostics: failed runs, post-run check problems, training curves still improving at the end, NaN losses,
  and results significantly better than the paper (§10: look for a leak before trusting them);
- too few seeds for the gap; metric-definition mismatches (percent vs fraction, error vs accuracy, direction, split).
Each finding is a `Hypothesis` with evidence from this run and, where one exists, a concrete config change.
One module per concern: setup_checks, run_checks (silent failures, diagnostics), seed_checks, metric_checks;
this one runs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agent.hypotheses.metric_checks import metric_checks
from agent.hypotheses.model import Hypothesis, sort_hypotheses
from agent.hypotheses.run_checks import run_diagnostics, silent_failures
from agent.hypotheses.seed_checks import seed_checks
from agent.hypotheses.setup_checks import setup_mismatches
from agent.runs import Runs
from agent.spec import Spec
from mlexp.compare import Verdict
from retrieval.models import Paper

Check = Callable[[Paper | None, Spec | None, Sequence[Verdict], Runs], list[Hypothesis]]

# In this order; the findings are sorted by priority afterwards.
CHECKS: tuple[Check, ...] = (setup_mismatches, silent_failures, run_diagnostics, seed_checks, metric_checks)


def run_checklist(paper: Paper | None, spec: Spec | None, verdicts: Sequence[Verdict], runs: Runs) -> list[Hypothesis]:
    """Every deterministic check, highest priority first. Never calls an LLM.

    A check that raises is a bug of ours: it propagates with its traceback (the graph keeps its checkpoint, and
    `replicate resume` reruns the node once it is fixed) instead of becoming a finding that hides the bug.
    """
    found: list[Hypothesis] = []
    for check in CHECKS:
        found.extend(check(paper, spec, verdicts, runs))
    return sort_hypotheses(found)
