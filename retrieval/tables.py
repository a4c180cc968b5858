"""Find tables on PDF pages and rebuild them from word boxes.

Why not pymupdf's `find_tables`: most ML papers typeset tables with booktabs or no rules at all, and its text
extraction splits numbers ("66.72" -> "6672\\n."). We rebuild tables from geometry instead:

1. a table is anchored on its caption ("Table 3: ...", "Table 3 – continued from previous page"), or found as a run
   of rows with several aligned cells and numbers when the paper prints no caption;
2. words in the table's area are grouped into rows by vertical overlap, and each row into cells by horizontal gaps
   wider than a word space;
3. columns are the x-ranges that body rows cover, separated by gutters no body row crosses; a cell that crosses a
   gutter spans several columns (header) or is split word by word (body);
4. rows above the first numeric row are the header (multi-row headers are joined " / ", spanning labels repeat);
5. pieces with the same label on later pages ("continued") are appended to one logical table.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from statistics import median

from retrieval.captions import CaptionHit, caption_range, find_captions, two_column_split
from retrieval.cells import VALUE_PATTERN, is_value_cell, parse_number, parse_values
from retrieval.pdf import Line, PageData, Word, collapse

__all__ = ["VALUE_PATTERN", "ExtractedTable", "extract_tables", "find_captions", "parse_number", "parse_values"]

CONTINUES_NEXT_RE = re.compile(r"continued\s+on\s+(the\s+)?next\s+page|continues\s+on\s+next\s+page", re.IGNORECASE)


@dataclass
class Segment:
    x0: float
    x1: float
    words: list[Word]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclass
class Row:
    y0: float
    y1: float
    words: list[Word]
    segments: list[Segment] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(seg.text for seg in self.segments) if self.segments else " ".join(w.text for w in self.words)

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def numeric(self) -> bool:
        return any(parse_values(seg.text) for seg in self.segments)

    def valued(self) -> bool:
        """A row of results: a number, or a mark (✓ ✗ •) in a table of marks."""
        return any(is_value_cell(seg.text) for seg in self.segments)


@dataclass
class TableRow:
    cells: list[str]
    page: int
    line: str  # the row as printed, for quotes
    kind: str = "body"  # "body" | "section" (a label-only row such as a dataset name spanning the table)


@dataclass
class ExtractedTable:
    label: str
    caption: str
    pages: list[int]
    header: list[str]
    rows: list[TableRow]
    n_cols: int
    continues: bool = False  # the last piece said "continued on next page"
    bottom: float = 0.0  # y of the last row on its page, to detect unlabeled continuations
    page_height: float = 792.0
    areas: list[tuple[int, float, float, float, float]] = field(default_factory=list)  # (page, x0, y0, x1, y1)
    header_rows: list[list[str]] = field(default_factory=list)  # the header as printed, top row first
    problem: str | None = None  # why a captioned table has no grid (see `models.Table.problem`)
    # For a captioned table: the x-range its grid may occupy and the caption's y-range, where `retrieval.ruled`
    # looks for a fully ruled grid to check the rebuild against.
    search: tuple[float, float, float, float] | None = None

    @property
    def number(self) -> str:
        """Short id used in claim ids: "3" for "Table 3", "p4-1" for an unlabeled table."""
        return self.label.split(" ", 1)[1] if " " in self.label else self.label


def group_rows(words: list[Word]) -> list[Row]:
    """Group words into visual rows: a word joins a row when it overlaps the row's tallest word vertically."""
    rows: list[Row] = []
    for word in sorted(words, key=lambda w: (w.yc, w.x0)):
        height = word.y1 - word.y0
        placed = False
        for row in reversed(rows[-3:]):
            overlap = min(row.y1, word.y1) - max(row.y0, word.y0)
            if overlap > 0.5 * min(row.height, height):
                row.words.append(word)
                if height > row.height:  # the anchor band is the tallest word's (sub/superscripts stay inside)
                    row.y0, row.y1 = word.y0, word.y1
                placed = True
                break
        if not placed:
            rows.append(Row(word.y0, word.y1, [word]))
    for row in rows:
        row.words.sort(key=lambda w: w.x0)
    return rows


