"""The paper as a model reads it: a page-anchored text built from the ingested `Paper`.

Sections come in reading order, each headed with its pages; `[p. N]` markers sit where a new page starts inside a
section; tables are markdown (rebuilt from the ingested grid, not the garbled run of cells the text layer holds);
figure captions stay in the text; equations are the text the PDF layer gives; the references come last. Every
section carries a `kind` (method, setup, experiments, appendix, related, references, ...) so a caller with a small
context window can keep what a replication needs first (`SELECTION_ORDER`), deterministically.

No LLM and no agent code here: ingestion writes `paper_view.md` with `render_view`, and the agent builds the same
view from paper.json with `build_view` whenever it prompts a model.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from retrieval.models import Paper, Section, Table

Kind = Literal[
    "abstract", "method", "setup", "experiments", "data", "appendix", "introduction", "conclusion", "related",
    "references", "other",
]  # fmt: skip

# What a replication needs first when the whole paper does not fit: how to do it (method, setup, hyperparameter
# tables, experiments, appendix details) before why (introduction, related work) and the bibliography.
SELECTION_ORDER: tuple[Kind, ...] = (
    "abstract", "method", "setup", "data", "experiments", "appendix", "other", "conclusion", "introduction",
    "related", "references",
)  # fmt: skip

_KIND_WORDS: list[tuple[Kind, re.Pattern[str]]] = [
    ("abstract", re.compile(r"^abstract\b", re.I)),
    ("references", re.compile(r"^(references|bibliography|works cited)\b", re.I)),
    ("related", re.compile(r"\b(related work|prior work|background|literature review|previous work)\b", re.I)),
    ("appendix", re.compile(r"^(appendix|appendices|supplementary)\b|^[A-H]\b(?!\w)", re.I)),
    (
        "setup",
        re.compile(
            r"\b(experimental (setup|settings?|details)|implementation details?|hyper-?parameters?|training details?"
            r"|setup|protocol)\b",
            re.I,
        ),
    ),
    ("experiments", re.compile(r"\b(experiments?|evaluation|results?|benchmarks?|ablations?|analysis)\b", re.I)),
    (
        "method",
        re.compile(
            r"\b(method|methods|methodology|approach|model|models|algorithm|framework|architecture|proposed"
            r"|formulation|objective|training|learning|preliminar(y|ies)|problem)\b",
            re.I,
        ),
    ),
    ("data", re.compile(r"\b(data ?sets?|data|corpus|benchmark suite)\b", re.I)),
    ("introduction", re.compile(r"^(introduction|motivation|overview)\b", re.I)),
    ("conclusion", re.compile(r"\b(conclusions?|discussion|limitations|future work|summary)\b", re.I)),
]
_HYPER_TABLE = re.compile(r"hyper-?parameter|learning rate|batch size|settings|configuration|training details", re.I)


class ViewSection(BaseModel):
    """One section of the view: its title, kind, pages and its page-anchored markdown text."""

    title: str
    kind: Kind
    level: int = 1
    page_start: int
    page_end: int
    text: str  # markdown, with [p. N] markers and tables
    has_hyper_table: bool = False  # holds a table of hyperparameters/settings (kept early by the selection)

    @property
    def heading(self) -> str:
        one = self.page_start == self.page_end
        pages = f"p. {self.page_start}" if one else f"pp. {self.page_start}–{self.page_end}"
        return f"{'#' * min(self.level + 1, 4)} {self.title} [{pages}]"

    def render(self) -> str:
        return f"{self.heading}\n\n{self.text}".rstrip()


class PaperView(BaseModel):
    slug: str
    title: str
    sections: list[ViewSection] = Field(default_factory=list)

    def section(self, name: str) -> ViewSection | None:
        """The section whose title is `name` (case-insensitive; a leading number or a prefix also matches)."""
        wanted = _norm(name)
        for section in self.sections:
            if _norm(section.title) == wanted:
                return section
        for section in self.sections:
            if wanted and (_norm(section.title).startswith(wanted) or wanted in _norm(section.title)):
                return section
        return None

    def ordered_for_selection(self) -> list[ViewSection]:
        """Sections in the order a tight budget keeps them: by kind, hyperparameter tables first, then by position."""
        position = {id(s): i for i, s in enumerate(self.sections)}

        def rank(section: ViewSection) -> tuple[int, int, int]:
            return (SELECTION_ORDER.index(section.kind), 0 if section.has_hyper_table else 1, position[id(section)])

        return sorted(self.sections, key=rank)


def _norm(text: str) -> str:
    text = re.sub(r"^(\d+(\.\d+)*|[IVX]+|[A-H](\.\d+)*)\.?\s+", "", text.strip())
    return re.sub(r"\s+", " ", text).lower()


def section_kind(title: str) -> Kind:
    for kind, pattern in _KIND_WORDS:
        if pattern.search(title.strip()):
            return kind
    return "other"


# --------------------------------------------------------------------------- building


def table_markdown(table: Table) -> str:
    """A table as a markdown grid, headed with its label, pages and caption."""
    pages = ", ".join(map(str, table.pages)) or "?"
    caption = _cell(table.caption)
    caption = caption if caption.lower().startswith(table.label.lower()) else f"{table.label}: {caption}"
    lines = [f"**{caption.rstrip(': ')}** [p. {pages}]"]
    if table.problem and not table.rows:
        return "\n".join([*lines, f"(grid not readable: {table.problem})"])
    width = max([len(table.header)] + [len(row) for row in table.rows] + [1])
    header = (table.header + [""] * width)[:width] if table.header else [""] * width
    lines += ["", "| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(_cell(c) for c in (row + [""] * width)[:width]) + " |" for row in table.rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip().replace("|", "\\|")


def _squash(text: str) -> tuple[str, list[int]]:
    """`text` with whitespace runs dropped, and for each kept character its index in `text` (for fuzzy finding)."""
    kept, where = [], []
    for i, ch in enumerate(text):
        if not ch.isspace():
            kept.append(ch.lower())
            where.append(i)
    return "".join(kept), where


def _find(text: str, probe: str, start: int = 0) -> int:
    """Index in `text` where `probe` occurs (whitespace-insensitive), at or after `start`; -1 if it does not."""
    squashed, where = _squash(text)
    needle = "".join(probe.split()).lower()
    if len(needle) < 8:
        return -1
    offset = next((k for k, i in enumerate(where) if i >= start), len(where))
    found = squashed.find(needle, offset)
    return where[found] if found >= 0 else -1


def _table_span(text: str, table: Table) -> tuple[int, int] | None:
    """Where the table's run of cells lies in the section text: from its caption to its last row's last cell."""
    start = _find(text, table.caption[:40]) if table.caption else -1
    if start < 0 or not table.rows:
        return None
    tail = " ".join(c for c in table.rows[-1] if c.strip())
    end = -1
    for probe in (tail, tail[-40:]):
        found = _find(text, probe, start)
        if found >= 0:
            end = found + len(probe)
            break
    if end < 0:
        return None
    # `end` was computed on raw text with the probe's length; move past the rest of the last cell.
    while end < len(text) and not text[end].isspace():
        end += 1
    # The backwards label ("Table 3:") sits just before the caption text.
    label = text.rfind(table.label, max(0, start - len(table.label) - 3), start + 1)
    return (label if label >= 0 else start), end


def _page_markers(text: str, section: Section, paper: Paper) -> str:
    """Insert `[p. N]` where page N's text begins inside the section (found by its first lines)."""
    pages = {p.page: p.text for p in paper.pages}
    pieces, cursor = [], 0
    for number in range(section.page_start + 1, section.page_end + 1):
        lines = [ln.strip() for ln in pages.get(number, "").splitlines() if len(ln.strip()) >= 12]
        at = -1
        for line in lines[:6]:  # running heads and page numbers are short or repeat; try the first few lines
            at = _find(text, line[:60], cursor)
            if at >= 0:
                break
        if at < 0:
            continue
        pieces += [text[cursor:at].rstrip(), f"\n\n[p. {number}]\n"]
        cursor = at
    pieces.append(text[cursor:])
    return "".join(pieces).strip()


