"""CLI commands: `replicate runs list | show ID | tail ID | compare ID ID | run SCRIPT`. Thin layer over mlexp.

The runs root is `agent.paths.runs_dir()` (the project's runs/), unless `--root` says otherwise. Listing and lookup
cover every registry.json up to three levels below it (a replication's runs/<ID>/experiments/ included).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
import yaml

from agent.paths import runs_dir
from mlexp.errors import ConfigError, RunDirError

runs_app = typer.Typer(help="Inspect and launch experiment runs (registry in <project>/runs/registry.json).")

ROOT_OPTION = typer.Option(None, "--root", help="runs root (default: <project>/runs)")


def _root(root: Path | None) -> Path:
    return Path(root) if root else runs_dir()


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@runs_app.command("list")
def list_cmd(root: Path | None = ROOT_OPTION, name: str | None = typer.Option(None, help="only runs of this name")):
    """One line per run: identity, name, kind, status/exit reason, duration, main metrics."""
    from mlexp import list_runs

    records = [r for r in list_runs(_root(root), nested=True) if name is None or r.name == name]
    if not records:
        typer.echo(f"no runs under {_root(root)}")
        return
    for r in records:
        metrics = " ".join(f"{k}={_fmt(v)}" for k, v in list(r.metrics.items())[:4])
        kind = "smoke" if r.smoke else "full"
        duration = f"{r.duration_s:.1f}s" if r.duration_s is not None else "-"
        typer.echo(
            f"{r.identity:<40} {r.name:<20} {kind:<5} {r.status}/{r.exit_reason or '-':<10} {duration:>8}  {metrics}"
        )


@runs_app.command("show")
def show_cmd(run_id: str = typer.Argument(..., help="identity or a unique prefix"), root: Path | None = ROOT_OPTION):
    """The run's record, post-run check and log digest."""
    from mlexp import show_run

    r = show_run(_root(root), run_id)
    typer.echo(f"run:        {r.identity} ({r.name}, {'smoke' if r.smoke else 'full'})")
    typer.echo(f"status:     {r.status} (exit reason {r.exit_reason}, code {r.exit_code})")
    typer.echo(f"run dir:    {r.run_dir}   (start with README.txt)")
    typer.echo(f"code:       {r.script} @ {r.code_commit}   config hash {r.config_hash[:12]}")
    typer.echo(f"time:       {r.started_at} -> {r.ended_at} ({r.duration_s}s)")
    if r.s_per_step is not None:
        typer.echo(
            f"progress:   {r.s_per_step:.3g} s/step, ETA after step 1: {r.eta_s}s, GPU: {r.gpu_memory or 'none'}"
        )
    typer.echo("metrics:    " + (", ".join(f"{k}={_fmt(v)}" for k, v in r.metrics.items()) or "none"))
    if r.check is not None:
        typer.echo(f"check:      {'OK' if r.check.ok else 'PROBLEMS'}")
        for p in r.check.problems:
            typer.echo(f"  problem: {p}")
    if r.error:
        typer.echo("error:\n" + r.error)
    typer.echo("digest:\n" + r.digest)


@runs_app.command("tail")
def tail_cmd(
    run_id: str = typer.Argument(..., help="identity or a unique prefix"),
    lines: int = typer.Option(40, "-n", "--lines", min=0, help="how many last lines (0: none, with -f: only new)"),
    follow: bool = typer.Option(False, "-f", "--follow", help="keep printing while the run is running"),
    root: Path | None = ROOT_OPTION,
):
    """The last lines of the run's console.log (everything it printed, timestamped)."""
    from mlexp import show_run

    r = show_run(_root(root), run_id)
    path = Path(r.run_dir) / "console.log"
    if not path.exists():
        path = Path(r.run_dir) / "training.log"
    if not path.exists():
        raise RunDirError(f"run {r.identity} has no console.log or training.log in {r.run_dir}")
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in text[len(text) - lines :] if lines else []:  # text[-0:] would be the whole log
        typer.echo(line)
    if follow:
        offset = path.stat().st_size
        while show_run(_root(root), run_id).status == "running":
            time.sleep(1.0)
            with open(path, encoding="utf-8", errors="replace") as handle:
                handle.seek(offset)
                chunk = handle.read()
                offset = handle.tell()
            if chunk:
                typer.echo(chunk, nl=False)


