"""Resuming a killed `replicate tune`: the tune dir already holds everything a run needs to go on.

`target.json` (the target and the options it ran with, the baseline commit), the ledger (`tune.parquet`, written on
every row), the work repo (the `tune` branch is the incumbent; every trial's commit is tagged) and the Optuna study
(`optuna.db`) all persist. A trial is finished exactly when its ledger row exists: a finished trial is never run
again; a trial that was running when the process died has no row, so it runs again, from a clean worktree (its stale
worktree and tag are dropped) and, for Optuna, as a new ask (the dead one is told FAIL so the sampler forgets it).

What resume does not restore: knobs that a kept LLM code edit introduced (they are not in the ledger), so later
trials tune only the declared knobs. Options that change what the measurements mean (trial time, seeds, proposer,
sampler, smoke, --set) must equal the stored ones; the budget may grow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.codedir import git
from agent.tune.stats import Incumbent
from agent.tune.target import TuneError, TuneTarget

if TYPE_CHECKING:
    from agent.tune.tuner import TuneOptions, Tuner

# Options a resumed run may change: how many more trials, and where / how wide they run.
FREE = {"budget", "parallel", "executor", "ray_address", "llm", "index_path", "papers"}


def holds_run(tune_dir: Path) -> bool:
    return (Path(tune_dir) / "target.json").is_file() and (Path(tune_dir) / "work").is_dir()


def stored(tune_dir: Path) -> dict[str, Any]:
    path = Path(tune_dir) / "target.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TuneError(f"cannot resume {tune_dir}: {path} is unreadable ({exc})") from exc
    if not isinstance(data, dict) or not {"target", "options", "baseline_commit"} <= set(data):
        raise TuneError(f"cannot resume {tune_dir}: {path} is not a tune run's target.json")
    return data


def stored_target(tune_dir: Path) -> TuneTarget:
    return TuneTarget.model_validate(stored(tune_dir)["target"])


def check_options(tune_dir: Path, opts: TuneOptions) -> None:
    """Refuse a resume whose options would change what the ledger's measurements mean."""
    before = stored(tune_dir)["options"]
    now = opts.public()
    changed = sorted(k for k in now if k not in FREE and k in before and _norm(before[k]) != _norm(now[k]))
    if changed:
        shown = ", ".join(f"{k} {before[k]!r} -> {now[k]!r}" for k in changed)
        raise TuneError(
            f"cannot resume {tune_dir} with other settings ({shown}): rerun with the original options "
            "(only --budget, --parallel, --executor and --llm may change), or choose another --out"
        )


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))  # as stored in target.json (tuples as lists, paths as str)


def restore(tuner: Tuner) -> str:
    """Load the ledger, the incumbent and the finished trials into `tuner`; clean what a killed trial left.

    Returns the baseline commit. After it, `tuner.done` holds the finished trial numbers, and the baseline is
    measured again only when its row is missing."""
    from agent.tune.ledger import Ledger

    data = stored(tuner.tune_dir)
    base_commit = str(data["baseline_commit"])
    if (tuner.tune_dir / "tune.parquet").is_file():
        tuner.ledger.rows = Ledger.load(tuner.tune_dir).rows
    rows = tuner.ledger.rows
    tuner.done = {r.trial for r in rows if r.kind != "recheck"}
    baseline = next((r for r in rows if r.kind == "baseline" and r.verdict == "baseline"), None)
    tuner.incumbent = Incumbent(commit=base_commit, config=tuner.baseline_config())
    if baseline is None:
        tuner.done.discard(0)
        tuner.ledger.rows = [r for r in rows if r.trial != 0]  # a failed baseline row is measured again
    else:
        tuner.incumbent.values = list(baseline.values)
    for row in rows:
        if row.verdict == "keep":
            tuner.incumbent = Incumbent(commit=row.commit, config=row.config, values=list(row.values), trial=row.trial)
        elif row.verdict == "recheck" and row.values:
            match = re.search(r"trial (\d+)", row.change)
            if match and int(match.group(1)) == tuner.incumbent.trial:
                tuner.incumbent.values.append(row.values[0])
                tuner.add_recheck(tuner.incumbent.trial, row.values[0])
    _clean_work(tuner, base_commit)
    _forget_dead_asks(tuner)
    return base_commit


def _clean_work(tuner: Tuner, base_commit: str) -> None:
    """The work repo back at the incumbent; no worktree or tag of an unfinished trial left behind."""
    ws = tuner.ws
    git(ws.repo, "reset", "-q", "--hard", tuner.incumbent.commit or base_commit)
    if ws.trials.is_dir():
        for folder in sorted(ws.trials.iterdir()):
            if (folder / "code").exists():
                from agent.tune.workspace import TrialTree

                ws.close_trial(TrialTree(folder.name, folder / "code", base_commit))
    git(ws.repo, "worktree", "prune")
    finished = {f"trial-{n:03d}" for n in tuner.done}
    for tag in git(ws.repo, "tag", "--list", "trial-*").split():
        if tag not in finished:
            git(ws.repo, "tag", "-d", tag)


def _forget_dead_asks(tuner: Tuner) -> None:
    """Optuna trials asked by the killed process and never told: FAIL, so the sampler does not wait on them."""
    import optuna

    studies = [getattr(tuner.proposer, "study", None), getattr(getattr(tuner.proposer, "optuna", None), "study", None)]
    for study in [s for s in studies if s is not None]:
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
