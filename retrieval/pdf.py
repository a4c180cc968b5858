"""Open and validate a PDF, and read each page as words, visual lines and text.

Everything later (tables, claims, setup, sections) works from the `PageData` built here, so a page is read by
pymupdf exactly once (one text page, two extractions from it). Ligatures are expanded ("ﬂ" -> "fl") so quotes can
be searched for, and words keep their boxes so tables can be rebuilt from geometry: many papers' tables have no
ruling lines, and pymupdf's own table finder garbles numbers, so we never rely on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pymupdf

from retrieval.errors import IngestError

# Extraction flags: keep whitespace, clip to the media box, map unknown glyphs, but EXPAND ligatures (no
# TEXT_PRESERVE_LIGATURES) and leave images out (we only need to know whether a page has any).
TEXT_FLAGS = pymupdf.TEXT_PRESERVE_WHITESPACE | pymupdf.TEXT_MEDIABOX_CLIP | pymupdf.TEXT_CID_FOR_UNKNOWN_UNICODE

_CHAR_FIXES = str.maketrans(
    {
        "\u00a0": " ",
        "\u2009": " ",
        "\u202f": " ",
        "\u2212": "-",
        "\ufb01": "fi",
        "\ufb02": "fl",
        "\u00ad": "",
        "\u2206": "\u0394",  # INCREMENT, as math fonts print a capital delta
    }
)
_CAPTION_START = re.compile(r"(Table|TABLE|Tab\.|Figure|FIGURE|Fig\.)\s*([A-Z]?\d+|[IVXL]+)\b")
_BOLD_FONT = re.compile(r"bold|black|heavy|medi|semibold|demi", re.IGNORECASE)


# Small-caps fonts whose glyph names map to the long s, the dotless i and kra ("DATAſET", "ARCHıTECTURE"): inside an
# otherwise upper-case word they are the letters S and I.
_SMALL_CAPS_GLYPH = re.compile(r"(?<=[A-Z])[\u017f\u0131\u0138]|[\u017f\u0131\u0138](?=[A-Z])")
_SMALL_CAPS_LETTER = {"\u017f": "S", "\u0131": "I", "\u0138": "K"}


def clean(text: str) -> str:
    """Normalise characters that differ between PDFs but not in meaning (minus sign, odd spaces, ligatures)."""
    text = text.translate(_CHAR_FIXES)
    if "\ufb00" in text or "\ufb03" in text or "\ufb04" in text:
        text = text.replace("\ufb00", "ff").replace("\ufb03", "ffi").replace("\ufb04", "ffl")
    if "\u017f" in text or "\u0131" in text or "\u0138" in text:
        text = _SMALL_CAPS_GLYPH.sub(lambda m: _SMALL_CAPS_LETTER[m.group(0)], text)
    return text


def collapse(text: str) -> str:
    return " ".join(text.split())


_COMPOUND_TAILS = {
    "in", "up", "out", "on", "off", "based", "like", "level", "wise", "specific", "free", "scale", "art", "the",
    "to", "of", "end", "aware", "shot", "layer", "grained", "dimensional", "order", "world", "side", "box", "only",
    "by", "and", "or", "trained", "tuned", "class", "fold", "way", "term", "time", "step", "head", "tailed",
}  # fmt: skip


def join_lines(lines: list[str]) -> str:
    """Join wrapped lines into running text, undoing end-of-line hyphenation ("al-" + "gorithms").

    A hyphen between two lowercase letters at a line break is a typesetting hyphen and is dropped; before a capital
    or a digit it is part of a name ("Fashion-" + "MNIST", "CIFAR-" + "10") and is kept, without a space.
    """
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if not out:
            out = line
        elif out.endswith("-") and len(out) > 1 and out[-2].isalpha():
            prefix = out.rsplit(" ", 1)[-1]
            suffix = re.match(r"[a-z]+", line)
            # "randomly-selected", "drop-in", "state-of-the-art": compounds, not a word split by TeX.
            compound = prefix.endswith("ly-") or (suffix is not None and suffix.group(0) in _COMPOUND_TAILS)
            if out[-2].islower() and line[:1].islower() and not compound:
                out = out[:-1] + line
            else:
                out = out + line
        else:
            out = out + " " + line
    return out


@dataclass
class Word:
    x0: float
    y0: float
    x1: float
    y1: float
    text: str

    @property
    def xc(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def yc(self) -> float:
        return (self.y0 + self.y1) / 2


@dataclass
class Line:
    """A visual line: pymupdf lines of one block that share a baseline, merged left to right."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    size: float  # largest font size on the line
    bold: bool  # most characters in a bold/medium face
    block: int  # index of the pymupdf block it came from
    pieces: list[tuple[float, float]] = field(default_factory=list)  # x-extents of its spans, left to right
    all_bold: bool = False  # every span bold: a heading, not a paragraph that opens with a bold run-in title
    font: str = ""  # the font of most of its characters
    min_size: float = 0.0  # smallest font size on the line

    @property
    def gaps(self) -> list[float]:
        """Horizontal gaps between consecutive spans: a table row has gaps of several ems, a heading none."""
        ordered = sorted(self.pieces)
        return [b[0] - a[1] for a, b in zip(ordered, ordered[1:], strict=False)]

    @property
    def height(self) -> float:
        return self.y1 - self.y0


