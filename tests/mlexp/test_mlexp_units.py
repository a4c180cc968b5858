"""Units of mlexp: log digest, early stopping, identity, split, post-run check, the script-side logger."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlexp
from mlexp.early_stopping import Patience, overfitting, series_should_stop
from mlexp.identity import code_commit, config_hash, make_identity, resolve_config
from mlexp.log import RunLogger
from mlexp.registry import Registry
from mlexp.split import check_split, load_split, make_split, save_split

TRACEBACK = """Traceback (most recent call last):
  File "/code/train.py", line 88, in <module>
    main()
  File "/code/train.py", line 60, in main
    loss = model(batch)
RuntimeError: CUDA error: device-side assert triggered
CUDA kernel errors might be asynchronously reported"""


# -- log digest -------------------------------------------------------------------------------------------------
def test_thousands_of_repeated_lines_do_not_drown_the_error() -> None:
    lines = ["[10:00:00] loading data", "[10:00:01] model: 12.3M params"]
    for i in range(1, 4001):
        lines.append(f"[10:{i // 60 % 60:02d}:{i % 60:02d}] step {i}/10000 loss={1 / i:.4f} | 0.5 s/step | ETA 0:50:00")
        if i % 2 == 0:
            lines.append(f"/site-packages/torch/x.py:12: UserWarning: tensor {i} is non-contiguous")
    lines += [f"opened shard {chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(300)]  # many distinct lines
    lines += TRACEBACK.splitlines()
    digest = mlexp.summarize_log("\n".join(lines), max_lines=40)
    assert len(digest.splitlines()) < 40 + 20
    assert TRACEBACK in digest, "the traceback is kept whole"
    assert "repeated 2000x" in digest and "UserWarning" in digest
    assert "last progress: step 4000/10000" in digest and "ETA" in digest
    assert "more distinct lines omitted" in digest


def test_digest_shows_final_metrics_and_keeps_chained_tracebacks() -> None:
    text = "\n".join(["start", TRACEBACK, "", "During handling of the above exception, another exception occurred:",
                      "", "Traceback (most recent call last):", '  File "b.py", line 1, in <module>',
                      "KeyError: 'x'"])  # fmt: skip
    digest = mlexp.summarize_log(text)
    assert TRACEBACK in digest and "KeyError: 'x'" in digest and "traceback 2 of last 2" in digest
    ok = mlexp.summarize_log("a\n=== FINAL METRICS ===\naccuracy: 0.91\nloss: 0.3\n")
    assert "final metrics: accuracy=0.91, loss=0.3" in ok


# -- early stopping ---------------------------------------------------------------------------------------------
def test_patience_stops_after_n_evaluations_without_improvement() -> None:
    stopper = Patience(patience=3, min_delta=0.01, mode="min")
    decisions = [stopper.update(v) for v in [1.0, 0.8, 0.795, 0.81, 0.80]]
    assert decisions == [False, False, False, False, True]
    assert stopper.best == 0.8 and stopper.best_step == 2 and "3 evaluations" in stopper.reason
    up = Patience(patience=1, mode="max")
    assert not up.update(0.5) and not up.update(0.6) and up.update(0.6)
    assert Patience(patience=5).update(float("nan")) is True
    with pytest.raises(ValueError):
        Patience(patience=0)
    assert overfitting([1.0, 0.8, 0.6], [0.9, 0.95, 1.0]) and not overfitting([1.0, 0.8, 0.6], [0.9, 0.85, 0.8])


def test_series_rule() -> None:
    assert series_should_stop([0.05], baseline=0.1).action == "investigate"
    assert series_should_stop([0.6, 0.7]).action == "continue"
    assert series_should_stop([0.6, 0.7, 0.703], noise=0.01).action == "diminishing_returns"
    assert series_should_stop([0.6, 0.7, 0.65], noise=0.01).action == "investigate"
    assert series_should_stop([0.5, 0.3], direction="min", noise=0.01).action == "continue"
    assert series_should_stop([0.5, 0.86], target=0.84).action == "target_reached"
    assert not series_should_stop([]).stop


# -- identity ---------------------------------------------------------------------------------------------------
def test_config_hash_ignores_key_order_and_resolve_validates() -> None:
    a = resolve_config({"lr": 0.1, "model": {"width": 4, "depth": 2}}, seed=1, smoke=False)
    b = resolve_config({"model": {"depth": 2, "width": 4}, "lr": 0.1}, seed=1, smoke=False)
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(resolve_config({"lr": 0.1, "model": {"width": 4, "depth": 2}}, seed=2,
                                                        smoke=False))  # fmt: skip
    with pytest.raises(mlexp.ConfigError):
        resolve_config({"x": math.inf}, seed=0, smoke=False)
    assert make_identity("abcdef0123", "1234567") == "abcdef01_1234567"


def test_code_commit_tracks_the_code_dirs_last_commit_and_dirty_changes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    code = repo / "exp"
    code.mkdir(parents=True)
    (code / "train.py").write_text("print(1)\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=t", "add", ".")
    git("-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "init")
    head = git("rev-parse", "--short=10", "HEAD").strip()
    assert code_commit(code) == head
    (repo / "elsewhere.txt").write_text("a neighbour's change outside the code dir\n")
    assert code_commit(code) == head
    # A commit elsewhere in the repo moves HEAD but not this code: the identity stays, so runs are not repeated.
    git("-c", "user.email=a@b", "-c", "user.name=t", "add", "elsewhere.txt")
    git("-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "elsewhere")
    assert git("rev-parse", "--short=10", "HEAD").strip() != head
    assert code_commit(code) == head
    (code / "train.py").write_text("print(2)\n")
    dirty = code_commit(code)
    assert dirty.startswith(head + "+")
    git("-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qam", "change the code")
    assert code_commit(code) == git("rev-parse", "--short=10", "HEAD").strip() != head
    (code / "train.py").write_text("print(2)\n# dirty again\n")
    dirty = code_commit(code)
    (code / "runs").mkdir()
    (code / "runs" / "out.json").write_text("{}")
    assert code_commit(code, exclude=[code / "runs"]) == dirty, "run outputs are not code"


def test_code_commit_without_git_hashes_source_files(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("a = 1\n")
    first = code_commit(tmp_path)
    assert first.startswith("files-")
    (tmp_path / "model.pkl").write_bytes(b"weights")  # not code
    assert code_commit(tmp_path) == first
    (tmp_path / "util.py").write_text("b = 2\n")
    assert code_commit(tmp_path) != first


# -- split hygiene ----------------------------------------------------------------------------------------------
def test_split_by_unit_saved_and_loaded(tmp_path: Path) -> None:
    ids = [f"obs{i}" for i in range(40)]
    units = [f"patient{i // 4}" for i in range(40)]
    split = make_split(ids, units=units, test_fraction=0.25, seed=3)
    unit_of = dict(zip(ids, units, strict=True))
    assert check_split(split, unit_of) == []
    assert {unit_of[i] for i in split["train"]}.isdisjoint({unit_of[i] for i in split["test"]})
    save_split(split, tmp_path / "split.json")
    assert load_split(tmp_path / "split.json") == split
    assert make_split(ids, units=units, test_fraction=0.25, seed=3) == split
    assert check_split({"train": ["a", "b"], "test": ["b"]}) == ["1 ids are in both train and test"]


# -- post-run check ---------------------------------------------------------------------------------------------
def _run_dir_with(tmp_path: Path, frame: pd.DataFrame, **kwargs) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "config.yaml").write_text("a: 1\n")
    (run_dir / "metrics.json").write_text(json.dumps({"score": 1.0}))  # not recomputable from the predictions
    log = RunLogger(run_dir, echo=False)
    log.save_predictions(frame, "id", "y", "p", **kwargs)
    log.close()
    return run_dir


def test_post_run_check_flags_nan_constant_lost_and_outliers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(1, 6, 100)
    frame = pd.DataFrame({"id": range(100), "y": truth, "p": truth + rng.normal(0, 0.3, 100), "g": ["a", "b"] * 50})
    run_dir = _run_dir_with(tmp_path, frame, group_col="g", expected_count=100, valid_range=(1.0, 6.0))
    assert mlexp.post_run_check(run_dir).ok
    index = pd.read_csv(run_dir / "groups" / "_index.csv")
    assert list(index["mae"]) == sorted(index["mae"], reverse=True), "worst (largest error) first"
    per_sample = pd.read_csv(run_dir / "groups" / "a" / "per_sample.csv")
    assert list(per_sample["abs_error"]) == sorted(per_sample["abs_error"], reverse=True)

    broken = frame.copy()
    broken.loc[:9, "p"] = np.nan  # 10% parse failures
    broken.loc[10:, "p"] = 3.0  # (near-)constant
    broken.loc[10:11, "p"] = 9.0  # out of range: 2%, a note rather than a problem
    run_dir = _run_dir_with(tmp_path, broken, group_col="g", expected_count=120, valid_range=(1.0, 6.0))
    result = mlexp.post_run_check(run_dir)
    text = " | ".join(result.problems)
    assert not result.ok
    for needle in ("100 predictions for 120 inputs", "parse-failure rate 10.0%", "near-constant predictions: 98%"):
        assert needle in text, needle
    assert any("2 predictions (2.0%) outside the valid range" in note for note in result.notes)
    failures = pd.read_csv(run_dir / "diagnostics" / "parse_failures.csv")
    assert len(failures) == 10
    assert len(pd.read_csv(run_dir / "diagnostics" / "outliers.csv")) == 2
    assert mlexp.post_run_check(run_dir, expected_count=100).problems != result.problems

    labels = pd.DataFrame({"id": range(50), "y": ["cat", "dog"] * 25, "p": ["cat"] * 50})
    result = mlexp.post_run_check(_run_dir_with(tmp_path, labels))
    assert not result.ok and any("same value" in p for p in result.problems)


def test_post_run_check_without_outputs(tmp_path: Path) -> None:
    result = mlexp.post_run_check(tmp_path)
    assert not result.ok and any("metrics.json" in p for p in result.problems)


# -- script-side logger -----------------------------------------------------------------------------------------
def test_run_logger_step_one_at_once_with_eta(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "cfg.json").write_text(json.dumps({"lr": 0.1, "seed": 4, "smoke": True}))
    monkeypatch.setenv("RUN_DIR", str(tmp_path))
    monkeypatch.setenv("RUN_CONFIG", str(tmp_path / "cfg.json"))
    monkeypatch.setenv("SMOKE", "1")
    monkeypatch.setenv("SEED", "4")
    with RunLogger(min_interval_s=3600) as log:
        assert log.config["lr"] == 0.1 and log.smoke and log.seed == 4 and mlexp.log.load_config()["lr"] == 0.1
        for step in range(1, 101):
            log.step(step, 100, loss=1 / step)
        log.final(accuracy=0.5, loss=0.25)
    out = capsys.readouterr().out.splitlines()
    step_lines = [line for line in out if " step " in line]
    assert len(step_lines) == 2, "step 1 and the last step; the rest throttled"
    assert "step 1/100 loss=1" in step_lines[0] and "s/step" in step_lines[0] and "ETA" in step_lines[0]
    assert out[-3:] == ["=== FINAL METRICS ===", "accuracy: 0.5", "loss: 0.25"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 100
    assert (tmp_path / "training.log").read_text().splitlines()[0].startswith("[")
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"accuracy": 0.5, "loss": 0.25}


def test_registry_find_by_prefix(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.json")
    for ident in ("aaaa1111_x", "aaaa2222_x"):
        registry.put(mlexp.RunRecord(identity=ident, name="n", status="completed", run_dir=str(tmp_path / ident)))
    assert registry.find("aaaa1").identity == "aaaa1111_x"
    with pytest.raises(mlexp.RegistryError, match="matches 2 runs"):
        registry.find("aaaa")
    with pytest.raises(mlexp.RegistryError, match="no run"):
        registry.find("zzz")


def test_nested_registries_are_listed_and_found(tmp_path: Path) -> None:
    from mlexp.registry import find_run, list_runs

    for sub, ident in (("", "top11111_x"), ("rep-1/experiments", "deep2222_x")):
        registry = Registry(tmp_path / sub / "registry.json")
        registry.put(mlexp.RunRecord(identity=ident, name="n", status="completed", run_dir=str(tmp_path / ident)))
    assert [r.identity for r in list_runs(tmp_path)] == ["top11111_x"]
    assert {r.identity for r in list_runs(tmp_path, nested=True)} == {"top11111_x", "deep2222_x"}
    assert find_run(tmp_path, "deep").identity == "deep2222_x"


def test_concurrent_writers_lose_no_entry(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "registry.json"

    def writer(k: int) -> None:
        for i in range(10):  # a fresh Registry each time, as separate runners would have
            Registry(path).put(mlexp.RunRecord(identity=f"w{k}_{i}", name="n", status="completed", run_dir="."))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(json.loads(path.read_text())["runs"]) == 40
