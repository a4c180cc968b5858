"""Ingestion on PDFs with known content: generated ones (one and two columns, ruled and unruled tables, a table
continued over pages, ± values, text claims) and the real Fashion-MNIST paper from ../shared."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from retrieval.errors import IngestError
from retrieval.ingest import PARSER_VERSION, ingest_pdf, load_paper, parse_pdf
from retrieval.models import Paper
from retrieval.pdf import collapse
from retrieval.tables import parse_number
from tests import pdfgen


@pytest.fixture(scope="module", params=["one-column", "two-column"])
def generated(request, tmp_path_factory) -> tuple[Path, Paper]:
    path = tmp_path_factory.mktemp("gen") / f"results-{request.param}.pdf"
    pdfgen.results_paper(path, two_column=request.param == "two-column")
    return path, parse_pdf(path)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Paper:
    from tests.conftest import SHARED

    path = SHARED / "papers/fashion-mnist-xiao2017.pdf"
    if not path.exists():
        pytest.skip(f"shared paper not found at {path}")
    return parse_pdf(path)


def _table(paper: Paper, label: str):
    return next(t for t in paper.tables if t.label == label)


# --- numbers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.798", (0.798, None)),
        ("89.7%", (89.7, None)),
        ("0.812±0.003", (0.812, 0.003)),
        ("93.02 ± 0.11", (93.02, 0.11)),
        ("81.2 (±0.3)", (81.2, 0.3)),
        ("60, 000", (60000.0, None)),
        ("-1.5e-3", (-0.0015, None)),
        ("95.1*", (95.1, None)),
        ("criterion=gini", None),
        ("ResNet-18", None),
        ("", None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


# --- generated papers -----------------------------------------------------------------------------------------


def test_metadata_and_sections(generated):
    _, paper = generated
    assert paper.title == pdfgen.TITLE
    assert paper.authors == pdfgen.AUTHORS
    assert paper.abstract.startswith("We study sparse gated mixers")
    titles = [s.title for s in paper.sections]
    assert titles == ["Abstract", "Introduction", "Experimental Setup", "Results", "Conclusion", "References"]
    assert len(paper.references) == 1 and paper.references[0].arxiv_id == "1901.01234"
    assert paper.references[0].year == 2019
    assert paper.parser == PARSER_VERSION
    assert [p.page for p in paper.pages] == list(range(1, paper.n_pages + 1))
    assert {c.label for c in paper.captions if c.kind == "table"} == {"Table 1", "Table 2", "Table 3"}


def test_ruled_table_without_results_gives_no_claims(generated):
    _, paper = generated
    table = _table(paper, "Table 1")
    assert table.header == ["Dataset", "Train", "Test", "Classes"]
    assert table.rows == pdfgen.T1_ROWS
    assert not [c for c in paper.claims if c.table == "Table 1"]  # dataset sizes are not results
    assert not [c for c in paper.claims if c.value in (50000, 10000, 73257, 26032)]


def test_unruled_table_with_two_header_levels_and_std(generated):
    _, paper = generated
    table = _table(paper, "Table 2")
    assert table.header == ["Model", "Test accuracy / CIFAR-10", "Test accuracy / SVHN"]
    assert [row for row in table.rows] == pdfgen.T2_ROWS
    claims = [c for c in paper.claims if c.table == "Table 2"]
    assert len(claims) == 6
    for row_index, row in enumerate(pdfgen.T2_ROWS, start=1):
        for col, dataset in ((2, "CIFAR-10"), (3, "SVHN")):
            claim = paper.claim(f"T2-r{row_index}-c{col}")
            value, std = (float(x) for x in row[col - 1].split(" ± "))
            assert (claim.value, claim.std, claim.text) == (value, std, row[col - 1])
            assert claim.dataset == dataset and claim.method == row[0] and claim.row == row[0]
            assert claim.metric == "test accuracy" and claim.higher_is_better is True
            assert claim.column == f"Test accuracy / {dataset}"


def test_table_continued_across_pages(generated):
    _, paper = generated
    table = _table(paper, "Table 3")
    assert len(table.pages) >= 2
    assert table.header == ["Model", "Setting", "Error"]
    assert len(table.rows) == len(pdfgen.T3_ROWS)  # repeated headers and "Continued on next page" are dropped
    assert table.rows == [[a, b, c] for a, b, c in pdfgen.T3_ROWS]
    claims = [c for c in paper.claims if c.table == "Table 3"]
    assert len(claims) == 48
    assert [c.value for c in claims] == [float(r[2]) for r in pdfgen.T3_ROWS]
    last = claims[-1]
    assert last.method == "Mixer" and last.row == "Mixer / depth=14"  # group label filled down across the page
    assert last.metric == "error" and last.higher_is_better is False and last.dataset == "CIFAR-10"


def test_text_claims(generated):
    _, paper = generated
    text_claims = [c for c in paper.claims if c.table is None]
    own = [c for c in text_claims if not c.cited]
    main = next(c for c in own if c.value == 95.1)
    assert (main.text, main.metric, main.dataset, main.method) == ("95.1%", "test accuracy", "CIFAR-10", "GatedMixer-B")
    assert any(c.value == 4.9 and c.metric == "error" and c.higher_is_better is False for c in own)
    cited = [c for c in text_claims if c.cited]
    assert [c.value for c in cited] == [96.5]  # "(Smith et al., 2019)": somebody else's result
    # Settings and sizes in the same text are not claims.
    assert not [c for c in text_claims if c.value in (0.9, 0.1, 128, 200, 3, 50000, 10000)]


def test_setup(generated):
    _, paper = generated
    values = {item.key: item.value for item in paper.setup.items}
    assert paper.setup.missing == []
    assert values["split"] == "train=50,000; test=10,000"
    assert values["optimizer"].startswith("SGD with momentum")
    assert values["learning_rate"] == "learning rate of 0.1"
    assert values["batch_size"] == "batch size of 128"
    assert values["epochs"] == "200 epochs"
    assert values["seeds"] == "3 random seeds"
    assert "mean and standard deviation" in values["aggregation"]
    assert "normalized" in values["preprocessing"]
    assert "V100" in values["hardware"]
    assert {i.value for i in paper.setup.get("dataset")} == {"CIFAR-10", "SVHN"}
    pages = {p.page: collapse(p.text) for p in paper.pages}
    for item in paper.setup.items:  # every quote is on the page it names
        assert collapse(item.quote) in pages[item.page], item


def test_quotes_are_on_their_pages(generated):
    _, paper = generated
    pages = {p.page: collapse(p.text) for p in paper.pages}
    for claim in paper.claims:
        assert collapse(claim.quote) in pages[claim.page], claim.id


def test_claim_ids_are_unique_and_stable(generated):
    path, paper = generated
    ids = [c.id for c in paper.claims]
    assert len(ids) == len(set(ids))
    again = parse_pdf(path)
    assert [c.model_dump() for c in again.claims] == [c.model_dump() for c in paper.claims]


def test_paper_without_setup_lists_everything_missing(tmp_path):
    paper = parse_pdf(pdfgen.mixed_pdf(tmp_path / "mixed.pdf"))
    assert paper.n_pages == 2 and paper.pages[1].text == ""  # the image-only page is kept, empty
    assert [c.value for c in paper.claims] == [88.2]
    assert "optimizer" in paper.setup.missing and "hardware" in paper.setup.missing


# --- writing --------------------------------------------------------------------------------------------------


def test_ingest_writes_folder_and_loads_back(tmp_path):
    pdf = pdfgen.results_paper(tmp_path / "paper.pdf")
    papers = tmp_path / "papers"
    paper = ingest_pdf(pdf, papers)
    folder = papers / paper.slug
    assert paper.slug == "sparse-gated-mixers-for-small-image-classifiers"  # "paper.pdf" is no name: use the title
    assert sorted(p.name for p in folder.iterdir()) == ["paper.json", "paper.md", "paper_view.md", "tables"]
    assert sorted(p.name for p in (folder / "tables").iterdir()) == ["table-1.csv", "table-2.csv", "table-3.csv"]
    csv_text = (folder / "tables" / "table-2.csv").read_text()
    assert csv_text.splitlines()[1] == "ResNet-18,93.02 ± 0.11,95.41 ± 0.08"
    loaded = load_paper(folder)
    assert loaded == load_paper(folder / "paper.json")
    assert loaded.claims == paper.claims and loaded.tables[1].csv_path == "tables/table-2.csv"
    md = (folder / "paper.md").read_text()
    assert "| T2-r1-c2 | 93.02 | 93.02 ± 0.11 |" in md and "Not stated in the paper: nothing" in md
    json.loads((folder / "paper.json").read_text())
    # Ingesting again replaces the folder in one step and leaves no temporary folders behind.
    ingest_pdf(pdf, papers)
    assert [p.name for p in papers.iterdir()] == [paper.slug]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import retrieval.ingest as ingest_module

    pdf = pdfgen.mixed_pdf(tmp_path / "mixed.pdf")
    papers = tmp_path / "papers"

    def boom(paper):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ingest_module, "render_markdown", boom)
    with pytest.raises(OSError):
        ingest_pdf(pdf, papers)
    assert list(papers.iterdir()) == []


def test_load_paper_errors(tmp_path):
    with pytest.raises(IngestError, match="no such paper record"):
        load_paper(tmp_path)
    (tmp_path / "paper.json").write_text("{not json")
    with pytest.raises(IngestError, match="not a valid paper.json"):
        load_paper(tmp_path)


@pytest.mark.parametrize("kind", ["encrypted", "scanned", "truncated", "empty", "directory", "text"])
def test_bad_input_raises_one_line_ingest_error(tmp_path, kind):
    path = tmp_path / f"{kind}.pdf"
    if kind == "encrypted":
        pdfgen.encrypted_pdf(path)
    elif kind == "scanned":
        pdfgen.scanned_pdf(path)
    elif kind == "truncated":
        pdfgen.truncated_pdf(pdfgen.mixed_pdf(tmp_path / "whole.pdf"), path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_text("just some text, not a PDF\n")
    with pytest.raises(IngestError) as info:
        parse_pdf(path)
    assert "\n" not in str(info.value)
    expected = {
        "encrypted": "encrypted",
        "scanned": "no text layer",
        "truncated": "truncated",
        "empty": "empty",
        "directory": "directory",
        "text": "not a PDF",
    }[kind]
    assert expected in str(info.value)


# --- the Fashion-MNIST paper ------------------------------------------------------------------------------------

# Rows read off the PDF by eye: (classifier, parameter, Fashion, MNIST). Page boundaries and odd rows included.
FASHION_ROWS = {
    1: ("DecisionTreeClassifier", "criterion=entropy max_depth=10 splitter=best", 0.798, 0.873),
    4: ("DecisionTreeClassifier", "criterion=entropy max_depth=100 splitter=best", 0.789, 0.886),  # top of p4
    25: ("GaussianNB", "priors=[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]", 0.511, 0.524),
    26: ("GradientBoostingClassifier", "n_estimators=100 loss=deviance max_depth=10", 0.880, 0.969),
    55: ("LinearSVC", "loss=hinge C=10 multi_class=crammer_singer penalty=l1", 0.751, 0.783),  # top of p5
    68: ("MLPClassifier", "activation=relu hidden_layer_sizes=[100]", 0.871, 0.972),
    106: ("SGDClassifier", "loss=squared_hinge penalty=elasticnet", 0.815, 0.914),  # top of p6
    115: ("SVC", "C=10 kernel=rbf", 0.897, 0.973),
    126: ("SVC", "C=100 kernel=sigmoid", 0.664, 0.868),
}


def test_fashion_table3_spans_four_pages(fashion):
    table = _table(fashion, "Table 3")
    assert table.pages == [3, 4, 5, 6]
    assert table.header == ["Classifier", "Parameter", "Test Accuracy / Fashion", "Test Accuracy / MNIST"]
    assert len(table.rows) == 126
    assert all(re.fullmatch(r"0\.\d{3}", cell) for row in table.rows for cell in row[2:])


def test_fashion_table3_claims(fashion):
    claims = [c for c in fashion.claims if c.table == "Table 3"]
    assert len(claims) == 252  # 126 classifier/parameter rows x (Fashion, MNIST)
    for row_index, (classifier, parameter, fashion_acc, mnist_acc) in FASHION_ROWS.items():
        for col, dataset, value, column in (
            (3, "Fashion-MNIST", fashion_acc, "Fashion"),
            (4, "MNIST", mnist_acc, "MNIST"),
        ):
            claim = fashion.claim(f"T3-r{row_index}-c{col}")
            assert claim.value == value and claim.dataset == dataset and claim.method == classifier
            assert claim.row == f"{classifier} / {parameter}"
            assert claim.column == f"Test Accuracy / {column}"
            assert claim.metric == "test accuracy" and claim.higher_is_better is True
    # Cross-check every value against the numbers in pymupdf's plain text of pages 3-6, in order.
    import pymupdf

    from tests.conftest import SHARED

    with pymupdf.open(SHARED / "papers/fashion-mnist-xiao2017.pdf") as doc:
        text = "\n".join(doc[i].get_text() for i in range(2, 6))
    printed = [float(x) for x in re.findall(r"(?m)^0\.\d{3}$", text)]
    assert [c.value for c in claims] == printed
    per_method = {}
    for claim in claims:
        per_method.setdefault(claim.method, set()).add(claim.row)
    assert len(per_method) == 13 and len(per_method["SVC"]) == 12


def test_fashion_setup_and_no_size_claims(fashion):
    seeds = fashion.setup.get("seeds")
    assert seeds and "repeated 5 times by shuffling the training data" in seeds[0].quote and seeds[0].page == 3
    assert any("average" in i.value for i in fashion.setup.get("aggregation"))
    assert any(i.value == "train=60,000; test=10,000" for i in fashion.setup.get("split"))
    assert {i.value for i in fashion.setup.get("dataset")} >= {"Fashion-MNIST", "MNIST"}
    assert set(fashion.setup.missing) >= {"optimizer", "learning_rate", "batch_size"}
    assert not [c for c in fashion.claims if c.value in (60000, 10000, 70000, 7000, 6000, 28)]
    assert not [c for c in fashion.claims if c.table in ("Table 1", "Table 2")]
    pages = {p.page: collapse(p.text) for p in fashion.pages}
    for claim in fashion.claims:
        assert collapse(claim.quote) in pages[claim.page], claim.id


def test_fashion_metadata(fashion):
    assert fashion.title == "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms"
    assert fashion.authors == ["Han Xiao", "Kashif Rasul", "Roland Vollgraf"]
    assert fashion.abstract.startswith("We present Fashion-MNIST")
    assert [s.title for s in fashion.sections][:2] == ["Abstract", "Introduction"]
    assert len(fashion.references) == 6
    assert fashion.slug == "fashion-mnist-xiao2017"


def test_uncaptioned_table_and_table_running_over_a_page_without_caption(tmp_path):
    paper = parse_pdf(pdfgen.uncaptioned_paper(tmp_path / "uncaptioned.pdf"))
    assert [t.label for t in paper.tables] == ["Table 1", "Table p1-1"]
    running = _table(paper, "Table 1")
    assert running.pages == [1, 2] and running.rows == pdfgen.RUN_ROWS  # page 2 repeats neither caption nor header
    loose = _table(paper, "Table p1-1")
    assert loose.header == ["Variant", "Top-1 accuracy", "Params"] and loose.rows == pdfgen.U_ROWS
    claims = [c for c in paper.claims if c.table == "Table p1-1"]
    assert [(c.method, c.value, c.metric) for c in claims] == [
        ("Baseline", 71.2, "top-1 accuracy"),
        ("Wider", 73.9, "top-1 accuracy"),
        ("Deeper", 74.4, "top-1 accuracy"),
    ]  # the parameter counts are not results
    losses = [c for c in paper.claims if c.table == "Table 1" and c.column == "Loss"]
    assert len(losses) == 70 and all(c.higher_is_better is False and c.dataset == "CIFAR-100" for c in losses)


@pytest.mark.parametrize("caption_below", [False, True])
def test_stacked_tables_each_get_their_own_rows(tmp_path, caption_below):
    paper = parse_pdf(pdfgen.stacked_paper(tmp_path / "stacked.pdf", caption_below=caption_below))
    assert [t.label for t in paper.tables] == ["Table 1", "Table 2"]
    assert _table(paper, "Table 1").rows == pdfgen.STACK_A
    assert _table(paper, "Table 2").rows == pdfgen.STACK_B
    loss = [c for c in paper.claims if c.table == "Table 2"]
    assert [(c.value, c.metric, c.higher_is_better, c.dataset) for c in loss] == [
        (0.412, "loss", False, "MNIST"),
        (0.377, "loss", False, "MNIST"),
    ]
    emnist = [c.value for c in paper.claims if c.dataset == "EMNIST"]
    assert emnist == [77.5, 80.1, 82.3, 83.0]


# --- rules on sentences the generated papers do not contain ------------------------------------------------------


def _sentences(*texts: str):
    from retrieval.claims import Sentence

    return [Sentence(page=1, index=i, text=t) for i, t in enumerate(texts, start=1)]


def test_text_claim_rules_on_varied_sentences():
    from retrieval.claims import Vocabulary, text_claims

    vocab = Vocabulary("We evaluate on the CIFAR-100 dataset and the Penn Treebank corpus.")
    claims = text_claims(
        _sentences(
            "Our model achieves 89.7% accuracy on CIFAR-100.",
            "On Penn Treebank it reaches a test perplexity of 57.3, and an F1 of 0.912 ± 0.004 on parsing.",
            "We use a learning rate of 0.001 and dropout of 0.5 to reach the best accuracy.",
            "The training set has 50,000 images and accuracy is computed on 10,000.",
            "Section 4.2 reports accuracy in detail, see Table 3.1 for the 2019 results.",
            "Accuracy drops to 71.25% when the gate is removed (Lee et al., 2020).",
            "The large model reaches a validation perplexity of 118 after 12 epochs.",
        ),
        vocab,
    )
    got = [(c.id, c.value, c.text, c.metric, c.dataset, c.higher_is_better, c.std, c.cited) for c in claims]
    assert got == [
        ("p1-s1-n1", 89.7, "89.7%", "accuracy", "CIFAR-100", True, None, False),
        ("p1-s2-n1", 57.3, "57.3", "test perplexity", "Penn Treebank", False, None, False),
        ("p1-s2-n2", 0.912, "0.912 ± 0.004", "f1", "Penn Treebank", True, 0.004, False),
        ("p1-s6-n1", 71.25, "71.25%", "accuracy", None, True, None, True),
        ("p1-s7-n1", 118.0, "118", "validation perplexity", None, False, None, False),
    ]


def test_setup_rules_on_varied_sentences():
    from retrieval.claims import Vocabulary
    from retrieval.paper_setup import extract_setup

    vocab = Vocabulary("Results on ImageNet.")
    setup = extract_setup(
        _sentences(
            "We fine-tune a ResNet-50 on the ImageNet dataset with AdamW and a learning rate of 3e-4.",
            "The mini-batch size is 256 and we train for 90 epochs on 8 NVIDIA A100 GPUs.",
            "We report the mean over 5 independent runs, using 1,281,167 images for training and 50,000 images for "
            "validation.",
            "Images are randomly cropped to 224 pixels and horizontally flipped.",
        ),
        vocab,
        [],
    )
    values = {
        key: [i.value for i in setup.get(key)]
        for key in (
            "model",
            "optimizer",
            "learning_rate",
            "batch_size",
            "epochs",
            "seeds",
            "hardware",
            "split",
            "dataset",
        )
    }
    assert values["model"] == ["ResNet-50"]
    assert values["optimizer"] == ["AdamW"]
    assert values["learning_rate"] == ["learning rate of 3e-4"]
    assert values["batch_size"] == ["mini-batch size is 256"]
    assert values["epochs"] == ["90 epochs"]
    assert values["seeds"] == ["5 independent runs"]
    assert "A100" in values["hardware"][0]
    assert values["split"] == ["train=1,281,167; validation=50,000"]
    assert values["dataset"] == ["ImageNet"]
    assert [i.value for i in setup.get("aggregation")] == ["the mean over 5 independent runs"]
    assert setup.missing == []


def test_number_column_labels_and_std_column(tmp_path):
    paper = parse_pdf(pdfgen.fewshot_paper(tmp_path / "fewshot.pdf"))
    shots = _table(paper, "Table 1")
    assert shots.header == ["Method", "Shots / 1", "Shots / 5", "Shots / 10"]  # "1 5 10" label, not a result row
    assert shots.rows == pdfgen.SHOT_ROWS
    claims = [c for c in paper.claims if c.table == "Table 1"]
    assert [(c.method, c.column, c.value) for c in claims][:3] == [
        ("ProtoNet", "Shots / 1", 49.42),
        ("ProtoNet", "Shots / 5", 68.2),
        ("ProtoNet", "Shots / 10", 74.1),
    ]
    assert all(c.dataset == "Omniglot" and c.metric == "accuracy" for c in claims)
    spread = [c for c in paper.claims if c.table == "Table 2"]
    assert [(c.method, c.value, c.std, c.text) for c in spread] == [
        ("Baseline", 61.3, 0.4, "61.3"),
        ("Ours", 64.8, 0.3, "64.8"),
    ]  # the Std column is the spread of Accuracy, not a claim of its own


def test_settings_table_gives_no_claims():
    from retrieval.claims import Vocabulary, table_claims
    from retrieval.tables import ExtractedTable, TableRow

    table = ExtractedTable(
        label="Table 4",
        caption="Table 4: Hyperparameter settings behind the results in Table 2.",
        pages=[5],
        header=["Name", "Value"],
        rows=[TableRow(["learning rate", "0.001"], 5, "learning rate 0.001"), TableRow(["dropout", "0.1"], 5, "d")],
        n_cols=2,
    )
    assert table_claims(table, Vocabulary("")) == []


def test_wrapped_row_label_is_one_row(tmp_path):
    paper = parse_pdf(pdfgen.fewshot_paper(tmp_path / "fewshot.pdf"))
    table = _table(paper, "Table 3")
    assert table.rows == [["ResNet-50 with skip connections", "76.1"], ["ViT-B/16", "81.8"]]
    claims = [c for c in paper.claims if c.table == "Table 3"]
    assert [(c.id, c.method, c.value, c.metric, c.dataset) for c in claims] == [
        ("T3-r1-c2", "ResNet-50 with skip connections", 76.1, "top-1 accuracy", "ImageNet"),
        ("T3-r2-c2", "ViT-B/16", 81.8, "top-1 accuracy", "ImageNet"),
    ]


def test_full_width_table_above_two_columns_of_prose(tmp_path):
    paper = parse_pdf(pdfgen.wide_table_paper(tmp_path / "wide.pdf"))
    assert [t.label for t in paper.tables] == ["Table 1"]
    table = paper.tables[0]
    assert table.header == ["Method", "CIFAR-10", "CIFAR-100", "SVHN"] and table.rows == pdfgen.WIDE_ROWS
    assert [(c.method, c.dataset, c.value) for c in paper.claims] == [
        (row[0], dataset, float(value))
        for row in pdfgen.WIDE_ROWS
        for dataset, value in zip(("CIFAR-10", "CIFAR-100", "SVHN"), row[1:], strict=True)
    ]