@dataclass
class Block:
    x0: float
    y0: float
    x1: float
    y1: float
    lines: list[Line] = field(default_factory=list)

    @property
    def text(self) -> str:
        return join_lines([line.text for line in self.lines])


@dataclass
class PageData:
    number: int  # 1-based
    width: float
    height: float
    words: list[Word]
    blocks: list[Block]
    has_images: bool
    margin: list[str] = field(default_factory=list)  # rotated text, e.g. the arXiv stamp "arXiv:1708.07747v2 ..."

    @property
    def lines(self) -> list[Line]:
        return [line for block in self.blocks for line in block.lines]

    @property
    def text(self) -> str:
        """Page text: one line per block, wrapped lines joined and hyphenation undone (see `join_lines`).

        Claim and setup quotes are built the same way, so every quote is a substring of this text after `collapse`.
        """
        return "\n".join(block.text for block in self.blocks)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path) -> bytes:
    """Reject what is plainly not a readable PDF before pymupdf sees it; returns the file's bytes."""
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if path.is_dir():
        raise IngestError(f"{path}: is a directory, not a PDF file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc.strerror})") from exc
    if not data:
        raise IngestError(f"{path}: empty file (0 bytes), not a PDF")
    if b"%PDF-" not in data[:1024]:
        raise IngestError(f"{path}: not a PDF (no %PDF header)")
    # A complete PDF ends with %%EOF (possibly followed by a little whitespace or junk). pymupdf silently repairs
    # truncated files and would hand us fewer pages, so a missing trailer is refused here.
    if b"%%EOF" not in data[-2048:]:
        raise IngestError(f"{path}: truncated or corrupt PDF (no %%EOF trailer)")
    return data


def open_pdf(path: Path) -> tuple[pymupdf.Document, bytes]:
    """Open `path` as a PDF or raise `IngestError` with a one-line reason."""
    data = check_file(path)
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except Exception as exc:  # pymupdf raises its own FileDataError/RuntimeError variants
        raise IngestError(f"{path}: corrupt PDF ({collapse(str(exc))[:120]})") from exc
    if doc.needs_pass:
        doc.close()
        raise IngestError(f"{path}: PDF is encrypted (password protected); decrypt it first, e.g. qpdf --decrypt")
    if doc.page_count == 0:
        doc.close()
        raise IngestError(f"{path}: PDF has no pages")
    if getattr(doc, "is_repaired", False):
        doc.close()
        raise IngestError(f"{path}: truncated or corrupt PDF (its cross-reference table is broken)")
    return doc, data


def _is_bold(span: dict) -> bool:
    return bool(span.get("flags", 0) & 16) or bool(_BOLD_FONT.search(span.get("font", "")))


def _inside(word: Word, box: tuple[float, float, float, float]) -> bool:
    return box[0] - 0.5 <= word.xc <= box[2] + 0.5 and box[1] - 0.5 <= word.yc <= box[3] + 0.5