@runs_app.command("compare")
def compare_cmd(a: str, b: str, root: Path | None = ROOT_OPTION):
    """Two runs side by side: metrics, config differences, code commits."""
    from mlexp import show_run

    ra, rb = show_run(_root(root), a), show_run(_root(root), b)
    typer.echo(f"{'':<24} {ra.identity:<32} {rb.identity:<32}")
    typer.echo(f"{'status':<24} {ra.status:<32} {rb.status:<32}")
    typer.echo(f"{'code commit':<24} {ra.code_commit:<32} {rb.code_commit:<32}")
    typer.echo("metrics:")
    for key in dict.fromkeys([*ra.metrics, *rb.metrics]):
        va, vb = ra.metrics.get(key), rb.metrics.get(key)
        delta = f"{vb - va:+.4g}" if va is not None and vb is not None else ""
        typer.echo(f"  {key:<22} {_fmt(va):<32} {_fmt(vb):<32} {delta}")
    diffs = [k for k in sorted(set(ra.config) | set(rb.config)) if ra.config.get(k) != rb.config.get(k)]
    typer.echo("config differences:" + ("" if diffs else " none"))
    for key in diffs:
        typer.echo(f"  {key:<22} {json.dumps(ra.config.get(key)):<32} {json.dumps(rb.config.get(key)):<32}")


@runs_app.command("run")
def run_cmd(
    script: Path = typer.Argument(..., help="experiment script (its folder is the code dir)"),
    config: Path = typer.Option(..., "--config", help="config file, YAML or JSON"),
    name: str | None = typer.Option(None, help="experiment name (default: the script's folder name)"),
    smoke: bool = typer.Option(False, "--smoke", help="run the smoke config (SMOKE=1)"),
    seed: int = typer.Option(0, "--seed"),
    executor: str = typer.Option("local", "--executor", help="local or ray"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray dashboard URL, e.g. http://HOST:8265"),
    num_gpus: float | None = typer.Option(None, "--gpus", help="GPUs per run (Ray executor)"),
    force: bool = typer.Option(False, "--force", help="rerun even if an identical run completed"),
    no_network: bool = typer.Option(False, "--no-network", help="with --no-sandbox: cut network access (unshare -n)"),
    no_sandbox: bool = typer.Option(
        False, "--no-sandbox", help="no bubblewrap sandbox (a script you trust)"
    ),
    allow_network: bool = typer.Option(False, "--allow-network", help="give the sandboxed run the host's network"),
    data: list[Path] = typer.Option(
        [], "--data", help="a path the run may read (config paths are found)"
    ),
    wall_limit: float | None = typer.Option(None, "--wall-limit", help="seconds"),
    silence_limit: float = typer.Option(300, "--silence-limit", help="seconds without output before the kill"),
    memory_limit_mb: int | None = typer.Option(None, "--memory-limit-mb"),
    allow_env: list[str] = typer.Option([], "--allow-env", help="pass this environment variable through"),
    root: Path | None = ROOT_OPTION,
):
    """Run a script through the mlexp harness; prints its output live, then the run's summary."""
    import mlexp

    try:
        cfg = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {config} does not exist") from exc
    except UnicodeDecodeError as exc:  # a binary file passed as the config
        why = f"{exc.reason} at byte {exc.start}"
        raise ConfigError(f"config {config} is not UTF-8 text ({why}): give a YAML or JSON file") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {config}: {' '.join(str(exc).split())}") from exc
    record = mlexp.run_script(
        script, cfg if cfg is not None else {}, runs_root=_root(root), name=name or Path(script).resolve().parent.name,
        smoke=smoke, seed=seed, executor=executor, ray_address=ray_address, wall_limit_s=wall_limit,
        silence_limit_s=silence_limit, force=force, allow_env=allow_env, no_network=no_network,
        sandbox=not no_sandbox, allow_network=allow_network, data_paths=data,
        memory_limit_mb=memory_limit_mb, on_line=typer.echo, num_gpus=num_gpus,
    )  # fmt: skip
    tag = " (skipped: identical run already completed; --force reruns)" if record.skipped else ""
    typer.echo(f"{record.identity}: {record.status}/{record.exit_reason}{tag} -> {record.run_dir}")
    typer.echo("metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in record.metrics.items()))
    if record.check is not None and not record.check.ok:
        typer.echo("post-run check problems: " + "; ".join(record.check.problems))
    if record.status != "completed":
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `replicate` app (agent.cli.app calls it)."""
    app.add_typer(runs_app, name="runs")
