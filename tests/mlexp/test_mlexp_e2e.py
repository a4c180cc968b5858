"""End to end: logistic regression on Fashion-MNIST through mlexp, smoke then full, then a skipped rerun.

The example script is copied to a temp dir so the code identity is a hash of its files (the repo's HEAD moves while
others commit, which would make "rerun is skipped" flaky for a reason unrelated to mlexp).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import mlexp

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fashion_mnist_logreg"
README_INFO = {
    "purpose": "Check that a linear model reaches the paper's LogisticRegression accuracy on Fashion-MNIST.",
    "scope": "subset of the official train/test files",
    "data": "Fashion-MNIST IDX files",
    "model": "sklearn LogisticRegression (lbfgs, warm-started steps)",
    "metrics": {
        "accuracy": {"direction": "max", "definition": "share of test images whose predicted class is the label"},
        "test_loss": {"direction": "min", "definition": "multinomial log loss on the test subset"},
    },
    "comparison": "Xiao et al. 2017 report 0.842 for LogisticRegression C=1 on the full data.",
}


def small_config(data_dir: Path) -> dict:
    return {"data_dir": str(data_dir), "n_train": 2000, "n_test": 600, "steps": 3, "iters_per_step": 15, "C": 1.0,
            "smoke_n_train": 500, "smoke_n_test": 200, "smoke_steps": 2}  # fmt: skip


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    target = tmp_path / "code"
    shutil.copytree(EXAMPLE, target)
    return target


def check_run_dir(run_dir: Path, *, n_test: int, smoke: bool) -> None:
    for name in ("README.txt", "config.yaml", "config.json", "metadata.json", "metrics.json", "metrics.jsonl",
                 "training.log", "console.log", "record.json", "predictions.parquet", "split.json",
                 "checkpoints/model.pkl", "groups/_index.csv", "diagnostics/parse_failures.csv",
                 "diagnostics/outliers.csv", "diagnostics/value_ranges.json", "diagnostics/actual_vs_predicted.csv",
                 "diagnostics/post_run_check.txt", "diagnostics/log_digest.txt"):  # fmt: skip
        assert (run_dir / name).exists(), name
    readme = (run_dir / "README.txt").read_text()
    for needle in ("PURPOSE", README_INFO["purpose"], "SCOPE", "DATA", "MODEL", "RESULTS", "METRIC DEFINITIONS",
                   "accuracy (higher is better)", "test_loss (lower is better)", "NAVIGATION", "groups/_index.csv",
                   "COMPARISON CONTEXT", "Xiao et al. 2017", "WORST GROUPS", "POST-RUN CHECK"):  # fmt: skip
        assert needle in readme, needle
    assert ("SMOKE run" in readme) == smoke
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["smoke"] is smoke and config["seed"] == 0
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["started_at"] and meta["ended_at"] and meta["host"] and meta["git"]["code_commit"]
    assert meta["env"]["python"] and meta["exit_reason"] == "ok"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.5 < metrics["accuracy"] < 1.0 and metrics["n_test"] == n_test
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[0]["step"] == 1 and "test_loss" in steps[0]
    log_lines = (run_dir / "training.log").read_text().splitlines()
    step1 = next(line for line in log_lines if "step 1/" in line)
    assert step1.startswith("[") and "s/step" in step1 and "ETA" in step1
    # predictions: parquet at the root, CSV in the inspection folders, counts match inputs
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    assert len(preds) == n_test
    index = pd.read_csv(run_dir / "groups" / "_index.csv")
    assert len(index) == 10 and index["n"].sum() == n_test
    assert list(index["accuracy"]) == sorted(index["accuracy"]), "groups must be sorted worst-first"
    truth_acc = preds.assign(ok=preds.y_true == preds.y_pred).groupby("y_true")["ok"].mean()
    assert index.iloc[0]["group"] == truth_acc.idxmin()
    worst = index.iloc[0]["folder"]
    per_sample = pd.read_csv(run_dir / worst / "per_sample.csv")
    assert len(per_sample) == index.iloc[0]["n"]
    correct = per_sample["correct"].tolist()
    assert correct == sorted(correct), "wrong predictions must come first"
    wrong = per_sample[~per_sample["correct"]]
    assert list(wrong["confidence"]) == sorted(wrong["confidence"], reverse=True), "confident mistakes first"
    assert (run_dir / worst / "predictions.csv").exists() and (run_dir / worst / "metrics.json").exists()
    summaries = list((run_dir / worst / "samples").glob("*/summary.txt"))
    assert summaries and "ground_truth:" in summaries[0].read_text()
    ranges = json.loads((run_dir / "diagnostics" / "value_ranges.json").read_text())
    assert "distribution" in ranges["all"]["pred"]
    assert "OK" in (run_dir / "diagnostics" / "post_run_check.txt").read_text()
    flat = pd.read_csv(run_dir / "diagnostics" / "actual_vs_predicted.csv")
    assert len(flat) == n_test and len(pd.read_csv(run_dir / "diagnostics" / "parse_failures.csv")) == 0


def test_fashion_mnist_smoke_then_full_then_skip(fashion_mnist_dir: Path, code_dir: Path, tmp_path: Path) -> None:
    project = Path(__import__("os").environ["REPLICATE_PROJECT_DIR"])
    runs_root = project / "runs"
    cfg = small_config(fashion_mnist_dir)
    seen: list[str] = []
    smoke = mlexp.run_script(code_dir / "train.py", cfg, runs_root=runs_root, name="fmnist-logreg", smoke=True,
                             readme=README_INFO, on_line=seen.append)  # fmt: skip
    assert smoke.status == "completed" and smoke.exit_reason == "ok" and not smoke.skipped, smoke.digest
    assert smoke.check is not None and smoke.check.ok, smoke.check
    assert any("first step seen" in line for line in seen) and smoke.s_per_step and smoke.eta_s is not None
    check_run_dir(Path(smoke.run_dir), n_test=200, smoke=True)
    assert Path(smoke.run_dir) == runs_root / "fmnist-logreg" / smoke.identity
    assert smoke.code_commit.startswith("files-")

    full = mlexp.run_script(code_dir / "train.py", cfg, runs_root=runs_root, name="fmnist-logreg", readme=README_INFO)
    assert full.status == "completed" and full.identity != smoke.identity
    assert full.code_commit == smoke.code_commit and full.config_hash != smoke.config_hash
    check_run_dir(Path(full.run_dir), n_test=600, smoke=False)
    assert smoke.identity in (Path(full.run_dir) / "README.txt").read_text(), "comparison context lists the smoke run"
    assert mlexp.RunRecord.load(full.run_dir) == full

    # registry: both runs completed, valid JSON
    registry = json.loads((runs_root / "registry.json").read_text())
    assert {k: v["status"] for k, v in registry["runs"].items()} == {smoke.identity: "completed",
                                                                     full.identity: "completed"}  # fmt: skip
    # runs.yaml in the project dir: status, date, commit, env, notes, metrics
    stability = yaml.safe_load((project / "runs.yaml").read_text())
    entry = next(e for e in stability if e["id"] == full.identity)
    assert entry["status"] == "stable" and entry["git_commit"] == full.code_commit and entry["date"]
    assert entry["env"]["python"] and entry["env"]["sklearn"] and entry["env"]["host"] and "gpu" in entry["env"]
    assert entry["metrics"]["accuracy"] == pytest.approx(full.metrics["accuracy"], abs=1e-6) and entry["notes"]

    # identical rerun: skipped, nothing new on disk
    before = sorted(p.name for p in (runs_root / "fmnist-logreg").iterdir())
    again = mlexp.run_script(code_dir / "train.py", dict(reversed(cfg.items())), runs_root=runs_root,
                             name="fmnist-logreg")  # fmt: skip
    assert again.skipped and again.identity == full.identity and again.metrics == full.metrics
    assert sorted(p.name for p in (runs_root / "fmnist-logreg").iterdir()) == before
    assert len(mlexp.list_runs(runs_root)) == 2

    # changed code = new identity
    (code_dir / "train.py").write_text((code_dir / "train.py").read_text() + "\n# a change\n")
    from mlexp.identity import code_commit

    assert code_commit(code_dir) != full.code_commit

    # the CLI over the same registry (runs root = <project>/runs)
    from agent.cli import app

    cli = CliRunner()
    out = cli.invoke(app, ["runs", "list"])
    assert out.exit_code == 0 and smoke.identity in out.output and full.identity in out.output
    out = cli.invoke(app, ["runs", "show", full.identity[:8]])
    assert out.exit_code == 0 and "accuracy=" in out.output and "README.txt" in out.output
    out = cli.invoke(app, ["runs", "tail", full.identity[:8], "-n", "5"])
    assert out.exit_code == 0 and "n_train" in out.output
    out = cli.invoke(app, ["runs", "compare", smoke.identity[:8], full.identity[:8]])
    assert out.exit_code == 0 and "smoke" in out.output and "accuracy" in out.output
