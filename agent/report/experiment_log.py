"""EXPERIMENT_LOG.md: the key findings of every iteration of run -> compare -> hypothesise, appended, never
rewritten."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.hypotheses.model import Hypothesis
from agent.report.context import gap, measured, relative_link, reported
from agent.runs import Runs, run_list
from mlexp import atomic
from mlexp.compare import Verdict, summary_line, worst_first


def append_experiment_log(
    out_dir: Path,
    *,
    verdicts: Sequence[Verdict],
    hypotheses: Sequence[Hypothesis] = (),
    runs: Runs = (),
    note: str = "",
    ablations: Sequence[Mapping[str, Any]] = (),
    report: Path | None = None,
    iteration: int | None = None,
    key: str | None = None,
) -> Path:
    """Append one iteration's key findings to out_dir/EXPERIMENT_LOG.md (rewritten atomically; never truncated).

    `key` makes the call idempotent: a section with the same key is not appended twice (a graph node that is
    re-entered after a crash logs its iteration once)."""
    path = Path(out_dir) / "EXPERIMENT_LOG.md"
    old = (
        path.read_text(encoding="utf-8")
        if path.exists()
        else "# Experiment log\n\nKey findings, one section per iteration.\n"
    )
    marker = f"<!-- entry: {key} -->" if key else ""
    if marker and marker in old:
        return path
    if iteration is None:
        iteration = len(re.findall(r"^## Iteration \d+", old, re.M)) + 1
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["", f"## Iteration {iteration} — {stamp}", *([marker] if marker else []), "",
             f"**{summary_line(list(verdicts))}**", ""]  # fmt: skip
    for v in worst_first(verdicts):
        lines.append(f"- {v.claim_id} ({v.metric}): {v.verdict}; reported {reported(v)}, measured {measured(v)}, "
                     f"gap {gap(v)}" + (f", p={v.p_value:.3g}" if v.p_value is not None else ""))  # fmt: skip
    ran = run_list(runs)
    if ran:
        lines.append(f"- runs: {', '.join(r.identity for r in ran)}")
    top = [h for h in hypotheses if h.priority == "high"][:5] or list(hypotheses)[:3]
    if top:
        lines += ["", "Top hypotheses:"]
        for h in top:
            lines.append(f"- [{h.priority}, {h.support}] {h.statement}")
    if ablations:
        lines += ["", "Ablations queued:"] + [f"- `{json.dumps(dict(a), default=str)}`" for a in ablations]
    if note:
        lines += ["", note.strip()]
    if report is not None:
        lines += ["", f"Report: {relative_link(str(report), Path(out_dir))}"]
    atomic.write_text(path, old.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    return path
