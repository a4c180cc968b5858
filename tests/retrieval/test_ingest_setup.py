"""Setup facts: emitted only when the quote supports the key, each with a confidence; sections: headings from
numbering and font, never the title block, a table's header row or a bold run-in paragraph title."""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from retrieval.claims import Sentence, Vocabulary
from retrieval.ingest import parse_pdf
from retrieval.models import Claim
from retrieval.paper_setup import extract_setup
from tests.pdfgen import BODY, BOLD


def _setup(*texts: str, claims: list[Claim] | None = None):
    sentences = [Sentence(page=1, index=i, text=t) for i, t in enumerate(texts, start=1)]
    return extract_setup(sentences, Vocabulary(" ".join(texts)), claims or [])


@pytest.mark.parametrize(
    ("sentence", "key", "value", "confidence"),
    [
        ("We fine-tune with a learning rate of 1e-5 for 3 epochs.", "learning_rate", "learning rate of 1e-5", "high"),
        ("The initial learning rate is 0.1, decayed 10x.", "learning_rate", "initial learning rate is 0.1", "high"),
        ("We set lr = 3e-4 throughout.", "learning_rate", "lr = 3e-4", "high"),
        ("We train for 90 epochs on one GPU.", "epochs", "90 epochs", "high"),
        ("Results are the mean over 5 independent runs.", "aggregation", "the mean over 5 independent runs", "high"),
        ("We use 3 random seeds.", "seeds", "3 random seeds", "high"),
        ("Images are resized to 224 pixels and normalized.", "preprocessing", "Images are resized to 224 pixels and "
         "normalized", "high"),
        ("Our GatedMixer-B model reaches the best accuracy.", "model", "GatedMixer-B", "medium"),
        ("We fine-tune a ResNet-50 backbone.", "model", "ResNet-50", "high"),
    ],
)  # fmt: skip
def test_supported_items_with_confidence(sentence, key, value, confidence):
    items = _setup(sentence).get(key)
    assert [(i.value, i.confidence) for i in items] == [(value, confidence)]


@pytest.mark.parametrize(
    ("sentence", "key"),
    [
        ("We minimise Lr(θf, θr) with respect to both parameter sets, 2 at a time.", "learning_rate"),
        ("A scheduler multiplies the learning rate by 0.9 every 10 epochs.", "learning_rate"),
        ("A scheduler multiplies the learning rate by 0.9 every 10 epochs.", "epochs"),
        ("Here μ2 is the mean of the second gaussian and σ its spread.", "aggregation"),
        ("We report the Mean Absolute Error of each regressor.", "aggregation"),
        ("where η is the normalization term of the posterior.", "preprocessing"),
        ("D. Kingma and J. Ba. Adam: A method for stochastic optimization. In Proceedings of ICLR, 2015.",
         "optimizer"),
        ("S. Ioffe. Batch normalization: accelerating deep network training. arXiv preprint, 2015.",
         "preprocessing"),
        ("All runs use the same instruction and wrong runs are excluded.", "seeds"),
        ("We introduce SycoBench-600, a controlled multiple-choice benchmark.", "model"),
    ],
)  # fmt: skip
def test_unsupported_items_are_not_emitted(sentence, key):
    assert _setup(sentence).get(key) == []


def test_table_row_labels_are_not_models():
    row = Claim(id="T2-r1-c2", value=93.1, text="93.1", page=1, table="Table 2", row="BaselineNet-7", column="Acc",
                method="BaselineNet-7", dataset="CIFAR-10", quote="BaselineNet-7 93.1")  # fmt: skip
    setup = _setup("We evaluate on the CIFAR-10 dataset.", claims=[row])
    assert setup.get("model") == [] and "model" in setup.missing
    assert [i.value for i in setup.get("dataset")] == ["CIFAR-10"]


