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
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd

from mlexp import atomic
from mlexp.checks import format_check, post_run_check
from mlexp.errors import ConfigError, MlexpError, RegistryError, RunDirError
from mlexp.executors import LaunchSpec, contract_env, make_executor
from mlexp.guard import HARNESS_DIR, fingerprint_changes, run_fingerprint
from mlexp.identity import code_commit, config_hash, make_identity, resolve_config
from mlexp.metrics import INTEGRITY_FILE, read_metrics
from mlexp.options import RunOptions, make_options, validate
from mlexp.record import ExitReason, RunRecord
from mlexp.registry import Registry, StabilityLog, process_start_time
from mlexp.rundir import build_views, render_readme, write_config
from mlexp.runner import ProcessResult, Redactor, scrubbed_env
from mlexp.sandbox import NO_SANDBOX, config_paths, find_bwrap
from mlexp.summary import summarize_log

REDACTED_FILES = ("training.log", "metrics.jsonl")
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


def default_device() -> str:
    """'cuda' when a GPU is visible and torch was built with CUDA, else 'cpu' (the script may still check)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0") in ("", "-1"):
        return "cpu"
    return "cuda" if _gpu_names() and _torch_cuda_version() != "none" else "cpu"


def _disk_error(exc: OSError, what: str) -> RunDirError:
    reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    where = f" ({exc.filename})" if exc.filename else ""
    return RunDirError(f"cannot {what}: {reason}{where}")


RESERVE = ".mlexp-reserve"  # ballast in the run dir, freed before the results are written (see _reserve)


def _reserve(run_dir: Path, registry: Path) -> None:
    """Set aside room on the run's disk for its end: a script that fills the disk still gets its failure and its
    cause written to record.json and the registry (both atomic rewrites, which need free space)."""
    size = max(1 << 20, 2 * (registry.stat().st_size if registry.exists() else 0))
    with open(run_dir / RESERVE, "wb") as handle:
        handle.write(b"\0" * size)


def _release(run_dir: Path) -> None:
    (run_dir / RESERVE).unlink(missing_ok=True)


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
        "exit_reason": record.exit_reason, "network": record.network, "sandbox": record.sandbox,
        "memory_limit": record.memory_limit, "runner_pid": record.runner_pid, **extra,
    }  # fmt: skip


def _error_text(lines: list[str], result_message: str) -> str:
    """The traceback if there is one (whole), else the last lines of output."""
    from mlexp.summary import extract_tracebacks

    blocks = extract_tracebacks(lines)
    if blocks:  # the harness's reason first (a kill, a full disk), then the script's own traceback
        return "\n".join([result_message, *blocks[-1]] if result_message else blocks[-1])
    tail = "\n".join(lines[-15:])
    return (result_message + ("\n" + tail if tail else "")).strip() or "the script failed without output"


@dataclass
class _Prepared:
    """A run ready to start: its resolved config, identity and where it goes."""

    script: Path
    config: dict
    runs_root: Path
    code_dir: Path
    digest: str
    commit: str
    identity: str
    registry: Registry
    name: str

    @property
    def run_dir(self) -> Path:
        return self.runs_root / self.name / self.identity


def run_script(script: Path, config: dict, options: RunOptions | None = None, /, **fields: Any) -> RunRecord:
    """Run `script` under the harness and return its RunRecord (see the module docstring for the lifecycle).

    `options` is a `RunOptions`; keyword `fields` build one or override its fields (`mlexp.options`).
    """
    opts = make_options(options, fields)
    prep = _prepare(validate(script, opts), config, opts)
    with prep.registry.claiming():  # the check and the `running` entry under one lock: one runner per identity
        earlier = prep.registry.get(prep.identity)
        if earlier is not None and earlier.status == "completed" and not opts.force:
            if opts.on_line:
                opts.on_line(f"[mlexp] {prep.identity} already completed at {earlier.ended_at}: skipped "
                             "(force=True reruns it)")  # fmt: skip
            return earlier.model_copy(update={"skipped": True})
        if earlier is not None and earlier.status == "running":
            raise RegistryError(
                f"run {prep.identity} is already running (pid {earlier.runner_pid} on {earlier.runner_host}); "
                "wait for it, or see `replicate runs list`"
            )
        free_mb = shutil.disk_usage(prep.runs_root).free / 2**20
        if free_mb < opts.min_free_mb:
            raise RunDirError(
                f"disk full: only {free_mb:.0f} MB free under {prep.runs_root} (need {opts.min_free_mb:.0f} MB)"
            )
        record = _new_record(prep, opts)
        _start(prep, record, opts)
    spec = _launch_spec(prep, record, opts)
    before = run_fingerprint(opts.protected_paths, spec.data_paths)
    t0 = time.monotonic()
    try:
        result = make_executor(opts.executor, opts.ray_address, **_executor_options(opts)).run(spec)
    except BaseException as exc:
        reason: ExitReason = "killed" if isinstance(exc, KeyboardInterrupt | SystemExit) else "error"
        _finish_failed(prep.registry, record, t0, f"{type(exc).__name__}: {exc}", reason)
        raise
    tampered = fingerprint_changes(before, run_fingerprint(opts.protected_paths, spec.data_paths))
    return _complete(prep, record, result, t0, opts, [f"changed during the run: {t}" for t in tampered])


def _prepare(script: Path, config: dict, opts: RunOptions) -> _Prepared:
    """Resolve the config, compute the identity, open the registry; refuse early what cannot run."""
    resolved = resolve_config(config, seed=opts.seed, smoke=opts.smoke)
    if opts.sandbox and opts.executor == "local":
        find_bwrap()  # one line saying how to install it, before anything is written
    runs_root = Path(opts.runs_root).expanduser().resolve()
    _mkdir_ok(runs_root)
    digest = config_hash(resolved)
    commit = code_commit(script.parent, exclude=[runs_root])
    prep = _Prepared(
        script=script, config=resolved, runs_root=runs_root, code_dir=script.parent, digest=digest, commit=commit,
        identity=make_identity(digest, commit), registry=Registry(runs_root / "registry.json"), name=opts.name,
    )  # fmt: skip
    for inside in (HARNESS_DIR, *[Path(p).resolve() for p in opts.protected_paths]):
        if prep.run_dir == inside or prep.run_dir in inside.parents:
            raise ConfigError(f"{inside} lies inside the run dir {prep.run_dir}, which the run can write; "
                              "put the runs root elsewhere")  # fmt: skip
    return prep


def _new_record(prep: _Prepared, opts: RunOptions) -> RunRecord:
    return RunRecord(
        identity=prep.identity, name=opts.name, status="running", run_dir=str(prep.run_dir), config=prep.config,
        config_hash=prep.digest, code_commit=prep.commit, started_at=_now(), env=environment(), script=str(prep.script),
        smoke=opts.smoke, seed=opts.seed, executor=opts.executor, runner_pid=os.getpid(),
        runner_host=socket.gethostname(), runner_start_time=process_start_time(os.getpid()),
        sandbox=None if opts.sandbox else NO_SANDBOX,
    )  # fmt: skip


def _start(prep: _Prepared, record: RunRecord, opts: RunOptions) -> None:
    """The run dir with its frozen config, metadata and first README; then the `running` registry entry."""
    run_dir = prep.run_dir
    try:
        _start_run_dir(run_dir, prep.config)
        atomic.write_json(run_dir / "metadata.json", _metadata(record, {}))
        atomic.write_text(run_dir / "README.txt", render_readme(record, opts.readme))
        record.save()
        _reserve(run_dir, prep.registry.path)
    except OSError as exc:
        raise _disk_error(exc, f"write the run dir {run_dir}") from exc
    prep.registry.put(record)  # registered only once its run dir exists: a failed start leaves the registry as it was


def _launch_spec(prep: _Prepared, record: RunRecord, opts: RunOptions) -> LaunchSpec:
    device = "cuda" if opts.executor == "ray" and opts.num_gpus else default_device()
    run_dir = prep.run_dir
    contract = contract_env(run_dir, run_dir / "config.json", smoke=opts.smoke, seed=opts.seed, device=device)
    env = scrubbed_env(opts.allow_env, contract)
    data = [Path(p).expanduser().resolve() for p in opts.data_paths if p]
    data += config_paths(prep.config, [Path.cwd(), prep.code_dir])

    def started(pid: int) -> None:
        record.child_pgid = pid  # the child leads its own process group: a reaper can kill it if we die
        try:
            prep.registry.put(record)
        except MlexpError:
            pass

    return LaunchSpec(
        script=prep.script, code_dir=prep.code_dir, run_dir=run_dir, env=env, config=prep.config,
        wall_limit_s=opts.wall_limit_s, silence_limit_s=opts.silence_limit_s, memory_limit_mb=opts.memory_limit_mb,
        no_network=opts.no_network, on_line=opts.on_line,
        redact=Redactor(extra=[os.environ[k] for k in opts.allow_env if os.environ.get(k)]), on_start=started,
        exclude=[prep.runs_root], identity=prep.identity, max_eta_s=opts.max_eta_s, sandbox=opts.sandbox,
        allow_network=opts.allow_network, data_paths=sorted(set(data)),
    )  # fmt: skip


def _executor_options(opts: RunOptions) -> dict[str, Any]:
    return {"num_gpus": opts.num_gpus} if opts.executor == "ray" else {}


def _mkdir_ok(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, f"create the runs root {path}") from exc
    if not os.access(path, os.W_OK):
        raise RunDirError(f"cannot write to the runs root {path}: permission denied")


def _finish_failed(registry: Registry, record: RunRecord, t0: float, error: str, reason: ExitReason) -> None:
    _release(Path(record.run_dir))
    record.status, record.exit_reason, record.error = "failed", reason, error
    record.ended_at, record.duration_s = _now(), round(time.monotonic() - t0, 3)
    try:
        record.save()
    except OSError:
        pass
    try:
        registry.put(record)
    except MlexpError:
        pass


def _fill_from_result(record: RunRecord, result: ProcessResult, t0: float) -> None:
    record.exit_code, record.exit_reason = result.exit_code, result.exit_reason
    record.eta_s, record.s_per_step, record.gpu_memory = result.eta_s, result.s_per_step, result.gpu_memory
    record.network, record.sandbox, record.memory_limit = result.network, result.sandbox, result.memory_limit
    record.ended_at, record.duration_s = _now(), round(time.monotonic() - t0, 3)
    record.status = "completed" if result.exit_reason == "ok" else "failed"
    digest_head = f"exit: {result.exit_reason} (code {result.exit_code}) {result.message}".strip()
    record.digest = digest_head + "\n" + summarize_log("\n".join(result.tail))
    if record.status == "failed":
        record.error = _error_text(result.tail, result.message)


def _defuse_links(run_dir: Path) -> list[str]:
    """Remove symlinks the script left that point outside its run dir: the harness writes into the run dir after
    the run, outside the sandbox, and must never follow a link out of it."""
    removed = []
    root = run_dir.resolve()
    for path in sorted(run_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink():
            target = Path(os.path.realpath(path))
            if target != root and root not in target.parents:
                path.unlink()
                removed.append(f"symlink {path.relative_to(run_dir)} -> {target} removed (points outside the run dir)")
    return removed


def _record_metrics(record: RunRecord, result: ProcessResult, run_dir: Path, found: list[str]) -> None:
    """The harness's metrics (first final block, mlexp.metrics), written as strict JSON with what was wrong."""
    reading = read_metrics(result.final_lines, run_dir / "metrics.json")
    record.metrics, record.invalid_metrics = reading.metrics, reading.invalid
    atomic.write_json(run_dir / "metrics.json", record.metrics)
    atomic.write_json(run_dir / INTEGRITY_FILE, {"source": reading.source, "invalid": reading.invalid,
                                                 "problems": [*reading.problems, *found]})  # fmt: skip


