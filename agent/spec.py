"""The experiment spec: what to replicate, how, with what budget, and what is still open.

`spec.json` is the machine copy; `spec.md` is the human view of the same values. The markdown is made of one `##`
section per field, each holding a fenced YAML block, with prose around it that is ignored on re-reading. A researcher
edits the YAML in their editor; `replicate approve ID --edit` re-reads spec.md, validates it (types here, then the
ledger and quote checks in `check_against_paper`) and writes spec.json. Everything else stays human prose.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from agent.errors import AgentError
from agent.quotes import quote_in_text
from mlexp import atomic
from retrieval.models import Paper


class SpecError(AgentError):
    """spec.md or spec.json does not parse or does not validate."""


class Target(BaseModel):
    """One ledger claim to replicate. `tolerance` is absolute, in the claim's unit."""

    claim_id: str
    # The key the experiment script reports in its final block / metrics.json; never blank (a blank key matches no
    # metric and would start a fix loop the code can never pass).
    metric: str = Field(min_length=1, pattern=r"\S")
    direction: Literal["max", "min"]
    tolerance: float = Field(ge=0)
    seeds: int = Field(ge=1, le=100)
    reported: float
    reported_std: float | None = None
    # Beyond the contract: config overrides for this claim (e.g. one Table 3 row = one classifier setting). Targets
    # with equal overrides share their runs; mlexp.compare gets a claim_id -> runs mapping.
    config: dict[str, Any] = Field(default_factory=dict)
    # "researcher": a value the researcher read off a figure or prose (not in the ledger), with where it is printed.
    source: Literal["ledger", "researcher"] = "ledger"
    page: int | None = None
    figure: str | None = None
    quote: str | None = None


class Hyperparameter(BaseModel):
    """A value the code uses, with where it comes from: the paper (page + quote) or an assumption with a reason."""

    name: str
    value: Any
    source: Literal["paper", "assumed"]
    page: int | None = None
    quote: str | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _cited_or_reasoned(self) -> Hyperparameter:
        if self.source == "paper" and (self.page is None or not (self.quote or "").strip()):
            raise ValueError(f"hyperparameter {self.name!r}: source 'paper' needs a page and a quote")
        if self.source == "assumed" and not (self.reason or "").strip():
            raise ValueError(f"hyperparameter {self.name!r}: source 'assumed' needs a reason")
        return self


class Data(BaseModel):
    name: str
    source: str  # where the real data comes from: a local path, a URL, a package
    location: str | None = None  # a local path the code reads, when the data is already on disk
    split: str  # e.g. "official 60k train / 10k test"
    split_unit: str  # what one row of the split is (image, user, patient, ...)
    preprocessing: str = ""
    # True when the paper's data is a simulation it specifies (data the paper itself generates): the code may then
    # generate data by that procedure. Never true for a paper that uses a real dataset; the researcher approves it.
    generated: bool = False


class Method(BaseModel):
    name: str
    description: str
    baselines: list[str] = Field(default_factory=list)


class Budget(BaseModel):
    """What the full run may cost. `eta_minutes` is the estimate shown at review_run."""

    eta_minutes: float = Field(gt=0)
    wall_limit_minutes: float = Field(gt=0)
    device: str = "cpu"
    cost_usd: float = 0.0
    notes: str = ""


class Smoke(BaseModel):
    """The smoke run: config overrides small enough that every stage fires within minutes."""

    config: dict[str, Any] = Field(default_factory=dict)
    max_minutes: float = Field(default=5, gt=0)
    expected_outputs: list[str] = Field(default_factory=list)


class Question(BaseModel):
    """A decision the agent should not take alone (practices §8): metric, baselines, thresholds, deviations."""

    question: str
    why: str = ""
    default: str = ""  # what the agent does if the researcher approves without answering