def split_segments(row: Row, gap: float) -> list[Segment]:
    segments: list[Segment] = []
    for word in row.words:
        if segments and word.x0 - segments[-1].x1 <= gap:
            segments[-1].words.append(word)
            segments[-1].x1 = max(segments[-1].x1, word.x1)
        else:
            segments.append(Segment(word.x0, word.x1, [word]))
    row.segments = segments
    return segments


def cell_gap(rows: list[Row]) -> float:
    """The horizontal gap that separates cells: wider than a word space at this font size."""
    heights = [w.y1 - w.y0 for row in rows for w in row.words]
    return max(3.5, 0.55 * median(heights)) if heights else 5.0


def column_intervals(rows: list[Row], gap: float) -> list[tuple[float, float]]:
    """X-ranges of columns: where body cells lie, split at gutters that (almost) no multi-cell row crosses."""
    multi = [row for row in rows if len(row.segments) >= 2] or rows
    spans = [(seg.x0, seg.x1) for row in multi for seg in row.segments]
    if not spans:
        return []
    tolerance = len(multi) // 8  # a stray overflowing cell does not erase a gutter
    points = sorted({x for span in spans for x in span})
    covered: list[tuple[float, float]] = []
    for left, right in zip(points, points[1:], strict=False):
        mid = (left + right) / 2
        count = sum(1 for x0, x1 in spans if x0 <= mid <= x1)
        if count > tolerance:
            covered.append((left, right))
    columns: list[tuple[float, float]] = []
    for left, right in covered:
        if columns and left - columns[-1][1] <= gap:
            columns[-1] = (columns[-1][0], right)
        else:
            columns.append((left, right))
    return columns


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return min(a1, b1) - max(a0, b0)


def _nearest(columns: list[tuple[float, float]], x: float) -> int:
    return min(
        range(len(columns)),
        key=lambda i: 0 if columns[i][0] <= x <= columns[i][1] else min(abs(columns[i][0] - x), abs(columns[i][1] - x)),
    )


def assign_body(row: Row, columns: list[tuple[float, float]]) -> list[str]:
    cells: list[list[str]] = [[] for _ in columns]
    for seg in row.segments:
        hits = [i for i, (c0, c1) in enumerate(columns) if _overlap(seg.x0, seg.x1, c0, c1) > 0]
        if len(hits) == 1:
            cells[hits[0]].append(seg.text)
        elif not hits:
            cells[_nearest(columns, (seg.x0 + seg.x1) / 2)].append(seg.text)
        else:  # crosses a gutter: put each word where its centre lies
            for word in seg.words:
                cells[_nearest(columns, word.xc)].append(word.text)
    return [" ".join(parts) for parts in cells]


def _distance(seg: Segment, column: tuple[float, float]) -> float:
    return max(column[0] - seg.x1, seg.x0 - column[1], 0.0)


