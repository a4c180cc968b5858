"""The tamper guard: recorded once before the first run, re-checked against harness, data and evaluation files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import mlexp
from mlexp.guard import GuardError, record_guard, verify_guard


@pytest.fixture
def replication(tmp_path: Path) -> dict[str, Path]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"targets": [{"claim_id": "T1", "reported": 0.9}]}))
    return {"data": data, "spec": spec, "guard": tmp_path / "replication" / "harness_guard.json"}


def test_record_then_verify_is_clean_and_covers_every_kind_of_file(replication: dict[str, Path]) -> None:
    seal = record_guard(replication["guard"], data_paths=[replication["data"]], evaluation_paths=[replication["spec"]])
    assert len(seal) == 64
    assert verify_guard(replication["guard"], seal=seal) == []
    guard = json.loads(replication["guard"].read_text())
    assert "mlexp/guard.py" in guard["harness"] and "mlexp/compare.py" in guard["harness"]
    assert any(k.endswith("train.csv") for k in guard["data"]) and len(guard["evaluation"]) == 1


def test_changes_to_data_evaluation_and_the_guard_file_are_flagged(replication: dict[str, Path]) -> None:
    guard = replication["guard"]
    seal = record_guard(guard, data_paths=[replication["data"]], evaluation_paths=[replication["spec"]])
    (replication["data"] / "train.csv").write_text("x,y\n1,3\n")
    (replication["data"] / "extra.csv").write_text("added\n")
    replication["spec"].write_text(json.dumps({"targets": [{"claim_id": "T1", "reported": 0.5}]}))
    problems = verify_guard(guard, seal=seal)
    assert any(p.startswith("data ") and "train.csv: content changed" in p for p in problems)
    assert any(p.startswith("data ") and "extra.csv: added" in p for p in problems)
    assert any(p.startswith("evaluation ") and "spec.json: content changed" in p for p in problems)
    # Someone re-records the guard to bless the change: the seal kept outside the runs' reach catches it.
    record_guard(guard, data_paths=[replication["data"]], evaluation_paths=[replication["spec"]], overwrite=True)
    assert any("rewritten after it was recorded" in p for p in verify_guard(guard, seal=seal))


def test_a_guard_is_recorded_once(replication: dict[str, Path]) -> None:
    record_guard(replication["guard"])
    with pytest.raises(GuardError, match="already recorded"):
        record_guard(replication["guard"])
    assert "cannot be read" in verify_guard(replication["guard"].with_name("missing.json"))[0]


def test_a_no_sandbox_run_that_edits_a_protected_file_fails_its_check(tmp_path: Path) -> None:
    """Without the sandbox the edit succeeds, but the per-run guard around every run flags it."""
    code = tmp_path / "code"
    code.mkdir()
    evaluate = code / "evaluate.py"
    evaluate.write_text("def score(pred, truth):\n    return sum(p == t for p, t in zip(pred, truth)) / len(truth)\n")
    (code / "train.py").write_text(textwrap.dedent("""
        import pathlib
        path = pathlib.Path(__file__).with_name("evaluate.py")
        path.write_text("def score(pred, truth):\\n    return 1.0\\n")
        print("=== FINAL METRICS ===")
        print("score: 1.0")
    """))
    record = mlexp.run_script(code / "train.py", {}, runs_root=tmp_path / "runs", name="edit", sandbox=False,
                              protected_paths=[evaluate])  # fmt: skip
    assert record.check is not None and not record.check.ok
    assert any("changed during the run" in p and "evaluate.py" in p for p in record.check.problems)
    sandboxed = tmp_path / "code2"
    sandboxed.mkdir()
    (sandboxed / "evaluate.py").write_text(evaluate.read_text())
    (sandboxed / "train.py").write_text((code / "train.py").read_text())
    record = mlexp.run_script(sandboxed / "train.py", {}, runs_root=tmp_path / "runs", name="edit2",
                              protected_paths=[sandboxed / "evaluate.py"])  # fmt: skip
    assert record.status == "failed" and "Read-only file system" in (record.error or "")


def test_a_config_naming_home_or_a_credentials_folder_does_not_unhide_it(tmp_path: Path) -> None:
    from mlexp.sandbox import SandboxPolicy, masked_roots, visible_paths

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / "data").mkdir()
    policy = SandboxPolicy(run_dir=tmp_path / "run", code_dir=tmp_path / "code", home=home,
                           read_only=(home, home / ".ssh", Path("/"), home / "data"))  # fmt: skip
    shown = visible_paths(policy, {})
    assert home / "data" in shown
    assert home not in shown and home / ".ssh" not in shown and Path("/") not in shown
    assert home.resolve() in masked_roots(home)
