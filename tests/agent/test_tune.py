"""replicate tune: a real 3-trial Optuna search on the tinyshakespeare GPT, a scripted-LLM hybrid search that cites
a paper from a real (small) PaperIndex and commits a code edit, and bad input (no metric, knobs out of range, a
crashing trial, a hanging trial, an edit of the protected evaluation) recorded as such while the search goes on."""

from __future__ import annotations

import gzip
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from agent.cli import app
from agent.tune.ledger import Ledger
from agent.tune.target import TuneTargetError, load_target
from agent.tune.tuner import TuneOptions, run_tune

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tinyshakespeare_gpt"
ZCLIP = "2504.02507"  # "ZClip: Adaptive Spike Mitigation for LLM Pre-Training", in the shared arXiv sample

TINY_BASELINE = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 8,
    "max_iters": 25,
    "warmup_iters": 5,
    "learning_rate": 0.001,
    "eval_tokens": 2048,
    "log_interval": 10,
    "threads": 1,
}


def tiny_target(tmp_path: Path, data: Path) -> Path:
    """The shipped example, copied, with a seconds-long baseline and a small knob space."""
    target = tmp_path / "tiny_gpt"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((EXAMPLE / "tune.yaml").read_text())
    spec["baseline"] = {**TINY_BASELINE, "data_path": str(data)}
    spec["knobs"] = {
        "learning_rate": {"type": "float", "low": 0.0003, "high": 0.03, "log": True},
        "n_embd": {"type": "int", "low": 16, "high": 64, "step": 16},
    }
    spec["grace_s"] = 90
    (target / "tune.yaml").write_text(yaml.safe_dump(spec))
    return target


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def check_ledger_consistent(tune_dir: Path) -> Ledger:
    """Parquet and TSV agree; every keep beat its threshold and every discard did not; the incumbent chain holds."""
    ledger = Ledger.load(tune_dir)
    tsv = pd.read_csv(tune_dir / "tune.tsv", sep="\t")
    assert list(tsv["trial"]) == [r.trial for r in ledger.rows]
    assert list(tsv["verdict"]) == [r.verdict for r in ledger.rows]
    assert ledger.rows[0].verdict == "baseline"
    incumbent = ledger.rows[0].metric_mean
    # The checks below hold for measured trials; a ledger without one would pass them all vacuously.
    assert any(row.verdict in ("keep", "discard") for row in ledger.rows[1:]), [r.verdict for r in ledger.rows]
    for row in ledger.rows[1:]:
        if row.verdict in ("keep", "discard"):
            assert row.values and row.metric_mean == pytest.approx(sum(row.values) / len(row.values))
            assert row.incumbent_mean == pytest.approx(incumbent)
            assert row.improvement == pytest.approx(incumbent - row.metric_mean)  # val_loss: lower is better
            assert (row.improvement > row.threshold) == (row.verdict == "keep")
            for run_dir, value in zip(row.run_dirs, row.values, strict=True):  # the ledger shows what mlexp measured
                assert json.loads((Path(run_dir) / "metrics.json").read_text())["val_loss"] == pytest.approx(value)
        if row.verdict == "keep":
            incumbent = row.metric_mean
    for name in ("report.md", "report.html", "metric_vs_trial.png"):
        assert (tune_dir / name).stat().st_size > 0
    return ledger


