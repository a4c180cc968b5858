"""The spec skeleton a researcher fills in when no model drafts the spec (`replicate paper.pdf --no-llm`).

It is spec.md in the layout `agent.spec.to_markdown` writes (one `##` section per field, each a fenced YAML block),
filled with what ingestion found: the paper's slug, the dataset name and split the paper states (with page and
quote), and every other setup fact as a `paper` hyperparameter whose quote is checked like any other. What only the
researcher can decide is marked `TODO`: which ledger claims to replicate, the metric key their script prints, the
tolerance, the data source and location, the method, the budget. The whole claims ledger and the setup follow the
YAML sections as prose (ignored on re-reading), so targets are picked by claim id from the same file.

`unfilled(text)` lists the `TODO` marks still in the YAML; `replicate approve ID --edit` refuses the file until it
lists none, then validates it exactly as a model's draft is validated (`agent.spec.from_markdown` and
`check_against_paper`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from agent.quotes import quote_in_text
from agent.spec import SECTIONS, SpecError, read_spec_text
from mlexp import atomic
from retrieval.models import Claim, Paper, SetupItem

TODO = "TODO"
_FIELDS = {heading.lower(): field for field, heading, _ in SECTIONS}
_BLOCK = re.compile(r"^##\s+(?P<heading>.+?)\s*$\n(?P<body>.*?)(?=^##\s|\Z)", re.M | re.S)
_YAML = re.compile(r"```ya?ml\s*\n(?P<yaml>.*?)```", re.S)
# Setup keys that describe the data rather than a hyperparameter of the method.
DATA_KEYS = ("dataset", "split")


def _quoted(text: str) -> str:
    """A one-line YAML scalar for `text` (quoted when YAML would read it as something else)."""
    dumped: str = yaml.safe_dump(text, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return dumped.removesuffix("...").strip()


def _targets_yaml() -> str:
    return f"""\
# Pick one or more claims from the claims ledger at the end of this file; one entry per claim.
- claim_id: {TODO}        # a ledger id, e.g. T3-r12-c3
  metric: {TODO}          # the key your script prints in its final metrics block, e.g. accuracy
  direction: max          # max: higher is better; min: lower is better
  tolerance: {TODO}       # absolute, in the claim's unit (0.01 = one point of accuracy on a 0-1 scale)
  seeds: {TODO}           # runs per claim; the verdict's seed noise comes from these
  reported: {TODO}        # the claim's value as the ledger prints it
  reported_std: null
  config: {{}}             # config overrides for this claim's runs (one table row = one setting)"""


def _data_yaml(paper: Paper) -> str:
    datasets = paper.setup.get("dataset")
    splits = paper.setup.get("split")
    name = _quoted(datasets[0].value) if datasets else TODO
    name_note = f"p.{datasets[0].page}" if datasets else "the dataset the claims are measured on"
    split = _quoted(splits[0].value) if splits else TODO
    split_note = f'p.{splits[0].page}: "{splits[0].quote[:90]}"' if splits else "e.g. official 60k train / 10k test"
    return f"""\
name: {name}    # {name_note}
source: {TODO}    # where the real data comes from: a package, a URL, a local path (never synthetic data)
# The folder your script reads (given to it as config data_dir): an absolute path, or a folder name looked up in
# each REPLICATE_DATA folder, the project folder and /usr/share/datasets; null if the script fetches the data itself.
location: {TODO}
split: {split}    # {split_note}
split_unit: {TODO}    # what one row of the split is: image, sentence, user, patient, ...
preprocessing: ''"""


def _hyperparameter_entries(paper: Paper) -> list[dict[str, Any]]:
    """Every setup fact that is not about the data, as a `paper` hyperparameter with its page and quote."""
    entries: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for item in paper.setup.items:
        if item.key in DATA_KEYS:
            continue
        counts[item.key] = counts.get(item.key, 0) + 1
        name = item.key if counts[item.key] == 1 else f"{item.key}_{counts[item.key]}"
        entries.append({"name": name, "value": item.value, "source": "paper", "page": item.page, "quote": item.quote})
    return entries


def _hyperparameters_yaml(paper: Paper) -> str:
    entries = _hyperparameter_entries(paper)
    head = (
        "# What ingestion found in the paper (each quote is checked against its page). Keep what your code uses, set\n"
        "# `value` to what it uses, and add the values you choose as `source: assumed` with a `reason`.\n"
    )
    if paper.setup.missing:
        head += f"# The paper does not state: {', '.join(paper.setup.missing)}.\n"
    if not entries:
        return head + "[]"
    return head + yaml.safe_dump(entries, sort_keys=False, allow_unicode=True, width=110).rstrip()