def _section_text(section: Section, paper: Paper, tables: list[Table]) -> tuple[str, list[Table]]:
    """The section's text with page markers, its tables cut out of the text and put back as markdown."""
    text = section.text
    placed: list[tuple[int, int, Table]] = []
    for table in tables:
        span = _table_span(text, table)
        if span is not None:
            placed.append((*span, table))
    placed.sort(key=lambda item: item[0])
    out, cursor, used = [], 0, []
    for start, end, table in placed:
        if start < cursor:
            continue
        out += [_page_markers(text[cursor:start], _subsection(section, paper, text, cursor), paper)]
        out += [table_markdown(table)]
        used.append(table)
        cursor = end
    out.append(_page_markers(text[cursor:], _subsection(section, paper, text, cursor), paper))
    return "\n\n".join(piece for piece in out if piece.strip()), used


def _subsection(section: Section, paper: Paper, text: str, cursor: int) -> Section:
    """The section seen from `cursor` on: page markers are searched only where the text still is."""
    return section if cursor == 0 else section.model_copy(update={"text": text[cursor:]})


def _table_homes(sections: list[Section], tables: list[Table]) -> dict[int, int]:
    """Which section each table belongs to: the one whose text holds its cells, else the one its first page is in."""
    home: dict[int, int] = {}
    for table in tables:
        by_text = [i for i, s in enumerate(sections) if _table_span(s.text, table) is not None]
        first = table.pages[0] if table.pages else -1
        by_page = [i for i, s in enumerate(sections) if s.page_start <= first <= s.page_end]
        if by_text or by_page:
            home[id(table)] = (by_text or by_page)[0]
    return home


