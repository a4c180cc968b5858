"""CLI commands: tune. Registers its commands on `agent.cli.app`.

`replicate tune TARGET --budget N --trial-time 5m [--proposer optuna|llm|hybrid] [--papers/--no-papers] [--seeds K]
[--ab] [--executor ray --ray-address ...] [--storage URL]` is a thin layer over `agent.tune.tuner.run_tune` and
`agent.tune.ab.run_ab`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast, get_args

import typer

from agent import paths


def _open_index(index_dir: Path | None, required: bool):
    """The paper index, or None when there is none and papers were not asked for explicitly."""
    from agent.tune.target import TuneError

    path = index_dir or paths.index_dir()
    if not (path / "docs.sqlite").exists():
        if required:
            raise TuneError(f"--papers and --ab need a paper index at {path}: build one with `replicate index import`")
        return None
    from retrieval.index import PaperIndex

    index = PaperIndex(path)
    if len(index) == 0:
        if required:
            raise TuneError(f"the paper index at {path} is empty: add papers with `replicate index import`")
        return None
    return index


def tune_cmd(
    target: Annotated[
        Path | None, typer.Argument(help="Experiment folder (or script / tune.yaml / replication run dir).")
    ] = None,
    budget: Annotated[int, typer.Option("--budget", help="Number of trials after the baseline.")] = 20,
    trial_time: Annotated[str, typer.Option("--trial-time", help="Training time per trial: 90s, 5m, 1h.")] = "5m",
    proposer: Annotated[
        str | None, typer.Option("--proposer", help="optuna | llm | hybrid (default: hybrid with an LLM, else optuna).")
    ] = None,
    papers: Annotated[
        bool | None, typer.Option("--papers/--no-papers", help="Give the LLM the paper index as a tool.")
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per trial (close calls get more).")] = 1,
    baseline_seeds: Annotated[int, typer.Option("--baseline-seeds", help="Baseline repeats: the noise floor.")] = 3,
    max_seeds: Annotated[int, typer.Option("--max-seeds", help="Most seeds a close call may get.")] = 4,
    confidence: Annotated[float, typer.Option("--confidence", help="Confidence for keeping a change.")] = 0.95,
    min_delta: Annotated[float, typer.Option("--min-delta", help="Smallest improvement worth keeping.")] = 0.0,
    ab: Annotated[bool, typer.Option("--ab", help="Run papers and no-papers arms and compare them.")] = False,
    sampler: Annotated[str, typer.Option("--sampler", help="Optuna sampler: tpe | cmaes.")] = "tpe",
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL (default: SQLite in the tune dir).")
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="Optuna study name (share it across workers).")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local | ray.")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster address.")] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Trials running at once.")] = 1,
    llm: Annotated[str | None, typer.Option("--llm", help="LLM spec (default: REPLICATE_LLM).")] = None,
    llm_every: Annotated[int, typer.Option("--llm-every", help="hybrid: the LLM proposes every n-th trial.")] = 3,
    recheck_every: Annotated[
        int, typer.Option("--recheck-every", help="Re-measure the incumbent every n trials (machine drift).")
    ] = 0,
    index_dir: Annotated[Path | None, typer.Option("--index-dir", help="Paper index folder.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Tune dir (default: runs/tune-NAME-TIME).")] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Go on with the killed tune in DIR (also: the same --out again).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a baseline config key: key=value.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed.")] = 0,
    smoke: Annotated[bool, typer.Option("--smoke", help="Run every trial in SMOKE mode (seconds).")] = False,
) -> None:
    """Improve an experiment under a fixed budget per trial; keep only changes that beat the seed noise."""
    from agent.llm.seam import configured_spec
    from agent.tune.ab import ABResult, run_ab
    from agent.tune.proposers import ProposerName
    from agent.tune.target import TuneError, parse_assignments, parse_duration
    from agent.tune.tuner import TuneOptions, TuneResult, run_tune

    if resume is not None:
        from agent.tune.resume import holds_run

        if not holds_run(resume):
            raise TuneError(f"--resume {resume}: not a tune dir (no target.json and work/ in it)")
        out = resume
    elif target is None:
        raise TuneError("give the experiment to tune (a folder, script or tune.yaml), or --resume DIR")
    spec = configured_spec(llm)
    chosen = proposer or ("hybrid" if spec else "optuna")
    if chosen not in get_args(ProposerName):
        raise TuneError(f"--proposer must be optuna, llm or hybrid, got {chosen!r}")
    uses_llm = chosen != "optuna"
    index = _open_index(index_dir, required=bool(papers) or ab) if uses_llm and papers is not False or ab else None
    opts = TuneOptions(
        budget=budget,
        trial_time_s=parse_duration(trial_time),
        proposer=cast(ProposerName, chosen),  # checked against its Literal just above
        papers=index is not None,
        seeds=seeds,
        baseline_seeds=baseline_seeds,
        max_seeds=max_seeds,
        confidence=confidence,
        min_delta=min_delta,
        sampler=sampler,
        storage=storage,
        study_name=study,
        executor=executor,
        ray_address=ray_address,
        parallel=parallel,
        llm=spec,
        index_path=index_dir,
        llm_every=llm_every,
        recheck_every=recheck_every,
        overrides=parse_assignments(set_ or []),
        smoke=smoke,
        seed=seed,
    )
    result: TuneResult | ABResult
    source = cast(Path, target or out)  # one of them is given, checked above
    if ab:
        result = run_ab(source, opts, tune_dir=out, log=typer.echo, index=index)
    else:
        result = run_tune(source, opts, tune_dir=out, log=typer.echo, index=index)
    typer.echo(result.summary_line())


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `replicate` app (agent.cli.app calls it)."""
    app.command("tune")(tune_cmd)