class Spec(BaseModel):
    paper_slug: str
    objective: str
    # Empty only while the paper reports no result the ledger could hold: an open question then asks for targets.
    targets: list[Target] = Field(default_factory=list)
    data: Data
    method: Method
    hyperparameters: list[Hyperparameter] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)  # the full-run config the script reads (RUN_CONFIG)
    budget: Budget
    smoke: Smoke = Field(default_factory=Smoke)
    checkpoints: list[str] = Field(default_factory=list)
    open_questions: list[Question] = Field(default_factory=list)
    decisions: list[str] = Field(default_factory=list)  # obvious choices taken and stated (practices §8)

    @model_validator(mode="after")
    def _targets_or_question(self) -> Spec:
        if not self.targets and not self.open_questions:
            raise ValueError("a spec without targets must ask the researcher for them in open_questions")
        return self

    @property
    def seeds(self) -> int:
        return max((target.seeds for target in self.targets), default=1)

    def run_config(self, *, smoke: bool, target: Target | None = None) -> dict[str, Any]:
        """The config handed to mlexp: the spec's config, a target's overrides, then the smoke overrides."""
        config = dict(self.config)
        if self.data.location and "data_dir" not in config:
            config["data_dir"] = self.data.location
        if target is not None:
            config.update(target.config)
        if smoke:
            config.update(self.smoke.config)
        return config

    def target_groups(self) -> list[tuple[dict[str, Any], list[Target]]]:
        """Targets grouped by their config overrides: one group = one experiment config, run once per seed."""
        groups: dict[str, tuple[dict[str, Any], list[Target]]] = {}
        for target in self.targets:
            key = json.dumps(target.config, sort_keys=True)
            groups.setdefault(key, (target.config, []))[1].append(target)
        return list(groups.values())


# --------------------------------------------------------------------------- checks against the paper


def check_against_paper(spec: Spec, paper: Paper) -> list[str]:
    """Problems that make the spec unusable for this paper: unknown claim ids, wrong reported values, false quotes."""
    problems: list[str] = []
    claims = {claim.id: claim for claim in paper.claims}
    pages = {page.page: page.text for page in paper.pages}
    for target in spec.targets:
        claim = claims.get(target.claim_id)
        if claim is None and target.source == "researcher":
            problems += researcher_target_problems(target, pages)
            continue
        if claim is None:
            problems.append(f"target claim_id {target.claim_id!r} is not in the paper's claims ledger")
            continue
        if abs(claim.value - target.reported) > 1e-9 * max(1.0, abs(claim.value)):
            problems.append(
                f"target {target.claim_id}: reported {target.reported} but the ledger says {claim.value} ({claim.text})"
            )
    whole = "\n".join(pages.values())
    for hp in spec.hyperparameters:
        if hp.source != "paper":
            continue
        quote = hp.quote or ""
        page_text = pages.get(hp.page or -1)
        if page_text is None:
            problems.append(f"hyperparameter {hp.name!r}: page {hp.page} does not exist (paper has {paper.n_pages})")
        elif not quote_in_text(page_text, quote):
            where = "on another page" if quote_in_text(whole, quote) else "anywhere in the paper"
            problems.append(f"hyperparameter {hp.name!r}: quote {hp.quote!r} not found on page {hp.page} ({where})")
    return problems


def researcher_target_problems(target: Target, pages: dict[int, str]) -> list[str]:
    """A researcher's target (a value read off a figure or prose) needs the page and the figure or a true quote."""
    where = f"researcher target {target.claim_id!r}"
    if target.page is None or target.page not in pages:
        return [f"{where}: give the page it is printed on (page {target.page} is not in the paper)"]
    if not (target.figure or "").strip() and not (target.quote or "").strip():
        return [f"{where}: give the figure it was read off (figure:) or the quote that states it (quote:)"]
    if (target.quote or "").strip() and not quote_in_text(pages[target.page], target.quote or ""):
        return [f"{where}: quote {target.quote!r} not found on page {target.page}"]
    return []


# --------------------------------------------------------------------------- spec.md <-> Spec

_SECTIONS: list[tuple[str, str, str]] = [
    # (field, heading, what the researcher should know when editing it)
    ("paper_slug", "Paper", "The ingested paper this spec replicates (papers/<slug>/paper.json)."),
    ("objective", "Objective", "What this replication sets out to show."),
    (
        "targets",
        "Targets",
        "Ledger claims to replicate: claim id, metric key the script reports, direction, absolute tolerance, seeds. "
        "A value read off a figure: `source: researcher` with `page:` and `figure:` (or a `quote:` from that page).",
    ),
    ("data", "Data", "The real data (never synthetic), its split and the unit of the split."),
    ("method", "Method", "The method and the baselines compared against."),
    (
        "hyperparameters",
        "Hyperparameters",
        "Each value with its source: `paper` with page and quote, or `assumed` with a reason.",
    ),
    ("config", "Run config", "The exact config the experiment script reads for the full run."),
    ("budget", "Budget", "Compute budget and ETA of the full run."),
    ("smoke", "Smoke run", "Overrides for the smoke run, small enough that every stage fires in minutes."),
    ("checkpoints", "Checkpoints", "Where the agent pauses for the researcher."),
    ("decisions", "Decisions taken", "Obvious choices the agent made and states (practices §8)."),
    ("open_questions", "Open questions", "Decisions for the researcher: metric, baselines, thresholds, deviations."),
]

