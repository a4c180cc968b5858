"""The shared tables-dev set (14 real papers, 68 tables, truth from their LaTeX), scored by its own score.py.

Skips with the reason when ../shared is absent. The figures asserted are the issue's targets; the measured ones
and the speed are printed by benchmarks/ingest_quality.py (speed is never asserted in a test).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from retrieval.ingest import parse_pdf
from tests.conftest import SHARED

DEV = SHARED / "data" / "tables-dev"


@pytest.fixture(scope="module")
def scored() -> list[dict]:
    if not (DEV / "score.py").exists():
        pytest.skip(f"shared tables-dev set not found at {DEV} (set REPLICATE_SHARED or place ../shared beside it)")
    spec = importlib.util.spec_from_file_location("tables_dev_score", DEV / "score.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    results = []
    for truth_file in sorted((DEV / "truth").glob("*.json")):
        truth = score.json.loads(truth_file.read_text())
        paper = parse_pdf(DEV / "papers" / f"{truth['id']}.pdf")
        results.append(score.score_paper(truth, score.json.loads(paper.model_dump_json())))
    return results


def _total(results: list[dict], key: str) -> int:
    return sum(r[key] for r in results)


def test_every_table_found(scored):
    missing = [(r["id"], t["label"]) for r in scored for t in r["per_table"] if not t["found"]]
    assert missing == []


def test_number_recall_and_precision(scored):
    recall = _total(scored, "num_matched") / _total(scored, "num_truth")
    precision = _total(scored, "num_matched") / _total(scored, "num_out")
    assert recall >= 0.97 and precision >= 0.97, (recall, precision)


def test_header_recall(scored):
    assert _total(scored, "hdr_matched") / _total(scored, "hdr_truth") >= 0.95


def test_no_paper_far_below(scored):
    """A sample-wide average can hide one layout class failing outright: every paper keeps most of its numbers."""
    weak = [r["id"] for r in scored if r["num_truth"] and r["num_matched"] / r["num_truth"] < 0.9]
    assert weak == []


def test_records_validate(tmp_path: Path):
    if not (DEV / "papers").exists():
        pytest.skip(f"shared tables-dev set not found at {DEV}")
    paper = parse_pdf(DEV / "papers" / "bruckner2020_re_faster_teaching.pdf")
    side_by_side = {t.label: t for t in paper.tables if t.pages == [12]}
    assert {"Table 1", "Table 2", "Table 3", "Table 4"} <= set(side_by_side)
    assert side_by_side["Table 2"].header == ["Learner model", "ϵt", "ϵp"]