def line_number_boxes(info: dict) -> set[tuple[float, float, float, float]]:
    """Boxes of margin line numbers (review and submission builds: "822", "823", ... beside every text line).

    A line number is a text line of digits only, right- or left-aligned with others in a narrow band outside the
    text body (left of all other text or right of it), and the band counts up by one from top to bottom. A
    table's rank column sits inside the body, so it is never taken for one.
    """
    numbers: list[tuple[float, float, float, float, int]] = []
    others_x0, others_x1 = [], []
    for block in info["blocks"]:
        for line in block.get("lines", ()):
            text = "".join(s["text"] for s in line["spans"]).strip()
            x0, y0, x1, y1 = line["bbox"]
            if re.fullmatch(r"\d{1,4}", text) and line.get("dir", (1, 0))[0] > 0.99:
                numbers.append((x0, y0, x1, y1, int(text)))
            elif text:
                others_x0.append(x0)
                others_x1.append(x1)
    if len(numbers) < 5 or not others_x0:
        return set()
    body_left, body_right = min(others_x0), max(others_x1)
    found: set[tuple[float, float, float, float]] = set()
    for outside in (lambda n: n[2] <= body_left + 1, lambda n: n[0] >= body_right - 1):
        band = sorted((n for n in numbers if outside(n)), key=lambda n: n[1])
        if len(band) < 5:
            continue
        steps = [b[4] - a[4] for a, b in zip(band, band[1:], strict=False)]
        if sum(1 for step in steps if step == 1) >= 0.8 * len(steps):
            found.update(n[:4] for n in band)
    return found


def read_page(
    page: pymupdf.Page, *, info: dict | None = None, raw_words: list | None = None, has_images: bool | None = None
) -> PageData:
    """Build a `PageData` from a page's dict and words extraction (read here unless `_read_page_of` did)."""
    if info is None or raw_words is None:
        textpage = page.get_textpage(flags=TEXT_FLAGS)
        info = page.get_text("dict", textpage=textpage)
        raw_words = page.get_text("words", textpage=textpage)
    width, height = page.rect.width, page.rect.height
    if page.rotation % 180 == 90:  # text coordinates are those of the unrotated page
        width, height = height, width
    reading = _reading_direction(info)
    frame = _frame(reading, width, height)
    # Words of text set across the reading direction come out tall and narrow: margin stamps, never table cells.
    words = []
    for w in raw_words:
        x0, y0, x1, y1 = frame(w[:4])
        if w[4].strip() and not (len(w[4]) > 2 and (y1 - y0) > 2.5 * (x1 - x0)):
            words.append(Word(x0, y0, x1, y1, clean(w[4])))
    numbering = line_number_boxes(info) if reading == (1, 0) else set()
    if numbering:
        # Line numbers sit in narrow margin bands: test a word against the boxes only when it lies in one.
        bands = [
            (min(b[0] for b in side) - 1, max(b[2] for b in side) + 1, side)
            for side in ([b for b in numbering if b[2] < width / 2], [b for b in numbering if b[2] >= width / 2])
            if side
        ]
        words = [
            w
            for w in words
            if not any(lo <= w.xc <= hi and any(_inside(w, box) for box in side) for lo, hi, side in bands)
        ]
    margin: list[str] = []
    blocks: list[Block] = []
    for b_index, block in enumerate(info["blocks"]):
        if block.get("type", 0) != 0:
            continue
        merged: list[Line] = []
        for line in block["lines"]:
            if numbering and tuple(line["bbox"]) in numbering:
                continue
            direction = line.get("dir", (1, 0))
            if abs(direction[0] - reading[0]) > 0.01 or abs(direction[1] - reading[1]) > 0.01:
                # text across the page's reading direction (the arXiv stamp in the margin): not part of the body
                margin.append(clean("".join(s["text"] for s in line["spans"])).strip())
                continue
            spans = [s for s in line["spans"] if s["text"].strip()]
            if not spans:
                continue
            text = clean("".join(s["text"] for s in line["spans"])).strip()
            x0, y0, x1, y1 = frame(line["bbox"])
            size = max(s["size"] for s in spans)
            bold_chars = sum(len(s["text"]) for s in spans if _is_bold(s))
            bold = bold_chars * 2 > sum(len(s["text"]) for s in spans)
            pieces = [(box[0], box[2]) for box in (frame(s["bbox"]) for s in spans)]
            all_bold = all(_is_bold(s) for s in spans)
            min_size = min(s["size"] for s in spans)
            font = max(spans, key=lambda s: len(s["text"]))["font"]
            prev = merged[-1] if merged else None
            # Two captions side by side on one baseline (two tables in one float) stay two lines.
            beside = prev is not None and x0 - prev.x1 > 2.5 * size and _CAPTION_START.match(text) is not None
            if (
                prev is not None
                and not beside
                and min(prev.y1, y1) - max(prev.y0, y0) > 0.5 * min(prev.height, y1 - y0)
            ):
                # Same baseline as the previous line of this block: one visual line ("1" + "Introduction").
                prev.text = prev.text + " " + text if x0 >= prev.x0 else text + " " + prev.text
                prev.x0, prev.y0 = min(prev.x0, x0), min(prev.y0, y0)
                prev.x1, prev.y1 = max(prev.x1, x1), max(prev.y1, y1)
                prev.size = max(prev.size, size)
                prev.bold = prev.bold and bold
                prev.pieces.extend(pieces)
                prev.all_bold = prev.all_bold and all_bold
                prev.min_size = min(prev.min_size, min_size)
                continue
            merged.append(Line(x0, y0, x1, y1, text, size, bold, b_index, pieces, all_bold, font, min_size))
        if merged:
            bx0, by0, bx1, by1 = frame(block["bbox"])
            blocks.append(Block(bx0, by0, bx1, by1, merged))
    if has_images is None:
        has_images = bool(page.get_images(full=False))
    has_images = has_images or any(b.get("type") == 1 for b in info["blocks"])
    if reading != (1, 0):  # a landscape page read in its own frame: x along the lines, y down the page
        width, height = height, width
    return PageData(page.number + 1, width, height, words, blocks, has_images, margin)