def assign_header(row: Row, columns: list[tuple[float, float]]) -> tuple[list[str], list[tuple[float, float]]]:
    """Header labels per column, and the columns widened to cover their labels.

    A label overlapping one column names it; one overlapping several spans them ("Test Accuracy" over Fashion and
    MNIST). A label over no column (a left-aligned header above right-aligned numbers) takes the nearest free
    column in reading order, so "Train  Test" never collapse into one column.
    """
    cells: list[list[str]] = [[] for _ in columns]
    hits_of: list[list[int]] = []
    for seg in row.segments:
        hits_of.append(
            [
                i
                for i, (c0, c1) in enumerate(columns)
                if _overlap(seg.x0, seg.x1, c0, c1) > max(1.0, 0.2 * min(c1 - c0, seg.x1 - seg.x0))
            ]
        )
    last = -1
    for n, (seg, hits) in enumerate(zip(row.segments, hits_of, strict=True)):
        if not hits:
            nxt = next((h[0] for h in hits_of[n + 1 :] if h), len(columns))
            free = [i for i in range(last + 1, nxt) if not cells[i]] or list(range(len(columns)))
            hits = [min(free, key=lambda i: _distance(seg, columns[i]))]
        for i in hits:  # a spanning label belongs to every column it spans
            cells[i].append(seg.text)
        last = max(last, hits[-1])
    widened = list(columns)
    for seg, hits in zip(row.segments, hits_of, strict=True):
        if len(hits) <= 1:
            i = hits[0] if hits else next(k for k, parts in enumerate(cells) if seg.text in parts)
            widened[i] = (min(widened[i][0], seg.x0), max(widened[i][1], seg.x1))
    return [" ".join(parts) for parts in cells], widened


def _as_printed(parts: list[str], row: Row) -> list[str]:
    """A header row as printed: a spanning label once, at the first column it spans (as LaTeX's \\multicolumn
    holds it), where `header` repeats it over every column for "super / sub" names. Equal labels printed side by
    side ("α=0.0  α=0.0") stay twice."""
    printed = Counter(seg.text for seg in row.segments)
    out = list(parts)
    i = 0
    while i < len(out):
        j = i
        while j + 1 < len(out) and out[j + 1] and out[j + 1] == out[i]:
            j += 1
        if out[i] and j > i:
            keep = max(1, min(printed.get(out[i], 1), j - i + 1))
            for k in range(i + keep, j + 1):
                out[k] = ""
        i = j + 1
    return out


def _numeric_header(rows: list[Row], index: int, gap: float) -> bool:
    """Does a row of whole numbers label the columns ("Method 1 5 10" over k-shot results, "10% 50% 100%")?

    Yes when its numbers are all whole, at most its first cell is text, and the row below has decimals: results
    under column labels. A table whose rows are all whole numbers (counts, sizes) keeps them as body rows.
    """
    row, below = rows[index], rows[index + 1]
    numbers = [parse_number(seg.text) for seg in row.segments]
    texts = [i for i, n in enumerate(numbers) if n is None]
    if len(row.segments) < 2 or texts not in ([], [0]) or len(numbers) - len(texts) < 2:
        return False
    if not all(n[0].is_integer() and n[1] is None for n in numbers if n is not None):
        return False
    below_numbers = [parse_number(seg.text) for seg in below.segments]
    decimals = [n for n in below_numbers if n is not None and (not n[0].is_integer() or n[1] is not None)]
    return len(decimals) >= 1 and sum(1 for n in below_numbers if n is not None) >= len(numbers) - len(texts)


_CONTINUES = re.compile(r"([-+,/&]|\b(with|and|or|of|for|on|in|the|a|w/|w/o|without|via|using|from|to))$", re.I)


def _wrapped_label(cells: list[str], above: list[str], numeric_cols: list[int]) -> bool:
    """A text-only row that continues the label of the row above: it starts in lower case or the label above ends
    mid-phrase ("with", "+", ","). A capitalised text-only row is a group heading, not a continuation."""
    if any(cells[i] for i in numeric_cols) or not any(cells):
        return False
    if any(parse_number(c) for c in cells if c):
        return False
    first = next(c for c in cells if c)
    label_above = " ".join(c for i, c in enumerate(above) if c and i not in numeric_cols)
    return bool(label_above) and (first[:1].islower() or first[:1] == "(" or bool(_CONTINUES.search(label_above)))