SECTIONS = _SECTIONS  # public: the no-LLM spec skeleton (agent.graph.skeleton) writes the same sections
_HEADING_TO_FIELD = {heading.lower(): field for field, heading, _ in _SECTIONS}
_BLOCK = re.compile(r"^##\s+(?P<heading>.+?)\s*$\n(?P<body>.*?)(?=^##\s|\Z)", re.M | re.S)
_YAML = re.compile(r"```ya?ml\s*\n(?P<yaml>.*?)```", re.S)


def to_markdown(spec: Spec, *, title: str = "") -> str:
    data = spec.model_dump(mode="json")
    lines = [
        f"# Replication spec: {title or spec.paper_slug}",
        "",
        "Edit the YAML blocks below, then run `replicate approve ID --edit`: this file is re-read and validated.",
        "Text outside the YAML blocks is ignored.",
        "",
    ]
    for field, heading, hint in _SECTIONS:
        body = yaml.safe_dump(data[field], sort_keys=False, allow_unicode=True, width=110).rstrip()
        body = body.removesuffix("\n...")  # the document-end marker yaml adds after a bare scalar
        lines += [f"## {heading}", "", hint, "", "```yaml", body, "```", ""]
    return "\n".join(lines)


def from_markdown(text: str) -> Spec:
    """Parse spec.md back into a validated Spec. Raises SpecError naming the section that is wrong."""
    values: dict[str, Any] = {}
    for match in _BLOCK.finditer(text):
        field = _HEADING_TO_FIELD.get(match.group("heading").strip().lower())
        if field is None:
            continue
        block = _YAML.search(match.group("body"))
        if block is None:
            raise SpecError(f"spec.md section '{match.group('heading')}' has no ```yaml block")
        try:
            values[field] = yaml.safe_load(block.group("yaml"))
        except yaml.YAMLError as exc:
            raise SpecError(f"spec.md section '{match.group('heading')}': YAML does not parse: {exc}") from exc
    missing = [heading for field, heading, _ in _SECTIONS if field not in values and field in _REQUIRED]
    if missing:
        raise SpecError(f"spec.md lacks the section(s): {', '.join(missing)}")
    values = {key: value for key, value in values.items() if value is not None or key in _REQUIRED}
    try:
        return Spec.model_validate(values)
    except ValidationError as exc:
        raise SpecError(f"spec.md does not validate: {_short(exc)}") from exc


_REQUIRED = {"paper_slug", "objective", "targets", "data", "method", "budget"}


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- files


def save_spec(spec: Spec, folder: Path, *, title: str = "", write_md: bool = True) -> tuple[Path, Path]:
    """Write spec.json and spec.md (each atomically). Returns (json_path, md_path).

    `write_md=False` after a researcher's edit: their spec.md (with any notes outside the YAML) stays as they left it.
    """
    json_path, md_path = folder / "spec.json", folder / "spec.md"
    atomic.write_text(json_path, spec.model_dump_json(indent=2) + "\n")
    if write_md:
        atomic.write_text(md_path, to_markdown(spec, title=title))
    return json_path, md_path


def read_spec_text(path: Path) -> str:
    """The text of spec.md / spec.json; SpecError when it is missing or not UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"spec not found: {path}") from exc
    except UnicodeDecodeError as exc:  # saved by an editor in another encoding, or overwritten with binary data
        raise SpecError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc


def load_spec(path: Path) -> Spec:
    """Load spec.json (or spec.md, by suffix)."""
    path = Path(path)
    text = read_spec_text(path)
    if path.suffix == ".md":
        return from_markdown(text)
    try:
        return Spec.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise SpecError(f"{path} does not validate: {exc}") from exc