def _redact_files(run_dir: Path, redact: Callable[[str], str]) -> None:
    """Second line of defence: the script-written logs get the same redaction as console.log."""
    for name in REDACTED_FILES:
        path = run_dir / name
        if path.is_file() and not path.is_symlink():
            text = path.read_text(encoding="utf-8", errors="replace")
            clean = redact(text)
            if clean != text:
                atomic.write_text(path, clean)


def _write_outputs(prep: _Prepared, record: RunRecord, opts: RunOptions) -> None:
    run_dir = prep.run_dir
    build_views(run_dir)
    record.check = post_run_check(run_dir)
    atomic.write_text(run_dir / "diagnostics" / "post_run_check.txt", format_check(record.check))
    atomic.write_text(run_dir / "diagnostics" / "log_digest.txt", record.digest + "\n")
    index_rows = None
    if (run_dir / "groups" / "_index.csv").exists():
        index_rows = pd.read_csv(run_dir / "groups" / "_index.csv").to_dict("records")
    others = [r for r in prep.registry.all() if r.name == record.name and r.identity != record.identity]
    atomic.write_text(run_dir / "README.txt", render_readme(record, opts.readme, index_rows=index_rows, others=others))
    atomic.write_json(run_dir / "metadata.json", _metadata(record, {"notes": opts.notes}))
    record.save()


