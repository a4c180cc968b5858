"""The deterministic checklist (no LLM): §13 silent failures, setup mismatches against the paper and the spec, run
diagnostics and curves, seeds, metric definitions; and ablations turned into configs and real mlexp runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agent.hypotheses import checklist
from agent.hypotheses.ablations import ablation_configs, ablation_plan, queue_ablations
from agent.hypotheses.checklist import run_checklist
from agent.hypotheses.config_keys import canonical, same_value
from agent.hypotheses.literature import propose_hypotheses
from agent.hypotheses.model import Ablation, Hypothesis
from agent.hypotheses.run_checks import still_improving
from agent.hypotheses.seed_checks import paper_repeats, seeds_needed
from mlexp import CheckResult, RunRecord
from mlexp.compare import compare
from mlexp.log import RunLogger
from retrieval.models import Claim, PageText, Paper, Setup, SetupItem

REPO = Path(__file__).resolve().parents[2]


def paper_with(claims=(), setup=(), text=""):
    return Paper(slug="p", source_path="p.pdf", sha256="0", n_pages=1, title="A paper", claims=list(claims),
                 setup=Setup(items=list(setup)), pages=[PageText(page=1, text=text)])  # fmt: skip


def claim(cid="T1-r1-c2", value=0.841, row="LogisticRegression / C=1 penalty=l2", column="Test Accuracy / Fashion"):
    return Claim(id=cid, value=value, text=str(value), page=1, table="Table 1", row=row, column=column,
                 metric="test accuracy", method="LogisticRegression", higher_is_better=True,
                 quote=f"{row} {value}")  # fmt: skip


def run(tmp: Path, name="r", seed=0, accuracy=0.80, config=None, status="completed", **extra) -> RunRecord:
    run_dir = tmp / name / str(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunRecord(identity=f"{name}{seed}", name=name, status=status, run_dir=str(run_dir), seed=seed,
                     metrics={} if accuracy is None else {"accuracy": accuracy},
                     config={**(config or {}), "seed": seed, "smoke": False}, **extra)  # fmt: skip


def target(reported=0.841, tolerance=0.01, claim_id="T1-r1-c2", metric="accuracy", direction="max"):
    return {"claim_id": claim_id, "metric": metric, "direction": direction, "tolerance": tolerance, "seeds": 3,
            "reported": reported}  # fmt: skip


def by_id(hyps):
    return {h.id: h for h in hyps}


def test_helpers():
    assert [canonical(k) for k in ("lr", "train.max_iter", "n_train", "num_epochs", "C")] == [
        "learning_rate", "iterations", "split:train", "epochs", "c"]  # fmt: skip
    assert same_value("1e-3", 0.001) and same_value("[100, 10]", [100, 10]) and same_value("'ovr'", "OVR")
    assert not same_value(1, 10) and not same_value("l1", "l2")
    # ((1.959964 + 0.841621) * 0.02 / 0.03)^2 = (1.867724)^2 = 3.488392 -> ceil 4, + 1 = 5 seeds
    assert seeds_needed(0.02, 0.03) == 5
    assert still_improving([2.0, 1.5, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6], sign=-1)
    assert not still_improving([2.0, 1.0, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6], sign=-1)
    assert paper_repeats(paper_with(text="All algorithms are repeated 5 times by shuffling the data")) == 5
    assert paper_repeats(paper_with(setup=[SetupItem(key="seeds", value="3 seeds", page=1, quote="q")])) == 3


def test_silent_failures_from_code_config_and_logs(tmp_path: Path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        "model = AutoModel.from_pretrained(name, device_map='auto')\n"
        "batch = tok(texts, padding='max_length', max_length=4096)\n"
        "tok.pad_token = tok.eos_token\n"
    )
    cfg = {"batch_size": 8, "gradient_accumulation_steps": 4, "max_iter": 50}
    r = run(tmp_path, config=cfg, script=str(code / "train.py"))
    Path(r.run_dir, "training.log").write_text(
        "[10:00:00] Token indices sequence length is longer than the specified maximum sequence length (600 > 512)\n"
        "[10:00:09] ConvergenceWarning: lbfgs failed to converge (status=1)\n"
    )
    paper = paper_with(setup=[SetupItem(key="batch_size", value="64", page=2, quote="We use a batch size of 64.")])
    verdicts = compare([target()], [r])
    hyps = by_id(run_checklist(paper, None, verdicts, [r]))
    for hid in ("silent-device-map-auto", "silent-padding-max-length", "silent-pad-eos", "silent-truncation",
                "silent-not-converged", "silent-grad-accum"):  # fmt: skip
        assert hid in hyps, sorted(hyps)
        assert hyps[hid].category == "silent_failure" and hyps[hid].evidence
    assert "ConvergenceWarning" in hyps["silent-not-converged"].evidence[0]
    assert hyps["silent-not-converged"].ablation.change == {"max_iter": 200}
    assert hyps["silent-not-converged"].ablation.expected_direction == "increase"  # measured below reported
    accum = hyps["silent-grad-accum"]
    assert any("effective batch 32" in e for e in accum.evidence)
    assert any("never states the effective batch size" in e for e in accum.evidence)
    assert accum.ablation.change == {"gradient_accumulation_steps": 8} and accum.priority == "high"  # 8 x 8 = 64
    # The paper's batch size 64 vs the run's batch_size 8 is also a plain setup mismatch.
    assert hyps["setup-batch_size"].ablation.change == {"batch_size": 64}


def test_setup_mismatches_against_paper_row_setup_and_spec(tmp_path: Path):
    from agent.spec import Budget, Data, Hyperparameter, Method, Spec, Target

    c = claim()
    paper = paper_with(
        claims=[c],
        setup=[SetupItem(key="epochs", value="30", page=3, quote="We train for 30 epochs."),
               SetupItem(key="split", value="train=60,000; test=10,000", page=1, quote="60,000 ... 10,000"),
               SetupItem(key="split", value="train=6,000 per class", page=3, quote="6,000 per class")],
    )  # fmt: skip
    spec = Spec(
        paper_slug="p", objective="o",
        targets=[Target(claim_id=c.id, metric="accuracy", direction="max", tolerance=0.01, seeds=2, reported=c.value)],
        data=Data(name="d", source="s", split="official", split_unit="image"), method=Method(name="m", description="d"),
        hyperparameters=[Hyperparameter(name="lr", value=0.1, source="assumed", reason="a common default")],
        config={"C": 1.0, "epochs": 30, "lr": 0.1, "n_train": 60000},
        budget=Budget(eta_minutes=1, wall_limit_minutes=2),
    )  # fmt: skip
    cfg = {"C": 10.0, "epochs": 3, "lr": 0.1, "n_train": 60000, "n_test": 5000}
    runs = [run(tmp_path, seed=s, accuracy=a, config=cfg) for s, a in enumerate([0.70, 0.71])]
    verdicts = compare(spec.targets, runs)
    hyps = by_id(run_checklist(paper, spec, verdicts, runs))
    assert hyps["setup-C"].ablation.change == {"C": 1} and "the paper" in hyps["setup-C"].statement
    assert any("Table 1 row" in e for e in hyps["setup-C"].evidence)
    epochs = hyps["setup-epochs"]
    assert epochs.priority == "high" and "under-trained" in epochs.statement
    assert epochs.ablation.change == {"epochs": 30} and epochs.ablation.expected_direction == "increase"
    assert hyps["setup-n_test"].ablation.change == {"n_test": 10000}  # "test=10,000" from the split item
    assert "setup-n_train" not in hyps  # 60,000 matches; "6,000 per class" is not a count of the split
    assert "setup-lr" not in hyps  # the run used the approved value
    assert "setup-unset-penalty" in hyps  # printed in the row, not set by the run config: evidence only
    assert hyps["setup-unset-penalty"].ablation is None


def test_diagnostics_curves_failed_runs_and_too_good(tmp_path: Path):
    cfg = {"steps": 8}
    good = run(tmp_path, "cfg", 0, 0.80, cfg, check=CheckResult(ok=False, problems=["10 predictions for 20 inputs"]))
    log = RunLogger(good.run_dir, echo=False)
    for step in range(1, 9):
        log.step(step, 8, train_loss=2.0 - 0.2 * step, val_loss=float("nan") if step == 8 else 1.0)
    log.close()
    failed = run(tmp_path, "cfg", 1, None, cfg, status="failed", exit_reason="memory", error="Killed: out of memory")
    verdicts = compare([target()], [good, failed])
    hyps = by_id(run_checklist(None, None, verdicts, [good, failed]))
    assert hyps["diag-still-improving"].ablation.change == {"steps": 16}
    assert "train_loss went 1.8 -> 0.4" in hyps["diag-still-improving"].evidence[0]
    assert "val_loss" in hyps["diag-nan-curve"].evidence[0]
    assert "memory" in hyps["diag-failed-runs"].evidence[0]
    assert "10 predictions for 20 inputs" in hyps["diag-post-run-check"].evidence[0]
    better = compare([target(reported=0.60)], [good])
    assert "diag-too-good-T1-r1-c2" in by_id(run_checklist(None, None, better, [good]))


def test_seed_checks(tmp_path: Path):
    one = compare([target()], [run(tmp_path, seed=0, accuracy=0.80)])
    hyps = by_id(run_checklist(None, None, one, []))
    single = hyps["seeds-single-T1-r1-c2"]
    assert single.ablation.seeds == 3 and single.ablation.change == {} and single.priority == "high"
    # Replicated only because of noise: gap -0.03 > 0.01, s = 0.02, n = 3 (p = 0.12): about 5 seeds needed.
    noisy = [run(tmp_path, "n", s, a) for s, a in enumerate([0.791, 0.811, 0.831])]
    verdicts = compare([target()], noisy)
    assert verdicts[0].verdict == "replicated" and verdicts[0].p_value > 0.05
    hyps = by_id(run_checklist(None, None, verdicts, noisy))
    assert hyps["seeds-inconclusive-T1-r1-c2"].ablation.seeds == 5
    # Diverged with fewer runs than the paper averages.
    paper = paper_with(text="Results are the mean of 5 runs and are reported on the test set.")
    quiet = [run(tmp_path, "q", s, a) for s, a in enumerate([0.70, 0.701])]
    hyps = by_id(run_checklist(paper, None, compare([target()], quiet), quiet))
    assert hyps["seeds-fewer-T1-r1-c2"].ablation.seeds == 5


def test_metric_definition_mismatches(tmp_path: Path):
    paper = paper_with(claims=[claim()])
    pct = [run(tmp_path, "pct", 0, 84.3)]
    hyps = by_id(run_checklist(paper, None, compare([target()], pct), pct))
    assert "percentage where the paper reports a fraction" in hyps["metric-scale-T1-r1-c2"].statement
    err = [run(tmp_path, "err", 0, 0.158)]
    assert "metric-complement-T1-r1-c2" in by_id(run_checklist(paper, None, compare([target()], err), err))
    val = [RunRecord(identity="v", name="v", status="completed", run_dir=str(tmp_path), metrics={"val_accuracy": 0.7})]
    hyps = by_id(run_checklist(paper, None, compare([target(metric="val_accuracy")], val), val))
    assert "validation set" in hyps["metric-split-T1-r1-c2"].statement
    loss = [RunRecord(identity="l", name="l", status="completed", run_dir=str(tmp_path), metrics={"loss": 0.5})]
    hyps = by_id(run_checklist(paper, None, compare([target(metric="loss", direction="min")], loss), loss))
    assert "metric-direction-T1-r1-c2" in hyps and "metric-name-T1-r1-c2" in hyps


def test_clean_run_gives_no_high_priority_findings(tmp_path: Path):
    paper = paper_with(claims=[claim()], text="All algorithms are repeated 2 times.")
    runs = [run(tmp_path, seed=s, accuracy=a, config={"C": 1, "penalty": "l2"}) for s, a in enumerate([0.84, 0.842])]
    hyps = run_checklist(paper, None, compare([target()], runs), runs)
    assert [h for h in hyps if h.priority == "high"] == []
    assert propose_hypotheses(None, paper, None, compare([target()], runs), runs, None, log_dir=None) == hyps


def test_ablation_configs_and_plan():
    base = {"steps": 4, "optim": {"lr": 0.1, "momentum": 0.9}, "C": 1.0}

    def hyp(hid, change=None, seeds=None, approved=True):
        return Hypothesis(id=hid, statement=hid, category="setup_mismatch", approved=approved,
                          ablation=Ablation(change=change or {}, seeds=seeds))  # fmt: skip

    hyps = [
        hyp("a", {"steps": 16}),
        hyp("b", {"optim.lr": 0.01}),
        hyp("dup", {"steps": 16}),  # same experiment as "a"
        hyp("noop", {"C": 1.0}),  # leaves the config as it was
        hyp("seeds", seeds=5),  # the base config, with more seeds
        hyp("unapproved", {"C": 10.0}, approved=False),
    ]
    configs = ablation_configs(hyps, base, approved_only=True)
    assert configs == [
        {"steps": 16, "optim": {"lr": 0.1, "momentum": 0.9}, "C": 1.0},
        {"steps": 4, "optim": {"lr": 0.01, "momentum": 0.9}, "C": 1.0},
        base,
    ]
    assert base["optim"]["lr"] == 0.1  # the base config is not modified
    assert [h.id for h, _ in ablation_plan(hyps, base)] == ["a", "b", "seeds", "unapproved"]


@pytest.mark.skipif(not (REPO.parent / "shared/data/fashion-mnist").is_dir(), reason="shared Fashion-MNIST data absent")
def test_queue_ablations_runs_through_mlexp(tmp_path: Path):
    # A copy outside the repo: its identity is a hash of its files, not the repo's HEAD, which other work moves.
    script = tmp_path / "code" / "train.py"
    script.parent.mkdir()
    script.write_text((REPO / "examples/fashion_mnist_logreg/train.py").read_text())
    base = dict(data_dir=str(REPO.parent / "shared/data/fashion-mnist"), n_train=500, n_test=200, steps=1,
                iters_per_step=2, C=1.0, smoke_n_train=100, smoke_n_test=50, smoke_steps=1)  # fmt: skip
    hyps = [Hypothesis(id="more-iters", statement="s", category="setup_mismatch", approved=True,
                       ablation=Ablation(change={"iters_per_step": 20}, expected_direction="increase")),
            Hypothesis(id="not-approved", statement="s", category="setup_mismatch",
                       ablation=Ablation(change={"C": 100.0}))]  # fmt: skip
    records = queue_ablations(hyps, base, script, runs_root=tmp_path / "runs", seeds=1)
    assert len(records) == 1 and records[0].status == "completed", records[0].error
    assert records[0].name == "ablation-more-iters" and records[0].config["iters_per_step"] == 20
    assert 0.3 < records[0].metrics["accuracy"] <= 1.0
    again = queue_ablations(hyps, base, script, runs_root=tmp_path / "runs", seeds=1)
    assert again[0].skipped  # same config + same code: mlexp's identity check skips it


def test_llm_failure_keeps_the_checklist(tmp_path: Path):
    from agent.errors import LLMOutputError
    from agent.llm.seam import load_chat_model

    runs = [run(tmp_path, seed=0, accuracy=0.70, config={"steps": 1})]
    verdicts = compare([target()], runs)
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"hypotheses": ["not json", "still not", "nope", "no", "x", "y"]}))
    model = load_chat_model(f"scripted:{script}")
    out = propose_hypotheses(model, None, None, verdicts, runs, None, log_dir=tmp_path / "logs")
    assert out and all(h.source == "checklist" for h in out)
    with pytest.raises(LLMOutputError):
        propose_hypotheses(model, None, None, verdicts, runs, None, log_dir=tmp_path / "logs", strict=True)
    assert math.isfinite(verdicts[0].gap)


def test_flat_run_list_is_split_by_target_config(tmp_path: Path):
    """Two Table rows (C=1, C=10) run as two configs and handed over as one flat list: each claim is checked
    against its own runs, so neither row's C is reported as a mismatch."""
    from agent.spec import Budget, Data, Method, Spec, Target

    c1, c10 = claim("T-r1", 0.841, "LogisticRegression / C=1"), claim("T-r2", 0.839, "LogisticRegression / C=10")
    spec = Spec(
        paper_slug="p", objective="o",
        targets=[Target(claim_id=c.id, metric="accuracy", direction="max", tolerance=0.01, seeds=1, reported=c.value,
                        config={"C": cval}) for c, cval in ((c1, 1.0), (c10, 10.0))],
        data=Data(name="d", source="s", split="official", split_unit="image"), method=Method(name="m", description="d"),
        config={"steps": 4}, budget=Budget(eta_minutes=1, wall_limit_minutes=2),
    )  # fmt: skip
    runs = [
        run(tmp_path, "c1", 0, 0.84, {"steps": 4, "C": 1.0}),
        run(tmp_path, "c10", 0, 0.838, {"steps": 4, "C": 10.0}),
    ]
    verdicts = compare(spec.targets, {t.claim_id: [r] for t, r in zip(spec.targets, runs, strict=True)})
    assert [v.verdict for v in verdicts] == ["replicated", "replicated"]
    hyps = by_id(run_checklist(paper_with(claims=[c1, c10]), spec, verdicts, runs))
    assert "setup-C" not in hyps, hyps.get("setup-C")


def test_a_crashing_check_raises_with_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A check that raises is our bug: it propagates (the graph keeps its checkpoint), never becomes a finding."""

    def broken_check(paper, spec, verdicts, runs):
        raise KeyError("a bug of ours")

    monkeypatch.setattr(checklist, "CHECKS", (checklist.CHECKS[0], broken_check, *checklist.CHECKS[1:]))
    runs = [run(tmp_path, seed=0, accuracy=0.70)]
    with pytest.raises(KeyError, match="a bug of ours") as caught:
        run_checklist(None, None, compare([target()], runs), runs)
    assert caught.traceback[-1].name == "broken_check"
    with pytest.raises(KeyError):  # the LLM path runs the same checklist first
        propose_hypotheses(None, None, None, compare([target()], runs), runs, None, log_dir=None)
