"""The researcher's path without a model, end to end, each step a separate `replicate` process (as it would be run
days apart): start with --no-llm, fill in the spec skeleton (EDITOR is a small script), give broken code (the smoke
run fails and comes back to the researcher with its digest), give fixed code, approve the smoke run, SIGKILL the
tool mid full run, resume (the finished seed is not rerun), approve the hypotheses (the checklist and the index's
passages, marked as search results) and get the report. Real everything: the shared paper and Fashion-MNIST files,
the checkpointer, the harness sandbox, the comparison; the config is small so it takes well under two minutes.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from agent import paths
from retrieval.ingest import parse_pdf

REPO = Path(__file__).resolve().parents[2]
REPLICATE = Path(sys.executable).parent / "replicate"
EXAMPLE = REPO / "examples" / "fashion_mnist_logreg"
# The researcher's editor: replaces the YAML block of each named section with what the JSON file says.
EDITOR = r"""import json, pathlib, re, sys
fill = json.loads(pathlib.Path(sys.argv[1]).read_text())
path = pathlib.Path(sys.argv[-1]); text = path.read_text()
for heading, body in fill.items():
    pattern = re.compile(r"(^## " + re.escape(heading) + r"\s*\n.*?```yaml\n)(.*?)(```)", re.M | re.S)
    text, n = pattern.subn(lambda m: m.group(1) + body + "\n" + m.group(3), text, count=1)
    assert n == 1, heading
