"""Where a run executes: a local subprocess (default) or a Ray cluster through the Ray Jobs API.

Both produce the same run directory. The Ray executor uploads the code dir as the job's working dir (plus the mlexp
package itself as a py_module, so the cluster needs no install of it), requests GPUs per run with
`entrypoint_num_gpus`, tails the job's logs live, and on the worker runs the very same runner (watchdog, limits,
scrubbed env, and the same bubblewrap sandbox, which must then be installed on the worker) through
`mlexp._ray_entry`. The worker's run dir comes back to the driver through the job log as a
base64 tarball between markers: no shared filesystem and no extra port are needed, only the dashboard address.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlexp import atomic
from mlexp.errors import ExecutorError
from mlexp.metrics import final_metric_lines
from mlexp.record import ExitReason
from mlexp.runner import ProcessResult, Redactor, run_process
from mlexp.sandbox import SandboxPolicy

PACKAGE_DIR = Path(__file__).resolve().parent  # shipped to the worker as a py_module

RESULT_BEGIN = "@@MLEXP-RESULT-BEGIN@@"
RESULT_END = "@@MLEXP-RESULT-END@@"
EXIT_MARK = "@@MLEXP-EXIT@@"
# The worker's paths differ from ours: these contract variables are set by the entry on the worker.
WORKER_LOCAL = {"RUN_DIR", "RUN_CONFIG", "PATH", "HOME", "VIRTUAL_ENV", "TMPDIR", "LD_LIBRARY_PATH", "CUDA_HOME"}


@dataclass
class LaunchSpec:
    script: Path
    code_dir: Path
    run_dir: Path
    env: dict[str, str]
    config: dict
    wall_limit_s: float | None = None
    silence_limit_s: float | None = 300.0
    memory_limit_mb: int | None = None
    no_network: bool = False
    on_line: Callable[[str], None] | None = None
    redact: Callable[[str], str] = field(default_factory=Redactor)
    on_start: Callable[[int], None] | None = None
    exclude: list[Path] = field(default_factory=list)
    identity: str = "run"
    max_eta_s: float | None = None
    sandbox: bool = True
    allow_network: bool = False
    data_paths: list[Path] = field(default_factory=list)  # read-only paths the run is given

    def policy(self) -> SandboxPolicy | None:
        """The sandbox for this run on this machine, None when the run opted out (--no-sandbox)."""
        if not self.sandbox:
            return None
        return SandboxPolicy(run_dir=self.run_dir, code_dir=self.code_dir, read_only=tuple(self.data_paths),
                             network=self.allow_network)  # fmt: skip


class LocalExecutor:
    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def run(self, spec: LaunchSpec) -> ProcessResult:
        return run_process(
            [self.python, str(spec.script)],
            cwd=spec.run_dir,
            env=spec.env,
            log_path=spec.run_dir / "console.log",
            wall_limit_s=spec.wall_limit_s,
            silence_limit_s=spec.silence_limit_s,
            on_line=spec.on_line,
            memory_limit_mb=spec.memory_limit_mb,
            no_network=spec.no_network,
            redact=spec.redact,
            on_start=spec.on_start,
            max_eta_s=spec.max_eta_s,
            sandbox=spec.policy(),
        )


def pack_dir(path: Path) -> str:
    """A directory as base64 of a gzipped tar (for the trip back through the job log)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for item in sorted(path.rglob("*")):
            if item.is_file():
                tar.add(item, arcname=str(item.relative_to(path)))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def unpack_dir(data: str, dest: Path) -> None:
    raw = base64.b64decode(data)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")  # refuses absolute paths, .. and links out of dest


def parse_job_log(text: str) -> tuple[list[str], dict | None, str | None]:
    """Split a job log into (visible lines, exit info, packed run dir)."""
    visible: list[str] = []
    exit_info: dict | None = None
    chunks: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(RESULT_BEGIN):
            inside, chunks = True, []
        elif line.startswith(RESULT_END):
            inside = False
        elif inside:
            chunks.append(line.strip())
        elif line.startswith(EXIT_MARK):
            exit_info = json.loads(line[len(EXIT_MARK) :])
        else:
            visible.append(line)
    packed = "".join(chunks) if chunks and not inside else None
    return visible, exit_info, packed