def _section_yaml(field: str, paper: Paper) -> str:
    simple = {
        "paper_slug": _quoted(paper.slug),
        "objective": f"{TODO}    # one sentence: which of the paper's numbers this replication sets out to reproduce",
        "method": f"name: {TODO}\ndescription: {TODO}    # what your script implements\nbaselines: []",
        "config": "# The exact config your script reads from RUN_CONFIG for the full run (data_dir comes from\n"
        "# data.location unless you set it here).\n{}",
        "budget": f"eta_minutes: {TODO}    # your estimate of one full run, in minutes\n"
        f"wall_limit_minutes: {TODO}    # a run is stopped after this long\ndevice: cpu\ncost_usd: 0.0\nnotes: ''",
        "smoke": "config: {}    # overrides that make the smoke run take seconds (e.g. a few hundred examples)\n"
        "max_minutes: 5\nexpected_outputs: []",
        "checkpoints": "- after the spec\n- after the code (yours)\n- after the smoke run\n- after the hypotheses",
        "decisions": "[]",
        "open_questions": "[]",
    }
    if field == "targets":
        return _targets_yaml()
    if field == "data":
        return _data_yaml(paper)
    if field == "hyperparameters":
        return _hyperparameters_yaml(paper)
    return simple[field]


def _cell(text: object) -> str:
    return " ".join(str(text if text is not None else "").split()).replace("|", "\\|")


def _ledger_lines(claims: list[Claim]) -> list[str]:
    lines = ["| claim id | value | as printed | where | row | column | metric | dataset | method |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in claims:
        where = f"{c.table}, p.{c.page}" if c.table else f"text, p.{c.page}"
        if c.cited:
            where += " (cited, not the paper's own result)"
        cells = [c.id, c.value, c.text, where, c.row, c.column, c.metric, c.dataset, c.method]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return lines


def _setup_lines(items: list[SetupItem], missing: list[str]) -> list[str]:
    lines = [f'- {i.key}: {i.value} (p.{i.page}, {i.confidence}): "{_cell(i.quote)}"' for i in items]
    return (lines or ["- (nothing found)"]) + ([f"- not stated: {', '.join(missing)}"] if missing else [])


def skeleton_markdown(paper: Paper) -> str:
    """spec.md for the researcher to fill in: the spec's sections with TODO marks, then the ledger and the setup."""
    lines = [
        f"# Replication spec (skeleton): {paper.title or paper.slug}",
        "",
        "No model drafted this spec: fill in every `TODO` in the YAML blocks below, then run",
        "`replicate approve ID --edit`. The file is validated as a model's draft is: each target's claim id and",
        "reported value against the claims ledger (listed at the end), each `paper` hyperparameter's quote against its",
        "page. Text outside the YAML blocks is ignored.",
        "",
    ]
    for field, heading, hint in SECTIONS:
        lines += [f"## {heading}", "", hint, "", "```yaml", _section_yaml(field, paper), "```", ""]
    lines += ["## Claims ledger (pick targets here)", "", f"{len(paper.claims)} numeric results ingestion found.", ""]
    lines += _ledger_lines(list(paper.claims)) + [""]
    lines += ["## Setup stated in the paper", ""] + _setup_lines(list(paper.setup.items), list(paper.setup.missing))
    return "\n".join(lines) + "\n"


def write_skeleton(paper: Paper, folder: Path) -> Path:
    """Write folder/spec.md (atomically) and remove a spec.json left from an earlier draft: the skeleton is not a
    spec until the researcher's edit validates. Returns the spec.md path."""
    md_path = folder / "spec.md"
    atomic.write_text(md_path, skeleton_markdown(_quotes_that_check(paper)))
    (folder / "spec.json").unlink(missing_ok=True)
    return md_path


def _quotes_that_check(paper: Paper) -> Paper:
    """`paper` without the setup items whose quote would fail the spec's quote check on its page: an extraction
    quirk must not make the researcher's spec fail on a line they did not write."""
    pages = {page.page: page.text for page in paper.pages}
    kept = [i for i in paper.setup.items if i.key in DATA_KEYS or quote_in_text(pages.get(i.page, ""), i.quote)]
    if len(kept) == len(paper.setup.items):
        return paper
    return paper.model_copy(update={"setup": paper.setup.model_copy(update={"items": kept})})


def unfilled(text: str) -> list[str]:
    """Where spec.md still holds a TODO mark: 'targets[0].claim_id', 'budget.eta_minutes', ... (empty when none)."""
    marks: list[str] = []
    for match in _BLOCK.finditer(text):
        field = _FIELDS.get(match.group("heading").strip().lower())
        block = _YAML.search(match.group("body")) if field else None
        if field is None or block is None:
            continue
        try:
            value = yaml.safe_load(block.group("yaml"))
        except yaml.YAMLError:
            continue  # the spec's own parser reports the YAML error with its section
        marks += _todo_paths(value, field)
    return marks


def _todo_paths(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _todo_paths(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _todo_paths(item, f"{where}[{i}]")]
    if isinstance(value, str) and value.strip().upper().startswith(TODO):
        return [where]
    return []


def check_filled(spec_md: Path) -> None:
    """Raise SpecError listing the TODO marks left in spec.md (read before the spec's own validation)."""
    marks = unfilled(read_spec_text(spec_md))  # SpecError when missing or not UTF-8
    if marks:
        shown = ", ".join(marks[:8]) + (f" and {len(marks) - 8} more" if len(marks) > 8 else "")
        raise SpecError(f"{spec_md} still has TODO marks to fill in: {shown}")
