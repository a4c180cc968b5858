"""Approved hypotheses to runs: each ablation is the base config with the hypothesis's change applied.

The graph does not run ablations itself: the report lists each approved hypothesis's ablation, and the researcher
starts them (`queue_ablations` from Python, or `replicate runs run` with the changed config), then compares again.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.hypotheses.model import Hypothesis
from mlexp.record import RunRecord


def _set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        if part in node and not isinstance(node[part], dict):
            break
        node = node.setdefault(part, {})
    else:
        node[parts[-1]] = value
        return
    config[key] = value  # a dotted key that is not a nested path: keep it as a plain key


def ablation_configs(
    hypotheses: Sequence[Hypothesis], base_config: Mapping[str, Any], *, approved_only: bool = False
) -> list[dict[str, Any]]:
    """One config per hypothesis with an ablation: the base config with the change applied (a "more seeds" ablation
    gives the base config itself, to be run with `ablation.seeds` seeds). Duplicates and changes that leave the
    config as it was are skipped. With `approved_only`, only approved hypotheses count."""
    return [config for _, config in ablation_plan(hypotheses, base_config, approved_only=approved_only)]


def ablation_plan(
    hypotheses: Sequence[Hypothesis], base_config: Mapping[str, Any], *, approved_only: bool = False
) -> list[tuple[Hypothesis, dict[str, Any]]]:
    """Like `ablation_configs`, paired with the hypothesis each config tests."""
    base_key = json.dumps(dict(base_config), sort_keys=True, default=str)
    plan, seen = [], set()
    for hyp in hypotheses:
        if approved_only and not hyp.approved:
            continue
        if hyp.ablation is None or not (hyp.ablation.change or hyp.ablation.seeds):
            continue
        config = copy.deepcopy(dict(base_config))
        for key, value in hyp.ablation.change.items():
            _set_dotted(config, key, value)
        key = json.dumps(config, sort_keys=True, default=str)
        if (key == base_key and not hyp.ablation.seeds) or (key, hyp.ablation.seeds) in seen:
            continue  # a no-op change, or the same experiment as an earlier hypothesis
        seen.add((key, hyp.ablation.seeds))
        plan.append((hyp, config))
    return plan


def queue_ablations(
    hypotheses: Sequence[Hypothesis],
    base_config: Mapping[str, Any],
    script: Path,
    *,
    runs_root: Path,
    seeds: int = 1,
    approved_only: bool = True,
    **run_kwargs: Any,
) -> list[RunRecord]:
    """Run each approved ablation through mlexp (`seeds` seeds each, or the ablation's own count).
    Returns the RunRecords; completed identical runs are skipped by mlexp's identity check."""
    from mlexp import run_script

    records = []
    for hyp, config in ablation_plan(hypotheses, base_config, approved_only=approved_only):
        for seed in range((hyp.ablation.seeds if hyp.ablation else None) or seeds):
            records.append(
                run_script(
                    Path(script), config, runs_root=Path(runs_root), name=f"ablation-{hyp.id}", seed=seed, **run_kwargs
                )
            )
    return records
