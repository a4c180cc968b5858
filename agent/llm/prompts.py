"""Every prompt the agent sends, as named constants with {placeholders}, and the strict renderer.

`render` refuses a missing or an extra variable: a prompt silently missing its paper text, or a variable computed and
never shown, is a bug of ours and must fail loudly (it raises `PromptError`, which is not an `AgentError`).
Literal braces in a template are written doubled ({{ }}), as with str.format.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any


class PromptError(Exception):
    """A template was rendered with missing or extra variables (our bug, never the LLM's)."""


def placeholders(template: str) -> set[str]:
    names: set[str] = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        if not field.isidentifier():
            raise PromptError(f"placeholder {{{field}}} is not a plain name")
        names.add(field)
    return names


def render(template: str, variables: Mapping[str, Any]) -> str:
    wanted = placeholders(template)
    given = set(variables)
    if wanted != given:
        missing, extra = sorted(wanted - given), sorted(given - wanted)
        raise PromptError(f"prompt variables do not match: missing {missing}, extra {extra}")
    return template.format(**variables)


# The first line names the task: the scripted test model keys its replies on it, and a log reader sees it at once.
SYSTEM = """task: {prompt_name}
You are the engineering half of a research replication team. The researcher decides; you draft, implement and report.
Rules you never break:
- Use the real dataset the spec names. Never substitute synthetic, random or toy data, not even "for now".
- Cite the paper (page and exact quote) for every value you take from it; say "assumed" with a reason otherwise.
- Decide obvious choices and state them; ask about the metric, the baselines, thresholds and any deviation.
- Reply with one JSON object that matches the schema given, and nothing else."""

JSON_INSTRUCTIONS = """Reply with exactly one JSON object (no prose around it) that validates against this JSON schema:
{schema}"""

RETRY = """Your previous reply could not be used: {error}
Reply again with one corrected JSON object that validates against the schema. Nothing else."""

DRAFT_SPEC = """Draft the experiment spec for replicating this paper.

# Paper
title: {title}
slug: {slug}

# The paper's text (page-anchored: [p. N] starts page N; tables as markdown; references last)
{paper}

# Claims ledger (numeric results the paper reports, and claims the researcher added, marked "researcher";
# a target must reference one of these ids)
{claims}

# Setup facts the ingestion found (key, value, page, confidence, quote): hints found by pattern, not facts;
# check each against the paper's text above before you rely on it
{setup}

# Setup facts the paper does not state
{missing}

# Related work from the local paper index (may be empty)
{related}

# Local data available on this machine (use it when it is the dataset the paper uses)
{local_data}

# Researcher feedback on the previous draft (empty on the first draft)
{feedback}

Write the spec:
- objective: one paragraph.
- targets: the claims to replicate (claim_id from the ledger, metric = the key the script will report, direction,
  absolute tolerance in the claim's unit, seeds = number of seeds, reported = the ledger value, reported_std).
- data: name, real source, local location if on disk, split, unit of the split, preprocessing.
- method: name, description, baselines.
- hyperparameters: each with source "paper" (page + exact quote from that page) or "assumed" (reason).
- config: the exact full-run config (a flat JSON object) the experiment script will read.
- budget: eta_minutes and wall_limit_minutes of the full run, device, cost_usd.
- smoke: config overrides for a smoke run that exercises every stage within minutes.
- checkpoints, decisions (obvious choices you took, stated), open_questions (metric, baselines, thresholds,
  deviations: ask, with the default you would take).
- If the ledger holds no claims (results only in figures or prose), leave targets empty and ask the researcher in
  open_questions for the values to replicate (`replicate claims add` records a value read off a figure).
- Data the paper itself generates (a simulation or toy distribution it specifies) is the paper's real data: set
  data.generated to true, data.source to the procedure and its page, and ask the researcher to confirm it in
  open_questions. Never set it for a paper that uses a real dataset."""

IMPLEMENT_CODE = """Write the experiment code for this approved spec.

# Spec (JSON)
{spec}

# Paper sections the spec cites, and the method and setup sections (page-anchored)
{paper}

# The run contract (the fixed harness runs your script; you do not write a harness)
- The entry point is `train.py` in the code dir. The harness runs `python train.py` with the working directory set to
  RUN_DIR and these environment variables: RUN_DIR (write every output here), RUN_CONFIG (path to the frozen
  config.json: read ALL settings from it; `data_dir` is the spec's local data location when it gives one),
  SMOKE ("1" for the smoke run: use the smoke sizes), SEED, DEVICE ("cuda" or "cpu").
- Log with the helper: `import mlexp.log; log = mlexp.log.RunLogger(); cfg = mlexp.log.load_config()`;
  `log.step(step, total, **metrics)` from step 1; `log.info(msg)`; `log.save_predictions(df, id_col, y_true, y_pred)`;
  finish with `log.final(metric=value, ...)` using the metric keys of the spec's targets.
- Use the real data the spec names. If it cannot be read, print `DATA_UNAVAILABLE: <what is missing>` and exit 3.
  Never generate synthetic data, except when the spec's data.generated is true (the paper's own simulation, approved
  by the researcher): then generate exactly what the quoted procedure states, seeded by SEED.
- Write files only inside the code dir, with relative paths (no absolute paths, no "..").

# Files already in the code dir
{existing_files}

# Researcher notes (may be empty)
{feedback}

Reply with: files (list of {{"path": relative path, "content": full file text}}), notes (what you did and why),
data_available (false if you cannot obtain the real data, then ask in question), question (or null)."""

FIX_CODE = """The experiment code failed its {stage} run. Fix it.

# Spec (JSON)
{spec}

# Paper sections the spec cites, and the method and setup sections (page-anchored)
{paper}

# What went wrong (attempt {attempt} of {max_attempts})
{problem}

# Log digest
{digest}

# Changes made so far (git diff since the first implementation)
{diff}

# Current files
{files}

Rules: keep the real dataset (never synthetic data); keep the run contract; write only relative paths inside the
code dir. If the failure is that the real data cannot be obtained, do not work around it: set data_available to false
and ask in question.
Reply with: files (list of {{"path", "content"}} with the full new text of each changed file), notes (the cause and
the fix), data_available, question (or null)."""

# --------------------------------------------------------------------------- hypotheses (agent.hypotheses.literature)

HYPOTHESIS_QUERIES = """Some results of a replication differ from the paper. Propose searches of the local paper index
that could find literature explaining the differences (known sensitivities, implementation details, reported variance).

# Paper
{title}

# Verdicts (worst first)
{verdicts}

# What the deterministic checklist already found
{checklist}

Give at most 5 short keyword queries."""

HYPOTHESES = """Some results of a replication differ from the paper. Propose hypotheses for why, each testable by a
concrete change to the run config.

# Paper
id: {paper_id}
title: {title}

# Verdicts (worst first)
{verdicts}

# Run config (keys an ablation may change)
{config}

# Setup the paper states
{setup}

# Paper sections about the diverged claims (page-anchored)
{paper}

# What the deterministic checklist already found (do not repeat these)
{checklist}

# Literature from the local paper index (id, title, passage)
{literature}

# The researcher's feedback on earlier hypotheses (empty on the first round)
{feedback}

Rules:
- evidence: facts from this run only (config values, verdict numbers, diagnostics above).
- citations: only papers listed above (or the paper itself, id {paper_id}); the quote must be copied word for word
  from the passage shown. Never invent an id or a quote: unverifiable citations are rejected and shown as such.
- ablation.change: keys from the run config above, with the new value; expected_direction: "increase",
  "decrease", "no change" or "unknown" for the metric named in ablation.metric.
- priority: "high", "medium" or "low"."""


# --------------------------------------------------------------------------- tune (agent.tune.proposers)

TUNE_SEARCH = """You are improving an ML experiment under a fixed compute budget per trial.
Before proposing the next change, you may search a local index of research papers for techniques that could help.

# Experiment
{experiment}

# Trials so far
{history}

Give 1-3 short search queries (a few technical keywords each) for techniques likely to improve {metric} here."""

TUNE_PROPOSE = """You are improving an ML experiment under a fixed compute budget per trial ({trial_time}).
Propose ONE change for trial {trial_number}: knob values, code edits, or both. {focus}

# Experiment
{experiment}

# Knobs you may set (name: allowed range; incumbent value)
{knobs}

# Trials so far (the incumbent is the last 'baseline' or 'keep')
{history}

# Papers
{papers}

# Editable files of the incumbent
{code}

Rules:
- Protected files ({protected}) compute the metric; never edit them (a trial that does is rejected).
- A code edit replaces an exact snippet (`search`, occurring exactly once in the file) by `replace`.
- If your edit makes the script read a new config key, declare it in `new_knobs` with its range and set it in `config`.
- Keep knob values inside their ranges. Cite only papers from the list above, quoting their text verbatim."""


# Every task prompt by the name it is sent under (the `task:` line of SYSTEM, the scripted model's key, the log file
# name). SYSTEM, JSON_INSTRUCTIONS and RETRY wrap every one of them.
PROMPTS: dict[str, str] = {
    "draft_spec": DRAFT_SPEC,
    "implement_code": IMPLEMENT_CODE,
    "fix_code": FIX_CODE,
    "hypothesis_queries": HYPOTHESIS_QUERIES,
    "hypotheses": HYPOTHESES,
    "tune_search": TUNE_SEARCH,
    "tune_propose": TUNE_PROPOSE,
}
