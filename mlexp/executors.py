"""Where a run executes: a local subprocess (default) or a Ray cluster through the Ray Jobs API.

Both produce the same run directory. The Ray executor uploads the code dir as the job's working dir (plus the mlexp
package itself as a py_module, so the cluster needs no install of it), requests GPUs per run with
`entrypoint_num_gpus`, tails the job's logs live, and on the worker runs the very same runner (watchdog, limits,
scrubbed env) through `mlexp._ray_entry`. The worker's run dir comes back to the driver through the job log as a
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

from mlexp.errors import ExecutorError
from mlexp.runner import ProcessResult, Redactor, run_process

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
        except Exception as exc:  # noqa: BLE001 - ray raises ConnectionError/RuntimeError/ValueError variously
            raise ExecutorError(
                f"cannot reach the Ray dashboard at {self.address}: {str(exc).splitlines()[0]}"
            ) from exc

    def run(self, spec: LaunchSpec) -> ProcessResult:
        import mlexp

        client = self._client()
        emit = spec.on_line or (lambda line: None)
        env = {k: v for k, v in spec.env.items() if k not in WORKER_LOCAL}
        env["MLEXP_CONFIG_JSON"] = json.dumps(spec.config)
        args = ["-m", "mlexp._ray_entry", "--script", spec.script.name]
        if spec.wall_limit_s is not None:
            args += ["--wall-limit", str(spec.wall_limit_s)]
        if spec.silence_limit_s is not None:
            args += ["--silence-limit", str(spec.silence_limit_s)]
        if spec.memory_limit_mb:
            args += ["--memory-limit-mb", str(spec.memory_limit_mb)]
        if spec.no_network:
            args.append("--no-network")
        if spec.max_eta_s:
            args += ["--max-eta", str(spec.max_eta_s)]
        excludes = [str(p.relative_to(spec.code_dir)) for p in spec.exclude if spec.code_dir in p.parents]
        runtime_env = {
            "working_dir": str(spec.code_dir),
            "py_modules": [str(Path(mlexp.__file__).parent)],
            "env_vars": env,
            "excludes": [*excludes, ".git", "__pycache__"],
        }
        submission_id = f"mlexp-{spec.identity}-{int(time.time())}".replace("+", "-")
        kwargs = {}
        if self.num_gpus:
            kwargs["entrypoint_num_gpus"] = self.num_gpus
        if self.num_cpus:
            kwargs["entrypoint_num_cpus"] = self.num_cpus
        start = time.monotonic()
        try:
            job_id = client.submit_job(
                entrypoint=" ".join(shlex.quote(a) for a in [self.python, *args]),
                runtime_env=runtime_env, submission_id=submission_id,
                metadata={"mlexp_identity": spec.identity[:200]}, **kwargs,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            raise ExecutorError(f"Ray job submission to {self.address} failed: {str(exc).splitlines()[0]}") from exc
        emit(f"[mlexp] submitted Ray job {job_id} to {self.address}")
        seen = 0
        last_output = time.monotonic()
        stopped_for: str | None = None
        # The worker enforces the limits itself; these backups (with slack for startup) catch a stuck worker.
        wall = spec.wall_limit_s + 120 if spec.wall_limit_s is not None else None
        silence = spec.silence_limit_s + 120 if spec.silence_limit_s is not None else None
        status = None
        try:
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
                    break
                now = time.monotonic()
                if wall is not None and now - start > wall:
                    stopped_for = "wall_limit"
                elif silence is not None and now - last_output > silence:
                    stopped_for = "silence"
                if stopped_for:
                    client.stop_job(job_id)
                    emit(f"[mlexp] stopped Ray job {job_id}: {stopped_for}")
                    stopped_for = stopped_for
                    time.sleep(2 * self.poll_s)
                    text = client.get_job_logs(job_id)
                    break
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            client.stop_job(job_id)
            raise
        except Exception as exc:  # noqa: BLE001
            raise ExecutorError(f"lost track of Ray job {job_id}: {str(exc).splitlines()[0]}") from exc
        visible, exit_info, packed = parse_job_log(text)
        if packed:
            unpack_dir(packed, spec.run_dir)
        console = spec.run_dir / "console.log"
        if not console.exists():
            console.write_text("\n".join(spec.redact(v) for v in visible) + "\n", encoding="utf-8")
        info = exit_info or {}
        reason = (
            stopped_for or info.get("exit_reason") or ("ok" if status and status.endswith("SUCCEEDED") else "error")
        )
        return ProcessResult(
            exit_code=info.get("exit_code"),
            exit_reason=reason,
            duration_s=time.monotonic() - start,
            tail=[spec.redact(v) for v in visible[-20000:]],
            eta_s=info.get("eta_s"),
            s_per_step=info.get("s_per_step"),
            gpu_memory=info.get("gpu_memory"),
            network=info.get("network", "allowed"),
            message=info.get("message") or (f"Ray job {job_id} ended {status}" if not exit_info else ""),
        )


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
