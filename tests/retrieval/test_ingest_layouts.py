"""One generated page per layout class that broke ingestion on real papers: captions above and below their grid,
two tables on one page, two tables side by side in one float, a landscape (turned) page, margin line numbers of a
review build, a two-level header, ± cells, two numbers in one cell, and a plot that must not come back as a table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.ingest import parse_pdf
from retrieval.models import Paper, Table
from tests import pdfgen

PM_HEADER = ["Method", "Test accuracy / CIFAR-10", "Test accuracy / SVHN"]
PM_ROWS = [["ResNet-18", "93.02 ± 0.11", "95.41 ± 0.08"], ["Mixer-S", "94.35 ± 0.09", "96.12 ± 0.05"],
           ["Mixer-B", "95.10 ± 0.07", "96.48 ± 0.06"]]  # fmt: skip
PAIR_HEADER = ["Model", "EM/F1", "Unanswered"]
PAIR_ROWS = [["Reader-A", "75.3/80.1", "12.5%"], ["Reader-B", "77.0/82.4*", "11.9%"], ["Reader-C", "-", "n/a"],
             ["Reader-D", "78.2/83.0", "10.4%"]]  # fmt: skip


@pytest.fixture(scope="module")
def papers(tmp_path_factory) -> dict[str, Paper]:
    folder = tmp_path_factory.mktemp("layouts")
    return {name: parse_pdf(pdfgen.layout_pdf(folder / f"{name}.pdf", name)) for name in pdfgen.LAYOUTS}


def _only(paper: Paper, label: str) -> Table:
    found = [t for t in paper.tables if t.label == label]
    assert len(found) == 1, [t.label for t in paper.tables]
    return found[0]


def _assert_pm(table: Table) -> None:
    assert table.header == PM_HEADER
    assert table.header_rows == [["", "Test accuracy", ""], ["Method", "CIFAR-10", "SVHN"]]  # the span printed once
    assert table.rows == PM_ROWS


def _assert_pair(table: Table) -> None:
    assert table.header == PAIR_HEADER
    assert table.rows == PAIR_ROWS


@pytest.mark.parametrize("layout", ["caption_above", "rotated", "line_numbers"])
def test_one_table_read_whole(papers, layout):
    paper = papers[layout]
    assert [t.label for t in paper.tables] == ["Table 1"]
    _assert_pm(_only(paper, "Table 1"))


def test_caption_below_binds_the_grid_above_it(papers):
    paper = papers["caption_below"]
    assert [t.label for t in paper.tables] == ["Table 2"]
    _assert_pair(_only(paper, "Table 2"))


@pytest.mark.parametrize("layout", ["two_tables", "side_by_side"])
def test_two_tables_stay_apart(papers, layout):
    paper = papers[layout]
    assert sorted(t.label for t in paper.tables) == ["Table 1", "Table 2"]
    _assert_pm(_only(paper, "Table 1"))
    _assert_pair(_only(paper, "Table 2"))


def test_line_numbers_are_not_text(papers):
    paper = papers["line_numbers"]
    assert not any(word.isdigit() and 100 <= int(word) < 200 for word in paper.pages[0].text.split())


def test_plot_is_not_a_table(papers):
    paper = papers["plot"]
    assert paper.tables == []
    assert [c.label for c in paper.captions] == ["Figure 1"]
    assert not [c for c in paper.claims if c.table]


def test_two_level_header_names_claim_columns(papers):
    claims = {c.id: c for c in papers["caption_above"].claims if c.table == "Table 1"}
    assert len(claims) == 6
    claim = claims["T1-r2-c3"]
    assert (claim.value, claim.std, claim.text) == (96.12, 0.05, "96.12 ± 0.05")
    assert claim.column == "Test accuracy / SVHN" and claim.dataset == "SVHN" and claim.method == "Mixer-S"
    assert claim.metric == "test accuracy" and claim.higher_is_better is True
    assert all(c.std is not None for c in claims.values())


def test_two_numbers_per_cell_give_two_claims(papers):
    claims = {c.id: c for c in papers["caption_below"].claims if c.table == "Table 2"}
    em, f1 = claims["T2-r1-c2a"], claims["T2-r1-c2b"]
    assert (em.value, em.column, em.metric, em.higher_is_better) == (75.3, "EM", "em", True)
    assert (f1.value, f1.column, f1.metric, f1.higher_is_better) == (80.1, "F1", "f1", True)
    assert claims["T2-r2-c2a"].value == 77.0 and claims["T2-r2-c2b"].value == 82.4  # footnote star stripped
    assert not [c for c in claims.values() if c.method == "Reader-C"]  # "-" and "n/a" are empty cells
    share = claims["T2-r1-c3"]
    # the caption's "(lower is better)" decides for the column whose header names no metric
    assert share.value == 12.5 and share.column == "Unanswered" and share.higher_is_better is False
    assert all(not (c.column or "").startswith("column ") for c in claims.values())


def test_fully_ruled_text_table_read_by_the_finder(papers):
    """Tight padding hides the gutters and the rows read as prose: the rebuild gets one row, pymupdf's finder the
    grid (cells read with get_textbox)."""
    table = _only(papers["ruled_text"], "Table 1")
    assert table.header == list(pdfgen.RULED_ROWS[0])
    assert table.rows == [list(row) for row in pdfgen.RULED_ROWS[1:]]
    assert table.problem is None


def test_generated_layouts_build_offline(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown layout"):
        pdfgen.layout_pdf(tmp_path / "x.pdf", "no-such-layout")
