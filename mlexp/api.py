"""`run_script`: the experiment lifecycle of §11 around one script run.

prepare  → resolve and validate the config, compute identity = config hash + code commit, check the registry:
           a completed identical run is skipped (returned with skipped=True) unless force=True.
start    → create runs_root/<name>/<identity>/, freeze config.yaml/config.json, write metadata.json and a first
           README.txt, register the run as `running` (with the runner's pid/host so a killed runner is detected).
execute  → local subprocess or Ray job, with the run contract in the environment, watchdog and containment.
complete → parse the final metrics block, build groups/ and diagnostics/, run the post-run check, write the log
           digest, README.txt, metadata.json, record.json; update the registry and runs.yaml.

Layout: `runs_root/registry.json` (all runs of the project), `runs_root/<name>/<identity>/` (one run),
`runs_root.parent/runs.yaml` (the stability log, in the project dir).
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd

from mlexp import atomic
from mlexp.checks import format_check, post_run_check
from mlexp.errors import ConfigError, MlexpError, RegistryError, RunDirError, ScriptError
from mlexp.executors import LaunchSpec, contract_env, make_executor
from mlexp.identity import code_commit, config_hash, make_identity, resolve_config
from mlexp.record import RunRecord
from mlexp.registry import Registry, StabilityLog, process_start_time
from mlexp.rundir import build_views, render_readme, write_config
from mlexp.runner import Redactor, scrubbed_env
from mlexp.summary import final_metrics, summarize_log

NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
KEY_LIBRARIES = ("torch", "transformers", "vllm", "scikit-learn", "numpy", "pandas", "ray")


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def _torch_cuda_version() -> str:
    """torch's CUDA build, read from torch/version.py without importing torch (a multi-second import)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "none"
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        match = re.search(r"^cuda[^=]*=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.MULTILINE)
    except OSError:
        return "none"
    return match.group(1) if match else "none"


@functools.lru_cache(maxsize=1)
def _gpu_names() -> tuple[str, ...]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ()
    try:
        proc = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(line.strip() for line in proc.stdout.splitlines() if line.strip()) if proc.returncode == 0 else ()


def environment() -> dict[str, Any]:
    """Host, python, key library versions, CUDA and GPU name: what runs.yaml needs to judge stability."""
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "server": socket.gethostname(),
        "platform": platform.platform(),
    }
    env["python"] = platform.python_version()
    for lib in KEY_LIBRARIES:
        try:
            env["sklearn" if lib == "scikit-learn" else lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            continue
    gpus = _gpu_names()
    env["gpu"] = ", ".join(gpus) if gpus else "none"
    env["cuda"] = _torch_cuda_version()
    return env


def _device() -> str:
    """'cuda' when a GPU is visible and torch was built with CUDA, else 'cpu' (the script may still check)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0") in ("", "-1"):
        return "cpu"
    return "cuda" if _gpu_names() and _torch_cuda_version() != "none" else "cpu"


def _disk_error(exc: OSError, what: str) -> RunDirError:
    reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    where = f" ({exc.filename})" if exc.filename else ""
    return RunDirError(f"cannot {what}: {reason}{where}")


def _validate(script: Path, name: str, executor: str, ray_address: str | None, limits: dict) -> Path:
    script = Path(script).expanduser()
    if not script.exists():
        raise ScriptError(f"experiment script {script} does not exist")
    if not script.is_file():
        raise ScriptError(f"experiment script {script} is not a file")
    if not NAME_OK.match(name or ""):
        raise ConfigError(f"run name {name!r} must be 1-100 characters of letters, digits, '.', '_' or '-'")
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    if executor == "ray" and not ray_address:
        raise ConfigError("executor 'ray' needs ray_address (the dashboard URL, e.g. http://127.0.0.1:8265)")
    for key, value in limits.items():
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise ConfigError(f"{key} must be a positive number, got {value!r}")
    return script.resolve()


def _start_run_dir(run_dir: Path, config: dict) -> None:
    """Fresh run dir; an earlier attempt at the same identity (failed, or forced) is kept beside it, renamed."""
    if run_dir.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        os.replace(run_dir, run_dir.with_name(f"{run_dir.name}.attempt-{stamp}"))
    run_dir.mkdir(parents=True)
    write_config(run_dir, config)


def _metadata(record: RunRecord, extra: dict) -> dict:
    return {
        "identity": record.identity, "name": record.name, "status": record.status,
        "git": {"code_commit": record.code_commit, "dirty": "+" in record.code_commit},
        "config_hash": record.config_hash, "script": record.script, "executor": record.executor,
        "host": record.env.get("host"), "env": record.env, "started_at": record.started_at,
        "ended_at": record.ended_at, "duration_s": record.duration_s, "exit_code": record.exit_code,
        "exit_reason": record.exit_reason, "network": record.network, "runner_pid": record.runner_pid, **extra,
    }  # fmt: skip


def _parse_metrics(lines: list[str], run_dir: Path) -> dict[str, float]:
    """Final `key: value` block from the output; else the metrics.json the script wrote itself."""
    metrics: dict[str, float] = {}
    for key, value in final_metrics(lines).items():
        try:
            metrics[key] = float(value)
        except ValueError:
            continue
    if not metrics and (run_dir / "metrics.json").exists():
        try:
            raw = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
            metrics = {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        except (OSError, ValueError):
            pass
    return metrics


def _error_text(lines: list[str], result_message: str) -> str:
    """The traceback if there is one (whole), else the last lines of output."""
    from mlexp.summary import extract_tracebacks

    blocks = extract_tracebacks(lines)
    if blocks:
        return "\n".join(blocks[-1])
    tail = "\n".join(lines[-15:])
    return (result_message + ("\n" + tail if tail else "")).strip() or "the script failed without output"


def run_script(
    script: Path,
    config: dict,
    *,
    runs_root: Path,
    name: str,
    smoke: bool = False,
    seed: int = 0,
    executor: str = "local",
    ray_address: str | None = None,
    wall_limit_s: float | None = None,
    silence_limit_s: float = 300,
    force: bool = False,
    allow_env: Sequence[str] = (),
    no_network: bool = False,
    memory_limit_mb: int | None = None,
    readme: dict | None = None,
    on_line: Callable[[str], None] | None = None,
    num_gpus: float | None = None,
    notes: str | None = None,
    max_eta_s: float | None = None,
    min_free_mb: float = 100.0,
) -> RunRecord:
    """Run `script` under the harness and return its RunRecord (see the module docstring for the lifecycle).

    Beyond the contract: `num_gpus` (GPUs requested per run on Ray), `notes` (into runs.yaml), `max_eta_s` (kill
    the run as soon as a progress line's ETA exceeds it, §12: "if the ETA is unreasonable, kill immediately"),
    `min_free_mb` (pre-flight: refuse to start with less free disk under the runs root).
    """
    limits = {"wall_limit_s": wall_limit_s, "silence_limit_s": silence_limit_s, "memory_limit_mb": memory_limit_mb,
              "max_eta_s": max_eta_s}  # fmt: skip
    script = _validate(script, name, executor, ray_address, limits)
    resolved = resolve_config(config, seed=seed, smoke=smoke)
    runs_root = Path(runs_root).expanduser().resolve()
    code_dir = script.parent
    digest = config_hash(resolved)
    commit = code_commit(code_dir, exclude=[runs_root])
    identity = make_identity(digest, commit)
    registry = Registry(runs_root / "registry.json") if _mkdir_ok(runs_root) else None
    assert registry is not None
    earlier = registry.get(identity)
    if earlier is not None and earlier.status == "completed" and not force:
        if on_line:
            on_line(f"[mlexp] {identity} already completed at {earlier.ended_at}: skipped (force=True reruns it)")
        return earlier.model_copy(update={"skipped": True})
    if earlier is not None and earlier.status == "running":
        raise RegistryError(f"run {identity} is already running (pid {earlier.runner_pid} on {earlier.runner_host})")

    free_mb = shutil.disk_usage(runs_root).free / 2**20
    if free_mb < min_free_mb:
        raise RunDirError(f"disk full: only {free_mb:.0f} MB free under {runs_root} (need {min_free_mb:.0f} MB)")
    run_dir = runs_root / name / identity
    record = RunRecord(
        identity=identity, name=name, status="running", run_dir=str(run_dir), config=resolved, config_hash=digest,
        code_commit=commit, started_at=_now(), env=environment(), script=str(script), smoke=smoke, seed=seed,
        executor=executor, runner_pid=os.getpid(), runner_host=socket.gethostname(),
        runner_start_time=process_start_time(os.getpid()),
    )  # fmt: skip
    redact = Redactor(extra=[os.environ[k] for k in allow_env if os.environ.get(k)])
    try:
        _start_run_dir(run_dir, resolved)
        atomic.write_json(run_dir / "metadata.json", _metadata(record, {}))
        atomic.write_text(run_dir / "README.txt", render_readme(record, readme))
        record.save()
    except OSError as exc:
        raise _disk_error(exc, f"write the run dir {run_dir}") from exc
    registry.put(record)  # registered only once its run dir exists: a failed start leaves the registry as it was

    device = "cuda" if executor == "ray" and num_gpus else _device()
    env = scrubbed_env(allow_env, contract_env(run_dir, run_dir / "config.json", smoke=smoke, seed=seed, device=device))

    def started(pid: int) -> None:
        record.child_pgid = pid  # the child leads its own process group: a reaper can kill it if we die
        try:
            registry.put(record)
        except MlexpError:
            pass

    spec = LaunchSpec(
        script=script, code_dir=code_dir, run_dir=run_dir, env=env, config=resolved, wall_limit_s=wall_limit_s,
        silence_limit_s=silence_limit_s, memory_limit_mb=memory_limit_mb, no_network=no_network,
        on_line=on_line, redact=redact, on_start=started, exclude=[runs_root], identity=identity, max_eta_s=max_eta_s,
    )  # fmt: skip
    t0 = time.monotonic()
    options = {"num_gpus": num_gpus} if executor == "ray" else {}
    try:
        result = make_executor(executor, ray_address, **options).run(spec)
    except BaseException as exc:
        reason = "killed" if isinstance(exc, KeyboardInterrupt | SystemExit) else "error"
        _finish_failed(registry, record, t0, f"{type(exc).__name__}: {exc}", reason)
        raise
    return _complete(registry, record, result, t0, readme, runs_root, notes)


def _mkdir_ok(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, f"create the runs root {path}") from exc
    if not os.access(path, os.W_OK):
        raise RunDirError(f"cannot write to the runs root {path}: permission denied")
    return True


def _finish_failed(registry: Registry, record: RunRecord, t0: float, error: str, reason: str) -> None:
    record.status, record.exit_reason, record.error = "failed", reason, error  # type: ignore[assignment]
    record.ended_at, record.duration_s = _now(), round(time.monotonic() - t0, 3)
    try:
        record.save()
    except OSError:
        pass
    try:
        registry.put(record)
    except MlexpError:
        pass


def _complete(registry, record, result, t0, readme, runs_root: Path, notes: str | None) -> RunRecord:
    run_dir = Path(record.run_dir)
    lines = result.tail
    record.exit_code, record.exit_reason = result.exit_code, result.exit_reason
    record.eta_s, record.s_per_step, record.gpu_memory = result.eta_s, result.s_per_step, result.gpu_memory
    record.network = result.network
    record.ended_at, record.duration_s = _now(), round(time.monotonic() - t0, 3)
    record.status = "completed" if result.exit_reason == "ok" else "failed"
    digest_head = f"exit: {result.exit_reason} (code {result.exit_code}) {result.message}".strip()
    record.digest = digest_head + "\n" + summarize_log("\n".join(lines))
    if record.status == "failed":
        record.error = _error_text(lines, result.message)
    try:
        record.metrics = _parse_metrics(lines, run_dir)
        if record.metrics or not (run_dir / "metrics.json").exists():
            atomic.write_json(run_dir / "metrics.json", record.metrics)
        build_views(run_dir)
        record.check = post_run_check(run_dir)
        atomic.write_text(run_dir / "diagnostics" / "post_run_check.txt", format_check(record.check))
        atomic.write_text(run_dir / "diagnostics" / "log_digest.txt", record.digest + "\n")
        index_rows = None
        if (run_dir / "groups" / "_index.csv").exists():
            index_rows = pd.read_csv(run_dir / "groups" / "_index.csv").to_dict("records")
        others = [r for r in registry.all() if r.name == record.name and r.identity != record.identity]
        atomic.write_text(run_dir / "README.txt", render_readme(record, readme, index_rows=index_rows, others=others))
        atomic.write_json(run_dir / "metadata.json", _metadata(record, {"notes": notes}))
        record.save()
    except (OSError, ValueError) as exc:
        _finish_failed(registry, record, t0, f"writing the run's results failed: {exc}", record.exit_reason or "error")
        if isinstance(exc, OSError):
            raise _disk_error(exc, f"write the results of run {record.identity}") from exc
        raise RunDirError(f"cannot build the outputs of run {record.identity}: {exc}") from exc
    registry.put(record)
    try:
        StabilityLog(runs_root.parent / "runs.yaml").upsert(record, notes=notes)
    except RegistryError as exc:
        print(f"[mlexp] warning: {exc}", file=sys.stderr)
    return record


def show_run(runs_root: Path, identity_prefix: str) -> RunRecord:
    """The run whose identity starts with `identity_prefix`, in runs_root's registry or one nested below it."""
    from mlexp.registry import find_run

    return find_run(runs_root, identity_prefix)


def smoke_then_full(script: Path, config: dict, **kwargs: Any) -> tuple[RunRecord, RunRecord | None]:
    """§9: the smoke config first; the full run only if the smoke run completed and its post-run check passed.

    Returns (smoke, full); `full` is None when the smoke run failed or its check found problems (look at
    smoke.check.problems and smoke.digest before scaling up). Takes run_script's keyword arguments.
    """
    kwargs.pop("smoke", None)
    smoke = run_script(script, config, smoke=True, **kwargs)
    if smoke.status != "completed" or (smoke.check is not None and not smoke.check.ok):
        return smoke, None
    return smoke, run_script(script, config, smoke=False, **kwargs)


def run_series(
    script: Path,
    configs: Sequence[dict],
    *,
    metric: str,
    direction: str = "max",
    baseline: float | None = None,
    noise: float = 0.0,
    target: float | None = None,
    **kwargs: Any,
) -> tuple[list[RunRecord], Any]:
    """§14–15: run configs (smallest first) one at a time to completion, stopping the series early by the rule
    of `mlexp.early_stopping.series_should_stop`. Returns (records, last decision)."""
    from mlexp.early_stopping import SeriesDecision, series_should_stop

    records: list[RunRecord] = []
    values: list[float] = []
    decision = SeriesDecision(False, "continue", "no config run yet")
    for config in configs:
        record = run_script(script, config, **kwargs)
        records.append(record)
        if record.status != "completed" or metric not in record.metrics:
            why = record.error.splitlines()[-1] if record.error else f"no metric {metric!r}"
            decision = SeriesDecision(True, "investigate", f"config {len(records)} did not complete: {why}")
            break
        values.append(record.metrics[metric])
        decision = series_should_stop(values, direction=direction, baseline=baseline, noise=noise, target=target)  # type: ignore[arg-type]
        if decision.stop:
            break
    return records, decision