def _complete(prep: _Prepared, record: RunRecord, result: ProcessResult, t0: float, opts: RunOptions,
              tampered: list[str]) -> RunRecord:  # fmt: skip
    run_dir = prep.run_dir
    _release(run_dir)  # the room set aside at the start: results and the record fit even when the script filled it
    _fill_from_result(record, result, t0)
    try:
        found = [*_defuse_links(run_dir), *tampered]
        _record_metrics(record, result, run_dir, found)
        _redact_files(run_dir, Redactor(extra=[os.environ[k] for k in opts.allow_env if os.environ.get(k)]))
        _write_outputs(prep, record, opts)
    except (OSError, ValueError) as exc:
        why = f"writing the run's results failed: {exc}"
        _finish_failed(prep.registry, record, t0, why, record.exit_reason or "error")
        if isinstance(exc, OSError):
            raise _disk_error(exc, f"write the results of run {record.identity}") from exc
        raise RunDirError(f"cannot build the outputs of run {record.identity}: {exc}") from exc
    prep.registry.put(record)
    try:
        StabilityLog(prep.runs_root.parent / "runs.yaml").upsert(record, notes=opts.notes)
    except RegistryError as exc:
        print(f"[mlexp] warning: {exc}", file=sys.stderr)
    return record


def show_run(runs_root: Path, identity_prefix: str) -> RunRecord:
    """The run whose identity starts with `identity_prefix`, in runs_root's registry or one nested below it."""
    from mlexp.registry import find_run

    return find_run(runs_root, identity_prefix)


