"""Who proposes the next trial: Optuna over the declared knobs, an LLM (config or code edits, with the paper index as
a tool), or both (hybrid). Every proposer sees the same history: the ledger rows of all trials so far.

- `OptunaProposer` (TPE or CMA-ES) needs no LLM. Its study lives in SQLite in the tune dir, or in any database URL
  so several workers can share it. Trials proposed by others (the baseline, LLM trials) are added to the study as
  finished trials, so the sampler learns from them too.
- `LLMProposer` asks the model for one change: knob values, code edits (search/replace on the experiment's files),
  new knobs its edit introduces, and the papers it took the idea from. With the index on, it first asks for search
  queries, runs them on the local PaperIndex and shows the hits; every citation's quote is then checked against the
  cited paper's indexed text (agent.hypotheses.citations), and the ledger records which ones held.
- `HybridProposer`: the LLM every `llm_every`-th trial (structural changes, new knobs from the literature), Optuna
  in between for the numeric knobs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import optuna
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from agent.errors import AgentError
from agent.llm import prompts
from agent.tune.ledger import CitationRecord, TrialRow
from agent.tune.target import Knob, TuneTarget
from agent.tune.workspace import CodeEdit
from retrieval.errors import RetrievalError

if TYPE_CHECKING:  # langchain and the paper index cost seconds to import; only their types are needed here
    from langchain_core.language_models import BaseChatModel

    from retrieval.index import PaperIndex

optuna.logging.set_verbosity(optuna.logging.WARNING)

ProposerName = Literal["optuna", "llm", "hybrid"]


class Citation(BaseModel):
    paper_id: str = Field(description="the paper's id exactly as shown in the search hits")
    quote: str = Field(description="a passage copied verbatim from that paper's text (at least one sentence)")


class LLMProposal(BaseModel):
    """What the LLM replies with (the JSON schema it is shown)."""

    summary: str = Field(description="one line: what this trial changes")
    rationale: str = Field(description="why it should improve the metric, and which paper suggested it")
    config: dict[str, Any] = Field(default_factory=dict, description="knob values to set (name -> value)")
    edits: list[CodeEdit] = Field(
        default_factory=list,
        description="code edits: replace the exact text `search` (must occur once) in file `path` by `replace`",
    )
    new_knobs: dict[str, Knob] = Field(
        default_factory=dict, description="knobs your edit adds to the script's config (name -> range), if any"
    )
    citations: list[Citation] = Field(default_factory=list, description="papers this change comes from")


class SearchQueries(BaseModel):
    queries: list[str] = Field(description="1-3 short literature search queries")


@dataclass
class Proposal:
    source: ProposerName
    summary: str
    rationale: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # knob settings (full for optuna, partial for llm)
    edits: list[CodeEdit] = field(default_factory=list)
    new_knobs: dict[str, Knob] = field(default_factory=dict)
    citations: list[CitationRecord] = field(default_factory=list)
    optuna_number: int | None = None
    error: str = ""  # a proposal that could not be made (LLM failure): recorded as rejected


@dataclass
class TuneState:
    """What a proposer may look at."""

    target: TuneTarget
    knobs: dict[str, Knob]
    incumbent_config: dict[str, Any]
    incumbent_commit: str
    incumbent_mean: float
    noise_std: float
    rows: list[TrialRow]
    trial_number: int
    code: dict[str, str]  # editable files of the incumbent: relative path -> text
    papers: bool


# ------------------------------------------------------------------------------------------------------- optuna


def distribution(knob: Knob) -> optuna.distributions.BaseDistribution:
    if knob.type in ("categorical", "bool"):
        return optuna.distributions.CategoricalDistribution(knob.options)
    low, high = knob.bounds
    if knob.type == "int":
        return optuna.distributions.IntDistribution(int(low), int(high), log=knob.log, step=int(knob.step or 1))
    return optuna.distributions.FloatDistribution(low, high, log=knob.log, step=knob.step)


def suggest(trial: optuna.trial.Trial, name: str, knob: Knob) -> Any:
    if knob.type in ("categorical", "bool"):
        return trial.suggest_categorical(name, knob.options)
    low, high = knob.bounds
    if knob.type == "int":
        return trial.suggest_int(name, int(low), int(high), step=int(knob.step or 1), log=knob.log)
    return trial.suggest_float(name, low, high, step=knob.step, log=knob.log)


def describe_changes(changes: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted(changes.items()))


class OptunaProposer:
    name: ProposerName = "optuna"

    def __init__(self, *, storage: str, study_name: str, direction: str, sampler: str = "tpe", seed: int = 0):
        if sampler == "cmaes":
            chosen: optuna.samplers.BaseSampler = optuna.samplers.CmaEsSampler(
                seed=seed, warn_independent_sampling=False, n_startup_trials=1
            )
        elif sampler == "tpe":
            chosen = optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=5)
        else:
            raise AgentError(f"unknown sampler {sampler!r}: use tpe or cmaes")
        try:
            self.study = optuna.create_study(
                storage=storage,
                study_name=study_name,
                sampler=chosen,
                direction="minimize" if direction == "min" else "maximize",
                load_if_exists=True,
            )
        # A bad URL, a missing database driver or an unreachable server: the user's input, one line.
        except (SQLAlchemyError, ImportError, OSError, optuna.exceptions.OptunaError) as exc:
            raise AgentError(f"cannot open the Optuna study {study_name!r} at {storage}: {exc}") from exc
        self._asked: dict[int, optuna.trial.Trial] = {}

    def propose(self, state: TuneState) -> Proposal:
        trial = self.study.ask()
        params = {name: suggest(trial, name, knob) for name, knob in state.knobs.items()}
        self._asked[trial.number] = trial
        changes = {k: v for k, v in params.items() if state.incumbent_config.get(k) != v}
        summary = describe_changes(changes) or "the incumbent's settings (re-sampled)"
        return Proposal(
            source="optuna",
            summary=summary,
            rationale=f"optuna {type(self.study.sampler).__name__} trial #{trial.number}",
            config=params,
            optuna_number=trial.number,
        )

    def observe(self, proposal: Proposal | None, row: TrialRow, knobs: dict[str, Knob]) -> None:
        value = row.metric_mean if row.verdict in ("baseline", "keep", "discard") else math.nan
        if proposal is not None and proposal.optuna_number is not None:
            trial = self._asked.pop(proposal.optuna_number)
            if math.isfinite(value):
                self.study.tell(trial, value)
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        if not math.isfinite(value):
            return
        # Someone else's trial (baseline, LLM): teach the sampler what its knob settings scored.
        params, dists = {}, {}
        for name, knob in knobs.items():
            v = row.config.get(name)
            if v is not None and knob.problem(v) is None:
                params[name], dists[name] = v, distribution(knob)
        if params:
            self.study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))


# ---------------------------------------------------------------------------------------------------------- llm


def _history_table(rows: list[TrialRow], limit: int = 30) -> str:
    if not rows:
        return "(none yet)"
    lines = ["trial | verdict | mean (std, n) | change | reason"]
    for r in rows[-limit:]:
        lines.append(
            f"{r.trial} | {r.verdict} | {r.metric_mean:.4g} ({r.metric_std:.2g}, {len(r.values)}) | "
            f"{r.change[:160]} | {r.reason[:120]}"
        )
    return "\n".join(lines)


def _experiment_text(state: TuneState) -> str:
    t = state.target
    noise = f"{state.noise_std:.3g}" if math.isfinite(state.noise_std) else "unknown"
    return (
        f"name: {t.name}\nscript: {t.script}\nmetric: {t.metric.name} ({t.metric.direction}imize) - "
        f"{t.metric.definition}\nincumbent {t.metric.name}: {state.incumbent_mean:.5g}; "
        f"seed noise (std): {noise}"
    )


class LLMProposer:
    name: ProposerName = "llm"

    def __init__(
        self,
        model: BaseChatModel,
        *,
        log_dir: Path,
        index: PaperIndex | None = None,
        hybrid: bool = False,
        hits_per_query: int = 4,
        trial_time: str = "",
    ):
        self.model, self.log_dir, self.index, self.hybrid = model, Path(log_dir), index, hybrid
        self.hits_per_query, self.trial_time = hits_per_query, trial_time

    def _papers(self, state: TuneState) -> tuple[str, dict[str, str]]:
        if self.index is None or not state.papers:
            return "(paper search is off for this run: propose from your own knowledge and cite nothing)", {}
        from agent.llm.seam import structured_call

        queries = structured_call(
            self.model,
            "tune_search",
            prompts.TUNE_SEARCH,
            {
                "experiment": _experiment_text(state),
                "history": _history_table(state.rows),
                "metric": state.target.metric.name,
            },
            SearchQueries,
            log_dir=self.log_dir,
            metadata={"trial": state.trial_number},
        )
        seen: dict[str, str] = {}
        blocks = []
        for query in queries.queries[:3]:
            try:
                hits = self.index.search(query, k=self.hits_per_query)
            except RetrievalError as exc:  # an empty or broken index must not stop the search: say so in the prompt
                blocks.append(f"query {query!r}: search failed ({exc})")
                continue
            blocks.append(f"query {query!r}:")
            for hit in hits:
                if hit.id not in seen:
                    seen[hit.id] = hit.title
                    text = (self.index.get_text(hit.id) or hit.snippet or "")[:1200]
                    blocks.append(f"- id {hit.id} ({hit.year}) {hit.title}\n  text: {' '.join(text.split())}")
        return ("\n".join(blocks) or "(no hits)"), seen

    def propose(self, state: TuneState) -> Proposal:
        note = ""
        try:
            papers, titles = self._papers(state)
        except AgentError as exc:  # the literature step failed (window, endpoint): propose without papers, say so
            note = f"literature search failed, proposed without papers: {exc}"
            papers, titles = f"(the paper search step failed: {exc}; propose from your own knowledge, cite nothing)", {}
        reply = self._ask(state, papers)
        return Proposal(
            source="llm",
            summary=reply.summary,
            rationale=f"[{note}] {reply.rationale}" if note else reply.rationale,
            config=dict(reply.config),
            edits=list(reply.edits),
            new_knobs=dict(reply.new_knobs),
            citations=[self._citation(c, titles) for c in reply.citations],
        )

    def _ask(self, state: TuneState, papers: str) -> LLMProposal:
        """One proposal from the LLM; a code edit whose search text is not unique is sent back for a retry."""
        from agent.llm.seam import structured_call

        knobs = "\n".join(
            f"- {n}: {k.describe()}; incumbent {state.incumbent_config.get(n, '(script default)')}"
            for n, k in state.knobs.items()
        )
        code = "\n\n".join(f"--- {path} ---\n{text}" for path, text in state.code.items())

        def applicable(reply: LLMProposal) -> None:  # shown back to the model for a retry when it fails
            for edit in reply.edits:
                if edit.search and edit.path in state.code and state.code[edit.path].count(edit.search) != 1:
                    n = state.code[edit.path].count(edit.search)
                    raise ValueError(f"edit of {edit.path}: the search text occurs {n} times; it must occur once")

        focus = (
            "Optuna tunes the numeric knobs between your turns: propose a structural change (code edit) or a new "
            "knob from the literature."
            if self.hybrid
            else ""
        )
        return structured_call(
            self.model,
            "tune_propose",
            prompts.TUNE_PROPOSE,
            {
                "trial_time": self.trial_time,
                "trial_number": state.trial_number,
                "focus": focus,
                "experiment": _experiment_text(state),
                "knobs": knobs,
                "history": _history_table(state.rows),
                "papers": papers,
                "code": code,
                "protected": ", ".join(state.target.protected) or "none",
            },
            LLMProposal,
            log_dir=self.log_dir,
            check=applicable,
            metadata={"trial": state.trial_number},
        )

    def _citation(self, c: Citation, titles: dict[str, str]) -> CitationRecord:
        """A cited paper, checked against the index (agent.hypotheses.citations): verified if the quote is there."""
        from agent.hypotheses.citations import check_citation

        if self.index is None:
            ok, why = False, "no paper index in this run"
        else:
            check = check_citation(self.index, c.paper_id, c.quote)
            ok, why = check.ok, check.reason
        title = titles.get(c.paper_id) or (
            (self.index.get_meta(c.paper_id) or {}).get("title", "") if self.index else ""
        )
        return CitationRecord(paper_id=c.paper_id, quote=c.quote, verified=ok, title=title or why)

    def observe(self, proposal: Proposal | None, row: TrialRow, knobs: dict[str, Knob]) -> None:
        """The LLM reads the ledger each time; nothing to remember."""


class HybridProposer:
    name: ProposerName = "hybrid"

    def __init__(self, optuna_proposer: OptunaProposer, llm: LLMProposer, *, llm_every: int = 3):
        self.optuna, self.llm, self.llm_every = optuna_proposer, llm, max(1, llm_every)

    def propose(self, state: TuneState) -> Proposal:
        if (state.trial_number - 1) % self.llm_every == 0:
            return self.llm.propose(state)
        return self.optuna.propose(state)

    def observe(self, proposal: Proposal | None, row: TrialRow, knobs: dict[str, Knob]) -> None:
        self.optuna.observe(proposal, row, knobs)


def proposal_json(p: Proposal) -> str:
    return json.dumps(
        {"source": p.source, "summary": p.summary, "config": p.config, "edits": [e.model_dump() for e in p.edits]},
        default=str,
    )
