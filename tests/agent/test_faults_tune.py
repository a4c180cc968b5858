"""`replicate tune` killed midway and resumed (issue 15 item 6; docs/faults.md): the real CLI in a new process, the
toy target of test_tune, Optuna proposing; the process group is SIGKILLed while a trial runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from agent.tune.ledger import Ledger
from tests.agent.test_faults import cli, one_line_error
from tests.agent.test_tune import toy_target

REPLICATE = Path(sys.executable).parent / "replicate"


def _tune_args(target: Path, out: Path, budget: int) -> list[str]:
    return [str(target), "--out", str(out), "--budget", str(budget), "--trial-time", "1", "--proposer", "optuna",
            "--baseline-seeds", "2", "--no-papers"]  # fmt: skip


def test_a_killed_tune_resumes_rerunning_only_the_unfinished_trial(tmp_path: Path) -> None:
    target = toy_target(tmp_path, knobs={"x": {"type": "float", "low": 0.0, "high": 10.0}})
    out = tmp_path / "tune"
    proc = subprocess.Popen(
        [str(REPLICATE), "tune", *_tune_args(target, out, 3)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (out / "trials" / "trial-002" / "code").exists():  # trial 1 has its row; trial 2 is running
        assert proc.poll() is None and time.monotonic() < deadline, "the tune ended before trial 2 ran"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r.trial: r for r in Ledger.load(out).rows}
    assert 2 not in before and {0, 1} <= set(before)

    cli("tune", "--resume", str(out), "--budget", "3", "--trial-time", "1", "--proposer", "optuna",
        "--baseline-seeds", "2", "--no-papers")  # fmt: skip
    rows = Ledger.load(out).rows
    assert sorted(r.trial for r in rows) == [0, 1, 2, 3], "each trial exactly once"
    after = {r.trial: r for r in rows}
    for trial, row in before.items():  # finished trials are never run again
        assert after[trial].started_at == row.started_at and after[trial].values == row.values
    assert not list((out / "trials").glob("trial-*/code")), "no worktree left behind"
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'optuna.db'}")
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)), "the killed ask is not left running"

    # The same command again: everything is finished, nothing runs; changed settings are refused.
    cli("tune", *_tune_args(target, out, 3))
    assert len(Ledger.load(out).rows) == 4
    one_line_error(cli("tune", *_tune_args(target, out, 3), "--seeds", "2", rc=1), "cannot resume", "seeds")
