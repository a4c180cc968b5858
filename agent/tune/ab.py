"""`replicate tune --ab`: does paper access help? The same tune with and without the paper index, compared."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.tune.stats import Difference, diff_ci
from agent.tune.target import TuneError, TuneTarget, load_target
from agent.tune.tuner import TuneOptions, Tuner, TuneResult, default_tune_dir
from mlexp import atomic

if TYPE_CHECKING:  # langchain and the paper index cost seconds to import; only their types are needed here
    from langchain_core.language_models import BaseChatModel

    from retrieval.index import PaperIndex


@dataclass
class ABResult:
    tune_dir: Path
    papers: TuneResult
    no_papers: TuneResult
    eval_seeds: list[int]
    papers_values: list[float]
    no_papers_values: list[float]
    difference: Difference  # no-papers minus papers for a 'min' metric (positive = papers better)
    report: Path

    def summary_line(self) -> str:
        return (
            f"A/B {self.papers.metric}: papers arm better by {self.difference.describe()} "
            f"on fresh seeds {self.eval_seeds}; report {self.report}"
        )


def _ab_dir(spec: TuneTarget, tune_dir: Path | None) -> Path:
    from agent.paths import runs_dir

    if tune_dir:
        return Path(tune_dir)
    default = default_tune_dir(spec, runs_dir())
    return default.with_name(default.name.replace("tune-", "tune-ab-", 1))


def _ab_markdown(
    spec: TuneTarget,
    opts: TuneOptions,
    results: dict[str, TuneResult],
    values: dict[str, list[float]],
    seeds: list[int],
    diff: Difference,
) -> str:
    lines = [
        f"## A/B: paper access in `replicate tune {spec.name}`",
        "",
        f"Both arms: proposer {opts.proposer}, budget {opts.budget} trials x {opts.trial_time_s:g} s, "
        f"{opts.seeds} seed(s) per trial, sampler seed {opts.seed}. Final incumbents re-measured on seeds {seeds}.",
        "",
        "| arm | tuned (in-search) | re-measured mean | values |",
        "|---|---|---|---|",
    ]
    for arm in ("papers", "no-papers"):
        r = results[arm]
        lines.append(
            f"| {arm} | {r.best_mean:.4g} | {statistics.fmean(values[arm]):.4g} | "
            f"{', '.join(f'{v:.4g}' for v in values[arm])} |"
        )
    lines += [
        "",
        f"Papers arm better by {diff.describe()} ({spec.metric.name}, {spec.metric.direction}imized).",
        "Positive = the papers arm's incumbent is better; a CI that spans 0 means no detectable difference.",
    ]
    return "\n".join(lines) + "\n"


def run_ab(
    target: str | Path | TuneTarget,
    opts: TuneOptions,
    *,
    tune_dir: Path | None = None,
    log: Callable[[str], None] = print,
    model: BaseChatModel | None = None,
    index: PaperIndex | None = None,
    eval_seeds: int | None = None,
) -> ABResult:
    """The controlled experiment: the same tune with and without the paper index, identical budget, seeds and
    sampler seed; each arm's final incumbent is then re-measured on the same fresh seeds and the difference of means
    is reported with a Welch confidence interval."""
    if opts.proposer == "optuna":
        raise TuneError("--ab compares paper access for an LLM proposer: use --proposer llm or hybrid")
    if index is None:
        raise TuneError("--ab needs a paper index for the papers arm (build one with `replicate index import`)")
    spec = target if isinstance(target, TuneTarget) else load_target(target, overrides=opts.overrides)
    root = _ab_dir(spec, tune_dir)
    results, tuners = {}, {}
    for arm, papers in (("papers", True), ("no-papers", False)):
        log(f"[tune] A/B arm {arm}")
        arm_opts = replace(opts, papers=papers, study_name=f"{opts.study_name or spec.name}-{arm}")
        tuners[arm] = Tuner(spec, arm_opts, root / arm, log=log, model=model, index=index if papers else None)
        results[arm] = tuners[arm].run()
    seeds = list(range(1000, 1000 + (eval_seeds or max(3, opts.baseline_seeds))))
    values = {arm: tuners[arm].evaluate_incumbent(seeds) for arm in tuners}
    a, b = values["papers"], values["no-papers"]
    if spec.metric.direction == "min":
        a, b = [-v for v in a], [-v for v in b]  # report "papers better by" as a positive number either way
    diff = diff_ci(a, b, opts.confidence)
    report = atomic.write_text(root / "ab.md", _ab_markdown(spec, opts, results, values, seeds, diff))
    arms = {k: str(v.tune_dir) for k, v in results.items()}
    summary = {"eval_seeds": seeds, "values": values, "difference": asdict(diff), "arms": arms}
    atomic.write_json(root / "ab.json", summary)
    return ABResult(
        tune_dir=root,
        papers=results["papers"],
        no_papers=results["no-papers"],
        eval_seeds=seeds,
        papers_values=values["papers"],
        no_papers_values=values["no-papers"],
        difference=diff,
        report=report,
    )
