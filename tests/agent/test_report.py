"""The report: claims table worst first, plots, hypotheses with verified and rejected citations, spec, run links, cost;
one self-contained HTML file that headless Chromium renders (screenshot not blank, claims table in the DOM).

Run dirs are written by the real script-side logger (mlexp.log.RunLogger), so the curves come from real metrics.jsonl.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from agent.hypotheses.model import Ablation, Citation, Hypothesis
from agent.report.experiment_log import append_experiment_log
from agent.report.write import write_report
from agent.runs import read_curves
from mlexp import RunRecord
from mlexp.compare import compare
from mlexp.log import RunLogger


def logged_run(root: Path, name: str, seed: int, accuracy: float, steps: int = 8) -> RunRecord:
    run_dir = root / name / f"id{seed}"
    log = RunLogger(run_dir, echo=False)
    for step in range(1, steps + 1):
        log.step(step, steps, train_loss=2.0 / step + 0.01 * seed, test_accuracy=accuracy - 0.2 / step)
    log.final(accuracy=accuracy)
    log.close()
    return RunRecord(identity=f"{name}-{seed}", name=name, status="completed", run_dir=str(run_dir), seed=seed,
                     metrics={"accuracy": accuracy}, config={"steps": steps, "seed": seed, "smoke": False},
                     duration_s=12.5)  # fmt: skip


@pytest.fixture
def material(tmp_path: Path):
    from agent.spec import Budget, Data, Hyperparameter, Method, Spec, Target

    root = tmp_path / "experiments"
    runs = {
        "A": [logged_run(root, "cfg-a", s, a) for s, a in enumerate([0.80, 0.81, 0.79])],  # far below 0.90
        "B": [logged_run(root, "cfg-b", s, a) for s, a in enumerate([0.845, 0.842])],  # close to 0.841
        "C": [logged_run(root, "cfg-c", s, a) for s, a in enumerate([0.95, 0.951, 0.949])],  # far above 0.85
        "D": [],
    }
    targets = [
        Target(claim_id="A", metric="accuracy", direction="max", tolerance=0.01, seeds=3, reported=0.90),
        Target(claim_id="B", metric="accuracy", direction="max", tolerance=0.01, seeds=2, reported=0.841),
        Target(claim_id="C", metric="accuracy", direction="max", tolerance=0.01, seeds=3, reported=0.85),
        Target(claim_id="D", metric="accuracy", direction="max", tolerance=0.01, seeds=3, reported=0.70),
    ]
    spec = Spec(
        paper_slug="demo", objective="Check the report.", targets=targets,
        data=Data(name="d", source="s", split="official", split_unit="image"),
        method=Method(name="m", description="d"),
        hyperparameters=[Hyperparameter(name="steps", value=8, source="assumed", reason="a guess <b>bold</b>")],
        config={"steps": 8}, budget=Budget(eta_minutes=1, wall_limit_minutes=2),
    )  # fmt: skip
    verdicts = compare(targets, runs, not_run={"D": "data unavailable: the paper's private set"})
    hyps = [
        Hypothesis(id="h-backed", statement="Backed <script>alert(1)</script> idea", category="literature",
                   source="llm", claim_ids=["A"], evidence=["gap -0.1"], support="backed", priority="high",
                   citations=[Citation(paper_id="2309.03965", quote="a verified passage", verified=True)],
                   ablation=Ablation(change={"steps": 16}, expected_direction="increase", metric="accuracy")),
        Hypothesis(id="h-bad", statement="Invented support", category="literature", source="llm", claim_ids=["A"],
                   support="unsupported", priority="medium",
                   rejected_citations=[Citation(paper_id="2999.00001", quote="made-up words",
                                                note="paper id '2999.00001' is not in the index")]),
    ]  # fmt: skip
    return dict(spec=spec, verdicts=verdicts, hyps=hyps, runs=runs, out=tmp_path / "report")


def test_report_files_and_content(material):
    html_path, md_path = write_report(
        material["out"], paper=None, spec=material["spec"], verdicts=material["verdicts"],
        hypotheses=material["hyps"], runs=material["runs"], llm_usage={"calls": 3, "input_tokens": 900,
        "output_tokens": 300, "cost_usd": 0.0123}, warnings=["harness mlexp/compare.py: content changed"],
    )  # fmt: skip
    md = md_path.read_text()
    assert "**1 of 4 claims replicated (1 better, 1 diverged, 1 not run)**" in md
    rows = [line.split("|")[1].strip() for line in md.splitlines() if re.match(r"\| [A-D] \|", line)]
    assert rows == ["A", "D", "C", "B"]  # worst first: diverged, not run, better, replicated
    assert "data unavailable" in md and "0.8 ± 0.01 (n=3)" in md
    assert "~~unverified citation 2999.00001" in md and "support: **unsupported**" in md
    assert "(plots/measured_vs_reported.png)" in md and (material["out"] / "plots/training_curves.png").is_file()
    assert (material["out"] / "plots/measured_vs_reported.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = html_path.read_text()
    # Self-contained: inline CSS, images as data URIs, no scripts, nothing fetched from elsewhere.
    assert "<style>" in html and "<script>" not in html and "<link" not in html
    assert html.count("src='data:image/png;base64,") == 2
    assert not re.search(r"src=['\"](?!data:)", html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a guess &lt;b&gt;bold&lt;/b&gt;" in html
    assert "unverified citation, not counted as support" in html and "<s>made-up words</s>" in html
    assert "harness mlexp/compare.py: content changed" in html
    assert "$0.0123" in html and "100.0 s" in html  # 8 runs x 12.5 s
    # Relative links into the run directories resolve from the report's folder.
    links = re.findall(r"href='([^']+)/README.txt'", html)
    assert links and all(not Path(link).is_absolute() for link in links)
    assert all((material["out"] / link).is_dir() for link in links)


def test_read_curves_from_metrics_jsonl(tmp_path: Path):
    run = logged_run(tmp_path, "x", 0, 0.8, steps=4)
    curves = read_curves(run.run_dir)
    assert sorted(curves) == ["test_accuracy", "train_loss"]
    assert [s for s, _ in curves["train_loss"]] == [1, 2, 3, 4]
    assert curves["train_loss"][0][1] == pytest.approx(2.0)


def test_experiment_log_keeps_every_iteration(material, tmp_path: Path):
    out = tmp_path / "log"
    first = append_experiment_log(out, verdicts=material["verdicts"], hypotheses=material["hyps"],
                                  runs=material["runs"], note="First look.")  # fmt: skip
    text1 = first.read_text()
    second = append_experiment_log(out, verdicts=material["verdicts"][1:2], ablations=[{"steps": 16}])
    text2 = second.read_text()
    assert text2.startswith(text1.rstrip("\n"))  # nothing rewritten, only appended
    assert "## Iteration 1" in text2 and "## Iteration 2" in text2
    assert "- A (accuracy): diverged" in text1 and "First look." in text1
    assert "[high, backed] Backed" in text1
    assert '`{"steps": 16}`' in text2 and "1 of 1 claim replicated" in text2
    # With a key, re-entering the same iteration (a resumed graph node) appends nothing.
    append_experiment_log(out, verdicts=material["verdicts"], key="rid-report-1")
    once = second.read_text()
    append_experiment_log(out, verdicts=material["verdicts"], key="rid-report-1")
    assert second.read_text() == once and once.count("## Iteration 3") == 1 and "## Iteration 4" not in once


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(html: Path, tmp: Path) -> tuple[Path, str]:
    """Screenshot and DOM of a local file in headless Chromium, with networking features off."""
    browser = chromium()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'chromium-profile'}"]  # fmt: skip
    png = tmp / "shot.png"
    url = html.resolve().as_uri()
    subprocess.run([*flags, f"--screenshot={png}", "--window-size=1280,2000", url], check=True, timeout=120,
                   capture_output=True)  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", url], check=True, timeout=120, capture_output=True, text=True).stdout
    return png, dom


@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(material, tmp_path: Path):
    from PIL import Image

    html_path, _ = write_report(material["out"], paper=None, spec=material["spec"], verdicts=material["verdicts"],
                                hypotheses=material["hyps"], runs=material["runs"])  # fmt: skip
    png, dom = render(html_path, tmp_path)
    pixels = np.asarray(Image.open(io.BytesIO(png.read_bytes())).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20  # not a blank page
    assert (pixels < 200).mean() > 0.02  # a fair share of the page carries ink (text, table, plots)
    assert '<table id="claims">' in dom
    table = dom.split('<table id="claims">', 1)[1].split("</table>", 1)[0]
    assert [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<tr><td>(.*?)</td>", table)] == ["A", "D", "C", "B"]
    assert "diverged" in table and "not run" in table