def test_headings_skip_title_block_table_rows_and_run_in_titles(tmp_path: Path):
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_text((150, 90), "Gated Mixers for Small Classifiers", fontname=BOLD, fontsize=17)
    page.insert_text((240, 115), "Ada Lovelace", fontname=BOLD, fontsize=12)  # an author line, set large and bold
    page.insert_text((220, 132), "Example University", fontname=BODY, fontsize=12)
    page.insert_text((280, 160), "Abstract", fontname=BOLD, fontsize=12)
    page.insert_text((72, 178), "We study mixers. They work well on small images and we measure it.", fontsize=10)
    page.insert_text((72, 205), "1 Introduction", fontname=BOLD, fontsize=12)
    page.insert_text((72, 223), "Small classifiers remain useful on devices with little memory.", fontsize=10)
    y = 250
    page.insert_text((72, y), "Model", fontname=BOLD, fontsize=10)  # a table header row with a bold "Model"
    for x, label in ((200, "Acc"), (280, "F1")):
        page.insert_text((x, y), label, fontname=BODY, fontsize=10)
    for i, (name, acc, f1) in enumerate((("Mixer-S", "91.2", "88.0"), ("Mixer-B", "93.4", "90.1"))):
        for x, text in ((72, name), (200, acc), (280, f1)):
            page.insert_text((x, y + 14 * (i + 1)), text, fontname=BODY, fontsize=10)
    page.insert_text((72, 310), "Table 1: Accuracy and F1 of the mixers.", fontsize=9)
    page.insert_text((72, 340), "Results.", fontname=BOLD, fontsize=10)  # a run-in paragraph title
    page.insert_text((116, 340), "The larger mixer is better on both metrics we report.", fontname=BODY, fontsize=10)
    page.insert_text((72, 370), "2 Method", fontname=BOLD, fontsize=12)
    page.insert_text((72, 388), "We stack gated mixing layers and train them with SGD.", fontsize=10)
    y = 420  # an ACL-style results table: the whole header row bold, one font, caption below
    for x, label in ((72, "Method"), (200, "Recall"), (280, "Precision")):
        page.insert_text((x, y), label, fontname=BOLD, fontsize=10)
    for i, (name, recall, precision) in enumerate((("PaSa-7b", "79.4", "51.2"), ("Crawler", "68.0", "40.3"))):
        for x, text in ((72, name), (200, recall), (280, precision)):
            page.insert_text((x, y + 14 * (i + 1)), text, fontname=BODY, fontsize=10)
    page.insert_text((72, 470), "Table 2: Recall and precision of the crawlers.", fontsize=9)
    path = tmp_path / "headings.pdf"
    doc.save(path)
    doc.close()
    paper = parse_pdf(path)
    assert [s.title for s in paper.sections] == ["Abstract", "Introduction", "Method"]
    assert paper.tables[0].header == ["Model", "Acc", "F1"]
    assert paper.tables[1].header == ["Method", "Recall", "Precision"]
    recall = next(c for c in paper.claims if c.table == "Table 2" and c.method == "PaSa-7b" and c.value == 79.4)
    assert recall.column == "Recall" and recall.metric == "recall" and recall.higher_is_better is True


def test_dataset_from_the_section_a_table_sits_in():
    from retrieval.claims import table_claims
    from retrieval.tables import ExtractedTable, TableRow

    table = ExtractedTable(
        label="Table 4",
        caption="Table 4: Accuracy of each model.",
        pages=[5],
        header=["Model", "Accuracy"],
        rows=[TableRow(["Mixer-S", "91.2"], 5, "Mixer-S 91.2"), TableRow(["Mixer-B", "93.4"], 5, "Mixer-B 93.4")],
        n_cols=2,
    )
    vocab = Vocabulary("We evaluate on the SVHN dataset and on CIFAR-10.")
    claims = table_claims(table, vocab, section="4.2 Results on SVHN")
    assert [(c.method, c.value, c.dataset, c.metric) for c in claims] == [
        ("Mixer-S", 91.2, "SVHN", "accuracy"),
        ("Mixer-B", 93.4, "SVHN", "accuracy"),
    ]
    assert {c.dataset for c in table_claims(table, vocab)} == {None}  # no section, no caption name: not guessed