def build_table(rows: list[Row], label: str, caption: str, page: PageData) -> ExtractedTable | None:
    """Turn the rows of one table area into header + cells. None when the area does not look like a table."""
    rows = [row for row in rows if row.words]
    if not rows:
        return None
    gap = cell_gap(rows)
    for row in rows:
        split_segments(row, gap)
    first_numeric = next((i for i, row in enumerate(rows) if row.valued()), None)
    while first_numeric is not None and first_numeric + 1 < len(rows) and _numeric_header(rows, first_numeric, gap):
        first_numeric += 1  # "1-shot 5-shot" / "10% 50% 100%" above the first labelled row is a header
    if first_numeric is None:  # a table of text: first row is the header when it has several cells
        first_numeric = 1 if len(rows) > 1 and len(rows[0].segments) >= 2 else 0
    header_rows, body_rows = rows[:first_numeric], rows[first_numeric:]
    if not body_rows:
        return None
    columns = column_intervals(body_rows, gap)
    if header_rows and columns:
        # A header cell beyond the outermost body columns is a column of its own (e.g. a row-label column left
        # blank on this page). One between body columns names its nearest column (a left-aligned header over
        # right-aligned numbers).
        for seg in header_rows[-1].segments:
            if any(_overlap(seg.x0, seg.x1, c0, c1) > 0 for c0, c1 in columns):
                continue
            if seg.x1 < columns[0][0] - 2 * gap or seg.x0 > columns[-1][1] + 2 * gap:
                columns.append((seg.x0, seg.x1))
                columns.sort()
    if len(columns) < 2:
        return None
    # The lowest header row names the columns; rows above it (spanning group labels) are placed against the
    # columns widened to their names.
    header_parts: list[list[str]] = []
    widened = columns
    for row in reversed(header_rows):
        parts, widened_now = assign_header(row, widened)
        header_parts.insert(0, parts)
        if widened is columns:
            widened = widened_now
    body_cells = [assign_body(row, columns) for row in body_rows]
    numeric_cols = [
        i
        for i in range(len(columns))
        if sum(1 for cells in body_cells if cells[i] and parse_number(cells[i])) * 2 > len(body_cells)
    ]
    for parts, row in zip(header_parts[:-1], header_rows[:-1], strict=True):
        # A lone group label above the number columns ("Shots" over 1 / 5 / 10) spans all of them, even when it
        # is set narrower than the group.
        if len(row.segments) == 1 and numeric_cols and any(parts[i] for i in numeric_cols):
            group = row.segments[0].text
            if not any(parts[i] for i in range(len(columns)) if i not in numeric_cols):
                for i in numeric_cols:
                    parts[i] = group
    header = [" / ".join(p[i] for p in header_parts if p[i]) for i in range(len(columns))]
    table_rows: list[TableRow] = []
    for row, cells in zip(body_rows, body_cells, strict=True):
        filled = [c for c in cells if c]
        previous = table_rows[-1] if table_rows else None
        if previous is not None and _wrapped_label(cells, previous.cells, numeric_cols):
            # The second line of a wrapped row label ("ResNet-50 with" / "skip connections"): one row, one label.
            for i, cell in enumerate(cells):
                if cell:
                    previous.cells[i] = f"{previous.cells[i]} {cell}".strip()
            previous.line = f"{previous.line} {collapse(row.text)}"
            continue
        kind = "section" if len(filled) == 1 and len(row.segments) == 1 and parse_number(filled[0]) is None else "body"
        table_rows.append(TableRow(cells, page.number, collapse(row.text), kind))
    return ExtractedTable(
        label=label,
        caption=caption,
        pages=[page.number],
        header=header,
        rows=table_rows,
        n_cols=len(columns),
        header_rows=[_as_printed(parts, row) for parts, row in zip(header_parts, header_rows, strict=True)],
        bottom=body_rows[-1].y1,
        page_height=page.height,
        areas=[
            (
                page.number,
                min(w.x0 for r in rows for w in r.words),
                rows[0].y0,
                max(w.x1 for r in rows for w in r.words),
                rows[-1].y1,
            )
        ],
    )


