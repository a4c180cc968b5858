"""Typed records that ingestion produces and every later stage reads.

These are the contract between `retrieval/` and the rest of the program: `paper.json` is `Paper.model_dump_json()`,
and the agent, the index and the comparison harness all load it back with `Paper.model_validate_json`. Fields are
added with defaults so that older `paper.json` files still load.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PageText(BaseModel):
    """The plain text of one page, kept so quotes can be verified and full text can be chunked with page numbers."""

    page: int  # 1-based
    text: str


class Section(BaseModel):
    title: str
    level: int = 1
    page_start: int
    page_end: int
    text: str = ""


class Caption(BaseModel):
    kind: str  # "table" | "figure"
    label: str  # e.g. "Table 3", "Figure 1"
    text: str
    page: int


class Table(BaseModel):
    """One logical table. A table that continues over several pages is one `Table` with all its pages listed."""

    label: str  # "Table 3", or "Table p4-1" when the paper prints no label
    caption: str = ""
    pages: list[int] = Field(default_factory=list)
    header: list[str] = Field(default_factory=list)  # column labels, multi-row headers joined with " / "
    # The header as printed, one list per header row, top row first; a spanning label appears once, at the first
    # column it spans (`header` repeats it over each column it spans, as "super / sub").
    header_rows: list[list[str]] = Field(default_factory=list)
    rows: list[list[str]] = Field(default_factory=list)  # body rows as printed (strings), row label first
    csv_path: str | None = None  # relative to the paper folder
    # Why the grid could not be read, for a captioned table we found but could not rebuild (then rows are empty):
    # recorded so that a missing table is visible, never dropped silently.
    problem: str | None = None


class Claim(BaseModel):
    """One numeric experimental result the paper reports: a target a replication is checked against."""

    id: str  # stable within the paper, e.g. "T3-r12-c2" or "p5-s3-n1"
    value: float
    text: str  # as printed, e.g. "0.812±0.003" or "89.7%"
    std: float | None = None
    page: int  # 1-based
    table: str | None = None  # table label, or None for a claim in running text
    row: str | None = None
    column: str | None = None
    metric: str | None = None
    dataset: str | None = None
    method: str | None = None
    higher_is_better: bool | None = None
    quote: str  # the sentence or table line it came from
    # True when the sentence attributes the number to other work ("as reported in Wan et al. [2013]"): a reference
    # point the paper prints, not a result of its own experiments, so not a replication target by default.
    cited: bool = False
    # "researcher": added by the researcher (`replicate claims add`), e.g. a value read off a figure; `table` then
    # names the figure. Never produced by ingestion.
    source: Literal["paper", "researcher"] = "paper"


Confidence = Literal["high", "medium", "low"]


class SetupItem(BaseModel):
    """One fact a replication needs, with where the paper states it."""

    key: str  # e.g. "dataset", "split", "optimizer", "learning_rate", "batch_size", "epochs", "seeds", ...
    value: str
    page: int
    quote: str
    # How sure the rule that found it is: "high" when the quote names the key next to the value ("a learning rate
    # of 1e-3"), "medium" when the value is inferred from a looser phrase, "low" for a name seen in passing. The
    # spec drafter treats every item as a hint; a "low" one should be checked against the paper.
    confidence: Confidence = "medium"


class Setup(BaseModel):
    items: list[SetupItem] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)  # keys the paper does not state; listed, never guessed

    def get(self, key: str) -> list[SetupItem]:
        return [item for item in self.items if item.key == key]


class Reference(BaseModel):
    text: str
    arxiv_id: str | None = None
    doi: str | None = None
    year: int | None = None


class Paper(BaseModel):
    slug: str
    source_path: str
    sha256: str
    n_pages: int
    title: str = ""
    authors: list[str] = Field(default_factory=list)
    abstract: str = ""
    arxiv_id: str | None = None
    doi: str | None = None
    year: int | None = None
    sections: list[Section] = Field(default_factory=list)
    captions: list[Caption] = Field(default_factory=list)
    tables: list[Table] = Field(default_factory=list)
    references: list[Reference] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)
    setup: Setup = Field(default_factory=Setup)
    pages: list[PageText] = Field(default_factory=list)
    parser: str = ""  # parser name + version; part of the index recipe hash

    def claim(self, claim_id: str) -> Claim:
        for claim in self.claims:
            if claim.id == claim_id:
                return claim
        raise KeyError(claim_id)
