"""Fully ruled tables read with pymupdf's own table finder, where the word-geometry rebuild read (almost) nothing.

`retrieval.tables` rebuilds every table from word boxes, which works for booktabs and unruled tables. A fully ruled
grid (rules around every cell) is what pymupdf's "lines" strategy reads exactly, even when cells hold long text the
rebuild takes for prose, or when cell padding is too tight to show a gutter. The finder is slow (a few hundred ms a
page, seconds on a busy machine) and, run on every table, it merged side-by-side tables and lost header levels the
rebuild keeps; so it runs only for a captioned table the rebuild could not read or read as one row at most, and its
grid is taken only when it holds more filled cells. Its `extract()` garbles numbers ("66.72" -> "6672\\n."), so cells
are read with `page.get_textbox(cell)`.
"""

from __future__ import annotations

from pathlib import Path

import pymupdf

from retrieval.pdf import clean, collapse
from retrieval.tables import ExtractedTable, TableRow

REACH = 0.5  # how far from its caption (as a share of the page height) a ruled grid may start


def read_ruled(path: Path, tables: list[ExtractedTable]) -> None:
    """Replace, in place, captioned one-page tables the rebuild could not read when a fuller ruled grid is there."""
    by_page: dict[int, list[ExtractedTable]] = {}
    for table in tables:
        suspect = table.problem is not None or sum(1 for row in table.rows if row.kind == "body") <= 1
        if suspect and table.search is not None and len(table.pages) == 1:
            by_page.setdefault(table.pages[0], []).append(table)
    if not by_page:
        return
    doc = pymupdf.open(path)
    try:
        for number, captioned in by_page.items():
            page = doc.load_page(number - 1)
            if page.rotation or not _has_rules(page):
                continue  # turned pages are read in their own frame; no rules, no ruled grid
            try:
                grids = [t for t in page.find_tables(strategy="lines").tables if t.row_count >= 2 and t.col_count >= 2]
            except pymupdf.mupdf.FzErrorBase:  # a page mupdf cannot analyse: keep what the rebuild read
                continue
            for grid in grids:
                owner = _caption_of(grid, captioned, page.rect.height)
                if owner is not None:
                    _adopt(page, grid, owner)
    finally:
        doc.close()


def _has_rules(page: pymupdf.Page) -> bool:
    """Cheap test before the finder: at least two vertical and two horizontal line segments on the page."""
    vertical = horizontal = 0
    for drawing in page.get_cdrawings():
        for item in drawing.get("items", ()):
            if item[0] == "l":
                (x0, y0), (x1, y1) = item[1], item[2]
                vertical += abs(x0 - x1) < 0.5 and abs(y0 - y1) > 5
                horizontal += abs(y0 - y1) < 0.5 and abs(x0 - x1) > 5
            elif item[0] == "re":
                rect = pymupdf.Rect(item[1])
                vertical += rect.width < 1.5 and rect.height > 5
                horizontal += rect.height < 1.5 and rect.width > 5
            if vertical >= 2 and horizontal >= 2:
                return True
    return False


def _caption_of(grid, captioned: list[ExtractedTable], height: float) -> ExtractedTable | None:
    """The captioned table a grid belongs to: in the caption's x-range and the nearest caption above or below."""
    x0, y0, x1, y1 = grid.bbox
    best, best_distance = None, REACH * height
    for table in captioned:
        assert table.search is not None
        left, cap_y0, right, cap_y1 = table.search
        if not left - 2 <= (x0 + x1) / 2 <= right + 2:
            continue
        distance = y0 - cap_y1 if y0 >= cap_y1 - 2 else cap_y0 - y1 if y1 <= cap_y0 + 2 else None
        if distance is not None and max(distance, 0.0) < best_distance:
            best, best_distance = table, max(distance, 0.0)
    return best


def _adopt(page: pymupdf.Page, grid, table: ExtractedTable) -> None:
    cells = [[_text(page, cell) for cell in row.cells] for row in grid.rows]
    filled = sum(1 for row in cells for c in row if c)
    ours = sum(1 for c in table.header if c) + sum(1 for row in table.rows for c in row.cells if c)
    if not table.problem and filled <= ours:
        return  # the rebuild read at least as much: keep its header levels and row kinds
    header, body = cells[0], cells[1:]
    table.header = header
    table.header_rows = [header]
    table.rows = [TableRow(row, table.pages[0], collapse(" ".join(c for c in row if c))) for row in body]
    table.n_cols = grid.col_count
    table.areas = [(table.pages[0], *grid.bbox)]
    table.bottom = grid.bbox[3]
    table.problem = None


def _text(page: pymupdf.Page, cell) -> str:
    """A cell's text as printed; a cell merged into its neighbour (a spanning cell) comes back as None: empty."""
    return collapse(clean(page.get_textbox(pymupdf.Rect(cell)))) if cell is not None else ""