def _reading_direction(info: dict) -> tuple[int, int]:
    """The direction most of the page's text runs in: (1, 0) normally; (0, -1) on a landscape page whose content
    is turned (a sidewaystable reads bottom to top), (0, 1) when it reads top to bottom."""
    counts: dict[tuple[int, int], int] = {}
    for block in info["blocks"]:
        for line in block.get("lines", ()):
            dx, dy = line.get("dir", (1, 0))
            key = (round(dx), round(dy))
            counts[key] = counts.get(key, 0) + sum(len(s["text"].strip()) for s in line["spans"])
    total = sum(counts.values())
    best = max(counts, key=lambda k: counts[k]) if counts else (1, 0)
    return best if best in ((0, -1), (0, 1)) and counts[best] > 0.5 * total else (1, 0)


def _frame(reading: tuple[int, int], width: float, height: float):
    """Map a box of the page into the frame where text of `reading` direction runs left to right."""
    if reading == (0, -1):
        return lambda b: (height - b[3], b[0], height - b[1], b[2])
    if reading == (0, 1):
        return lambda b: (b[1], width - b[2], b[3], width - b[0])
    return lambda b: (b[0], b[1], b[2], b[3])


def _read_page_of(doc: pymupdf.Document, index: int, path: Path) -> PageData:
    """Load and read one page. Only pymupdf's own errors (a damaged content stream in the user's file, which
    surfaces when the page is parsed) become the one-line "corrupt PDF page"; a bug of ours in `read_page`
    propagates with its traceback."""
    try:
        page = doc.load_page(index)
        textpage = page.get_textpage(flags=TEXT_FLAGS)
        info = page.get_text("dict", textpage=textpage)
        raw_words = page.get_text("words", textpage=textpage)
        has_images = bool(page.get_images(full=False))
    except (pymupdf.mupdf.FzErrorBase, pymupdf.FileDataError) as exc:  # mupdf's errors for a broken page
        raise IngestError(f"{path}: corrupt PDF page {index + 1} ({collapse(str(exc))[:120]})") from exc
    return read_page(page, info=info, raw_words=raw_words, has_images=has_images)


