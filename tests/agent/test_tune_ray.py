"""replicate tune with trials in parallel on mlexp's Ray executor (a real local Ray head, started and stopped here).

Slow (starting Ray takes a while on a busy 2-core machine): run with `pytest -m slow tests/test_tune_ray.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.tune.ledger import Ledger
from agent.tune.tuner import TuneOptions, run_tune
from mlexp import RunRecord
from tests.agent.test_tune import git, toy_target
from tests.mlexp.test_mlexp_ray import ray_head  # noqa: F401  (the fixture: a private Ray head on 127.0.0.1)


@pytest.mark.slow
def test_parallel_trials_on_ray(ray_head: str, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "tune"
    target = toy_target(tmp_path, knobs={"x": {"type": "float", "low": 0.0, "high": 10.0}}, grace_s=60)
    opts = TuneOptions(budget=2, trial_time_s=5, parallel=2, baseline_seeds=2, executor="ray", ray_address=ray_head)
    result = run_tune(target, opts, tune_dir=out, log=print)
    rows = Ledger.load(out).rows
    assert [r.verdict for r in rows][0] == "baseline"
    assert all(r.verdict in ("baseline", "keep", "discard") for r in rows), [(r.verdict, r.reason) for r in rows]
    assert all(row.run_dirs for row in rows)  # every row was measured, so the loop below checks something
    for row in rows:
        for run_dir in row.run_dirs:
            assert RunRecord.load(run_dir).executor == "ray"
    assert result.best_mean <= rows[0].metric_mean
    assert "trial-002" in git(out / "work", "tag")