def _is_paragraph(row: Row, width: float, gap: float) -> bool:
    """A line of running text: wide, many words, and no gap wider than a stretched sentence space."""
    if len(row.words) < 6:
        return False

    def wordy(words: list[Word]) -> int:
        return sum(1 for w in words if re.fullmatch(r"[A-Za-z][a-z'’-]*[,.;:]?", w.text))

    # A gap of a full em is never a word space, even in justified text; small table fonts have narrow gutters.
    limit = min(2 * gap, 1.0 * median(w.y1 - w.y0 for w in row.words))
    if any(b.x0 - a.x1 > limit for a, b in zip(row.words, row.words[1:], strict=False)):
        # Several cells: prose only if each side is a long run of plain words (the two text columns of a page
        # beside a full-width table), not a table row with a description cell.
        segments = row.segments or [Segment(row.words[0].x0, row.words[-1].x1, row.words)]
        return len(segments) == 2 and all(
            len(seg.words) >= 8 and wordy(seg.words) >= 0.75 * len(seg.words) and seg.x1 - seg.x0 >= 0.35 * width
            for seg in segments
        )
    return wordy(row.words) >= 0.6 * len(row.words) or row.words[-1].x1 - row.words[0].x0 >= 0.6 * width


def _aligned(row: Row, taken: list[Row]) -> bool:
    """Does a numeric row sit on the grid of the rows already taken (most of its cells end where theirs end)?"""
    if len(row.segments) < 3 or not row.numeric():
        return False
    edges = [seg.x1 for r in taken for seg in r.segments if len(r.segments) >= 3]
    if not edges:
        return False
    matched = sum(1 for seg in row.segments if any(abs(seg.x1 - e) <= 3.0 for e in edges))
    return matched >= 0.6 * len(row.segments)


def _group_label(row: Row) -> bool:
    """A short label alone on its row ("Free-form", "Baselines"): a group heading inside a table."""
    return len(row.segments) == 1 and len(row.words) <= 4 and not row.text.endswith(".")


def _sentence_tail(row: Row) -> bool:
    """One run of lower-case words ending in a full stop: the end of a sentence, never a table row."""
    if len(row.segments) != 1 or len(row.words) < 3 or not row.text.endswith("."):
        return False
    return sum(1 for w in row.words if re.fullmatch(r"[a-z][a-z'’-]*[,.;:]?", w.text)) >= 0.75 * len(row.words)


def _walk(
    rows: list[Row], start: int, step: int, width: float, gap: float, stops: list[tuple[float, float]]
) -> tuple[list[Row], bool]:
    """Collect table rows from rows[start] moving by `step` (+1 down, -1 up) until prose, a caption or a big gap."""
    taken: list[Row] = []
    continues = False
    i = start
    heights = [r.height for r in rows] or [10.0]
    unit = median(heights)
    while 0 <= i < len(rows):
        row = rows[i]
        text = row.text
        if CONTINUES_NEXT_RE.search(text):
            continues = True
            break
        if any(_overlap(row.y0, row.y1, s0, s1) > 0 for s0, s1 in stops):
            break
        if _is_paragraph(row, width, gap):
            break
        if taken:
            prev = taken[-1]
            # The table's own row height, not the page's: body text set larger sits further away in its units.
            unit = median([r.height for r in taken]) if len(taken) >= 2 else unit
            distance = (row.y0 - prev.y1) if step > 0 else (prev.y0 - row.y1)
            gaps = [max(0.0, b.y0 - a.y1) for a, b in zip(taken, taken[1:], strict=False)]
            if step < 0:
                gaps = [max(0.0, a.y0 - b.y1) for a, b in zip(taken, taken[1:], strict=False)]
            # Rows of a table are evenly spaced; prose or a heading after it sits further away.
            if len(gaps) >= 2:
                limit = max(1.3 * unit, 2.5 * median(gaps) + 2.0)
            else:
                limit = max(1.5 * unit, 2.5 * median(gaps) + 2.0) if gaps else 2.5 * unit
            after = rows[i + step] if 0 <= i + step < len(rows) else None
            group = _group_label(row) and after is not None and _aligned(after, taken)
            if distance > limit and not (distance <= 3.5 * unit and (_aligned(row, taken) or group)):
                break  # a group gap (\addlinespace, a mid rule) is crossed only by a row on the same grid
            if len(row.segments) == 1 and re.fullmatch(r"[A-Z][^0-9]*[a-z]\.", row.text) and len(row.words) >= 4:
                break  # a sentence right under the table ("Nothing else to report.")
            if _sentence_tail(row):
                break  # the short last line of the paragraph above the table
        taken.append(row)
        i += step
    if step < 0:
        taken.reverse()
    return taken, continues


