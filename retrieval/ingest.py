"""Turn a paper PDF into a `Paper` record (`parse_pdf`) and write it to papers/<slug>/ (`ingest_pdf`).

The folder holds paper.json (the `Paper` record every later stage reads), paper.md (the same, readable) and
tables/*.csv. It is written into a temporary sibling folder and renamed into place, so a failure at any point leaves
either the previous complete folder or nothing, never a half-written one.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from pathlib import Path

import pymupdf

from retrieval.claims import Sentence, Vocabulary, page_sentences, table_claims, text_claims
from retrieval.errors import IngestError
from retrieval.models import Caption, PageText, Paper, Reference, Section, Table
from retrieval.paper_setup import extract_setup
from retrieval.paper_view import paper_view_markdown
from retrieval.pdf import Heading, PageData, body_font_size, collapse, find_headings, join_lines, read_pdf
from retrieval.ruled import read_ruled
from retrieval.tables import ExtractedTable, extract_tables, find_captions

PARSER_VERSION = f"pymupdf-{pymupdf.VersionBind}/replicate-ingest-2"  # -2: tables, cells, setup rebuilt

ARXIV_RE = re.compile(r"arXiv:\s?(\d{4}\.\d{4,5})(v\d+)?|arxiv\.org/abs/(\d{4}\.\d{4,5})", re.IGNORECASE)
DOI_RE = re.compile(r"\b(10\.\d{4,9}/[^\s\"<>,;]+[^\s\"<>,;.)])")
YEAR_RE = re.compile(r"\b(19[5-9]\d|20[0-4]\d)\b")
GENERIC_STEMS = {"paper", "main", "download", "article", "manuscript", "document", "pdf", "file", "output"}
AFFILIATION = re.compile(
    r"universit|institut|research|lab\b|laborator|college|school|department|dept\.|inc\.|ltd|corp|google|"
    r"microsoft|meta\b|facebook|openai|deepmind|center|centre|academy|@|\d|street|str\.|straße|road|avenue",
    re.IGNORECASE,
)


def slugify(text: str, max_len: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "paper"


def _title(pages: list[PageData]) -> tuple[str, float]:
    """The largest-font lines in the top half of page 1, joined."""
    first = pages[0]
    lines = [ln for ln in first.lines if ln.y1 < first.height * 0.5 and re.search(r"[A-Za-z]{2}", ln.text)]
    if not lines:
        return "", 0.0
    size = max(ln.size for ln in lines)
    top = [ln for ln in lines if ln.size >= size - 0.5]
    return collapse(" ".join(ln.text for ln in sorted(top, key=lambda ln: ln.y0))), size


def _authors(pages: list[PageData], title_size: float, headings: list[Heading]) -> list[str]:
    """Person-name lines between the title and the first heading of page 1 (affiliations and e-mails skipped)."""
    first = pages[0]
    stop = min((h.line.y0 for h in headings if h.page == 1 and h.line.size < title_size - 0.5), default=first.height)
    title_bottom = max((ln.y1 for ln in first.lines if ln.size >= title_size - 0.5), default=0.0)
    names: list[str] = []
    for line in first.lines:
        if not (title_bottom < line.y0 < stop) or AFFILIATION.search(line.text):
            continue
        for part in re.split(r",|\band\b|;|·|\s{3,}", line.text):
            part = re.sub(r"[*†‡§¶∗\d]+$", "", part.strip()).strip()
            words = part.split()
            if 2 <= len(words) <= 4 and all(re.match(r"^[A-Z][\w.'’-]*$", w) for w in words):
                names.append(part)
    return list(dict.fromkeys(names))


def _yc(line) -> float:
    return (line.y0 + line.y1) / 2


def _sections(pages: list[PageData], headings: list[Heading]) -> list[Section]:
    sections: list[Section] = []
    spans: list[tuple[Heading, int, float, int, float]] = []
    for i, heading in enumerate(headings):
        nxt = headings[i + 1] if i + 1 < len(headings) else None
        # Compare line centres: a heading's box and the next line's box often overlap by a point or two.
        end_page, end_y = (nxt.page, _yc(nxt.line) - 1) if nxt else (pages[-1].number, pages[-1].height + 1)
        spans.append((heading, heading.page, _yc(heading.line) + 1, end_page, end_y))
    for heading, p0, y0, p1, y1 in spans:
        lines = []
        for page in pages[p0 - 1 : p1]:
            for line in page.lines:
                after_start = page.number > p0 or _yc(line) > y0
                before_end = page.number < p1 or _yc(line) < y1
                if after_start and before_end and line is not heading.line:
                    lines.append(line.text)
        title = re.sub(r"^(\d+(\.\d+)*|[IVX]+|[A-H](\.\d+)*)\.?\s+", "", heading.title)
        end_page = p1 if y1 > 0 and not (p1 > p0 and y1 <= 80) else max(p0, p1 - 1)
        sections.append(
            Section(title=title, level=heading.level, page_start=p0, page_end=end_page, text=join_lines(lines))
        )
    return sections


def _references(section: Section | None, pages: list[PageData], heading: Heading | None) -> list[Reference]:
    """Split the reference list into entries: by "[n]"/"n." numbering, else by hanging indent."""
    if section is None or heading is None:
        return []
    lines = []
    for page in pages[section.page_start - 1 : section.page_end]:
        for line in page.lines:
            if (page.number > heading.page or _yc(line) > _yc(heading.line) + 1) and line is not heading.line:
                lines.append(line)
    lines = [ln for ln in lines if not re.fullmatch(r"\d{1,3}", ln.text.strip())]  # page numbers
    if not lines:
        return []
    entries: list[list[str]] = []
    numbered = sum(1 for ln in lines if re.match(r"^\s*(\[\d+\]|\d+\.\s)", ln.text)) >= max(2, len(lines) // 5)
    column_lefts = sorted({round(ln.x0) for ln in lines})
    indented = any(2 < b - a <= 20 for a, b in zip(column_lefts, column_lefts[1:], strict=False))
    previous_block = -1
    for line in lines:
        if numbered:
            starts = bool(re.match(r"^\s*(\[\d+\]|\d+\.\s)", line.text))
        elif indented:  # hanging indent: an entry's first line starts at the column's left edge
            starts = not any(2 < line.x0 - x <= 20 for x in column_lefts)
        else:  # no numbers, no indent: one text block per entry
            starts = line.block != previous_block
        previous_block = line.block
        if starts or not entries:
            entries.append([line.text])
        else:
            entries[-1].append(line.text)
    refs = []
    for entry in entries:
        text = join_lines(entry)
        arxiv = ARXIV_RE.search(text)
        doi = DOI_RE.search(text)
        years = YEAR_RE.findall(text)
        refs.append(
            Reference(
                text=text,
                arxiv_id=(arxiv.group(1) or arxiv.group(3)) if arxiv else None,
                doi=doi.group(1) if doi else None,
                year=int(years[-1]) if years else None,
            )
        )
    return refs


def _section_title(headings: list[Heading], table: ExtractedTable) -> str:
    """The title of the (sub)section a table starts in: the last heading above its first piece."""
    if not table.areas:
        return ""
    page, _, top, _, _ = table.areas[0]
    above = [h for h in headings if (h.page, h.line.y0) < (page, top)]
    return above[-1].title if above else ""


def _slug(path: Path, title: str) -> str:
    stem = slugify(path.stem)
    if stem in GENERIC_STEMS or len(stem) < 3 or re.fullmatch(r"[\d-]+(v\d+)?", stem):
        words = slugify(title).split("-")[:8]
        return "-".join(words) or stem
    return stem


def parse_pdf(path: str | Path) -> Paper:
    """Parse a paper PDF into a `Paper` (no writes). Raises `IngestError` with a one-line reason on bad input."""
    path = Path(path)
    pages, metadata, sha = read_pdf(path)
    body_size = body_font_size(pages)
    title, title_size = _title(pages)
    headings = [
        h
        for h in find_headings(pages, body_size)
        if not (h.page == 1 and title_size and h.line.size >= title_size - 0.5)
    ]
    stop_lines: dict[int, list] = {}
    for heading in headings:
        stop_lines.setdefault(heading.page, []).append(heading.line)
    extracted = extract_tables(pages, stop_lines)
    read_ruled(path, extracted)  # pymupdf's finder, for captioned tables the rebuild could not read

    # Running text: everything outside tables and captions.
    captions: list[Caption] = []
    skip: dict[int, list[tuple[float, float, float, float]]] = {}
    for page in pages:
        for hit in find_captions(page):
            captions.append(Caption(kind=hit.kind, label=hit.label, text=hit.text, page=page.number))
            skip.setdefault(page.number, []).append((hit.x0 - 1, hit.y0 - 0.5, hit.x1 + 1, hit.y1 + 0.5))
    for table in extracted:
        for number, x0, y0, x1, y1 in table.areas:
            skip.setdefault(number, []).append((x0 - 1, y0 - 1, x1 + 1, y1 + 1))
    sentences: list[Sentence] = []
    for page in pages:
        sentences.extend(page_sentences(page, skip.get(page.number, [])))
    full_text = "\n".join(page.text for page in pages)
    vocab = Vocabulary(full_text)

    # Sentences that cite a table ("Table 3 reports the test accuracy ...") can name its metric.
    citing: dict[str, list[str]] = {}
    for sentence in sentences:
        for match in re.finditer(r"\b(Table|TABLE|Tab\.)\s*([A-Z]?\d+[a-z]?|[IVXL]+)\b", sentence.text):
            citing.setdefault(f"Table {match.group(2)}", []).append(sentence.text)
    claims = []
    for table in extracted:
        context = " ".join(dict.fromkeys(citing.get(table.label, [])))
        claims.extend(table_claims(table, vocab, context, _section_title(headings, table)))
    claims.extend(text_claims(sentences, vocab, [c.method for c in claims if c.method]))
    setup = extract_setup(sentences, vocab, claims)

    sections = _sections(pages, headings)
    abstract = next((s.text for s in sections if s.title.lower().startswith("abstract")), "")
    if not abstract:  # some templates print "Abstract" run into the first paragraph
        run_in = re.search(r"\bAbstract\b[.:—–-]?\s*(.{200,3000}?)(?:\n\s*(?:1\.?\s+)?Introduction\b)", full_text, re.S)
        abstract = collapse(run_in.group(1)) if run_in else ""
    ref_index = next((i for i, s in enumerate(sections) if re.match(r"references|bibliography", s.title, re.I)), None)
    references = _references(
        sections[ref_index] if ref_index is not None else None,
        pages,
        headings[ref_index] if ref_index is not None else None,
    )
    stamp = " ".join(pages[0].margin)
    first_text = pages[0].text
    arxiv = ARXIV_RE.search(stamp) or ARXIV_RE.search(first_text) or ARXIV_RE.search(str(path.name))
    doi = DOI_RE.search(first_text)
    # The arXiv stamp's date ("[cs.AI] 25 Aug 2017") is the paper's; the PDF's creation date is a fallback.
    year_match = re.search(r"\b(19[5-9]\d|20[0-4]\d)\b", stamp) or re.search(
        r"D:(\d{4})", metadata.get("creationDate") or ""
    )
    tables = [
        Table(
            label=t.label,
            caption=t.caption,
            pages=t.pages,
            header=t.header,
            header_rows=t.header_rows,
            rows=[r.cells for r in t.rows],
            problem=t.problem,
        )
        for t in extracted
    ]
    return Paper(
        slug=_slug(path, title),
        source_path=str(path.resolve()),
        sha256=sha,
        n_pages=len(pages),
        title=title or collapse(metadata.get("title") or "") or path.stem,
        authors=_authors(pages, title_size, headings) if title else [],
        abstract=abstract,
        arxiv_id=(arxiv.group(1) or arxiv.group(3)) if arxiv else None,
        doi=doi.group(1) if doi else None,
        year=int(year_match.group(1)) if year_match else None,
        sections=sections,
        captions=captions,
        tables=tables,
        references=references,
        claims=claims,
        setup=setup,
        pages=[PageText(page=p.number, text=p.text) for p in pages],
        parser=PARSER_VERSION,
    )


def _csv_name(label: str) -> str:
    return slugify(label, 40) + ".csv"


def table_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if table.header:
        writer.writerow(table.header)
    writer.writerows(table.rows)
    return buffer.getvalue()


def render_markdown(paper: Paper) -> str:
    """A readable view of the record: metadata, setup (with missing keys), claims ledger, tables, sections."""
    out = [f"# {paper.title}", ""]
    if paper.authors:
        out += [", ".join(paper.authors), ""]
    meta = [f"pages: {paper.n_pages}", f"sha256: `{paper.sha256[:16]}`", f"parser: {paper.parser}"]
    if paper.arxiv_id:
        meta.insert(0, f"arXiv: {paper.arxiv_id}")
    if paper.doi:
        meta.insert(0, f"DOI: {paper.doi}")
    out += [" · ".join(meta), ""]
    if paper.abstract:
        out += ["## Abstract", "", paper.abstract, ""]
    out += ["## Setup", "", "| key | value | page | quote |", "|---|---|---|---|"]
    for item in paper.setup.items:
        out.append(f"| {item.key} | {_md(item.value)} | {item.page} | {_md(item.quote)} |")
    out += ["", f"Not stated in the paper: {', '.join(paper.setup.missing) or 'nothing'}", ""]
    out += [f"## Claims ({len(paper.claims)})", ""]
    out += [
        "| id | value | as printed | metric | dataset | method / row | column | page |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in paper.claims:
        who = c.row or c.method or ""
        cited = " (cited)" if c.cited else ""
        out.append(
            f"| {c.id} | {c.value:g} | {_md(c.text)}{cited} | {c.metric or ''} | {c.dataset or ''} | {_md(who)} | "
            f"{_md(c.column or '')} | {c.page} |"
        )
    for table in paper.tables:
        out += ["", f"## {table.label} (pages {', '.join(map(str, table.pages))})", "", _md(table.caption), ""]
        width = max([len(table.header)] + [len(r) for r in table.rows])
        header = table.header + [""] * (width - len(table.header)) if table.header else [""] * width
        out += ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * width]
        out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in table.rows]
        if table.csv_path:
            out += ["", f"CSV: `{table.csv_path}`"]
    out += ["", "## Sections", ""]
    out += [f"- {'  ' * (s.level - 1)}{s.title} (pages {s.page_start}–{s.page_end})" for s in paper.sections]
    if paper.references:
        out += ["", f"## References ({len(paper.references)})", ""]
        out += [f"{i}. {r.text}" for i, r in enumerate(paper.references, 1)]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return collapse(text).replace("|", "\\|")


def ingest_pdf(path: str | Path, papers_dir: Path) -> Paper:
    """Parse `path` and write papers_dir/<slug>/{paper.json, paper.md, tables/*.csv} atomically."""
    paper = parse_pdf(path)
    papers_dir = Path(papers_dir)
    try:
        papers_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise IngestError(f"{papers_dir}: output path exists and is not a folder") from exc
    target = papers_dir / paper.slug
    tmp = Path(tempfile.mkdtemp(prefix=f".{paper.slug}.", suffix=".tmp", dir=papers_dir))
    try:
        (tmp / "tables").mkdir()
        used: set[str] = set()
        for table in paper.tables:
            name = _csv_name(table.label)
            while name in used:
                name = name.replace(".csv", "-x.csv")
            used.add(name)
            (tmp / "tables" / name).write_text(table_csv(table), encoding="utf-8")
            table.csv_path = f"tables/{name}"
        (tmp / "paper.json").write_text(paper.model_dump_json(indent=2), encoding="utf-8")
        (tmp / "paper.md").write_text(render_markdown(paper), encoding="utf-8")
        (tmp / "paper_view.md").write_text(paper_view_markdown(paper), encoding="utf-8")  # what the LLM reads
        os.chmod(tmp, 0o755)
        if target.exists():
            old = target.with_name(f".{paper.slug}.old-{os.getpid()}")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except OSError:
                os.replace(old, target)  # put the previous version back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return paper


def load_paper(path: str | Path) -> Paper:
    """Load a `Paper` from a paper.json file or the folder that holds one."""
    path = Path(path)
    if path.is_dir():
        path = path / "paper.json"
    try:
        return Paper.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IngestError(f"{path}: no such paper record (run `replicate ingest PAPER.pdf` first)") from exc
    except ValueError as exc:
        raise IngestError(f"{path}: not a valid paper.json ({collapse(str(exc))[:120]})") from exc
