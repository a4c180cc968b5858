"""The whole replication graph, offline, on the Fashion-MNIST paper, driven through the real CLI in new processes.

The LLM is the scripted model (tests/scripts/fashion_mnist_logreg.json); everything else is real: ingestion of the
shared PDF, the claims ledger, the SQLite checkpointer, the git code dir, real smoke and full runs of a scikit-learn
script on the shared Fashion-MNIST files (a subset, so the suite stays fast), the fixed comparison against Table 3,
hypotheses and the report. Each step is a separate `replicate` process, as a researcher would run it days apart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from retrieval.ingest import parse_pdf

REPO = Path(__file__).resolve().parents[2]
REPLICATE = Path(sys.executable).parent / "replicate"
TEMPLATE = REPO / "tests" / "scripts" / "fashion_mnist_logreg.json"
TRAIN_PY = REPO / "examples" / "fashion_mnist_logreg" / "train.py"
EDITOR = """import sys, pathlib
path = pathlib.Path(sys.argv[-1]); text = path.read_text()
old, new = {"bad": ("tolerance: 0.02", "tolerance: lots"), "good": ("tolerance: lots", "tolerance: 0.05")}[sys.argv[1]]
assert old in text, old
path.write_text(text.replace(old, new))
"""


def _fill(value: Any, marks: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, marks) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, marks) for v in value]
    if isinstance(value, str):
        if value in marks:
            return marks[value]
        for mark, repl in marks.items():
            value = value.replace(mark, str(repl))
    return value


def table3_claim(pdf: Path):
    """LogisticRegression C=1 penalty=l2 on Fashion-MNIST, from the ledger ingestion builds (ids are not hard-coded)."""
    paper = parse_pdf(pdf)
    for claim in paper.claims:
        row = claim.row or ""
        if claim.table == "Table 3" and claim.dataset == "Fashion-MNIST" and claim.method == "LogisticRegression":
            if re.search(r"\bC=1\b", row) and "penalty=l2" in row:
                return claim
    raise AssertionError("Table 3 LogisticRegression C=1 penalty=l2 (Fashion) not in the claims ledger")


def make_script(path: Path, pdf: Path, data_dir: Path, edit=None) -> Any:
    claim = table3_claim(pdf)
    marks = {
        "@CLAIM@": claim.id,
        "@REPORTED@": claim.value,
        "@CLAIM_PAGE@": claim.page,
        "@DATA_DIR@": str(data_dir),
        "@TRAIN_PY@": TRAIN_PY.read_text(encoding="utf-8"),
    }
    script = _fill(json.loads(TEMPLATE.read_text(encoding="utf-8")), marks)
    if edit:
        edit(script)
    path.write_text(json.dumps(script), encoding="utf-8")
    return claim


class Cli:
    def __init__(self, tmp_path: Path, data_dir: Path, llm: str | None):
        self.env = {**os.environ, "REPLICATE_DATA": str(data_dir), "REPLICATE_PLAIN": "1", "PYTHONUNBUFFERED": "1"}
        if llm:
            self.env["REPLICATE_LLM"] = llm
        self.project = Path(os.environ["REPLICATE_PROJECT_DIR"])
        self.editor = tmp_path / "editor.py"
        self.editor.write_text(EDITOR, encoding="utf-8")

    def __call__(self, *args: str, rc: int = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(REPLICATE), *args], env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=420
        )
        assert result.returncode == rc, (
            f"replicate {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def state(self, rid: str) -> dict[str, Any]:
        return json.loads((self.project / "runs" / rid / "state.json").read_text(encoding="utf-8"))

    def status(self, rid: str) -> dict[str, Any]:
        return json.loads(self("status", rid, "--json").stdout)


def _rid(result: subprocess.CompletedProcess) -> str:
    match = re.search(r"Replication (\S+)", result.stdout)
    assert match, result.stdout
    return match.group(1)


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.startswith("replicate: error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_end_to_end_with_checkpoints_edit_reject_and_sigkill(tmp_path, fashion_pdf, fashion_mnist_dir) -> None:
    script = tmp_path / "script.json"
    claim = make_script(script, fashion_pdf, fashion_mnist_dir)
    cli = Cli(tmp_path, fashion_mnist_dir, f"scripted:{script}")

    # 1. `replicate paper.pdf`: ingestion, retrieval (no index: a warning), draft, then the spec review.
    started = cli(str(fashion_pdf))
    rid = _rid(started)
    status = cli.status(rid)
    assert status["waiting"]["review"] == "spec", status
    values = status["values"]
    assert values["n_claims"] > 100 and any("no paper index" in w for w in values["warnings"])
    spec = json.loads(Path(values["spec_json"]).read_text())
    assert spec["targets"][0]["claim_id"] == claim.id and spec["targets"][0]["seeds"] == 1
    assert Path(values["spec_md"]).name == "spec.md" and claim.id in Path(values["spec_md"]).read_text()

    # 2. Reject with feedback (new process): back to draft_spec, which sees the feedback; the second draft waits.
    _one_line_error(cli("reject", rid, rc=1), "needs --feedback")
    cli("reject", rid, "--feedback", "Use two seeds: the paper repeats every run")
    values = cli.state(rid)
    assert values["waiting"]["review"] == "spec" and values["spec_version"] == 2
    assert json.loads(Path(values["spec_json"]).read_text())["targets"][0]["seeds"] == 2
    logs = sorted((cli.project / "runs" / rid / "llm_logs").glob("*draft_spec*.txt"))
    assert len(logs) == 2 and "Use two seeds: the paper repeats every run" in logs[1].read_text()

    # 3. Edit: a broken edit is refused in one line and changes nothing; the corrected edit is validated and used.
    bad = cli("approve", rid, "--edit", rc=1, env={"EDITOR": f"{sys.executable} {cli.editor} bad"})
    _one_line_error(bad, "spec.md does not validate", "tolerance")
    assert cli.status(rid)["waiting"]["review"] == "spec"
    cli("approve", rid, "--edit", env={"EDITOR": f"{sys.executable} {cli.editor} good"})
    values = cli.state(rid)
    assert json.loads(Path(values["spec_json"]).read_text())["targets"][0]["tolerance"] == 0.05
    assert "tolerance: 0.05" in Path(values["spec_md"]).read_text()  # the researcher's file, kept as edited
    assert values["waiting"]["review"] == "run", values.get("failures")
    smoke = values["smoke"]
    assert smoke["status"] == "completed" and 0.3 < smoke["metrics"]["accuracy"] <= 1.0 and values["smoke_check"]["ok"]
    code = cli.project / "runs" / rid / "code"
    assert (code / "train.py").read_text() == TRAIN_PY.read_text()
    assert subprocess.run(["git", "log", "--oneline"], cwd=code, capture_output=True, text=True).stdout.count("\n") == 1

    # 4. Approve the run review with a changed budget; SIGKILL the agent (and its run) while the second seed runs.
    _one_line_error(cli("approve", rid, "--budget", "gpus=8", rc=1), "--budget takes KEY=VALUE")
    proc = subprocess.Popen(
        [str(REPLICATE), "approve", rid, "--budget", "wall_limit_minutes=4"],
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    full_root = cli.project / "runs" / rid / "experiments" / "full-g0"
    deadline = time.monotonic() + 300
    first = None
    while time.monotonic() < deadline and proc.poll() is None:
        records = [json.loads(p.read_text()) for p in full_root.glob("*/record.json")]
        done = [r for r in records if r["status"] == "completed"]
        if done and len([p for p in full_root.iterdir() if p.is_dir()]) >= 2:
            first = done[0]
            break
        time.sleep(0.1)
    assert first is not None and proc.poll() is None, "the full run finished before it could be killed"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    status = cli.status(rid)
    assert status["waiting"] is None and status["next"] == ["run_full"], status
    assert json.loads(Path(values["spec_json"]).read_text())["budget"]["wall_limit_minutes"] == 4
    assert [r["seed"] for r in status["values"]["full_runs"]] == [first["seed"]]

    # 5. Resume in a new process: the finished seed is not run again, the killed one is, then hypotheses wait.
    cli("resume", rid)
    values = cli.state(rid)
    assert values["waiting"]["review"] == "hypotheses", values.get("failures")
    runs = values["full_runs"]
    assert sorted(r["seed"] for r in runs) == [0, 1] and all(r["status"] == "completed" for r in runs)
    again = json.loads((Path(runs[0]["run_dir"]) / "record.json").read_text())
    assert again["started_at"] == first["started_at"], "the seed finished before the kill was run again"
    verdict = values["verdicts"][0]
    assert verdict["claim_id"] == claim.id and verdict["reported"] == claim.value and verdict["n"] == 2
    assert verdict["verdict"] in {"replicated", "better", "diverged"} and 0.5 < verdict["measured_mean"] < 1.0

    # 6. Reject the hypotheses with feedback (they are proposed again, with it), then approve: the report is written.
    cli("reject", rid, "--feedback", "Consider under-training: too few solver iterations")
    values = cli.state(rid)
    assert values["waiting"]["review"] == "hypotheses"
    assert any("under-trained" in h["statement"] for h in values["hypotheses"])
    last = sorted((cli.project / "runs" / rid / "llm_logs").glob("*-hypotheses-*.txt"))[-1].read_text()
    assert "Consider under-training: too few solver iterations" in last
    cli("approve", rid)
    values = cli.state(rid)
    assert Path(values["report"]["html"]).is_file() and Path(values["report"]["md"]).is_file()
    assert claim.id in Path(values["report"]["md"]).read_text()
    assert values["llm_usage"]["calls"] >= 4 and values["llm_usage"]["input_tokens"] > 0
    listing = cli("status").stdout
    assert rid in listing and "finished" in listing


def test_no_llm_then_malformed_output_confinement_and_crashing_code(tmp_path, fashion_pdf, fashion_mnist_dir) -> None:
    script = tmp_path / "script.json"

    def edit(script_data: dict) -> None:
        good_spec = script_data["draft_spec"][1]
        script_data["draft_spec"] = ["Here is the spec you asked for.", "{not json", {"targets": []}, good_spec]
        good_code = script_data["implement_code"][0]
        crashing = json.loads(json.dumps(good_code))
        crashing["files"][0]["content"] = good_code["files"][0]["content"].replace('cfg["C"])', 'cfg["C_value"])')
        assert crashing != good_code
        outside = json.loads(json.dumps(good_code))
        outside["files"].append({"path": "../evil.py", "content": "print('escaped')\n"})
        script_data["implement_code"] = [outside, crashing]
        script_data["fix_code"] = [{**good_code, "notes": "the config key is C, not C_value"}]

    make_script(script, fashion_pdf, fashion_mnist_dir, edit)
    cli = Cli(tmp_path, fashion_mnist_dir, None)

    # No LLM configured: ingestion and retrieval run, then the spec skeleton is the researcher's, and it says so
    # (the researcher's path is tests/agent/test_no_llm_flow.py); a reject with --llm asks a model to draft.
    result = cli(str(fashion_pdf))
    assert "No LLM configured" in result.stderr and "--llm" in result.stderr
    rid = _rid(result)
    values = cli.state(rid)
    assert values["waiting"]["review"] == "spec" and values["waiting"]["skeleton"], values["waiting"]
    assert values["stage"] == "draft_spec" and Path(values["paper_json"]).is_file()
    _one_line_error(cli("status", "no-such-id", rc=1), "no replication 'no-such-id'")

    # A dead LLM endpoint: one line with the resume hint, nothing recorded as the LLM's failure, state kept.
    with socket.socket() as sock:  # a free port with nothing listening: connection refused
        sock.bind(("127.0.0.1", 0))
        dead = f"vllm:some-model@http://127.0.0.1:{sock.getsockname()[1]}/v1"
    rejected = cli("reject", rid, "--feedback", "draft it for me", "--llm", dead, rc=1)
    _one_line_error(rejected, "LLM call draft_spec to some-model failed", "resume")
    values = cli.state(rid)
    assert values["next"] == ["draft_spec"] and not values.get("failures")

    # Malformed output three times: recorded, the agent stops and asks; the state keeps everything before it.
    cli("resume", rid, "--llm", f"scripted:{script}")
    values = cli.state(rid)
    assert values["waiting"]["review"] == "question" and Path(values["paper_json"]).is_file()
    assert [f["kind"] for f in values["failures"]] == ["llm_output"]
    assert "did not validate after 3 attempts" in values["failures"][0]["message"]
    cli("approve", rid, "--feedback", "Reply with JSON only", "--llm", f"scripted:{script}")
    assert cli.state(rid)["waiting"]["review"] == "spec"

    # Approve the spec: a write outside the code dir is refused and retried; crashing code is fixed by fix_code.
    cli("approve", rid, "--llm", f"scripted:{script}")
    values = cli.state(rid)
    kinds = [f["kind"] for f in values["failures"]]
    assert kinds == ["llm_output", "confinement", "smoke_failed"], values["failures"]
    assert not (cli.project / "runs" / rid / "evil.py").exists()
    assert "../evil.py" in values["failures"][1]["message"]
    assert values["waiting"]["review"] == "run" and values["smoke"]["status"] == "completed"
    code = cli.project / "runs" / rid / "code"
    history = subprocess.run(["git", "log", "--format=%s"], cwd=code, capture_output=True, text=True).stdout
    assert history.splitlines()[0].startswith("fix_code attempt 1") and len(history.splitlines()) == 2
    fix_log = next((cli.project / "runs" / rid / "llm_logs").glob("*fix_code*.txt")).read_text()
    assert "KeyError" in fix_log and "C_value" in fix_log

    # Stop at the run review: the replication ends, recorded as stopped by the researcher.
    cli("reject", rid, "--feedback", "enough for today")
    values = cli.state(rid)
    assert values["waiting"] is None and "stopped by the researcher" in values["stopped"]
    assert "stopped" in cli("status", rid).stdout


@pytest.mark.slow
def test_auto_approve_runs_unattended_to_the_report(tmp_path, fashion_pdf, fashion_mnist_dir) -> None:
    script = tmp_path / "script.json"
    claim = make_script(script, fashion_pdf, fashion_mnist_dir)
    cli = Cli(tmp_path, fashion_mnist_dir, f"scripted:{script}")
    rid = _rid(cli(str(fashion_pdf), "--auto-approve"))
    values = cli.state(rid)
    assert values["waiting"] is None and values["stage"] == "write_report"
    assert values["verdicts"][0]["claim_id"] == claim.id and Path(values["report"]["html"]).is_file()