def read_pdf(path: Path) -> tuple[list[PageData], dict, str]:
    """Validate and read every page. Returns (pages, pdf metadata, sha256 of the file)."""
    doc, data = open_pdf(path)
    try:
        pages = [_read_page_of(doc, index, path) for index in range(doc.page_count)]
        metadata = dict(doc.metadata or {})
    finally:
        doc.close()
    strip_running_heads(pages)
    if not any(page.words for page in pages):
        what = "scanned images only" if any(page.has_images for page in pages) else "no text"
        raise IngestError(f"{path}: PDF has no text layer ({what}); run OCR first, e.g. ocrmypdf in.pdf out.pdf")
    return pages, metadata, hashlib.sha256(data).hexdigest()


def _furniture_key(text: str) -> str:
    return re.sub(r"\d+", "#", collapse(text)).strip().lower()


def strip_running_heads(pages: list[PageData]) -> None:
    """Drop running heads and feet: lines in the top or bottom 8% of the page whose text (digits ignored) recurs on
    at least three pages ("[Re] When Does Label Smoothing Help?   UNDER REVIEW", "ReScience C 6.1 - 2020"). They
    are not part of any table or sentence, and a caption's search for its grid must not land on them."""
    if len(pages) < 3:
        return
    seen: dict[str, set[int]] = {}
    for page in pages:
        for line in page.lines:
            if line.y1 < 0.08 * page.height or line.y0 > 0.92 * page.height:
                seen.setdefault(_furniture_key(line.text), set()).add(page.number)
    recurring = {key for key, where in seen.items() if len(where) >= 3 and key not in ("", "#")}
    for page in pages:
        bands = []
        for block in page.blocks:
            kept = []
            for line in block.lines:
                edge = line.y1 < 0.08 * page.height or line.y0 > 0.92 * page.height
                if edge and _furniture_key(line.text) in recurring:
                    bands.append(line)
                else:
                    kept.append(line)
            block.lines = kept
        if bands:
            page.blocks = [block for block in page.blocks if block.lines]
            page.words = [
                w
                for w in page.words
                if not any(b.x0 - 1 <= w.xc <= b.x1 + 1 and b.y0 - 1 <= w.yc <= b.y1 + 1 for b in bands)
            ]


def body_font_size(pages: list[PageData]) -> float:
    """The most common font size, weighted by characters: the size of running text."""
    weights: dict[float, int] = {}
    for page in pages:
        for line in page.lines:
            key = round(line.size, 1)
            weights[key] = weights.get(key, 0) + len(line.text)
    return max(weights, key=lambda k: weights[k]) if weights else 10.0


HEADING_NAMES = re.compile(
    r"^(abstract|introduction|related work|background|method(s|ology)?|approach|model|experiments?|"
    r"experimental (setup|results|settings?)|results|evaluation|discussion|analysis|conclusions?|"
    r"conclusion and future work|limitations|future work|references|bibliography|acknowledge?ments?|appendix|"
    r"supplementary material)\b",
    re.IGNORECASE,
)
NUMBERED_HEADING = re.compile(r"^(?P<num>(\d+(\.\d+)*|[IVX]+|[A-H](\.\d+)*)\.?)\s+(?P<title>[A-Z].*)$")


@dataclass
class Heading:
    page: int
    line: Line
    title: str
    level: int


