"""Targets from wherever the paper reports results, through the real CLI in new processes (scripted model):
a method paper whose results are only in a figure has no ledger claims, so its spec asks the researcher for targets
and the replication waits (approve says what to do); `replicate claims add` records a value read off the figure;
the redrafted spec targets it; the paper's own simulation is allowed data (spec.data.generated); and the
researcher's claim reaches a verdict and the report, marked as the researcher's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.agent.test_paper_view import method_paper

REPLICATE = Path(sys.executable).parent / "replicate"

TRAIN_PY = '''"""The paper's own simulation (Section 4): two Gaussians whose means differ; a nearest-mean classifier."""
import numpy as np

import mlexp.log

log = mlexp.log.RunLogger()
cfg = log.config
rng = np.random.default_rng(log.seed)
n = int(cfg["smoke_n"] if log.smoke else cfg["n"])
labels = rng.integers(0, 2, size=n)
points = rng.normal(loc=labels[:, None] * float(cfg["shift"]), scale=1.0, size=(n, 2))
half = n // 2
means = np.stack([points[:half][labels[:half] == k].mean(0) for k in (0, 1)])
pred = np.argmin(((points[half:, None, :] - means[None]) ** 2).sum(-1), axis=1)
accuracy = float((pred == labels[half:]).mean())
log.step(1, 1, accuracy=accuracy)
log.final(accuracy=accuracy)
'''


def _spec(targets: list[dict[str, Any]], questions: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "paper_slug": "set-by-the-check",
        "objective": "Replicate the adversarial encoder's accuracy under shift (Figure 2).",
        "targets": targets,
        "data": {"name": "two shifted Gaussians", "source": "the paper's simulation, p. 2 (Section 4)",
                 "split": "first half fits the means, second half is scored", "split_unit": "point",
                 "generated": True},
        "method": {"name": "nearest mean", "description": "class means from the first half"},
        "config": {"n": 2000, "smoke_n": 200, "shift": 2.5},
        "budget": {"eta_minutes": 1, "wall_limit_minutes": 3},
        "smoke": {"config": {}, "max_minutes": 2},
        "open_questions": questions,
    }  # fmt: skip


ASK = [{"question": "The paper reports its results only in Figure 2: which values should be replicated?",
        "why": "the ledger holds no claims", "default": "none: wait for the researcher"}]  # fmt: skip
TARGET = {"claim_id": "R1", "metric": "accuracy", "direction": "max", "tolerance": 0.2, "seeds": 2, "reported": 0.9}


def _cli(env: dict[str, str], *args: str, rc: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([str(REPLICATE), *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == rc, f"{' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def test_no_ledger_claims_waits_for_targets_then_a_researcher_claim_reaches_a_verdict(tmp_path: Path) -> None:
    pdf = method_paper(tmp_path / "adversarial-invariance.pdf")
    script = tmp_path / "script.json"
    script.write_text(json.dumps({
        "draft_spec": [_spec([], ASK), _spec([TARGET], [])],
        "implement_code": [{"files": [{"path": "train.py", "content": TRAIN_PY}], "notes": "the paper's simulation"}],
        "*": [{"hypotheses": [], "queries": []}] * 6,
    }), encoding="utf-8")  # fmt: skip
    env = {**os.environ, "REPLICATE_LLM": f"scripted:{script}", "REPLICATE_PLAIN": "1"}

    started = _cli(env, str(pdf))
    rid = re.search(r"Replication (\S+)", started.stdout).group(1)
    assert "0 claims" in started.stderr and "waiting for spec review" in started.stdout
    assert "open question: The paper reports its results only in Figure 2" in started.stdout

    refused = _cli(env, "approve", rid, rc=1)  # nothing to replicate yet: the replication waits, it does not run
    assert "no targets yet" in refused.stderr and f"replicate claims add {rid}" in refused.stderr

    added = _cli(env, "claims", "add", rid, "--value", "0.9", "--page", "2", "--metric", "accuracy",
                 "--figure", "Figure 2")  # fmt: skip
    assert "added R1" in added.stdout
    redrafted = _cli(env, "reject", rid, "--feedback", "target R1, read off Figure 2")
    assert "target R1: accuracy 0.9" in redrafted.stdout

    finished = _cli(env, "approve", rid, "--auto-approve")
    assert "finished" in finished.stdout, finished.stdout + finished.stderr
    state = json.loads((Path(os.environ["REPLICATE_PROJECT_DIR"]) / "runs" / rid / "state.json").read_text())
    verdicts = {v["claim_id"]: v for v in state["verdicts"]}
    assert verdicts["R1"]["n"] == 2 and verdicts["R1"]["verdict"] in ("replicated", "diverged", "better")
    report = Path(state["report"]["md"]).read_text(encoding="utf-8")
    assert "R1" in report and "researcher" in report
    draft_log = next((Path(os.environ["REPLICATE_PROJECT_DIR"]) / "runs" / rid / "llm_logs").glob("*draft_spec*"))
    assert "## Method" in draft_log.read_text(encoding="utf-8")  # the model read the method section


def test_generated_data_is_allowed_only_when_the_spec_says_the_paper_generates_it(tmp_path: Path) -> None:
    import pytest

    from agent.graph.nodes.code import CodeChange, FileEdit, change_check
    from agent.spec import Spec

    code = "from sklearn.datasets import make_blobs\nX, y = make_blobs(n_samples=100, centers=2)\n"
    change = CodeChange(files=[FileEdit(path="train.py", content=code)])
    simulated = Spec.model_validate({**_spec([TARGET], []), "paper_slug": "p"})
    real = simulated.model_copy(update={"data": simulated.data.model_copy(update={"generated": False})})
    change_check(tmp_path, simulated)(change)  # the paper's own simulation: allowed
    with pytest.raises(ValueError, match="synthetic data"):
        change_check(tmp_path, real)(change)  # a real dataset replaced by made-up data: refused
