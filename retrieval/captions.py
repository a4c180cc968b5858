"""Table and figure captions on a page ("Table 3: ...", "TABLE II", "Table 3 – continued") and the part of the
page a caption's grid may occupy (its text column, narrowed by whatever sits beside the caption)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from retrieval.pdf import Line, PageData, collapse, join_lines

# "Table 3:", "Table 3.", "TABLE II", "Table 3 – continued from previous page", "Table A1 (continued)".
CAPTION_RE = re.compile(
    r"^(?P<kind>Table|TABLE|Tab\.|Figure|FIGURE|Fig\.)\s*(?P<num>[A-Z]?\d+[a-z]?|[IVXL]+)\b\s*(?P<rest>.*)$"
)
CONTINUED_RE = re.compile(r"^\s*[(\-–—:]*\s*(continued|cont(?:'d|\.|inued)?)\b", re.IGNORECASE)


@dataclass
class CaptionHit:
    label: str
    kind: str  # "table" | "figure"
    continued: bool
    text: str
    line: Line
    y0: float
    y1: float
    x0: float = 0.0
    x1: float = 0.0


def find_captions(page: PageData) -> list[CaptionHit]:
    """Caption lines: a line that starts with "Table N"/"Figure N" followed by ':', '.', '|', a dash, or nothing."""
    hits: list[CaptionHit] = []
    for block in page.blocks:
        for index, line in enumerate(block.lines):
            match = CAPTION_RE.match(line.text)
            if not match:
                continue
            rest = match.group("rest")
            continued = bool(CONTINUED_RE.match(rest))
            if not continued:
                # A caption is "Table 2: text" / "TABLE II" alone on a line; "Table 2 gives ..." and a sentence
                # ending "... in Figure 1." are references in running text.
                if rest and not re.match(r"^[:.|–—-]\s*\S", rest):
                    continue
                if not rest and index > 0:
                    continue
            kind = "table" if match.group("kind").lower().startswith("tab") else "figure"
            label = f"{'Table' if kind == 'table' else 'Figure'} {match.group('num')}"
            # The caption runs to the end of its block (wrapped caption lines), not into table rows.
            lines = [line.text]
            y1, x0, x1 = line.y1, line.x0, line.x1
            for follow in block.lines[index + 1 :]:
                if follow.y0 - y1 > 1.2 * line.height or CAPTION_RE.match(follow.text):
                    break
                lines.append(follow.text)
                y1, x0, x1 = follow.y1, min(x0, follow.x0), max(x1, follow.x1)
            text = join_lines(lines)
            hits.append(CaptionHit(label, kind, continued, collapse(text), line, line.y0, y1, x0, x1))
    return hits


def two_column_split(page: PageData) -> float | None:
    """The x of the gutter on a two-column page, or None on a one-column page."""
    mid = page.width / 2
    lines = [line for line in page.lines if len(line.text) > 20]
    left = sum(1 for line in lines if line.x1 <= mid + 5)
    right = sum(1 for line in lines if line.x0 >= mid - 5)
    crossing = len(lines) - left - right
    if left >= 5 and right >= 5 and crossing <= 0.25 * (left + right):
        return mid
    return None


def caption_range(page: PageData, hit: CaptionHit, split: float | None) -> tuple[float, float]:
    """The x-range a caption's grid may occupy: its text column, narrowed by whatever sits beside the caption.

    Text beside the caption (the other caption of two side-by-side tables in one float, the body text that a
    wrapped table sits in, the other column of a two-column page) belongs to something else, so the range ends
    halfway between the caption and its nearest neighbour on each side.
    """
    if split is None:
        split = _local_split(page, hit)
    if split is not None and hit.x1 <= split + 5:
        x0, x1 = 0.0, split
    elif split is not None and hit.x0 >= split - 5:
        x0, x1 = split, page.width
    else:
        x0, x1 = 0.0, page.width
    for line in page.lines:
        height = line.y1 - line.y0
        if min(line.y1, hit.y1) - max(line.y0, hit.y0) < 0.5 * height or len(line.text.strip()) < 2:
            continue
        if line.x1 < hit.x0 - 2:
            x0 = max(x0, _gutter(page, hit, line.x1, hit.x0))
        elif line.x0 > hit.x1 + 2:
            x1 = min(x1, _gutter(page, hit, hit.x1, line.x0))
    return x0, x1


def _local_split(page: PageData, hit: CaptionHit, reach: float = 150.0) -> float | None:
    """The page middle, when the caption sits in one half and the other half holds running text near it: a
    column-wide table on a two-column page that, as a whole, `two_column_split` could not tell (many full-width
    floats)."""
    mid = page.width / 2
    if hit.x1 <= mid + 5:
        other = [ln for ln in page.lines if ln.x0 >= mid - 5]
    elif hit.x0 >= mid - 5:
        other = [ln for ln in page.lines if ln.x1 <= mid + 5]
    else:
        return None
    near = [ln for ln in other if len(ln.text) > 30 and hit.y0 - reach <= ln.y0 <= hit.y1 + reach]
    return mid if len(near) >= 2 else None


def _gutter(page: PageData, hit: CaptionHit, lo: float, hi: float, reach: float = 200.0) -> float:
    """Where, between x=lo and x=hi, the float beside the caption is divided: the centre of the widest strip that
    no nearby text crosses (a caption narrower than its table must not cut the table), else halfway."""
    occupied: list[tuple[float, float]] = []
    for line in page.lines:
        if line.y1 < hit.y0 - reach or line.y0 > hit.y1 + reach or (line.x0 < lo and line.x1 > hi):
            continue  # far away, or prose that runs across the whole strip
        occupied.extend((a, b) for a, b in (line.pieces or [(line.x0, line.x1)]) if b > lo and a < hi)
    best, best_width, edge = (lo + hi) / 2, 0.0, lo
    for a, b in sorted(occupied):
        if a - edge > best_width:
            best, best_width = (edge + a) / 2, a - edge
        edge = max(edge, b)
    if hi - edge > best_width:
        best, best_width = (edge + hi) / 2, hi - edge
    return best if best_width >= 4.0 else (lo + hi) / 2