def _side_rows(page: PageData, x0: float, x1: float, split: float | None) -> tuple[list[Row], float]:
    """Visual rows of one column of the page (or the whole width), split into cells."""
    footer_y = page.height * 0.93
    words = [w for w in page.words if x0 <= w.xc <= x1 and w.y0 < footer_y]
    if split is not None and (x0, x1) != (0.0, page.width):
        # On a two-column page, leave out full-width lines (title, abstract) that reach into this column.
        wide = [ln for ln in page.lines if ln.x0 < split - 10 and ln.x1 > split + 10]
        words = [w for w in words if not any(ln.y0 <= w.yc <= ln.y1 and ln.x0 <= w.xc <= ln.x1 for ln in wide)]
    rows = group_rows(words)
    gap = cell_gap(rows)
    for row in rows:
        split_segments(row, gap)
    return rows, gap


def _sides(page: PageData, split: float | None) -> list[tuple[float, float]]:
    return [(0.0, split), (split, page.width)] if split is not None else [(0.0, page.width)]


def extract_tables(pages: list[PageData], stop_lines: dict[int, list[Line]] | None = None) -> list[ExtractedTable]:
    """All tables of a document, continuation pieces merged into one table per label.

    Captioned tables first; then runs of aligned numeric rows that no caption claimed become unlabeled tables
    ("Table p4-1"), or the next piece of the previous page's table when they open a page it ran off.
    """
    stop_lines = stop_lines or {}
    tables: list[ExtractedTable] = []
    by_label: dict[str, ExtractedTable] = {}
    for page in pages:
        captions = find_captions(page)
        split = two_column_split(page)
        # Captions and headings end a table, but only those in the table's own column of the page.
        stops = [(c.y0, c.y1, c.line.x0, c.line.x1) for c in captions]
        stops += [(ln.y0, ln.y1, ln.x0, ln.x1) for ln in stop_lines.get(page.number, [])]
        cache: dict[tuple[float, float], tuple[list[Row], float]] = {}
        claimed: list[tuple[float, float, float, float]] = [(c.x0, c.y0, c.x1, c.y1) for c in captions]
        for hit in (c for c in captions if c.kind == "table"):
            x0, x1 = caption_range(page, hit, split)
            if (x0, x1) not in cache:
                cache[(x0, x1)] = _side_rows(page, x0, x1, split)
            rows, gap = cache[(x0, x1)]
            own = [(hit.y0, hit.y1)]
            other_stops = [
                (s0, s1) for s0, s1, sx0, sx1 in stops if (s0, s1) not in own and x0 <= (sx0 + sx1) / 2 <= x1
            ]
            below = [i for i, r in enumerate(rows) if r.y0 >= hit.y1 - 0.5]
            above = [i for i, r in enumerate(rows) if r.y1 <= hit.y0 + 0.5]
            width = max((r.words[-1].x1 for r in rows), default=x1) - min((r.words[0].x0 for r in rows), default=x0)
            down, cont_down = _walk(rows, below[0], 1, width, gap, other_stops) if below else ([], False)
            up, cont_up = _walk(rows, above[-1], -1, width, gap, other_stops) if above else ([], False)
            chosen, continues = _pick_side(hit, (down, cont_down), (up, cont_up), claimed)
            table = build_table([Row(r.y0, r.y1, list(r.words)) for r in chosen], hit.label, hit.text, page)
            if table is None:
                if not hit.continued:
                    reason = "no grid of aligned cells next to the caption" if chosen else "no rows next to the caption"
                    unreadable = ExtractedTable(hit.label, hit.text, [page.number], [], [], 0, problem=reason)
                    unreadable.search = (x0, hit.y0, x1, hit.y1)
                    unreadable.page_height = page.height
                    _add(unreadable, False, tables, by_label)
                continue
            table.continues = continues
            table.search = (x0, hit.y0, x1, hit.y1)
            claimed.extend(area[1:] for area in table.areas)
            _add(table, hit.continued, tables, by_label)
        for x0, x1 in _sides(page, split):
            if (x0, x1) not in cache:
                cache[(x0, x1)] = _side_rows(page, x0, x1, split)
            rows, gap = cache[(x0, x1)]
            for run in _uncaptioned_runs(rows, gap, claimed, x1 - x0, stops):
                table = build_table([Row(r.y0, r.y1, list(r.words)) for r in run], "", "", page)
                if table is None or sum(1 for r in table.rows if any(parse_number(c) for c in r.cells)) < 2:
                    continue
                # The table that ran off the previous page is the one whose last piece sits lowest there.
                candidates = [t for t in tables if t.pages[-1] == page.number - 1]
                previous = max(candidates, key=lambda t: t.bottom) if candidates else None
                opens_page = run[0].y0 < page.height * 0.25
                if (
                    previous is not None
                    and opens_page
                    and previous.n_cols == table.n_cols
                    and (previous.continues or previous.bottom > previous.page_height * 0.75)
                ):
                    merge_into(previous, table)  # the table ran off the previous page without a new caption
                    continue
                if not plausible_uncaptioned(table):
                    continue  # plot tick labels, numbered equations, a code listing: not a table
                count = sum(1 for t in tables if t.label.startswith(f"Table p{page.number}-"))
                table.label = f"Table p{page.number}-{count + 1}"
                _add(table, False, tables, by_label)
    return tables