path.write_text(text)
"""


def table3_claim(pdf: Path) -> Any:
    """LogisticRegression C=1 penalty=l2 on Fashion-MNIST, from the ledger ingestion builds (ids are not hard-coded)."""
    for claim in parse_pdf(pdf).claims:
        row = claim.row or ""
        if claim.table == "Table 3" and claim.dataset == "Fashion-MNIST" and claim.method == "LogisticRegression":
            if re.search(r"\bC=1\b", row) and "penalty=l2" in row:
                return claim
    raise AssertionError("Table 3 LogisticRegression C=1 penalty=l2 (Fashion) not in the claims ledger")


def sections(claim: Any, data_dir: Path) -> dict[str, str]:
    """What the researcher writes into the skeleton: a small config, so every run takes seconds."""
    target = {"claim_id": claim.id, "metric": "accuracy", "direction": "max", "tolerance": 0.01, "seeds": 3,
              "reported": claim.value}  # fmt: skip
    data = {"name": "Fashion-MNIST", "source": "Debian package dataset-fashion-mnist", "location": str(data_dir),
            "split": "official files; a seeded 500-image training subset", "split_unit": "image"}  # fmt: skip
    config = {"n_train": 500, "n_test": 300, "shuffle_train": True, "steps": 2, "iters_per_step": 10, "C": 1.0,
              "smoke_n_train": 200, "smoke_n_test": 100, "smoke_steps": 1}  # fmt: skip
    return {
        "Objective": "Table 3 LogisticRegression C=1 L2 on a small seeded subset",
        "Targets": yaml.safe_dump([target]),
        "Data": yaml.safe_dump(data),
        "Method": "name: LogisticRegression\ndescription: scikit-learn, L-BFGS, warm-started steps",
        "Run config": yaml.safe_dump(config),
        "Budget": "eta_minutes: 1\nwall_limit_minutes: 4\ndevice: cpu",
    }


class Cli:
    def __init__(self, tmp_path: Path, data_dir: Path):
        self.env = {**os.environ, "REPLICATE_DATA": str(data_dir.parent), "REPLICATE_PLAIN": "1",
                    "PYTHONUNBUFFERED": "1"}  # fmt: skip
        self.project = Path(os.environ["REPLICATE_PROJECT_DIR"])
        self.editor = tmp_path / "editor.py"
        self.editor.write_text(EDITOR, encoding="utf-8")

    def __call__(self, *args: str, rc: int = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(REPLICATE), *args], env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=300
        )
        shown = f"replicate {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == rc, shown
        return result

    def state(self, rid: str) -> dict[str, Any]:
        return json.loads((self.project / "runs" / rid / "state.json").read_text(encoding="utf-8"))

    def status(self, rid: str) -> dict[str, Any]:
        """From the checkpointer: state.json is written when a command ends, which a SIGKILLed one never does."""
        return json.loads(self("status", rid, "--json").stdout)

    def edit_with(self, fill: dict[str, str], path: Path) -> dict[str, str]:
        path.write_text(json.dumps(fill), encoding="utf-8")
        return {"EDITOR": f"{sys.executable} {self.editor} {path}"}


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("replicate: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def small_index(arxiv_jsonl: Path, tmp_path: Path) -> None:
    """A real paper index in REPLICATE_HOME: every arXiv record that mentions Fashion-MNIST, plus 200 others."""
    from retrieval.index import PaperIndex

    subset = tmp_path / "subset.jsonl"
    with gzip.open(arxiv_jsonl, "rt", encoding="utf-8") as source, subset.open("w", encoding="utf-8") as out:
        lines = list(itertools.islice(source, 200))
        out.writelines(lines + [line for line in source if "fashion-mnist" in line.lower()])
    index = PaperIndex(paths.index_dir())
    index.import_jsonl(subset, progress=False)
    index.close()


def test_researcher_path_without_a_model(tmp_path, fashion_pdf, fashion_mnist_dir, arxiv_jsonl) -> None:
    claim = table3_claim(fashion_pdf)
    small_index(arxiv_jsonl, tmp_path)
    cli = Cli(tmp_path, fashion_mnist_dir)

    # 1. --no-llm: ingestion, related work, then the skeleton; status says the researcher must fill it in.
    started = cli(str(fashion_pdf), "--no-llm")
    rid = re.search(r"Replication (\S+)", started.stdout).group(1)  # type: ignore[union-attr]
    assert "needs you: spec.md is a skeleton" in started.stdout, started.stdout
    values = cli.state(rid)
    spec_md = Path(values["spec_md"])
    assert values["waiting"]["review"] == "spec" and values["waiting"]["skeleton"] and values["no_llm"]
    assert f"| {claim.id} |" in spec_md.read_text() and not Path(values["spec_json"]).exists()
    assert "(needs you)" in cli("status").stdout
    one_line_error(cli("approve", rid, rc=1), "is a skeleton", "--edit")

    # 2. An edit that leaves TODO marks is refused in one line and changes nothing; the filled one validates.
    fill = sections(claim, fashion_mnist_dir)
    partial = {k: v for k, v in fill.items() if k != "Budget"}
    bad = cli("approve", rid, "--edit", rc=1, env=cli.edit_with(partial, tmp_path / "partial.json"))
    one_line_error(bad, "TODO marks", "budget.eta_minutes")
    assert cli.state(rid)["waiting"]["skeleton"]
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLE, broken)
    train = broken / "train.py"
    train.write_text(train.read_text().replace('C=float(cfg["C"])', 'C=float(cfg["C_value"])'))
    edited = cli("approve", rid, "--edit", env=cli.edit_with(fill, tmp_path / "fill.json"))
    values = cli.state(rid)
    assert json.loads(Path(values["spec_json"]).read_text())["targets"][0]["claim_id"] == claim.id
    assert values["waiting"]["review"] == "code" and "needs you: give your code" in edited.stdout

    # 3. Broken code: the smoke run fails and comes back to the researcher with its digest, no fix loop.
    failed = cli("approve", rid, "--code", str(broken))
    values = cli.state(rid)
    assert values["waiting"]["review"] == "code" and values["code_by"] == "researcher"
    assert [f["kind"] for f in values["failures"]] == ["smoke_failed"] and "fix_code" not in values["stage"]
    assert "KeyError" in failed.stdout and "C_value" in failed.stdout and "needs you: fix your code" in failed.stdout
    assert not (cli.project / "runs" / rid / "llm_logs").exists()
    one_line_error(cli("approve", rid, "--code", str(tmp_path), rc=1), "has no train.py")

    # 4. Fixed code: committed as a second commit, the smoke run passes, the run review waits.
    cli("approve", rid, "--code", str(EXAMPLE))
    values = cli.state(rid)
    assert values["waiting"]["review"] == "run" and values["smoke"]["status"] == "completed", values.get("failures")
    code = cli.project / "runs" / rid / "code"
    assert (code / "train.py").read_text() == (EXAMPLE / "train.py").read_text()
    log = subprocess.run(["git", "log", "--format=%s"], cwd=code, capture_output=True, text=True).stdout.splitlines()
    assert len(log) == 2 and all("the researcher's code" in line for line in log)

    # 5. Approve the smoke run; SIGKILL the tool (and its run) once the first seed is done and the second has begun.
    proc = subprocess.Popen([str(REPLICATE), "approve", rid], env=cli.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    full_root = cli.project / "runs" / rid / "experiments" / "full-g0"
    deadline, first = time.monotonic() + 240, None
    while time.monotonic() < deadline and proc.poll() is None:
        records = [json.loads(p.read_text()) for p in full_root.glob("*/record.json")]
        done = [r for r in records if r["status"] == "completed"]
        if len(done) == 1 and len([p for p in full_root.iterdir() if p.is_dir()]) >= 2:
            first = done[0]
            break
        time.sleep(0.05)
    assert first is not None and proc.poll() is None, "the full run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    status = cli.status(rid)
    assert status["waiting"] is None and status["next"] == ["run_full"], status
    assert [r["seed"] for r in status["values"]["full_runs"]] == [first["seed"]]

    # 6. Resume: the finished seed is not run again; the hypotheses (checklist + search results) wait.
    cli("resume", rid)
    values = cli.state(rid)
    assert values["waiting"]["review"] == "hypotheses", values.get("failures")
    runs = values["full_runs"]
    assert sorted(r["seed"] for r in runs) == [0, 1, 2] and all(r["status"] == "completed" for r in runs)
    again = json.loads((Path(runs[0]["run_dir"]) / "record.json").read_text())
    assert again["started_at"] == first["started_at"], "the seed finished before the kill was run again"
    verdict = values["verdicts"][0]
    assert verdict["claim_id"] == claim.id and verdict["n"] == 3 and verdict["measured_std"] > 0
    assert verdict["verdict"] == "diverged" and 0.5 < verdict["measured_mean"] < claim.value  # 500 of 60,000 images
    sources = {h["source"] for h in values["hypotheses"]}
    assert sources == {"checklist", "search"}, sources  # no model wrote any of them
    searched = [h for h in values["hypotheses"] if h["source"] == "search"]
    assert all(h["support"] == "search result" and h["claim_ids"] == [claim.id] for h in searched)

    # 7. Approve: the report, with the verdict and the search results marked as such.
    finished = cli("approve", rid)
    values = cli.state(rid)
    report = Path(values["report"]["md"]).read_text()
    assert claim.id in report and "**diverged**" in report and "· search · support: **search result**" in report
    assert f"verdict {claim.id}: diverged" in finished.stdout and Path(values["report"]["html"]).is_file()
    assert "finished" in cli("status").stdout