def test_optuna_three_trials_cli(tmp_path: Path, shakespeare_txt: Path) -> None:
    target = tiny_target(tmp_path, shakespeare_txt)
    out = tmp_path / "tune"
    result = CliRunner().invoke(
        app,
        [
            "tune",
            str(target),
            "--budget",
            "3",
            "--trial-time",
            "20s",
            "--proposer",
            "optuna",
            "--baseline-seeds",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "val_loss: baseline" in result.output
    ledger = check_ledger_consistent(out)
    assert [r.trial for r in ledger.rows] == [0, 1, 2, 3]
    assert len(ledger.rows[0].values) == 2 and ledger.rows[0].metric_std > 0  # the measured noise floor
    log = (Path(ledger.rows[0].run_dirs[0]) / "training.log").read_text()
    assert "step 1/25" in log and "s/step" in log and "ETA" in log  # the example follows the run contract
    spec = load_target(target)
    for row in ledger.rows[1:]:
        assert row.proposer == "optuna" and row.verdict in ("keep", "discard")
        assert not spec.config_problems({k: row.config[k] for k in spec.knobs})  # Optuna stays inside the ranges
        assert row.config["time_budget_s"] == 20.0
    import optuna

    storage = f"sqlite:///{out / 'optuna.db'}"
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 4  # baseline added + 3 asked
    # the report holds the plot and the headline
    assert "baseline val_loss" in (out / "report.md").read_text()


def _small_index(tmp_path: Path, arxiv_jsonl: Path):
    """A real PaperIndex over 80 records of the shared arXiv sample plus the ZClip paper."""
    from retrieval.index import PaperIndex

    lines = []
    with gzip.open(arxiv_jsonl, "rt", encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i < 80 or f'"id": "{ZCLIP}"' in line:
                lines.append(line)
            if i >= 80 and len(lines) > 80:
                break
    sample = tmp_path / "sample.jsonl"
    sample.write_text("".join(lines), encoding="utf-8")
    index = PaperIndex(tmp_path / "index")
    index.import_jsonl(sample, progress=False)
    assert index.get_text(ZCLIP)
    return index


ADAPTIVE_CLIP = (
    '            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))\n'
    "            ema_norm = norm if it == 0 else cfg['clip_ema'] * ema_norm + (1 - cfg['clip_ema']) * norm\n"
    '            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"] * ema_norm)'
)


def test_hybrid_scripted_llm_cites_paper_and_commits_edit(
    tmp_path: Path, shakespeare_txt: Path, arxiv_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _small_index(tmp_path, arxiv_jsonl)
    text = index.get_text(ZCLIP)
    quote = next(s for s in text.replace("\n", " ").split(". ") if "clipping" in s.lower()).strip()
    edit = {
        "summary": "ZClip-style adaptive gradient clipping relative to the running gradient norm",
        "rationale": "ZClip reports that adaptive clipping based on recent gradient norm statistics avoids loss spikes",
        "config": {"clip_ema": 0.9},
        "new_knobs": {"clip_ema": {"type": "float", "low": 0.5, "high": 0.99}},
        "edits": [
            {
                "path": "train.py",
                "search": '    "grad_clip": 1.0,  # 0 disables clipping\n',
                "replace": '    "grad_clip": 1.0,  # 0 disables clipping\n    "clip_ema": 0.9,\n',
            },
            {
                "path": "train.py",
                "search": '            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])',
                "replace": ADAPTIVE_CLIP,
            },
        ],
        "citations": [{"paper_id": ZCLIP, "quote": quote}],
    }
    tamper = {
        "summary": "evaluate on fewer tokens",
        "rationale": "faster evaluation",
        "edits": [
            {"path": "evaluate.py", "search": "DEFAULT_EVAL_TOKENS = 32768", "replace": "DEFAULT_EVAL_TOKENS = 64"}
        ],
        "citations": [{"paper_id": ZCLIP, "quote": "evaluation on fewer tokens is always better for small models"}],
    }
    script = tmp_path / "llm.json"
    script.write_text(
        json.dumps(
            {
                "tune_search": [{"queries": ["adaptive gradient clipping loss spikes"]}] * 2,
                "tune_propose": [edit, tamper],
            }
        )
    )
    monkeypatch.setenv("REPLICATE_LLM", f"scripted:{script}")
    target = tiny_target(tmp_path, shakespeare_txt)
    out = tmp_path / "tune"
    opts = TuneOptions(budget=3, trial_time_s=20, proposer="hybrid", llm_every=2, baseline_seeds=2)
    result = run_tune(target, opts, tune_dir=out, index=index, log=lambda line: None)
    ledger = check_ledger_consistent(out)
    rows = {r.trial: r for r in ledger.rows}
    assert [rows[i].proposer for i in (1, 2, 3)] == ["llm", "optuna", "llm"]

    first = rows[1]
    assert first.kind == "config+code" and first.files_changed == ["train.py"]
    assert first.citations[0].paper_id == ZCLIP and first.citations[0].verified
    assert "ZClip" in first.citations[0].title
    assert first.config["clip_ema"] == 0.9
    work = out / "work"
    assert "ema_norm" in git(work, "show", f"{first.commit}:train.py")  # the edit is a commit ...
    assert git(work, "rev-parse", "trial-001").strip() == first.commit  # ... reachable through its tag
    assert git(work, "rev-parse", "baseline").strip() != first.commit
    if first.verdict == "keep":  # kept: the incumbent branch holds it
        assert "ema_norm" in (work / "train.py").read_text()
        assert "clip_ema" in result.best_config
    else:  # discarded or crashed: reset to the incumbent, the commit stays reachable via the tag
        assert first.verdict in ("discard", "crash")
        assert "ema_norm" not in (work / "train.py").read_text()

    third = rows[3]
    assert third.verdict == "rejected" and "protected" in third.reason and not third.values
    assert not third.citations[0].verified  # an invented quote does not verify
    assert "DEFAULT_EVAL_TOKENS = 32768" in (work / "evaluate.py").read_text()
    assert rows[2].proposer == "optuna" and rows[2].verdict in ("keep", "discard")
    logs = sorted((out / "llm_logs").glob("*tune_propose*.txt"))
    assert logs and "=== INPUT ===" in logs[0].read_text()  # every LLM call is logged as plain text
    assert ZCLIP in (out / "report.md").read_text()


# ------------------------------------------------------------------------------------------------ bad input

TOY = '''"""Toy experiment following the run contract: loss = (x - 3)^2 + seed noise; mode crash/hang for bad trials."""
import os, random, time
from mlexp.log import RunLogger, load_config

cfg = {k: v for k, v in load_config().items() if k not in ("seed", "smoke")}
log = RunLogger()
log.step(1, 1, x=cfg["x"])
if cfg.get("mode") == "crash":
    raise RuntimeError("deliberate crash for the test")
if cfg.get("mode") == "hang":
    time.sleep(600)
rng = random.Random(int(os.environ.get("SEED", "0")))
log.final(loss=(cfg["x"] - 3) ** 2 + rng.gauss(0, 0.05))
'''


def toy_target(tmp_path: Path, **spec_changes) -> Path:
    target = tmp_path / "toy"
    target.mkdir(parents=True)
    (target / "run.py").write_text(TOY)
    (target / "evaluate.py").write_text("# the fixed metric lives in run.py for this toy\n")
    spec = {
        "name": "toy",
        "script": "run.py",
        "metric": {"name": "loss", "direction": "min"},
        "protected": ["evaluate.py"],
        "budget_key": "time_budget_s",
        "grace_s": 4,
        "baseline": {"x": 0.0, "mode": "ok"},
        "knobs": {
            "x": {"type": "float", "low": 0.0, "high": 10.0},
            "mode": {"type": "categorical", "choices": ["ok", "crash", "hang"]},
        },
    }
    spec.update(spec_changes)
    (target / "tune.yaml").write_text(yaml.safe_dump(spec))
    return target


def test_no_metric_and_bad_baseline_are_one_line_errors(tmp_path: Path) -> None:
    target = toy_target(tmp_path, metric=None)
    with pytest.raises(TuneTargetError, match="declares no metric"):
        load_target(target)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "replicate"), "tune", str(target), "--budget", "1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "declares no metric" in proc.stderr
    bad = toy_target(tmp_path / "b", baseline={"x": 42.0})
    with pytest.raises(TuneTargetError, match="outside the declared knob ranges"):
        load_target(bad)
    with pytest.raises(TuneTargetError, match="declares no tunable knobs"):
        load_target(tmp_path)  # a folder without tune.yaml


def test_out_of_range_crash_and_hang_are_recorded_and_the_search_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proposals = [
        {"summary": "x far out", "rationale": "try", "config": {"x": 50.0}},
        {"summary": "crash", "rationale": "try", "config": {"mode": "crash"}},
        {"summary": "hang", "rationale": "try", "config": {"mode": "hang"}},
        {"summary": "undeclared knob", "rationale": "try", "config": {"y": 1}},
        {"summary": "x at the optimum", "rationale": "the minimum of (x-3)^2", "config": {"x": 3.0}},
    ]
    script = tmp_path / "llm.json"
    script.write_text(json.dumps({"tune_propose": proposals + ["not json at all"] * 3}))
    monkeypatch.setenv("REPLICATE_LLM", f"scripted:{script}")
    out = tmp_path / "tune"
    result = run_tune(
        toy_target(tmp_path),
        TuneOptions(budget=6, trial_time_s=1, proposer="llm", papers=False),
        tune_dir=out,
        log=lambda line: None,
    )
    rows = {r.trial: r for r in Ledger.load(out).rows}
    assert rows[1].verdict == "rejected" and "outside [0, 10]" in rows[1].reason and not rows[1].run_dirs
    assert rows[2].verdict == "crash" and "deliberate crash" in rows[2].reason
    assert rows[3].verdict == "crash" and "hang" in rows[3].reason and rows[3].cost_s < 30
    assert rows[4].verdict == "rejected" and "not a declared knob" in rows[4].reason
    assert rows[5].verdict == "keep" and rows[5].metric_mean < 1  # the search went on and found the optimum
    assert rows[6].verdict == "rejected" and "did not validate" in rows[6].reason  # malformed LLM output
    assert result.best_config["x"] == 3.0 and result.relative_improvement > 0.8
    assert set(pd.read_parquet(out / "tune.parquet")["verdict"]) == {"baseline", "rejected", "crash", "keep"}


def test_parallel_optuna_on_toy_target(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    target = toy_target(tmp_path, knobs={"x": {"type": "float", "low": 0.0, "high": 10.0}})
    result = run_tune(
        target,
        TuneOptions(budget=2, trial_time_s=1, parallel=2, seed=1, baseline_seeds=2),
        tune_dir=out,
        log=lambda line: None,
    )
    rows = Ledger.load(out).rows
    assert sorted(r.trial for r in rows) == [0, 1, 2]
    assert all(r.verdict in ("baseline", "keep", "discard") for r in rows)
    assert math.isfinite(result.best_mean)
    assert not list((out / "trials").glob("trial-*"))  # worktrees are cleaned up, tags remain
    assert "trial-002" in git(out / "work", "tag")


def test_ab_papers_vs_no_papers_same_budget_with_ci(
    tmp_path: Path, arxiv_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.tune.ab import run_ab

    index = _small_index(tmp_path, arxiv_jsonl)
    quote = next(s for s in index.get_text(ZCLIP).replace("\n", " ").split(". ") if "clipping" in s.lower())
    script = tmp_path / "llm.json"
    script.write_text(
        json.dumps(
            {
                "tune_search": [{"queries": ["gradient clipping"]}],
                "tune_propose": [  # the papers arm runs first and gets the first proposal
                    {
                        "summary": "x=3",
                        "rationale": "from the paper",
                        "config": {"x": 3.0},
                        "citations": [{"paper_id": ZCLIP, "quote": quote}],
                    },
                    {"summary": "x=1", "rationale": "standard playbook", "config": {"x": 1.0}},
                ],
            }
        )
    )
    monkeypatch.setenv("REPLICATE_LLM", f"scripted:{script}")
    opts = TuneOptions(budget=1, trial_time_s=1, proposer="llm", baseline_seeds=2)
    ab = run_ab(toy_target(tmp_path), opts, tune_dir=tmp_path / "ab", index=index, eval_seeds=2, log=lambda s: None)
    papers, plain = Ledger.load(ab.papers.tune_dir).rows, Ledger.load(ab.no_papers.tune_dir).rows
    assert len(papers) == len(plain) == 2  # identical budget
    assert papers[0].seeds == plain[0].seeds and ab.eval_seeds == [1000, 1001]  # identical seeds
    assert papers[1].citations[0].verified and not plain[1].citations
    assert ab.difference.diff > 0 and ab.difference.low > 0  # papers arm's incumbent (x=3) is better than x=1
    assert "Papers arm better by" in ab.report.read_text()
    assert json.loads((ab.tune_dir / "ab.json").read_text())["values"]["papers"]


def test_target_can_be_a_replications_run_dir(tmp_path: Path) -> None:
    import mlexp

    target = toy_target(tmp_path)
    record = mlexp.run_script(target / "run.py", {"x": 2.5, "mode": "ok"}, runs_root=tmp_path / "runs", name="toy")
    assert record.status == "completed", record.digest
    spec = load_target(Path(record.run_dir))
    assert spec.root == target.resolve() and spec.baseline["x"] == 2.5 and "seed" not in spec.baseline


def test_recheck_measures_drift_into_the_noise_floor(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    target = toy_target(tmp_path, knobs={"x": {"type": "float", "low": 0.0, "high": 10.0}})
    opts = TuneOptions(budget=2, trial_time_s=1, baseline_seeds=2, recheck_every=1, seed=3)
    result = run_tune(target, opts, tune_dir=out, log=lambda line: None)
    rows = Ledger.load(out).rows
    rechecks = [r for r in rows if r.verdict == "recheck"]
    assert [r.trial for r in rechecks] == [1, 2] and all(len(r.values) == 1 for r in rechecks)
    assert rechecks[0].seeds == [500] and rechecks[1].seeds == [501]
    kept_after = [r for r in rows if r.verdict in ("baseline", "keep")][-1]
    assert len(result.best_values) == len(kept_after.values) + sum(
        r.change.startswith(f"incumbent (trial {kept_after.trial})") for r in rechecks
    )