_EQUATION_NUMBER = re.compile(r"^\(\d{1,3}[a-z]?\)$")


def plausible_uncaptioned(table: ExtractedTable) -> bool:
    """Does a grid no caption claimed read as a table of results rather than a figure, an equation or a listing?

    Precision over recall: a table without a caption has no label a spec could name, so it is kept only when it
    is clearly tabular: three or more rows, a mostly filled grid, mostly numbers outside the label column, no
    equation numbers "(3)", and not a listing numbered 1, 2, 3 down its first column.
    """
    body = [row.cells for row in table.rows if row.kind == "body"]
    if len(body) < 3 or table.n_cols < 2:
        return False
    cells = [c for row in body for c in row]
    filled = [c for c in cells if c]
    if len(filled) < 0.7 * len(cells):
        return False  # plot tick labels scatter over a sparse grid
    if any(_EQUATION_NUMBER.match(c) for c in filled):
        return False
    values = [c for row in body for c in row[1:] if c]
    if sum(1 for c in values if parse_number(c) is not None) < 0.6 * max(len(values), 1):
        return False
    first = [parse_number(row[0]) for row in body]
    if all(n is not None for n in first):
        numbers = [n[0] for n in first if n is not None]
        if all(b - a == 1 for a, b in zip(numbers, numbers[1:], strict=False)):
            return False  # listing line numbers
    return True