class RayExecutor:
    """Runs the script as a Ray job on the cluster whose dashboard is at `address` (e.g. http://127.0.0.1:8265)."""

    name = "ray"

    def __init__(self, address: str, *, num_gpus: float | None = None, num_cpus: float | None = None,
                 python: str = "python", poll_s: float = 1.0):  # fmt: skip
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.python = python
        self.poll_s = poll_s

    def _client(self):
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError as exc:
            raise ExecutorError("the ray executor needs `ray[default]` installed") from exc
        try:
            return JobSubmissionClient(self.address)
        except Exception as exc:
            raise ExecutorError(
                f"cannot reach the Ray dashboard at {self.address}: {str(exc).splitlines()[0]}"
            ) from exc

    def _entry_args(self, spec: LaunchSpec) -> list[str]:
        """The worker entry's command line: the same limits and sandbox as a local run."""
        args = ["-m", "mlexp._ray_entry", "--script", spec.script.name]
        for flag, value in (("--wall-limit", spec.wall_limit_s), ("--silence-limit", spec.silence_limit_s),
                            ("--memory-limit-mb", spec.memory_limit_mb), ("--max-eta", spec.max_eta_s)):  # fmt: skip
            if value is not None:
                args += [flag, str(value)]
        for flag, on in (("--no-network", spec.no_network), ("--no-sandbox", not spec.sandbox),
                         ("--allow-network", spec.allow_network)):  # fmt: skip
            if on:
                args.append(flag)
        for path in spec.data_paths:
            args += ["--data", str(path)]
        return args

    def _submit(self, client: Any, spec: LaunchSpec) -> str:
        env = {k: v for k, v in spec.env.items() if k not in WORKER_LOCAL}
        env["MLEXP_CONFIG_JSON"] = json.dumps(spec.config)
        excludes = [str(p.relative_to(spec.code_dir)) for p in spec.exclude if spec.code_dir in p.parents]
        runtime_env = {
            "working_dir": str(spec.code_dir),
            "py_modules": [str(PACKAGE_DIR)],
            "env_vars": env,
            "excludes": [*excludes, ".git", "__pycache__"],
        }
        kwargs = {}
        if self.num_gpus:
            kwargs["entrypoint_num_gpus"] = self.num_gpus
        if self.num_cpus:
            kwargs["entrypoint_num_cpus"] = self.num_cpus
        try:
            return client.submit_job(
                entrypoint=" ".join(shlex.quote(a) for a in [self.python, *self._entry_args(spec)]),
                runtime_env=runtime_env, submission_id=f"mlexp-{spec.identity}-{int(time.time())}".replace("+", "-"),
                metadata={"mlexp_identity": spec.identity[:200]}, **kwargs,
            )  # fmt: skip
        except Exception as exc:
            raise ExecutorError(f"Ray job submission to {self.address} failed: {str(exc).splitlines()[0]}") from exc

    def _follow(self, client: Any, job_id: str, spec: LaunchSpec, start: float) -> tuple[str, str | None, str]:
        """Tail the job until it ends or a backup limit stops it: (final log text, stopped_for, status)."""
        emit = spec.on_line or (lambda line: None)
        seen, last_output = 0, time.monotonic()
        # The worker enforces the limits itself; these backups (with slack for startup) catch a stuck worker.
        wall = spec.wall_limit_s + 120 if spec.wall_limit_s is not None else None
        silence = spec.silence_limit_s + 120 if spec.silence_limit_s is not None else None
        while True:
            status = str(client.get_job_status(job_id))
            text = client.get_job_logs(job_id)
            visible, _, _ = parse_job_log(text)
            for line in visible[seen:]:
                emit(spec.redact(line))
            if len(visible) > seen:
                last_output = time.monotonic()
            seen = max(seen, len(visible))
            if status.split(".")[-1] in ("SUCCEEDED", "FAILED", "STOPPED"):
                return text, None, status
            now = time.monotonic()
            stopped_for = None
            if wall is not None and now - start > wall:
                stopped_for = "wall_limit"
            elif silence is not None and now - last_output > silence:
                stopped_for = "silence"
            if stopped_for:
                client.stop_job(job_id)
                emit(f"[mlexp] stopped Ray job {job_id}: {stopped_for}")
                time.sleep(2 * self.poll_s)
                return client.get_job_logs(job_id), stopped_for, status
            time.sleep(self.poll_s)

    def _result(self, text: str, stopped_for: str | None, status: str, job_id: str, spec: LaunchSpec,
                start: float) -> ProcessResult:  # fmt: skip
        visible, exit_info, packed = parse_job_log(text)
        if packed:
            unpack_dir(packed, spec.run_dir)
        console = spec.run_dir / "console.log"
        if not console.exists():
            atomic.write_text(console, "\n".join(spec.redact(v) for v in visible) + "\n")
        info = exit_info or {}
        reason: ExitReason = stopped_for or info.get("exit_reason") or (  # type: ignore[assignment]
            "ok" if status.endswith("SUCCEEDED") else "error"
        )
        lines = [spec.redact(v) for v in visible]
        return ProcessResult(
            exit_code=info.get("exit_code"), exit_reason=reason, duration_s=time.monotonic() - start,
            tail=lines[-20000:], eta_s=info.get("eta_s"), s_per_step=info.get("s_per_step"),
            gpu_memory=info.get("gpu_memory"), network=info.get("network", "allowed"),
            message=info.get("message") or (f"Ray job {job_id} ended {status}" if not exit_info else ""),
            sandbox=info.get("sandbox", "unknown (the worker did not say)"),
            memory_limit=info.get("memory_limit", "unknown"), final_lines=final_metric_lines(lines),
        )  # fmt: skip

    def run(self, spec: LaunchSpec) -> ProcessResult:
        client = self._client()
        job_id = self._submit(client, spec)
        (spec.on_line or (lambda line: None))(f"[mlexp] submitted Ray job {job_id} to {self.address}")
        start = time.monotonic()
        try:
            text, stopped_for, status = self._follow(client, job_id, spec, start)
        except KeyboardInterrupt:
            client.stop_job(job_id)
            raise
        except Exception as exc:
            raise ExecutorError(f"lost track of Ray job {job_id}: {str(exc).splitlines()[0]}") from exc
        return self._result(text, stopped_for, status, job_id, spec, start)


def make_executor(name: str, ray_address: str | None = None, **options: object) -> LocalExecutor | RayExecutor:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        if not ray_address:
            raise ExecutorError("--executor ray needs --ray-address http://HOST:8265 (the Ray dashboard address)")
        return RayExecutor(ray_address, **options)  # type: ignore[arg-type]
    raise ExecutorError(f"unknown executor {name!r}; use 'local' or 'ray'")


def contract_env(run_dir: Path, config_path: Path, *, smoke: bool, seed: int, device: str) -> Mapping[str, str]:
    return {"RUN_DIR": str(run_dir), "RUN_CONFIG": str(config_path), "SMOKE": "1" if smoke else "0",
            "SEED": str(seed), "DEVICE": device}  # fmt: skip
