"""Verdict rules of the fixed comparison harness, checked against cases computed by hand (arithmetic written out).

Closed forms used for the p-values (Student t, two-sided):
  df = 1: p = 1 - 2*atan(|t|)/pi
  df = 2: p = 1 - |t| / sqrt(2 + t^2)
  df = 4: p = 2*(1 - F), F = 1/2 + (3/8) * t/sqrt(1 + t^2/4) * (1 - t^2 / (12*(1 + t^2/4)))
Critical values from a t table: t_.975(2) = 4.3027, t_.975(3) = 3.1824, t_.975(4) = 2.7764, t_.975(6) = 2.4469.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from mlexp import RunRecord
from mlexp.compare import compare, summary_line, t_interval, worst_first
from mlexp.guard import (
    check_guard,
    data_fingerprint,
    fingerprint_changes,
    harness_fingerprint,
    hash_file,
    tamper_check,
    write_guard,
)


def make_runs(values, *, metric="accuracy", status="completed", name="cfg", smoke=False):
    runs = []
    for seed, value in enumerate(values):
        record = dict(
            identity=f"{name}-{seed:02d}",
            name=f"{name}-seed{seed}",
            status=status,
            skipped=False,
            exit_code=0 if status == "completed" else 1,
            exit_reason="ok" if status == "completed" else "error",
            run_dir=f"/tmp/runs/{name}-{seed}",
            metrics={} if value is None else {metric: value},
            config={"seed": seed, "smoke": smoke},
            smoke=smoke,
            config_hash=f"h{seed}",
            code_commit="c0ffee",
            started_at="2026-01-01T00:00:00",
            ended_at="2026-01-01T00:01:00",
            duration_s=60.0,
            error=None,
            digest="",
            env={},
        )
        runs.append(RunRecord(**record))
    return runs


def target(reported, *, tolerance=0.01, std=None, n=None, direction="max", metric="accuracy", claim_id="T3-r1"):
    return dict(
        claim_id=claim_id,
        metric=metric,
        direction=direction,
        tolerance=tolerance,
        seeds=3,
        reported=reported,
        reported_std=std,
        reported_n=n,
    )


THREE = [0.80, 0.82, 0.84]  # mean 0.82; squares of deviations 0.0004+0+0.0004 -> var 0.0004, s = 0.02


def test_t_interval_by_hand():
    mean, std, lo, hi = t_interval(THREE)
    # se = 0.02/sqrt(3) = 0.0115470; half width = 4.302653 * 0.0115470 = 0.0496828
    assert mean == pytest.approx(0.82)
    assert std == pytest.approx(0.02)
    assert lo == pytest.approx(0.82 - 0.0496828, abs=1e-6)
    assert hi == pytest.approx(0.82 + 0.0496828, abs=1e-6)
    assert t_interval([0.5]) == (0.5, None, None, None)


def test_within_tolerance_is_replicated_without_a_test():
    # reported 0.825: gap = 0.82 - 0.825 = -0.005, |gap| <= 0.01
    (v,) = compare([target(0.825)], make_runs(THREE))
    assert v.verdict == "replicated"
    assert v.gap == pytest.approx(-0.005)
    assert v.p_value is None and v.n == 3
    assert "tolerance" in v.reason


def test_gap_within_seed_noise_is_replicated_but_same_gap_with_little_noise_diverges():
    # Noisy seeds: reported 0.85, gap -0.03 > tol 0.01. t = -0.03 / 0.0115470 = -2.598076, df 2,
    # p = 1 - 2.598076/sqrt(2 + 6.75) = 1 - 2.598076/2.958040 = 0.121690 >= 0.05 -> replicated (consistent).
    (noisy,) = compare([target(0.85)], make_runs(THREE))
    assert noisy.verdict == "replicated"
    assert noisy.statistic == pytest.approx(-2.598076, abs=1e-5)
    assert noisy.df == 2
    assert noisy.p_value == pytest.approx(1 - 2.598076 / math.sqrt(2 + 2.598076**2), abs=1e-6)
    assert noisy.p_value == pytest.approx(0.121690, abs=1e-5)
    assert "within the noise" in noisy.reason
    # Quiet seeds, same mean and gap: s = 0.001, se = 0.000577350, t = -51.961524,
    # p = 1 - 51.961524/sqrt(2 + 2700) = 1 - 51.961524/51.980765 = 0.000370 < 0.05 -> diverged.
    (quiet,) = compare([target(0.85)], make_runs([0.819, 0.820, 0.821]))
    assert quiet.verdict == "diverged"
    assert quiet.gap == pytest.approx(-0.03)
    assert quiet.p_value == pytest.approx(0.000370, abs=2e-6)
    assert "significant" in quiet.reason


def test_large_gap_diverges_and_large_improvement_is_better():
    # reported 0.90: gap -0.08, t = -0.08/0.0115470 = -6.928203, p = 1 - 6.928203/sqrt(50) = 0.020204 -> diverged
    (down,) = compare([target(0.90)], make_runs(THREE))
    assert down.verdict == "diverged"
    assert down.p_value == pytest.approx(0.020204, abs=1e-5)
    # reported 0.76: gap +0.06, t = 5.196152, p = 1 - 5.196152/sqrt(29) = 1 - 0.964901 = 0.035099 -> better
    (up,) = compare([target(0.76)], make_runs(THREE))
    assert up.verdict == "better"
    assert up.p_value == pytest.approx(0.035099, abs=1e-5)
    # The same numbers for a lower-is-better metric (an error rate): 0.82 < 0.90 is an improvement -> better,
    # and 0.82 > 0.76 is worse -> diverged.
    (err_down,) = compare([target(0.90, direction="min")], make_runs(THREE))
    (err_up,) = compare([target(0.76, direction="min")], make_runs(THREE))
    assert (err_down.verdict, err_up.verdict) == ("better", "diverged")


def test_two_seeds_df1():
    # [0.80, 0.84]: mean 0.82, s = sqrt(2*0.02^2/1) = 0.0282843, se = 0.02; reported 0.85 -> t = -1.5, df = 1,
    # p = 1 - 2*atan(1.5)/pi = 1 - 2*0.9827937/3.1415927 = 0.374334 -> replicated (far too few seeds to tell).
    (v,) = compare([target(0.85)], make_runs([0.80, 0.84]))
    assert v.df == 1 and v.statistic == pytest.approx(-1.5)
    assert v.p_value == pytest.approx(1 - 2 * math.atan(1.5) / math.pi, abs=1e-9)
    assert v.verdict == "replicated"
    # CI: 0.82 +- 12.7062 * 0.02 = [0.565876, 1.074124]
    assert v.ci_low == pytest.approx(0.82 - 12.706205 * 0.02, abs=1e-5)


def test_welch_with_paper_std_and_repeats():
    # Ours: s^2/n = 0.0004/3 = 1.333333e-4. Paper: std 0.01 over 5 repeats, sp^2/n_p = 0.0001/5 = 2e-5.
    # se^2 = 1.533333e-4, se = 0.0123828.
    # df = (1.533333e-4)^2 / ((1.333333e-4)^2/2 + (2e-5)^2/4) = 2.351111e-8 / 8.988889e-9 = 2.615575.
    # reported 0.85: t = -0.03/0.0123828 = -2.422719; |t| < t_.975(3) = 3.1824 < t_.975(2.62) -> p > .05.
    (near,) = compare([target(0.85, std=0.01, n=5)], make_runs(THREE))
    assert near.test == "welch"
    assert near.df == pytest.approx(2.615575, abs=1e-5)
    assert near.statistic == pytest.approx(-2.422719, abs=1e-5)
    assert near.p_value > 0.05 and near.verdict == "replicated"
    # reported 0.88: t = -0.06/0.0123828 = -4.845437; |t| > t_.975(2) = 4.3027 > t_.975(2.62) -> p < .05.
    (far,) = compare([target(0.88, std=0.01, n=5)], make_runs(THREE))
    assert far.statistic == pytest.approx(-4.845437, abs=1e-5)
    assert far.p_value < 0.05 and far.verdict == "diverged"


def test_single_run_against_paper_spread_is_a_prediction_test():
    # One run 0.82; paper 0.85 +- 0.01 over 5 repeats: se = 0.01*sqrt(1 + 1/5) = 0.0109545, df = 4.
    # t = -0.03/0.0109545 = -2.738613; F = 1/2 + 3/8 * t/sqrt(1+t^2/4) * (1 - t^2/(12(1+t^2/4)))
    #   = 0.5 + 0.375 * 1.615148 * 0.782609 = 0.974010 -> p = 2*(1-0.974010) = 0.051980 >= .05 -> replicated
    (v,) = compare([target(0.85, std=0.01, n=5)], make_runs([0.82]))
    assert v.test == "prediction t" and v.df == 4
    assert v.p_value == pytest.approx(0.051980, abs=1e-5)
    assert v.verdict == "replicated"
    assert v.measured_std is None and v.ci_low is None
    # paper 0.86: t = -0.04/0.0109545 = -3.651484 > t_.975(4) = 2.7764 -> diverged (p = 0.021743)
    (w,) = compare([target(0.86, std=0.01, n=5)], make_runs([0.82]))
    assert w.p_value == pytest.approx(0.021743, abs=1e-5) and w.verdict == "diverged"


def test_paper_std_with_unknown_repeats_uses_known_variance():
    # se^2 = 1.333333e-4 + 0.01^2 = 2.333333e-4, se = 0.0152753; t = -0.03/0.0152753 = -1.963961;
    # df = (2.333333e-4)^2 / ((1.333333e-4)^2 / 2) = 5.444444e-8 / 8.888889e-9 = 6.125; |t| < t_.975(6) = 2.4469
    (v,) = compare([target(0.85, std=0.01)], make_runs(THREE))
    assert v.test == "known-variance t"
    assert v.df == pytest.approx(6.125)
    assert v.statistic == pytest.approx(-1.963961, abs=1e-5)
    assert v.verdict == "replicated"


def test_single_run_without_spread_rests_on_tolerance():
    (off,) = compare([target(0.85)], make_runs([0.80]))  # gap -0.05 > 0.01, no test possible
    assert off.verdict == "diverged" and off.p_value is None
    assert "no significance test" in off.reason
    (on,) = compare([target(0.805)], make_runs([0.80]))
    assert on.verdict == "replicated"


def test_no_seed_noise_makes_any_gap_beyond_tolerance_systematic():
    (v,) = compare([target(0.85)], make_runs([0.83, 0.83, 0.83]))
    assert v.measured_std == 0 and v.p_value == 0.0 and v.verdict == "diverged"


def test_not_run_reasons():
    failed = make_runs([None, None], status="failed")
    (v,) = compare([target(0.85)], failed)
    assert v.verdict == "not run" and "no completed run" in v.reason
    (m,) = compare([target(0.85, metric="f1")], make_runs(THREE))
    assert m.verdict == "not run" and "'f1' was not measured" in m.reason and "accuracy" in m.reason
    (e,) = compare([target(0.85)], [])
    assert e.verdict == "not run"
    (b,) = compare([target(0.85)], make_runs(THREE), not_run={"T3-r1": "over budget: needs 40 GPU-hours"})
    assert b.verdict == "not run" and b.reason.startswith("over budget")
    # Smoke runs are not measurements.
    (s,) = compare([target(0.85)], make_runs(THREE, smoke=True))
    assert s.verdict == "not run"


def test_nan_measurement_is_diverged_not_missing():
    (v,) = compare([target(0.85)], make_runs([0.84, float("nan")]))
    assert v.verdict == "diverged" and "not a finite number" in v.reason


def test_only_measured_metrics_and_claim_scoped_keys():
    runs = make_runs([0.70, 0.70])
    for run in runs:
        metrics = run.metrics
        metrics["T3-r1/accuracy"] = 0.83  # the claim-scoped key wins over the plain one
        metrics["reported_accuracy"] = 0.85  # never read: a script cannot report the paper's number for us
    (v,) = compare([target(0.83)], runs)
    assert v.measured_mean == pytest.approx(0.83) and v.verdict == "replicated"
    (w,) = compare([target(0.85, metric="reported_accuracy")], runs)
    assert w.verdict == "not run"


def test_duplicate_records_count_once_and_per_claim_runs():
    runs = make_runs(THREE)
    (v,) = compare([target(0.85)], runs + runs[:1])  # a skipped rerun returns the same record
    assert v.n == 3
    a, b = compare(
        [target(0.85, claim_id="A"), target(0.90, claim_id="B")],
        {"A": make_runs(THREE, name="a"), "B": make_runs([0.90, 0.91, 0.89], name="b")},
    )
    assert (a.claim_id, a.n, b.verdict) == ("A", 3, "replicated")


def test_summary_and_worst_first():
    verdicts = compare(
        [
            target(0.825, claim_id="ok"),
            target(0.90, claim_id="bad"),
            target(0.76, claim_id="better"),
            target(0.85, claim_id="none", metric="f1"),
            target(1.00, claim_id="worse", tolerance=0.0),
        ],
        make_runs(THREE),
    )
    assert summary_line(verdicts) == "1 of 5 claims replicated (1 better, 2 diverged, 1 not run)"
    assert [v.claim_id for v in worst_first(verdicts)] == ["worse", "bad", "none", "better", "ok"]
    assert summary_line(verdicts[:1]) == "1 of 1 claim replicated"


def test_harness_fingerprint_flags_a_changed_harness_file(tmp_path: Path):
    fp = harness_fingerprint()
    import mlexp.compare as mod

    assert fp["mlexp/compare.py"] == hash_file(mod.__file__)
    assert tamper_check(recorded_harness=fp) == []
    copy = tmp_path / "mlexp"
    shutil.copytree(Path(mod.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = harness_fingerprint(copy)
    assert before == fp
    with open(copy / "compare.py", "a") as fh:
        fh.write("\n# tampered\n")
    (copy / "extra.py").write_text("x = 1\n")
    changes = fingerprint_changes(before, harness_fingerprint(copy))
    assert any("mlexp/compare.py: content changed" in c for c in changes)
    assert any("mlexp/extra.py: added" in c for c in changes)
    # A forged record (as if compare.py had other content when recorded) is flagged against the live harness.
    forged = dict(fp, **{"mlexp/compare.py": "0" * 64})
    assert tamper_check(recorded_harness=forged) == [
        f"harness mlexp/compare.py: content changed (sha256 000000000000 -> {fp['mlexp/compare.py'][:12]})"
    ]


def test_data_fingerprint_flags_changed_removed_and_added_files(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    (data / "test.csv").write_text("x,y\n3,4\n")
    recorded = data_fingerprint([data])
    assert tamper_check(recorded_data=recorded, data_paths=[data]) == []
    (data / "train.csv").write_text("x,y\n1,3\n")
    (data / "test.csv").unlink()
    (data / "leak.csv").write_text("x,y\n3,4\n")
    problems = tamper_check(recorded_data=recorded, data_paths=[data])
    assert len(problems) == 3
    assert any("train.csv: content changed" in p for p in problems)
    assert any("test.csv: removed" in p for p in problems)
    assert any("leak.csv: added" in p for p in problems)


def test_guard_file_round_trip(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("x\n1\n")
    guard = tmp_path / "run" / "harness_guard.json"
    recorded = write_guard(guard, [data])
    assert "mlexp/compare.py" in recorded["harness"] and len(recorded["data"]) == 1
    assert check_guard(guard) == []
    (data / "train.csv").write_text("x\n2\n")
    assert [p for p in check_guard(guard) if "train.csv: content changed" in p]
    assert "cannot be read" in check_guard(tmp_path / "missing.json")[0]


def test_printed_metric_is_cross_checked_against_saved_predictions(tmp_path: Path):
    """The harness recomputes accuracy from predictions.parquet: 3 of 4 right is 0.75, whatever the script prints."""
    import pandas as pd

    from mlexp.compare import recompute_metric
    from mlexp.log import RunLogger

    records = []
    for name, printed in (("honest", 0.75), ("inflated", 0.95)):
        run_dir = tmp_path / name
        log = RunLogger(run_dir, echo=False)
        frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "y": ["cat", "dog", "cat", "dog"],
                              "p": ["cat", "dog", "cat", "cat"]})  # fmt: skip
        log.save_predictions(frame, "id", "y", "p")
        log.close()
        records.append(RunRecord(identity=name, name=name, status="completed", run_dir=str(run_dir),
                                 metrics={"accuracy": printed}))  # fmt: skip
    assert recompute_metric(records[0].run_dir, "accuracy") == 0.75
    assert recompute_metric(records[0].run_dir, "error_rate") == 0.25
    assert recompute_metric(records[0].run_dir, "f1") is None  # not one it knows how to recompute
    honest, inflated = (compare([target(0.75)], [r])[0] for r in records)
    assert honest.warnings == []
    assert inflated.warnings == ["inflated (inflated): reported accuracy=0.95 but the harness recomputes 0.75 "
                                 "from predictions.parquet"]  # fmt: skip
    # The checklist turns the disagreement into a high-priority finding.
    from agent.hypotheses.checklist import run_checklist

    hyps = {h.id: h for h in run_checklist(None, None, [inflated], records[1:])}
    assert hyps["diag-metric-integrity-T3-r1"].priority == "high"