def _pick_side(
    hit: CaptionHit,
    down: tuple[list[Row], bool],
    up: tuple[list[Row], bool],
    claimed: list[tuple[float, float, float, float]],
) -> tuple[list[Row], bool]:
    """Is the table below its caption or above it? Rows another caption already took are not this table's; of the
    rest, the side whose first multi-cell row is nearer the caption wins (a neighbouring table sits a float gap
    away), and on a tie the side with more multi-cell rows."""

    def key(side: tuple[list[Row], bool], below: bool) -> tuple[int, int, float, int]:
        rows = side[0]
        multi = [r for r in rows if len(r.segments) >= 2]
        taken = any(
            x0 - 1 <= r.words[0].xc <= x1 + 1 and y0 - 1 <= (r.y0 + r.y1) / 2 <= y1 + 1
            for r in rows
            for x0, y0, x1, y1 in claimed
        )
        if not multi:
            return (1, 1, 0.0, 0)
        nearest = multi[0].y0 - hit.y1 if below else hit.y0 - multi[-1].y1
        return (int(taken), 0, round(max(nearest, 0.0) / 4), -len(multi))

    return down if key(down, True) <= key(up, False) else up


def _uncaptioned_runs(
    rows: list[Row], gap: float, claimed: list[tuple[float, float, float, float]], width: float, stops: list
) -> list[list[Row]]:
    """Runs of at least three evenly spaced rows with several cells, mostly with numbers, outside any known table."""

    def free(row: Row) -> bool:
        yc = (row.y0 + row.y1) / 2
        if any(s0 <= yc <= s1 for s0, s1, *_ in stops):
            return False
        return not any(
            y0 - 1 <= yc <= y1 + 1 and x0 - 1 <= word.xc <= x1 + 1 for x0, y0, x1, y1 in claimed for word in row.words
        )

    runs: list[list[Row]] = []
    current: list[Row] = []
    unit = median([r.height for r in rows]) if rows else 10.0
    for row in rows:
        tabular = len(row.segments) >= 2 and free(row) and not _is_paragraph(row, width, gap)
        close = current and row.y0 - current[-1].y1 <= max(1.5 * unit, 3.0)
        if tabular and (close or not current):
            current.append(row)
            continue
        if len(current) >= 3:
            runs.append(current)
        current = [row] if tabular else []
    if len(current) >= 3:
        runs.append(current)
    return [run for run in runs if sum(1 for r in run if r.numeric()) >= 2]


def _add(table: ExtractedTable, continued: bool, tables: list[ExtractedTable], by_label: dict[str, ExtractedTable]):
    previous = by_label.get(table.label)
    if previous is not None and previous.problem and not table.problem:  # a readable grid under the same label
        tables[tables.index(previous)] = table
        by_label[table.label] = table
        return
    if previous is not None and table.problem:
        return  # the label's grid is already read; this caption (a list of tables, a repeat) adds nothing
    if previous is not None and (continued or previous.continues):
        merge_into(previous, table)
        return
    if previous is not None:  # a second caption with the same label (e.g. a table of contents): keep it apart
        table.label = f"{table.label} (p{table.pages[0]})"
    by_label[table.label] = table
    tables.append(table)


def merge_into(first: ExtractedTable, piece: ExtractedTable) -> None:
    """Append a continuation piece, aligning columns by header label when both pieces have headers."""
    mapping = list(range(piece.n_cols))
    if piece.header and first.header and piece.header != first.header:
        index = {h: i for i, h in enumerate(first.header) if h}
        mapping = [index.get(h, i) for i, h in enumerate(piece.header)]
    for row in piece.rows:
        cells = [""] * first.n_cols
        for i, cell in enumerate(row.cells):
            target = mapping[i] if i < len(mapping) else i
            if target < first.n_cols:
                cells[target] = (cells[target] + " " + cell).strip()
            elif cell:
                cells[-1] = (cells[-1] + " " + cell).strip()
        first.rows.append(TableRow(cells, row.page, row.line, row.kind))
    for page in piece.pages:
        if page not in first.pages:
            first.pages.append(page)
    first.areas.extend(piece.areas)
    first.continues = piece.continues
    first.bottom = piece.bottom