def smoke_then_full(script: Path, config: dict, options: RunOptions | None = None, /,
                    **fields: Any) -> tuple[RunRecord, RunRecord | None]:  # fmt: skip
    """§9: the smoke config first; the full run only if the smoke run completed and its post-run check passed.

    Returns (smoke, full); `full` is None when the smoke run failed or its check found problems (look at
    smoke.check.problems and smoke.digest before scaling up). Takes run_script's options.
    """
    fields.pop("smoke", None)
    opts = make_options(options, fields)
    smoke = run_script(script, config, opts, smoke=True)
    if smoke.status != "completed" or (smoke.check is not None and not smoke.check.ok):
        return smoke, None
    return smoke, run_script(script, config, opts, smoke=False)


def run_series(
    script: Path,
    configs: Sequence[dict],
    *,
    metric: str,
    direction: str = "max",
    baseline: float | None = None,
    noise: float = 0.0,
    target: float | None = None,
    options: RunOptions | None = None,
    **fields: Any,
) -> tuple[list[RunRecord], Any]:
    """§14–15: run configs (smallest first) one at a time to completion, stopping the series early by the rule
    of `mlexp.early_stopping.series_should_stop`. Returns (records, last decision)."""
    from mlexp.early_stopping import SeriesDecision, series_should_stop

    records: list[RunRecord] = []
    values: list[float] = []
    decision = SeriesDecision(False, "continue", "no config run yet")
    opts = make_options(options, fields)
    for config in configs:
        record = run_script(script, config, opts)
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