def find_headings(pages: list[PageData], body_size: float) -> list[Heading]:
    """Section headings: short lines set wholly larger than body text, or wholly bold and numbered / a usual
    section name. Never the title block (author names, affiliations, dates above the abstract), a table row, a
    caption, a line of code, or a paragraph that opens with a bold run-in title."""
    headings: list[Heading] = []
    fonts: dict[str, int] = {}
    for page in pages:
        for line in page.lines:
            fonts[line.font] = fonts.get(line.font, 0) + len(line.text)
    body_font = max(fonts, key=lambda f: fonts[f]) if fonts else ""
    front_matter = True  # page 1 until the first numbered or usual-name heading ("Abstract", "1 Introduction")
    for page in pages:
        for block in page.blocks:
            for index, line in enumerate(block.lines):
                # A numbered line alone in its block, in a face other than the body's ("I. Introduction" in
                # small caps, "A. Related work" in italics): an IEEE-style heading at body size.
                styled = len(block.lines) == 1 and bool(line.font) and line.font != body_font
                heading = _heading(line, index, body_size, styled)
                if heading is None or _cell_gaps(page, line, numbered=bool(NUMBERED_HEADING.match(line.text))):
                    continue
                title, level, numbered, named = heading
                # The title block ends at "Abstract" or a section numbered with digits ("A Study of ..." is a
                # title, not appendix A).
                if front_matter and page.number == 1 and not (named or (numbered and title[:1].isdigit())):
                    continue
                front_matter = False
                if (
                    numbered
                    and re.match(r"[A-H][.\s]", title)
                    and any(re.match(r"[IVX]+\.", h.title) for h in headings)
                ):
                    level = 2  # "A. Related work" under "II. Background": IEEE subsections
                previous = headings[-1] if headings else None
                if (
                    previous is not None
                    and previous.page == page.number
                    and previous.line.block == line.block
                    and line.y0 - previous.line.y1 < 0.8 * line.height
                    and not numbered
                    and abs(previous.line.size - line.size) < 0.3
                ):
                    previous.title = f"{previous.title} {title}"  # the second line of a wrapped heading
                    continue
                headings.append(Heading(page.number, line, title, level))
    return headings


def _cell_gaps(page: PageData, line: Line, numbered: bool) -> bool:
    """Does the line hold cells (a gap of more than 1.5 em between words), even inside one span? A PDF that sets
    a table row with space characters gives pymupdf one span, so the span gaps alone do not show it."""
    words = sorted(
        (w for w in page.words if line.x0 - 1 <= w.xc <= line.x1 + 1 and line.y0 - 1 <= w.yc <= line.y1 + 1),
        key=lambda w: w.x0,
    )
    gaps = [b.x0 - a.x1 for a, b in zip(words, words[1:], strict=False)]
    return any(g > 1.5 * line.size for g in (gaps[1:] if numbered else gaps))


def _heading(line: Line, index: int, body_size: float, styled: bool = False) -> tuple[str, int, bool, bool] | None:
    """(title, level, numbered, usual name) when `line` reads as a section heading, else None."""
    text = line.text.strip()
    if not text or len(text) > 90 or len(text.split()) > 12 or not text[0].isalnum():
        return None
    if not re.search(r"[A-Za-z]{3}", text) or _CAPTION_START.match(text):  # page numbers, "3.2", captions
        return None
    numbered = NUMBERED_HEADING.match(text)
    gaps = line.gaps[1:] if numbered else line.gaps
    if any(g > 1.5 * line.size for g in gaps):
        return None  # cells of a table row ("Model   t-stat   df"), not a title
    named = HEADING_NAMES.match(numbered.group("title") if numbered else text)
    larger = (line.min_size or line.size) >= body_size + 0.9
    if text.endswith((".", ",", ";")) and not (named and len(text.split()) <= 3):
        return None
    if not numbered and not named and re.search(r"[\"=(){}\[\]<>@]", text):
        return None  # code ('print ("...")'), an e-mail or an address line, not a title
    if (
        not (larger and (numbered or named or index == 0))
        and not (line.all_bold and (numbered or named))
        and not (
            styled and numbered and re.fullmatch(r"[IVX]+\.|[A-H]\.", numbered.group("num")) and len(text.split()) <= 10
        )
    ):
        return None
    if numbered and not re.search(r"[A-Za-z]{3}", numbered.group("title")):
        return None
    if (
        numbered
        and re.fullmatch(r"\d+", numbered.group("num").rstrip("."))
        and int(numbered.group("num").rstrip(".")) > 30
    ):
        return None  # "2017 Conference ..." is not section 2017
    level = numbered.group("num").rstrip(".").count(".") + 1 if numbered else 1
    return text, level, bool(numbered), bool(named)
