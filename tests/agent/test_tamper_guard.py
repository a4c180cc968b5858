"""The replication's tamper guard: recorded before the first (smoke) run, kept sealed in the state, and every later
change to the data or the ledger the verdicts rest on is reported by compare_results' check."""

from __future__ import annotations

import json
from pathlib import Path

from agent.graph import tamper_guard
from agent.graph.state import State
from tests.agent.test_agent_units import _spec


def _state(tmp_path: Path) -> tuple[State, Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,0\n", encoding="utf-8")
    paper_json = tmp_path / "papers" / "demo" / "paper.json"
    paper_json.parent.mkdir(parents=True)
    paper_json.write_text(json.dumps({"claims": [{"id": "T3-r1-c1", "value": 0.842}]}), encoding="utf-8")
    return {"id": "demo-abc123", "paper_json": str(paper_json)}, data, paper_json


def test_guard_is_recorded_once_before_the_first_run_and_flags_data_and_ledger_edits(tmp_path: Path) -> None:
    state, data, paper_json = _state(tmp_path)
    spec = _spec(data={"name": "demo", "source": "local", "split": "official", "split_unit": "row",
                       "location": str(data)})  # fmt: skip
    update = tamper_guard.seal_before_first_run(state, spec)
    assert set(update) == {"guard_seal"} and tamper_guard.guard_path(state).exists()
    state = {**state, **update}
    # A second smoke run (after a fix) or a full run records nothing new: the first seal stays.
    assert tamper_guard.seal_before_first_run(state, spec) == {}
    assert tamper_guard.guard_problems(state) == []

    (data / "train.csv").write_text("x,y\n1,1\n", encoding="utf-8")  # a run that "fixed" its labels
    paper_json.write_text(json.dumps({"claims": [{"id": "T3-r1-c1", "value": 0.5}]}), encoding="utf-8")
    problems = tamper_guard.guard_problems(state)
    assert any("train.csv" in p for p in problems), problems
    assert any("paper.json" in p for p in problems), problems


def test_a_rewritten_guard_file_breaks_the_seal(tmp_path: Path) -> None:
    state, data, _ = _state(tmp_path)
    spec = _spec()
    state = {**state, **tamper_guard.seal_before_first_run(state, spec)}
    guard = tamper_guard.guard_path(state)
    record = json.loads(guard.read_text(encoding="utf-8"))
    record["created_at"] = "forged"
    guard.write_text(json.dumps(record), encoding="utf-8")
    assert tamper_guard.guard_problems(state), "a guard file rewritten after sealing must be reported"


def test_no_guard_before_any_run_is_not_a_finding(tmp_path: Path) -> None:
    state, _, _ = _state(tmp_path)
    assert tamper_guard.guard_problems(state) == []