def build_view(paper: Paper) -> PaperView:
    """The page-anchored view of `paper`: sections in order, tables as markdown, references last."""
    sections: list[ViewSection] = []
    pending = list(paper.tables)
    body = [s for s in paper.sections if section_kind(s.title) != "references"]
    home = _table_homes(body, paper.tables)
    for index, section in enumerate(body):
        mine = [t for t in pending if home.get(id(t)) == index]
        text, used = _section_text(section, paper, mine)
        # A table whose cells were not found in the text still belongs here: append it as markdown.
        for table in mine:
            if table not in used:
                text += "\n\n" + table_markdown(table)
                used.append(table)
        pending = [t for t in pending if t not in used]
        sections.append(
            ViewSection(
                title=section.title,
                kind=section_kind(section.title),
                level=section.level,
                page_start=section.page_start,
                page_end=section.page_end,
                text=text,
                has_hyper_table=any(_HYPER_TABLE.search(t.caption or "") for t in used),
            )
        )
    if not any(s.kind == "abstract" for s in sections) and paper.abstract:
        abstract = ViewSection(title="Abstract", kind="abstract", page_start=1, page_end=1, text=paper.abstract)
        sections.insert(0, abstract)
    for table in pending:  # tables outside every section span (no headings found)
        page = table.pages[0] if table.pages else 1
        sections.append(
            ViewSection(title=table.label, kind="other", page_start=page, page_end=page, text=table_markdown(table))
        )
    sections.extend(_references(paper))
    return PaperView(slug=paper.slug, title=paper.title, sections=sections)


def _references(paper: Paper) -> list[ViewSection]:
    section = next((s for s in paper.sections if section_kind(s.title) == "references"), None)
    if paper.references:
        text = "\n".join(f"{i}. {r.text}" for i, r in enumerate(paper.references, 1))
    elif section is not None:
        text = section.text
    else:
        return []
    start = section.page_start if section else paper.n_pages
    end = section.page_end if section else paper.n_pages
    return [ViewSection(title="References", kind="references", page_start=start, page_end=end, text=text)]


def render_view(view: PaperView) -> str:
    """The whole view as one markdown document (what ingestion writes as paper_view.md)."""
    head = [f"# {view.title or view.slug}", ""]
    return "\n\n".join(["\n".join(head).rstrip(), *(s.render() for s in view.sections)]) + "\n"


def paper_view_markdown(paper: Paper) -> str:
    return render_view(build_view(paper))
