"""`replicate tune`: improve an experiment under a fixed compute budget per trial, keeping only real gains.

The loop (after karpathy/autoresearch): the baseline runs first, on several seeds, which measures the seed noise
floor. Then each trial is one proposed change (Optuna knob values, LLM code/config edits, or both) run through
`mlexp.run_script` under the trial time budget, in its own git worktree of the experiment's repository, and kept only
when its improvement over the incumbent beats the noise at the chosen confidence (close calls get more seeds first).
The protected evaluation files are hashed before and after every trial; a trial that touches them is rejected.
Every trial, whatever its fate (keep, discard, crash, rejected), is a row of the ledger (tune.tsv + tune.parquet).
With a time budget, a busier machine trains fewer steps: `recheck_every` re-measures the incumbent on a fresh seed
every n trials, and those values join the incumbent's group in the pooled noise, so drift raises the noise floor
instead of passing for gains. With `parallel > 1`, trials run side by side from the incumbent at proposal time; each
is judged against the incumbent at decision time, and a kept one becomes the incumbent as measured (its own code).

Layout of a tune dir:
    target.json        the resolved target and options        tune.tsv / tune.parquet   the ledger
    work/              the experiment's git repo (branch `tune` = incumbent; tags baseline, trial-NNN)
    trials/trial-NNN/  the trial's worktree while it runs      runs/                     mlexp runs root
    optuna.db          the Optuna study (default storage)      llm_logs/                 every LLM call, plain text
    report.md / report.html / metric_vs_trial.png
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent.errors import AgentError
from agent.tune.ledger import Ledger, TrialRow, seed_stats, write_report
from agent.tune.proposers import (
    HybridProposer,
    LLMProposer,
    OptunaProposer,
    Proposal,
    ProposerName,
    TuneState,
    describe_changes,
)
from agent.tune.stats import Decision, Incumbent, Noise, decide, pooled_noise
from agent.tune.target import Knob, TuneError, TuneTarget, hash_files, load_target
from agent.tune.workspace import EditError, TrialTree, Workspace
from mlexp import atomic
from mlexp.errors import MlexpError

if TYPE_CHECKING:  # langchain and the paper index cost seconds to import; only their types are needed here
    from langchain_core.language_models import BaseChatModel

    from retrieval.index import PaperIndex


@dataclass
class TuneOptions:
    budget: int = 20  # number of trials after the baseline
    trial_time_s: float = 300.0
    proposer: ProposerName = "optuna"
    papers: bool = True
    seeds: int = 1  # seeds per trial at first
    baseline_seeds: int = 3  # the baseline's repeats: the noise floor
    max_seeds: int = 4  # close calls get more seeds up to this
    confidence: float = 0.95
    min_delta: float = 0.0  # an improvement must also exceed this (metric units)
    sampler: str = "tpe"  # tpe or cmaes, checked where the study is made (OptunaProposer)
    storage: str | None = None  # Optuna storage URL; default sqlite in the tune dir
    study_name: str | None = None
    executor: str = "local"  # local or ray, checked by mlexp
    ray_address: str | None = None
    parallel: int = 1
    llm: str | None = None  # an LLM spec (agent.llm.seam.load_chat_model); None = REPLICATE_LLM
    index_path: Path | None = None
    llm_every: int = 3  # hybrid: the LLM proposes every n-th trial
    recheck_every: int = 0  # re-measure the incumbent on a fresh seed every n trials (0: never); catches drift
    overrides: dict[str, Any] = field(default_factory=dict)
    smoke: bool = False
    seed: int = 0  # the sampler's seed
    grace_s: float | None = None  # None: the target's grace_s
    silence_limit_s: float | None = None

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["index_path"] = str(self.index_path) if self.index_path else None
        return data


@dataclass
class TuneResult:
    tune_dir: Path
    rows: list[TrialRow]
    metric: str
    direction: str
    baseline_mean: float
    baseline_std: float
    noise_std: float
    best_mean: float
    best_values: list[float]
    best_config: dict[str, Any]
    best_commit: str
    improvement: float  # positive = better, metric units
    relative_improvement: float
    report: Path

    def summary_line(self) -> str:
        kept = sum(r.verdict == "keep" for r in self.rows)
        return (
            f"{self.metric}: baseline {self.baseline_mean:.4g} ± {self.baseline_std:.2g} (noise {self.noise_std:.2g})"
            f" -> best {self.best_mean:.4g} ({100 * self.relative_improvement:+.2f}%), {kept} kept of "
            f"{len(self.rows) - 1} trials; ledger {self.tune_dir / 'tune.tsv'}"
        )


@dataclass
class _Outcome:
    """What running one trial produced, before the keep/discard decision."""

    tree: TrialTree | None
    commit: str = ""
    files: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)
    cost_s: float = 0.0
    verdict: Literal["", "crash", "rejected"] = ""  # "": measured
    reason: str = ""
    started_at: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Tuner:
    """One tune run. `run()` does the baseline and the trials and writes the ledger and report as it goes."""

    def __init__(
        self,
        target: TuneTarget,
        opts: TuneOptions,
        tune_dir: Path,
        *,
        log: Callable[[str], None] = print,
        model: BaseChatModel | None = None,
        index: PaperIndex | None = None,
        resume: bool = False,
    ):
        if opts.budget < 0 or opts.seeds < 1 or opts.baseline_seeds < 2 or opts.parallel < 1:
            raise TuneError(
                "need --budget >= 0, --seeds >= 1, --baseline-seeds >= 2 (the noise floor) and --parallel >= 1"
            )
        if not 0.5 < opts.confidence < 1:
            raise TuneError(f"--confidence must be between 0.5 and 1, got {opts.confidence}")
        self.target, self.opts, self.tune_dir, self.log = target, opts, Path(tune_dir).resolve(), log
        self.ws = Workspace(self.tune_dir)
        if self.ws.repo.exists() and not resume:
            raise TuneError(f"{self.tune_dir} already holds a tune run; choose another --out, or --resume it")
        self.resume = resume  # go on from the ledger, work repo and study in tune_dir (agent.tune.resume)
        self.done: set[int] = set()  # trial numbers with a ledger row: never run again
        self.tune_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.tune_dir)
        self.knobs: dict[str, Knob] = dict(target.knobs)
        self.hashes = target.protected_hashes()
        self.grace = opts.grace_s if opts.grace_s is not None else target.grace_s
        self.proposer = self._make_proposer(model, index)
        self._lock = threading.Lock()
        self._rechecks: dict[int, list[float]] = {}  # incumbent trial -> its re-measured values

    # -- setup -----------------------------------------------------------------------------------------------------
    def _make_proposer(
        self, model: BaseChatModel | None, index: PaperIndex | None
    ) -> OptunaProposer | LLMProposer | HybridProposer:
        opts = self.opts
        storage = opts.storage or f"sqlite:///{(self.tune_dir / 'optuna.db').resolve()}"
        study = opts.study_name or f"{self.target.name}-{self.tune_dir.name}"
        make_optuna = lambda: OptunaProposer(  # noqa: E731
            storage=storage,
            study_name=study,
            direction=self.target.metric.direction,
            sampler=opts.sampler,
            seed=opts.seed,
        )
        if opts.proposer == "optuna":
            return make_optuna()
        if opts.proposer not in ("llm", "hybrid"):
            raise TuneError(f"unknown proposer {opts.proposer!r}: use optuna, llm or hybrid")
        if model is None:
            from agent.llm.seam import load_chat_model

            model = load_chat_model(opts.llm)  # LLMNotConfiguredError says what to set
        llm = LLMProposer(
            model,
            log_dir=self.tune_dir / "llm_logs",
            index=index if opts.papers else None,
            hybrid=opts.proposer == "hybrid",
            trial_time=f"{opts.trial_time_s:g} s",
        )
        return llm if opts.proposer == "llm" else HybridProposer(make_optuna(), llm, llm_every=opts.llm_every)

    # -- running ---------------------------------------------------------------------------------------------------
    def _run_seeds(self, tree: TrialTree, config: dict, seeds: list[int], number: int, out: _Outcome) -> None:
        """Run `config` on each seed in the trial's worktree; fills out.values or marks a crash."""
        from mlexp import run_script

        wall = self.opts.trial_time_s + self.grace
        silence = self.opts.silence_limit_s or wall
        for seed in seeds:
            try:
                record = run_script(
                    tree.path / self.target.script,
                    config,
                    runs_root=self.tune_dir / "runs",
                    name=tree.name,
                    smoke=self.opts.smoke,
                    seed=seed,
                    executor=self.opts.executor,
                    ray_address=self.opts.ray_address,
                    wall_limit_s=wall,
                    silence_limit_s=silence,
                    readme={
                        "purpose": f"replicate tune {self.target.name}, {tree.name}, seed {seed}",
                        "metrics": {
                            self.target.metric.name: {
                                "direction": self.target.metric.direction,
                                "definition": self.target.metric.definition,
                            }
                        },
                    },
                )
            except MlexpError as exc:  # the harness refused the run (bad config value, ...): the trial's fault
                out.verdict, out.reason = "crash", f"harness refused the run: {exc}"
                return
            out.cost_s += record.duration_s or 0.0
            out.run_dirs.append(record.run_dir)
            out.seeds.append(seed)
            if record.status != "completed":
                kind = {"silence": "hang (no output)", "wall_limit": "hang (over the time limit)"}.get(
                    record.exit_reason or "", record.exit_reason or "failed"
                )
                err = " ".join((record.error or "").split())[-300:]
                out.verdict, out.reason = "crash", f"seed {seed}: {kind}: {err}".strip(": ")
                return
            value = record.metrics.get(self.target.metric.name)
            if value is None or not math.isfinite(value):
                out.verdict = "crash"
                out.reason = f"seed {seed}: the run reported no finite {self.target.metric.name} (got {value})"
                return
            out.values.append(float(value))
            changed = self._tampered(tree.path)
            if changed:
                out.verdict, out.reason = "rejected", f"the run modified the protected file(s) {changed}"
                return

    def _tampered(self, root: Path) -> list[str]:
        now = hash_files(root, self.target.protected)
        return [name for name, digest in self.hashes.items() if now.get(name) != digest]

    def baseline_config(self) -> dict:
        """The baseline's resolved config (budget key included), as trial 0 ran it."""
        return self._config_for(self.target.baseline, None)

    def add_recheck(self, trial: int, value: float) -> None:
        """One more measurement of incumbent `trial` on a fresh seed (a --recheck-every run)."""
        self._rechecks.setdefault(trial, []).append(value)

    def _config_for(self, base: dict, proposal: Proposal | None) -> dict:
        config = {**base, **(proposal.config if proposal is not None else {})}
        if self.target.budget_key:
            config[self.target.budget_key] = self.opts.trial_time_s
        return config

    def _execute(self, number: int, proposal: Proposal, base_commit: str, config: dict) -> _Outcome:
        """Runs in a worker thread: worktree, edits, commit, hash check, seeds."""
        out = _Outcome(tree=None, started_at=_now())
        tree = self.ws.open_trial(number, base_commit)
        out.tree = tree
        try:
            out.files = self.ws.apply_edits(tree, proposal.edits, self.target.protected)
        except EditError as exc:
            out.verdict, out.reason = "rejected", f"code edit not applied: {exc}"
            return out
        with self._lock:  # git tags and refs live in the shared repo: one writer at a time
            out.commit = self.ws.commit_trial(tree, f"{tree.name}: {proposal.summary}\n\n{proposal.rationale}")
        changed = self._tampered(tree.path)
        if changed:
            out.verdict, out.reason = "rejected", f"the change touches the protected evaluation file(s) {changed}"
            return out
        self._run_seeds(tree, config, list(range(self.opts.seeds)), number, out)
        return out

    # -- the loop --------------------------------------------------------------------------------------------------
    def run(self) -> TuneResult:
        if self.resume:
            from agent.tune.resume import restore

            restore(self)  # ledger rows, incumbent, finished trials; the killed trial's leftovers removed
            self.log(f"[tune] resuming {self.tune_dir}: {len(self.done)} finished trial(s) kept, not run again")
        else:
            self.tune_dir.mkdir(parents=True, exist_ok=True)
            base_commit = self.ws.create(self.target.root)
            atomic.write_json(
                self.tune_dir / "target.json",
                {
                    "target": self.target.model_dump(mode="json"),
                    "options": self.opts.public(),
                    "baseline_commit": base_commit,
                },
            )
            self.incumbent = Incumbent(commit=base_commit, config=self._config_for(self.target.baseline, None))
            self.log(f"[tune] tune dir {self.tune_dir} (if killed: replicate tune --resume {self.tune_dir})")
        if 0 not in self.done:
            self._baseline()
        self.noise = self._noise()
        self.log(
            f"[tune] noise floor: seed std {self.noise.std:.4g} (df {self.noise.df}); "
            f"keep only improvements beyond it at {self.opts.confidence:.0%}"
        )
        self._trials()
        return self._finish()

    def _baseline(self) -> None:
        seeds = list(range(self.opts.baseline_seeds))
        self.log(f"[tune] baseline: {self.target.name} on {len(seeds)} seeds, {self.opts.trial_time_s:g} s each")
        tree = self.ws.open_trial(0, self.incumbent.commit)
        out = _Outcome(tree=tree, commit=self.incumbent.commit, started_at=_now())
        try:
            self._run_seeds(tree, self.incumbent.config, seeds, 0, out)
        finally:
            self.ws.close_trial(tree)
        mean, std = seed_stats(out.values)
        row = TrialRow(
            trial=0,
            proposer="baseline",
            kind="baseline",
            change="baseline",
            config=self.incumbent.config,
            seeds=out.seeds,
            values=out.values,
            metric_mean=mean,
            metric_std=std,
            verdict="baseline" if not out.verdict else out.verdict,
            reason=out.reason or "the reference",
            commit=out.commit,
            tag="baseline",
            cost_s=round(out.cost_s, 2),
            run_dirs=out.run_dirs,
            started_at=out.started_at,
            ended_at=_now(),
        )
        self.ledger.append(row)
        if out.verdict:
            raise TuneError(f"the baseline failed, nothing to tune against: {out.reason} (see {out.run_dirs[-1:]})")
        self.incumbent.values = out.values
        self.proposer.observe(None, row, self.knobs)
        self.log(f"[tune] baseline {self.target.metric.name} = {mean:.4f} ± {std:.4f} over seeds {out.seeds}")

    def _noise(self) -> Noise:
        """Pooled over every measured config; the incumbent's group includes its re-checks, so drift of the machine
        over time (a busier machine trains fewer steps in the same time budget) raises the noise floor."""
        groups = [
            r.values + self._rechecks.get(r.trial, [])
            for r in self.ledger.rows
            if r.verdict in ("baseline", "keep", "discard")
        ]
        return pooled_noise(groups)

    def _recheck(self, after: int) -> None:
        """Re-measure the incumbent on one fresh seed now, and count it among the incumbent's values."""
        values = self.incumbent.values
        seed = 500 + sum(r.verdict == "recheck" for r in self.ledger.rows)
        tree = self.ws.open_trial(0, self.incumbent.commit, name=f"recheck-{after:03d}")
        out = _Outcome(tree=tree, commit=self.incumbent.commit, started_at=_now())
        try:
            self._run_seeds(tree, self.incumbent.config, [seed], 0, out)
        finally:
            self.ws.close_trial(tree)
        before = statistics.fmean(values)
        if not out.verdict:
            values.append(out.values[0])
            self._rechecks.setdefault(self.incumbent.trial, []).append(out.values[0])
        drift = out.values[0] - before if out.values else math.nan
        row = TrialRow(
            trial=after,
            proposer="recheck",
            kind="recheck",
            change=f"incumbent (trial {self.incumbent.trial}) re-measured",
            config=self.incumbent.config,
            seeds=out.seeds,
            values=out.values,
            metric_mean=out.values[0] if out.values else math.nan,
            incumbent_mean=before,
            verdict="recheck",
            reason=out.reason or f"drift {drift:+.4g} from the incumbent's mean; now {len(values)} values",
            commit=out.commit,
            cost_s=round(out.cost_s, 2),
            run_dirs=out.run_dirs,
            started_at=out.started_at,
            ended_at=_now(),
        )
        self.ledger.append(row)
        self.noise = self._noise()
        self.log(
            f"[tune] recheck after trial {after}: incumbent {row.metric_mean:.4f} vs {before:.4f} "
            f"(noise now {self.noise.std:.4g})"
        )

    def _state(self, number: int) -> TuneState:
        return TuneState(
            target=self.target,
            knobs=self.knobs,
            incumbent_config=self.incumbent.config,
            incumbent_commit=self.incumbent.commit,
            incumbent_mean=statistics.fmean(self.incumbent.values),
            noise_std=self.noise.std,
            rows=list(self.ledger.rows),
            trial_number=number,
            code=self._editable_code(),
            papers=self.opts.papers,
        )

    def _editable_code(self) -> dict[str, str]:
        out = {}
        for path in sorted(self.ws.repo.rglob("*.py")):
            rel = path.relative_to(self.ws.repo).as_posix()
            if rel not in self.target.protected and not rel.startswith(".") and path.stat().st_size < 60_000:
                out[rel] = path.read_text(encoding="utf-8", errors="replace")
        return out

    def _propose(self, number: int) -> tuple[Proposal, str, dict]:
        state = self._state(number)
        try:
            proposal = self.proposer.propose(state)
        except AgentError as exc:  # a malformed LLM reply after retries, a dead endpoint: recorded, search goes on
            proposal = Proposal(source=self.proposer.name, summary="(no proposal)", error=str(exc))
        return proposal, self.incumbent.commit, dict(self.incumbent.config)

    def _trials(self) -> None:
        pool = ThreadPoolExecutor(max_workers=self.opts.parallel, thread_name_prefix="tune-trial")
        running: dict[Future, tuple[int, Proposal, dict, dict]] = {}
        next_number = 1
        try:
            while next_number <= self.opts.budget or running:
                while next_number <= self.opts.budget and len(running) < self.opts.parallel:
                    number = next_number
                    next_number += 1
                    if number in self.done:  # resumed: this trial has its ledger row
                        continue
                    proposal, base_commit, base_config = self._propose(number)
                    config = self._config_for(base_config, proposal)
                    problems = self._problems(proposal, config, base_config)
                    if problems:
                        self._record(
                            number,
                            proposal,
                            base_config,
                            config,
                            _Outcome(None, verdict="rejected", reason=problems, started_at=_now()),
                        )
                        continue
                    self.log(f"[tune] trial {number} ({proposal.source}): {proposal.summary}")
                    future = pool.submit(self._execute, number, proposal, base_commit, config)
                    running[future] = (number, proposal, base_config, config)
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f][0]):
                    number, proposal, base_config, config = running.pop(future)
                    self._record(number, proposal, base_config, config, future.result())
                    if self.opts.recheck_every and number % self.opts.recheck_every == 0:
                        self._recheck(number)
        finally:
            pool.shutdown(wait=True)

    def _problems(self, proposal: Proposal, config: dict, base_config: dict) -> str:
        if proposal.error:
            return f"no usable proposal: {proposal.error}"
        knobs = {**self.knobs, **proposal.new_knobs}
        changes = {k: v for k, v in config.items() if base_config.get(k, object()) != v and k != self.target.budget_key}
        problems = self.target.config_problems(changes, knobs)
        return ("knobs out of range or undeclared: " + "; ".join(problems)) if problems else ""

    def _record(self, number: int, proposal: Proposal, base_config: dict, config: dict, out: _Outcome) -> None:
        """Decide (with more seeds for close calls), settle the git state, append the ledger row, tell the proposer."""
        inc_values = self.incumbent.values
        try:
            decision = self._decide(number, config, out) if not out.verdict else None
            if decision is not None and not out.verdict and decision.verdict == "keep":
                assert out.tree is not None, "a kept trial was measured in a work tree"
                with self._lock:
                    self.ws.settle(out.tree, out.commit, "keep")
                self.incumbent = Incumbent(commit=out.commit, config=config, values=list(out.values), trial=number)
                self.knobs.update(proposal.new_knobs)  # a new knob exists only once the code that reads it is kept
        finally:
            if out.tree is not None:
                self.ws.close_trial(out.tree)
        row = self._row(number, proposal, base_config, config, out, decision, inc_values)
        self.ledger.append(row)
        self.proposer.observe(proposal, row, self.knobs)
        self.noise = self._noise()
        self.log(
            f"[tune] trial {number}: {row.verdict} ({self.target.metric.name} {row.metric_mean:.4f}, {row.reason})"
        )

    def _decide(self, number: int, config: dict, out: _Outcome) -> Decision:
        """Keep or discard a measured trial, giving close calls more seeds first. When one of those seeds crashes
        (`out.verdict` set), the last decision is returned for its numbers; the crash is the trial's verdict."""
        assert out.tree is not None, "a trial that was measured ran in a work tree"
        while True:
            decision = decide(
                out.values,
                self.incumbent.values,
                self.noise,
                direction=self.target.metric.direction,
                confidence=self.opts.confidence,
                max_seeds=self.opts.max_seeds,
                min_delta=self.opts.min_delta,
            )
            if decision.verdict != "more_seeds":
                return decision
            extra = [max(out.seeds) + 1]
            self.log(f"[tune] trial {number}: {decision.reason}; running seed {extra[0]}")
            self._run_seeds(out.tree, config, extra, number, out)
            if out.verdict:
                return decision

    def _row(
        self,
        number: int,
        proposal: Proposal,
        base_config: dict,
        config: dict,
        out: _Outcome,
        decision: Decision | None,
        inc_values: list[float],
    ) -> TrialRow:
        """The ledger row of a trial: what changed, what it measured, and the decision (or why there was none)."""
        mean, std = seed_stats(out.values)
        changes = {k: v for k, v in config.items() if base_config.get(k, object()) != v and k != self.target.budget_key}
        parts = [describe_changes(changes)] if changes else []
        if out.files or proposal.edits:
            parts.append("edit " + ", ".join(out.files or sorted({e.path for e in proposal.edits})))
        kind = "+".join(k for k, on in (("config", bool(changes)), ("code", bool(proposal.edits))) if on) or "config"
        verdict = out.verdict or (decision.verdict if decision is not None else "")
        return TrialRow(
            trial=number,
            proposer=proposal.source,
            kind=kind,
            change=f"{proposal.summary} [{'; '.join(parts)}]" if proposal.source == "llm" else "; ".join(parts),
            rationale=proposal.rationale,
            citations=proposal.citations,
            config=config,
            config_changes=changes,
            files_changed=out.files,
            seeds=out.seeds,
            values=out.values,
            metric_mean=mean,
            metric_std=std,
            incumbent_mean=statistics.fmean(inc_values),
            improvement=decision.improvement if decision is not None else math.nan,
            threshold=decision.threshold if decision is not None else math.nan,
            verdict=verdict,
            reason=out.reason if out.verdict or decision is None else decision.reason,
            commit=out.commit,
            tag=out.tree.name if out.tree and out.commit else "",
            cost_s=round(out.cost_s, 2),
            run_dirs=out.run_dirs,
            started_at=out.started_at,
            ended_at=_now(),
        )

    def evaluate_incumbent(self, seeds: list[int], *, name: str = "final") -> list[float]:
        """Re-measure the final incumbent on fresh seeds (unbiased by the selection that made it incumbent)."""
        tree = self.ws.open_trial(0, self.incumbent.commit, name=name)
        out = _Outcome(tree=tree, commit=self.incumbent.commit)
        try:
            self._run_seeds(tree, self.incumbent.config, seeds, 0, out)
        finally:
            self.ws.close_trial(tree)
        if out.verdict:
            raise TuneError(f"re-measuring the incumbent of {self.tune_dir.name} failed: {out.reason}")
        return out.values

    def _finish(self) -> TuneResult:
        rows = self.ledger.rows
        base = rows[0]
        best_values = self.incumbent.values
        best = statistics.fmean(best_values)
        gain = (base.metric_mean - best) if self.target.metric.direction == "min" else (best - base.metric_mean)
        rel = gain / abs(base.metric_mean) if base.metric_mean else math.nan
        atomic.write_json(self.tune_dir / "best_config.json", self.incumbent.config)
        summary = {
            "target": self.target.name,
            "proposer": self.opts.proposer,
            "papers": self.opts.papers if self.opts.proposer != "optuna" else "n/a (optuna)",
            "trial time": f"{self.opts.trial_time_s:g} s",
            "confidence": f"{self.opts.confidence:.0%}",
            "incumbent commit": f"{self.incumbent.commit[:10]} (trial {self.incumbent.trial}); repo {self.ws.repo}",
        }
        md, _, _ = write_report(
            self.tune_dir,
            rows,
            metric=self.target.metric.name,
            direction=self.target.metric.direction,
            noise_std=self.noise.std,
            summary=summary,
        )
        return TuneResult(
            tune_dir=self.tune_dir,
            rows=rows,
            metric=self.target.metric.name,
            direction=self.target.metric.direction,
            baseline_mean=base.metric_mean,
            baseline_std=base.metric_std,
            noise_std=self.noise.std,
            best_mean=best,
            best_values=list(best_values),
            best_config=self.incumbent.config,
            best_commit=self.incumbent.commit,
            improvement=gain,
            relative_improvement=rel,
            report=md,
        )


def default_tune_dir(target: TuneTarget, runs_dir: Path) -> Path:
    return Path(runs_dir) / f"tune-{target.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_tune(
    target: str | Path | TuneTarget,
    opts: TuneOptions,
    *,
    tune_dir: Path | None = None,
    log: Callable[[str], None] = print,
    model: BaseChatModel | None = None,
    index: PaperIndex | None = None,
) -> TuneResult:
    """Load the target (unless given) and run one tune. Raises TuneError/TuneTargetError with one-line messages."""
    from agent.paths import runs_dir
    from agent.tune import resume

    if tune_dir is not None and resume.holds_run(tune_dir):  # `--resume DIR`, or the same command run again
        resume.check_options(tune_dir, opts)
        spec = resume.stored_target(tune_dir)
        return Tuner(spec, opts, Path(tune_dir), log=log, model=model, index=index, resume=True).run()
    spec = target if isinstance(target, TuneTarget) else load_target(target, overrides=opts.overrides)
    out = Path(tune_dir) if tune_dir else default_tune_dir(spec, runs_dir())
    return Tuner(spec, opts, out, log=log, model=model, index=index).run()
