"""Build test PDFs with pymupdf whose content is known exactly: tables with and without ruling lines, a table that
continues on the next page, results in running text, ± values, a two-column layout, an encrypted file and a page
that is only an image. Tests and benchmarks/ingest.py use these; nothing here reads the shared data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pymupdf

BODY = "tiro"  # Times-Roman
BOLD = "tibo"  # Times-Bold
W, H = 612, 792


@dataclass
class Writer:
    """Lays out text top to bottom in one column [x0, x1], adding pages as needed."""

    doc: pymupdf.Document
    x0: float = 72
    x1: float = 540
    y: float = 72
    size: float = 10
    page: pymupdf.Page | None = None
    page_numbers: bool = True
    pages: list[pymupdf.Page] = field(default_factory=list)
    columns: list[tuple[float, float]] = field(default_factory=list)  # set by two_columns()
    column: int = 0

    def two_columns(self) -> None:
        """From the current height on, flow text in two columns (the page so far stays full width)."""
        self.columns = [(72, 296), (316, 540)]
        self.column = 0
        self.top = self.y
        self.x0, self.x1 = self.columns[0]

    def new_page(self) -> pymupdf.Page:
        if self.page is not None and self.page_numbers:
            self.page.insert_text((W / 2 - 3, H - 40), str(len(self.pages)), fontname=BODY, fontsize=self.size)
        self.page = self.doc.new_page(width=W, height=H)
        self.pages.append(self.page)
        self.y = 72
        self.top = 72
        if self.columns:
            self.column = 0
            self.x0, self.x1 = self.columns[0]
        return self.page

    def ensure(self, height: float) -> None:
        if self.page is None or self.y + height > H - 72:
            if self.columns and self.column == 0:
                self.column = 1
                self.x0, self.x1 = self.columns[1]
                self.y = self.top
            else:
                self.new_page()

    def line(self, text: str, *, size: float | None = None, font: str = BODY, x: float | None = None) -> None:
        size = size or self.size
        self.ensure(size * 1.25)
        self.page.insert_text((x if x is not None else self.x0, self.y + size), text, fontname=font, fontsize=size)
        self.y += size * 1.25

    def paragraph(self, text: str, *, size: float | None = None) -> None:
        """Greedy line wrapping to the column width."""
        size = size or self.size
        words, current = text.split(), ""
        for word in words:
            trial = f"{current} {word}".strip()
            if pymupdf.get_text_length(trial, fontname=BODY, fontsize=size) > self.x1 - self.x0 and current:
                self.line(current, size=size)
                current = word
            else:
                current = trial
        if current:
            self.line(current, size=size)
        self.y += size * 0.6

    def heading(self, text: str) -> None:
        self.y += 6
        self.line(text, size=self.size + 2, font=BOLD)
        self.y += 3

    def finish(self) -> None:
        if self.page is not None and self.page_numbers:
            self.page.insert_text((W / 2 - 3, H - 40), str(len(self.pages)), fontname=BODY, fontsize=self.size)


def _width(text: str, size: float, font: str = BODY) -> float:
    return pymupdf.get_text_length(text, fontname=font, fontsize=size)


def table(
    w: Writer,
    caption: str,
    header_rows: list[list[tuple[str, int]]],
    rows: list[list[str]],
    widths: list[float],
    *,
    rules: bool = False,
    caption_below: bool = False,
    size: float = 9,
    continued_caption: str | None = None,
    max_rows_per_page: int | None = None,
) -> None:
    """Draw a table. header_rows: rows of (label, span) cells. Numbers are right-aligned, text left-aligned.

    With `continued_caption`, rows that do not fit (or beyond max_rows_per_page) go to the next page under that
    caption with the header repeated, and "Continued on next page" is printed at the bottom of the first piece.
    """
    total = sum(widths)
    pitch = size * 1.35
    left, xs = 0.0, [0.0]

    def place() -> None:  # x positions follow the column the writer is in now
        nonlocal left, xs
        left = w.x0 + max(0.0, (w.x1 - w.x0 - total) / 2)
        xs = [left + sum(widths[:i]) for i in range(len(widths) + 1)]

    def cell(page: pymupdf.Page, text: str, col: int, y: float, span: int = 1) -> None:
        c0, c1 = xs[col] + 4, xs[col + span] - 4
        numeric = any(ch.isdigit() for ch in text) and not any(ch.isalpha() and ch not in "e" for ch in text)
        tw = _width(text, size)
        if span > 1:
            x = (c0 + c1 - tw) / 2
        else:
            x = c1 - tw if numeric else c0
        page.insert_text((x, y + size), text, fontname=BODY, fontsize=size)

    def rule(page: pymupdf.Page, y: float, width: float = 0.6) -> None:
        page.draw_line((xs[0], y), (xs[-1], y), width=width)

    def start(cap: str) -> None:
        w.ensure(pitch * (len(header_rows) + 3) + 20)
        place()
        if not caption_below:
            w.line(cap, size=size + 1, x=left)
            w.y += 4
        if rules:
            rule(w.page, w.y, 1.0)
        for hrow in header_rows:
            col = 0
            for label, span in hrow:
                if label:
                    cell(w.page, label, col, w.y, span)
                col += span
            w.y += pitch
        if rules:
            rule(w.page, w.y - 1)

    start(caption)
    on_page = 0
    for row in rows:
        room = (
            w.y + pitch * 2.5 > H - 80
            and not (w.columns and w.column == 0)
            or (max_rows_per_page is not None and on_page >= max_rows_per_page)
        )
        if room and continued_caption == "":  # the table simply runs on: no caption, no header repeated
            w.new_page()
            on_page = 0
        elif room and continued_caption is not None:
            if rules:
                rule(w.page, w.y, 1.0)
            w.page.insert_text(
                (xs[-1] - _width("Continued on next page", size), w.y + size + 6),
                "Continued on next page",
                fontname=BODY,
                fontsize=size,
            )
            w.new_page()
            start(continued_caption)
            on_page = 0
        for col, text in enumerate(row):
            if text:
                cell(w.page, text, col, w.y)
        w.y += pitch
        on_page += 1
    if rules:
        rule(w.page, w.y, 1.0)
    w.y += 6
    if caption_below:
        w.line(caption, size=size + 1, x=left)
    w.y += 10


# ---------------------------------------------------------------------------------------------------------------
# Known content of the generated "results paper".

TITLE = "Sparse Gated Mixers for Small Image Classifiers"
AUTHORS = ["Ada Lovelace", "Alan Turing"]
# Table 1 (ruled): dataset statistics, no results.
T1_ROWS = [["CIFAR-10", "50,000", "10,000", "10"], ["SVHN", "73,257", "26,032", "10"]]
# Table 2 (no ruling lines, two header levels, ± values): method x dataset test accuracy (%).
T2_ROWS = [
    ["ResNet-18", "93.02 ± 0.11", "95.41 ± 0.08"],
    ["GatedMixer-S", "94.35 ± 0.09", "96.12 ± 0.05"],
    ["GatedMixer-B", "95.10 ± 0.07", "96.48 ± 0.06"],
]
# Table 3 (no ruling lines, continues over two pages, grouped rows): model, depth, error (%) on CIFAR-10.
T3_ROWS = [[("Mixer" if i % 6 == 0 else ""), f"depth={4 + (i % 6) * 2}", f"{12.5 - i * 0.05:.2f}"] for i in range(48)]
TEXT_CLAIM = ("Our GatedMixer-B model achieves 95.1% test accuracy on CIFAR-10, an error of 4.9%.", 95.1)


def results_paper(path: Path, *, two_column: bool = False) -> Path:
    """A 3–4 page paper with three tables (ruled, unruled with ± values, unruled continued over pages)."""
    doc = pymupdf.open()
    w = Writer(doc)
    w.new_page()
    w.line(TITLE, size=17, font=BOLD, x=110)
    w.y += 6
    w.line("   ".join(AUTHORS), size=10, font=BOLD, x=220)
    w.line("Example University, Department of Computing", size=10, x=190)
    w.y += 10
    w.line("Abstract", size=12, font=BOLD, x=280)
    w.paragraph(
        "We study sparse gated mixers for image classification. On CIFAR-10 and SVHN they match larger residual "
        "networks at a fraction of the cost."
    )
    w.heading("1 Introduction")
    w.paragraph(
        "Small image classifiers remain useful on devices. Earlier work reported 96.5% accuracy on SVHN with much "
        "larger models (Smith et al., 2019). We revisit the question with gated mixers."
    )
    if two_column:
        w.two_columns()
    w.heading("2 Experimental Setup")
    w.paragraph(
        "We use the CIFAR-10 dataset and the SVHN dataset. The training set has 50,000 images and the test set has "
        "10,000 images. Images are normalized to zero mean and unit variance, with random crops and horizontal flips."
    )
    w.paragraph(
        "All models are trained with SGD with momentum 0.9 for 200 epochs, using a learning rate of 0.1 and a batch "
        "size of 128. Results are the mean and standard deviation over 3 random seeds. Training takes two hours on a "
        "single NVIDIA V100 GPU."
    )
    widths = [80, 50, 50, 40] if two_column else [110, 80, 80, 60]
    if two_column:  # push Table 2 into the right-hand column, caption below it
        w.paragraph(" ".join(["Further details of the training recipe follow common practice."] * 9))
    table(
        w,
        "Table 1: Dataset statistics.",
        [[("Dataset", 1), ("Train", 1), ("Test", 1), ("Classes", 1)]],
        T1_ROWS,
        widths,
        rules=True,
    )
    w.heading("3 Results")
    w.paragraph(TEXT_CLAIM[0] + " Table 2 compares the models on both datasets.")
    t2_widths = [80, 70, 70] if two_column else [120, 100, 100]
    table(
        w,
        "Table 2: Test accuracy (%) of each model, mean ± std over 3 seeds.",
        [[("", 1), ("Test accuracy", 2)], [("Model", 1), ("CIFAR-10", 1), ("SVHN", 1)]],
        T2_ROWS,
        t2_widths,
        rules=False,
        caption_below=two_column,
    )
    w.paragraph("The deeper mixers reduce the error further, as Table 3 shows for every depth we tried.")
    table(
        w,
        "Table 3: Test error (%) on CIFAR-10 by model depth.",
        [[("Model", 1), ("Setting", 1), ("Error", 1)]],
        T3_ROWS,
        [80, 70, 60] if two_column else [120, 100, 70],
        rules=False,
        continued_caption="Table 3 (continued)" if not two_column else "Table 3 - continued from previous page",
        max_rows_per_page=30,
    )
    w.heading("4 Conclusion")
    w.paragraph("Gated mixers are a strong baseline for small image classifiers.")
    w.heading("References")
    w.paragraph("A. Smith, B. Jones. Deep networks for digits. arXiv:1901.01234, 2019.")
    w.finish()
    doc.save(path)
    doc.close()
    return path


# An uncaptioned table, and a captioned one that runs onto the next page with neither caption nor header there.
U_ROWS = [["Baseline", "71.2", "11.7M"], ["Wider", "73.9", "25.6M"], ["Deeper", "74.4", "44.5M"]]
RUN_ROWS = [[f"seed-{i}", f"{60 + i * 0.25:.2f}", f"{1.5 - i * 0.01:.3f}"] for i in range(70)]


def uncaptioned_paper(path: Path) -> Path:
    doc = pymupdf.open()
    w = Writer(doc)
    w.new_page()
    w.line("Tables Without Captions", size=17, font=BOLD, x=180)
    w.heading("1 Results")
    w.paragraph("The numbers below are ImageNet top-1 accuracy for three variants of the network.")
    # No caption: draw the header and rows directly.
    for text, x in (("Variant", 150), ("Top-1 accuracy", 300), ("Params", 420)):
        w.page.insert_text((x, w.y + 9), text, fontname=BODY, fontsize=9)
    w.y += 13
    for name, acc, params in U_ROWS:
        w.page.insert_text((150, w.y + 9), name, fontname=BODY, fontsize=9)
        w.page.insert_text((355 - _width(acc, 9), w.y + 9), acc, fontname=BODY, fontsize=9)
        w.page.insert_text((450 - _width(params, 9), w.y + 9), params, fontname=BODY, fontsize=9)
        w.y += 13
    w.y += 12
    w.paragraph("Every seed of the long sweep is listed in Table 1, which runs over the page break.")
    table(
        w,
        "Table 1: Validation accuracy (%) and loss for each seed on CIFAR-100.",
        [[("Run", 1), ("Accuracy", 1), ("Loss", 1)]],
        RUN_ROWS,
        [120, 90, 90],
        continued_caption="",
    )
    w.heading("2 Conclusion")
    w.paragraph("That is all.")
    w.finish()
    doc.save(path)
    doc.close()
    return path


def long_paper(path: Path, n_pages: int = 50, seed: int = 0) -> Path:
    """A long paper for the benchmark: prose and a results table on every page."""
    rng = random.Random(seed)
    doc = pymupdf.open()
    w = Writer(doc)
    w.new_page()
    w.line("A Long Benchmark Paper", size=17, font=BOLD, x=200)
    sentence = (
        "We evaluate the model on held-out data and report the test accuracy of each configuration, which "
        "reaches {:.1f}% on CIFAR-10 in our runs. "
    )
    t = 0
    while len(doc) < n_pages:
        w.heading(f"{len(doc)} Section")
        w.paragraph(" ".join(sentence.format(rng.uniform(80, 99)) for _ in range(6)))
        t += 1
        rows = [
            [
                f"model-{i}",
                f"lr={10 ** -rng.randint(1, 4)}",
                f"{rng.uniform(80, 99):.2f} ± {rng.uniform(0, 1):.2f}",
                f"{rng.uniform(80, 99):.2f}",
            ]
            for i in range(12)
        ]
        table(
            w,
            f"Table {t}: Test accuracy (%) of configuration sweep {t}.",
            [[("Model", 1), ("Setting", 1), ("CIFAR-10", 1), ("SVHN", 1)]],
            rows,
            [110, 90, 100, 70],
            rules=bool(t % 2),
        )
    w.finish()
    while len(doc) > n_pages:
        doc.delete_page(-1)
    doc.save(path)
    doc.close()
    return path


def encrypted_pdf(path: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Secret results: 99.9% accuracy.", fontname=BODY, fontsize=11)
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="user", owner_pw="owner")
    doc.close()
    return path


def _noise_pixmap() -> pymupdf.Pixmap:
    pix = pymupdf.Pixmap(pymupdf.csGRAY, pymupdf.IRect(0, 0, 200, 100), False)
    pix.set_rect(pix.irect, (200,))
    pix.set_rect(pymupdf.IRect(20, 20, 180, 40), (30,))  # a dark bar, like a scanned line of text
    return pix


def scanned_pdf(path: Path, pages: int = 2) -> Path:
    """Image-only pages: what a scanner without OCR produces."""
    doc = pymupdf.open()
    pix = _noise_pixmap()
    for _ in range(pages):
        page = doc.new_page()
        page.insert_image(pymupdf.Rect(72, 72, 540, 306), pixmap=pix)
    doc.save(path)
    doc.close()
    return path


def mixed_pdf(path: Path) -> Path:
    """A text page followed by an image-only page (a scanned appendix): ingestible, page 2 has no text."""
    doc = pymupdf.open()
    w = Writer(doc)
    w.new_page()
    w.line("A Paper With a Scanned Appendix", size=17, font=BOLD, x=150)
    w.heading("1 Results")
    w.paragraph("The model achieves 88.2% accuracy on MNIST.")
    w.finish()
    page = doc.new_page()
    page.insert_image(pymupdf.Rect(72, 72, 540, 306), pixmap=_noise_pixmap())
    doc.save(path)
    doc.close()
    return path


def truncated_pdf(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


STACK_A = [["Small", "81.0", "77.5"], ["Medium", "84.2", "80.1"], ["Large", "86.9", "82.3"], ["Huge", "88.1", "83.0"]]
STACK_B = [["Linear", "0.412"], ["MLP", "0.377"]]


def stacked_paper(path: Path, *, caption_below: bool) -> Path:
    """Two tables one right after the other, captions all above or all below their tables."""
    doc = pymupdf.open()
    w = Writer(doc)
    w.new_page()
    w.line("Stacked Tables", size=17, font=BOLD, x=230)
    w.heading("1 Results")
    w.paragraph("Both tables report results on the MNIST dataset.")
    table(
        w,
        "Table 1: Accuracy (%) by model size on MNIST and EMNIST.",
        [[("Size", 1), ("MNIST", 1), ("EMNIST", 1)]],
        STACK_A,
        [120, 80, 80],
        caption_below=caption_below,
    )
    table(
        w,
        "Table 2: Test loss of two probes on MNIST.",
        [[("Probe", 1), ("Loss", 1)]],
        STACK_B,
        [120, 80],
        caption_below=caption_below,
    )
    w.paragraph("Nothing else to report here.")
    w.finish()
    doc.save(path)
    doc.close()
    return path


# Column labels that are numbers (shots) over results, and a separate "Std" column.
SHOT_ROWS = [["ProtoNet", "49.42", "68.20", "74.10"], ["MAML", "48.70", "63.11", "70.02"]]
STD_ROWS = [["Baseline", "61.3", "0.4"], ["Ours", "64.8", "0.3"]]
WRAP_ROWS = [["ResNet-50 with", "76.1"], ["skip connections", ""], ["ViT-B/16", "81.8"]]  # a wrapped row label


def fewshot_paper(path: Path) -> Path:
    doc = pymupdf.open()
    w = Writer(doc)
    w.new_page()
    w.line("Few-Shot Tables", size=17, font=BOLD, x=230)
    w.heading("1 Results")
    w.paragraph("We evaluate on the Omniglot benchmark.")
    table(
        w,
        "Table 1: 5-way accuracy (%) on Omniglot by number of shots.",
        [[("", 1), ("Shots", 3)], [("Method", 1), ("1", 1), ("5", 1), ("10", 1)]],
        SHOT_ROWS,
        [120, 70, 70, 70],
    )
    table(
        w,
        "Table 2: Test accuracy (%) on Omniglot over 5 seeds.",
        [[("Method", 1), ("Accuracy", 1), ("Std", 1)]],
        STD_ROWS,
        [120, 80, 60],
    )
    table(w, "Table 3: Top-1 accuracy (%) on ImageNet.", [[("Model", 1), ("Top-1", 1)]], WRAP_ROWS, [120, 80])
    w.finish()
    doc.save(path)
    doc.close()
    return path


WIDE_ROWS = [["Linear probe", "71.3", "80.2", "55.1"], ["Fine-tune", "76.8", "84.9", "61.0"]]


def wide_table_paper(path: Path) -> Path:
    """A two-column page with a full-width table on top and prose in both columns right under it."""
    doc = pymupdf.open()
    w = Writer(doc)
    w.new_page()
    table(
        w,
        "Table 1: Accuracy (%) on CIFAR-10, CIFAR-100 and SVHN.",
        [[("Method", 1), ("CIFAR-10", 1), ("CIFAR-100", 1), ("SVHN", 1)]],
        WIDE_ROWS,
        [160, 90, 90, 90],
    )
    w.y -= 12
    w.two_columns()
    text = "The probe is trained on frozen features while fine tuning updates every weight of the network. "
    w.paragraph(text * 36)  # fills the left column and runs on into the right one
    w.finish()
    doc.save(path)
    doc.close()
    return path


# ---------------------------------------------------------------------------------------------------------------
# One-page layouts, one failure class each (see tests/retrieval/test_ingest_layouts.py). Every layout prints body
# text around its tables, so a table has to be told apart from prose. Only Times-Roman glyphs are used (it has ±
# but no dagger, dash or arrow), so the files build the same on any machine.

LAYOUTS = (
    "caption_above", "caption_below", "two_tables", "side_by_side", "rotated", "line_numbers", "plot", "ruled_text",
)  # fmt: skip
# A fully ruled table of text with tight cell padding: no gutter wider than a word space, rows that read as prose.
RULED_ROWS = [("Method", "Kind", "Description"),
              ("GatedMixer", "mixer", "mixes channels with learned gates and routes tokens"),
              ("ResNet", "conv", "a residual convolutional network with many layers")]  # fmt: skip
PROSE = (
    "We train every model with the same recipe and report the mean over three seeds. The numbers below are test "
    "set results; validation numbers are in the appendix. Each table lists the methods we compare, and the text "
    "discusses the differences between them in detail."
)
# (caption, header rows of (label, span), body rows, column widths)
LAYOUT_TABLES = {
    "pm": (
        "Table 1: Test accuracy (%) on two datasets, mean ± std over 3 seeds.",
        [[("", 1), ("Test accuracy", 2)], [("Method", 1), ("CIFAR-10", 1), ("SVHN", 1)]],
        [["ResNet-18", "93.02 ± 0.11", "95.41 ± 0.08"], ["Mixer-S", "94.35 ± 0.09", "96.12 ± 0.05"],
         ["Mixer-B", "95.10 ± 0.07", "96.48 ± 0.06"]],
        [110, 90, 90],
    ),
    "pair": (
        "Table 2: Exact match and F1 on the dev set, and the share of unanswered questions (lower is better).",
        [[("Model", 1), ("EM/F1", 1), ("Unanswered", 1)]],
        [["Reader-A", "75.3/80.1", "12.5%"], ["Reader-B", "77.0/82.4*", "11.9%"], ["Reader-C", "-", "n/a"],
         ["Reader-D", "78.2/83.0", "10.4%"]],
        [110, 90, 70],
    ),
}  # fmt: skip


def _grid(page: pymupdf.Page, x: float, y: float, spec: tuple, *, size: float = 9, rules: bool = True) -> float:
    """Draw a booktabs-style table at (x, y); returns the y below it. Numbers right-aligned, text left-aligned."""
    _, header_rows, rows, widths = spec
    pitch = size * 1.4
    xs = [x + sum(widths[:i]) for i in range(len(widths) + 1)]
    # As in LaTeX, alignment is per column: a column of numbers is right-aligned, "-" and "n/a" included.
    right = [sum(any(ch.isdigit() for ch in r[c]) for r in rows) * 2 > len(rows) for c in range(len(widths))]

    def cell(text: str, col: int, top: float, span: int = 1) -> None:
        c0, c1 = xs[col] + 4, xs[col + span] - 4
        tw = _width(text, size)
        at = (c0 + c1 - tw) / 2 if span > 1 else (c1 - tw if right[col] else c0)
        page.insert_text((at, top + size), text, fontname=BODY, fontsize=size)

    if rules:
        page.draw_line((xs[0], y), (xs[-1], y), width=1.0)
    y += 3
    for hrow in header_rows:
        col = 0
        for label, span in hrow:
            if label:
                cell(label, col, y, span)
            col += span
        y += pitch
    if rules:
        page.draw_line((xs[0], y), (xs[-1], y), width=0.6)
    y += 3
    for row in rows:
        for col, text in enumerate(row):
            if text:
                cell(text, col, y)
        y += pitch
    if rules:
        page.draw_line((xs[0], y), (xs[-1], y), width=1.0)
    return y + 4


def _prose(page: pymupdf.Page, x0: float, x1: float, y: float, text: str, size: float = 10) -> float:
    words, current = text.split(), ""
    for word in words:
        trial = f"{current} {word}".strip()
        if _width(trial, size) > x1 - x0 and current:
            page.insert_text((x0, y + size), current, fontname=BODY, fontsize=size)
            y += size * 1.3
            current = word
        else:
            current = trial
    if current:
        page.insert_text((x0, y + size), current, fontname=BODY, fontsize=size)
        y += size * 1.3
    return y + 6


def _caption(page: pymupdf.Page, x: float, y: float, text: str, size: float = 9) -> float:
    page.insert_text((x, y + size), text, fontname=BODY, fontsize=size)
    return y + size * 1.4 + 4


def layout_pdf(path: Path, layout: str) -> Path:
    """Write a one-page paper of the given layout (one of LAYOUTS) and return its path."""
    doc = pymupdf.open()
    page = doc.new_page(width=W, height=H)
    pm, pair = LAYOUT_TABLES["pm"], LAYOUT_TABLES["pair"]
    y = _prose(page, 72, 540, 72, PROSE)
    if layout == "caption_above":
        y = _caption(page, 72, y, pm[0])
        y = _grid(page, 72, y, pm)
        _prose(page, 72, 540, y + 8, PROSE)
    elif layout == "caption_below":
        y = _grid(page, 72, y + 4, pair)
        y = _caption(page, 72, y + 2, pair[0])
        _prose(page, 72, 540, y + 8, PROSE)
    elif layout == "two_tables":  # two small tables stacked on one page, each caption above its grid
        y = _caption(page, 72, y, pm[0])
        y = _grid(page, 72, y, pm)
        y = _caption(page, 72, y + 10, pair[0])
        y = _grid(page, 72, y, pair)
        _prose(page, 72, 540, y + 8, PROSE)
    elif layout == "side_by_side":  # one float, two tabulars next to each other, each caption below its own
        left = (pm[0], pm[1], pm[2], [80, 70, 70])
        right = (pair[0], pair[1], pair[2], [60, 70, 70])
        bottom = max(_grid(page, 72, y, left), _grid(page, 336, y, right))
        _caption(page, 72, bottom + 2, "Table 1: Test accuracy (%).")
        _caption(page, 336, bottom + 2, "Table 2: EM/F1 on dev.")
        _prose(page, 72, 540, bottom + 30, PROSE)
    elif layout == "rotated":  # a landscape page (sidewaystable): the content is turned by 90 degrees
        land = pymupdf.open()
        sheet = land.new_page(width=H, height=W)
        top = _caption(sheet, 72, 72, pm[0])
        _grid(sheet, 72, top, (pm[0], pm[1], pm[2], [200, 160, 160]))
        page = doc[0]
        doc.delete_page(0)
        page = doc.new_page(width=W, height=H)
        page.show_pdf_page(page.rect, land, 0, rotate=90)
        land.close()
    elif layout == "line_numbers":  # a review build: every line numbered in the left margin
        y = _caption(page, 72, y, pm[0])
        y = _grid(page, 72, y, pm)
        y = _prose(page, 72, 540, y + 8, PROSE)
        number, line_y = 100, 72.0
        while line_y < y:
            page.insert_text((40, line_y + 9), str(number), fontname=BODY, fontsize=8)
            number, line_y = number + 1, line_y + 13
    elif layout == "plot":  # a captioned figure: axes, ticks and a legend, but no table
        x0, y0, x1, y1 = 120, y + 10, 480, y + 230
        page.draw_line((x0, y1), (x1, y1))
        page.draw_line((x0, y0), (x0, y1))
        for i in range(6):
            tx = x0 + i * (x1 - x0) / 5
            page.draw_line((tx, y1), (tx, y1 + 3))
            page.insert_text((tx - 6, y1 + 14), f"{i * 0.2:.1f}", fontname=BODY, fontsize=8)
            ty = y1 - i * (y1 - y0) / 5
            page.insert_text((x0 - 24, ty + 3), f"{50 + i * 10}", fontname=BODY, fontsize=8)
        points = [(x0 + k * 18, y1 - 20 - k * 9.5) for k in range(20)]
        page.draw_polyline(points)
        page.insert_text((x1 - 80, y0 + 10), "Mixer-B 95.1", fontname=BODY, fontsize=8)
        page.insert_text((x1 - 80, y0 + 22), "ResNet 93.0", fontname=BODY, fontsize=8)
        y = _caption(page, 72, y1 + 24, "Figure 1: Test accuracy (%) against the fraction of training data.")
        _prose(page, 72, 540, y + 8, PROSE)
    elif layout == "ruled_text":
        y = _caption(page, 72, y, "Table 1: Methods compared in this study.")
        xs = [72.0]
        for col in range(3):
            xs.append(xs[-1] + max(_width(row[col], 9) for row in RULED_ROWS) + 4)
        for i, row in enumerate(RULED_ROWS):
            for col, text in enumerate(row):
                page.insert_text((xs[col] + 2, y + i * 14 + 10), text, fontname=BODY, fontsize=9)
        for i in range(len(RULED_ROWS) + 1):
            page.draw_line((xs[0], y + i * 14), (xs[-1], y + i * 14))
        for x in xs:
            page.draw_line((x, y), (x, y + 14 * len(RULED_ROWS)))
        _prose(page, 72, 540, y + 14 * len(RULED_ROWS) + 12, PROSE)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    doc.save(path)
    doc.close()
    return path
