"""The page-anchored paper view (retrieval.paper_view): what the model reads of the paper.

A method paper built with pymupdf (results only in a figure, so no ledger claims) and the shared Fashion-MNIST paper:
sections in order with their pages, `[p. N]` where a page starts, tables as markdown grids instead of runs of cells,
references last, and ingestion writes the view as paper_view.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pymupdf

from retrieval.ingest import ingest_pdf, parse_pdf
from retrieval.paper_view import SELECTION_ORDER, build_view, render_view, section_kind
from tests.pdfgen import BOLD, Writer

METHOD_SENTENCE = "We train the encoder and the adversary in alternation"
ALGORITHM_LINE = "Algorithm 1: for each minibatch, update theta_f by descending L_y minus lambda L_r"


def method_paper(path: Path) -> Path:
    """A method paper whose results are in a figure only: there is nothing numeric for the ledger."""
    doc = pymupdf.open()
    w = Writer(doc)
    w.new_page()
    w.line("Adversarial Invariance for Shift-Robust Encoders", size=17, font=BOLD, x=110)
    w.y += 10
    w.line("Abstract", size=12, font=BOLD, x=280)
    w.paragraph("We learn encoders that are invariant to a nuisance variable by training against an adversary.")
    w.heading("1 Introduction")
    w.paragraph("Encoders pick up nuisance factors. " * 12)
    w.heading("2 Related Work")
    w.paragraph("Domain adversarial training was proposed earlier for unsupervised domain adaptation. " * 10)
    w.heading("3 Method")
    w.paragraph(
        f"{METHOD_SENTENCE}, using a gradient reversal layer between them. The loss is L(theta_f, theta_r) = "
        "L_y(theta_f) - lambda L_r(theta_f, theta_r) with lambda = 0.3 and the Adam optimiser."
    )
    w.paragraph(ALGORITHM_LINE)
    w.paragraph("The encoder is a two-layer perceptron with 128 hidden units. " * 70)
    w.heading("4 Experiments")
    w.paragraph(
        "We simulate data from two Gaussians whose means differ by the nuisance variable, as described above. "
        "Figure 2 shows that the adversarial encoder keeps its accuracy as the shift grows, while the plain "
        "encoder degrades."
    )
    w.heading("References")
    w.paragraph("Ganin, Y. and Lempitsky, V. Unsupervised domain adaptation by backpropagation. ICML 2015.")
    w.finish()
    doc.save(path)
    return path


def test_method_paper_view_has_method_in_order_with_page_markers_and_references_last(tmp_path) -> None:
    paper = parse_pdf(method_paper(tmp_path / "method.pdf"))
    view = build_view(paper)
    titles = [s.title for s in view.sections]
    assert titles.index("Method") < titles.index("Experiments") < titles.index("References") == len(titles) - 1
    method = view.section("3 Method")
    assert method is not None and method.kind == "method"
    text = render_view(view)
    assert METHOD_SENTENCE in re.sub(r"\s+", " ", text)
    assert "Algorithm 1" in text
    assert "[p. 2]" in text  # the method section runs onto page 2
    assert view.section("related work").kind == "related"
    # Under a tight budget the method and experiments come before related work and references.
    order = [s.kind for s in view.ordered_for_selection()]
    assert order.index("method") < order.index("related") < order.index("references")


def test_fashion_view_tables_as_markdown_and_written_by_ingestion(tmp_path, fashion_pdf) -> None:
    paper = ingest_pdf(fashion_pdf, tmp_path / "papers")
    written = (tmp_path / "papers" / paper.slug / "paper_view.md").read_text(encoding="utf-8")
    assert written == render_view(build_view(paper))
    experiments = build_view(paper).section("Experiments")
    assert experiments is not None and experiments.kind == "experiments"
    assert "All algorithms are repeated 5 times" in experiments.text
    # Table 3 is a markdown grid, and its 252 numbers are not left in the text as a run of cells as well.
    assert "| Classifier | Parameter | Test Accuracy / Fashion | Test Accuracy / MNIST |" in experiments.text
    assert "splitter=best 0.798 0.873 criterion" not in experiments.text
    assert experiments.text.count("| 0.798 | 0.873 |") == 1
    assert "**Table 1: Files contained in the Fashion-MNIST dataset.** [p. 2]" in written
    assert written.index("## References") > written.index("## Conclusions")


def test_section_kinds() -> None:
    assert section_kind("3.2 Implementation Details") == "setup"
    assert section_kind("Experimental Setup") == "setup"
    assert section_kind("Appendix B: Hyperparameters") == "appendix"
    assert section_kind("Proposed Method") == "method"
    assert section_kind("Background and Related Work") == "related"
    assert SELECTION_ORDER[-1] == "references"
