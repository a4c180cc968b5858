"""Run one script as its own process group and watch it (§12), with generated code contained.

- The script gets a scrubbed environment: a small allow-list of harmless variables plus the run contract; secrets
  (API keys, tokens, passwords) never pass unless the caller allows them by name. Every line it prints is teed live
  (to `on_line` and to console.log with a timestamp) after redacting secret values.
- The watchdog kills the whole process group (children too) when the script prints nothing for `silence_limit_s`
  (the 5-minute rule) or runs past `wall_limit_s`: SIGTERM, a short grace, then SIGKILL.
- After step 1 it reports s/step, the ETA and, where a GPU is visible, GPU memory headroom.
- `sandbox` (a `mlexp.sandbox.SandboxPolicy`, the harness's default) runs the command inside bubblewrap: read-only
  filesystem, writable RUN_DIR, own PID namespace, no network. Without it (`--no-sandbox`) the child still gets
  PR_SET_PDEATHSIG, and `no_network` cuts the network with `unshare -n` where the OS allows it.
- `memory_limit_mb` limits the whole process tree through a cgroup where the machine allows it, else each process
  (RLIMIT_AS), and the result says which (`mlexp.cgroup`). An OOM kill stops the whole run at once (`memory`).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from mlexp.cgroup import MemoryCage
from mlexp.errors import ExecutorError, ScriptError
from mlexp.metrics import FinalLineFilter
from mlexp.record import ExitReason
from mlexp.sandbox import NO_SANDBOX, SandboxPolicy, bwrap_command, sandbox_env

# Passed through when present: locale, paths, caches, thread counts, GPU selection. Nothing that authenticates.
BASE_ALLOW = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SHELL", "VIRTUAL_ENV",
    "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES",
    "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "TORCH_HOME", "XDG_CACHE_HOME",
    "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED",
)  # fmt: skip
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.IGNORECASE)
# Values that look like credentials wherever they appear (in case a script prints one it found on disk).
SECRET_PATTERNS = [
    re.compile(r"sk-(?:proj-|or-v1-|ant-)?[A-Za-z0-9_-]{16,}"),
    re.compile(r"hf_[A-Za-z0-9]{20,}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"xox[baprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{16,}"),
]
STEP_LINE = re.compile(r"step\s+(\d+)\s*/\s*(\d+).*?([\d.eE+-]+)\s*s/step.*?ETA\s+(\d+:\d{2}:\d{2})")
MEMORY_HINTS = ("MemoryError", "CUDA out of memory", "OutOfMemoryError", "Cannot allocate memory", "std::bad_alloc",
                # the loader under a per-process limit (RLIMIT_AS) too small to map the interpreter's libraries
                "failed to map segment from shared object")  # fmt: skip
KILL_GRACE_S = 3.0
MAX_FINAL_LINES = 100_000


class Redactor:
    """Replaces secret values (from the parent environment) and credential-shaped strings with `[REDACTED]`."""

    def __init__(self, env: Mapping[str, str] | None = None, extra: Sequence[str] = ()):
        env = os.environ if env is None else env
        values = [v for k, v in env.items() if SECRET_NAME.search(k) and v and len(v) >= 6]
        self.values = sorted({*values, *[e for e in extra if e]}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, "[REDACTED]")
        for pattern in SECRET_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
        return text


def scrubbed_env(allow_env: Sequence[str] = (), extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: BASE_ALLOW + LC_* + names the caller allowed explicitly + `extra`."""
    allowed = set(BASE_ALLOW) | set(allow_env)
    env = {k: v for k, v in os.environ.items() if k in allowed or k.startswith("LC_")}
    for key in list(env):
        if SECRET_NAME.search(key) and key not in allow_env:
            env.pop(key)  # e.g. a *_TOKEN that happens to match an allow-listed prefix pattern
    env.update({"PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"})
    env.update(extra or {})
    return env


_NETNS: list[str] | None = None
_NETNS_WHY = ""


def network_isolation() -> tuple[list[str] | None, str]:
    """A command prefix that cuts network access, or (None, why not). Probed once per process."""
    global _NETNS, _NETNS_WHY
    if _NETNS is not None or _NETNS_WHY:
        return _NETNS, _NETNS_WHY
    unshare = shutil.which("unshare")
    if not unshare:
        _NETNS_WHY = "unshare(1) not found"
        return None, _NETNS_WHY
    errors = []
    for prefix in ([unshare, "-n"], [unshare, "-r", "-n"]):
        try:
            proc = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(str(exc))
            continue
        if proc.returncode == 0:
            _NETNS = prefix
            return _NETNS, ""
        errors.append(proc.stderr.decode(errors="replace").strip())
    _NETNS_WHY = f"unshare -n not permitted here ({'; '.join(e for e in errors if e)[:200]})"
    return None, _NETNS_WHY


def gpu_memory() -> str | None:
    """'used/total MiB (free X MiB)' per visible GPU via nvidia-smi, None when there is no GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        proc = subprocess.run(
            [smi, "--query-gpu=name,memory.used,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    parts = []
    for row in proc.stdout.strip().splitlines():
        name, used, total = (x.strip() for x in row.split(","))
        parts.append(f"{name}: {used}/{total} MiB used, headroom {int(total) - int(used)} MiB")
    return "; ".join(parts)


@dataclass
class ProcessResult:
    exit_code: int | None
    exit_reason: ExitReason
    duration_s: float
    tail: list[str] = field(default_factory=list)
    eta_s: float | None = None
    s_per_step: float | None = None
    gpu_memory: str | None = None
    network: str = "allowed"
    message: str = ""
    sandbox: str = NO_SANDBOX
    memory_limit: str = "none"
    final_lines: list[str] = field(default_factory=list)  # every final-metrics block, whole output (mlexp.metrics)


def _parse_duration(text: str) -> float:
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s


def _die_with_parent() -> None:
    """In the child: SIGKILL when the runner dies (PR_SET_PDEATHSIG), so a killed runner leaves no script behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def _preexec(steps: list[Callable[[], None]]) -> Callable[[], None]:
    def run_all() -> None:
        for step in steps:
            step()

    return run_all


@dataclass
class _Tee:
    """The reader thread's state: what it saw, for the watchdog and the result. One writer (the thread)."""

    emit: Callable[[str], None]
    redact: Callable[[str], str]
    log: TextIO | None
    max_eta_s: float | None
    tail: deque[str]
    last_output: float = field(default_factory=time.monotonic)
    eta_kill: str | None = None
    s_per_step: float | None = None
    eta_s: float | None = None
    gpu_memory: str | None = None
    final_lines: list[str] = field(default_factory=list)
    finals: FinalLineFilter = field(default_factory=FinalLineFilter)
    log_error: str = ""  # console.log could not be written (disk full): the watchdog stops the run

    def write(self, line: str) -> None:
        self.tail.append(line)
        if self.log:
            try:
                self.log.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
            except OSError as exc:  # the thread must live on: it drains the pipe, or the script blocks on it
                self.log_error = f"cannot write console.log: {exc.strerror or exc}"
                self.log = None
        self.emit(line)

    def read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.last_output = time.monotonic()
            line = self.redact(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            self.write(line)
            self._keep_final(line)
            match = STEP_LINE.search(line)
            if match:
                self._progress(match)

    def _keep_final(self, line: str) -> None:
        """Final-metrics blocks are kept from the whole output, not just the tail: a later block is a conflict."""
        if self.finals.keep(line) and len(self.final_lines) < MAX_FINAL_LINES:
            self.final_lines.append(line)

    def _progress(self, match: re.Match[str]) -> None:
        eta = _parse_duration(match.group(4))
        if self.max_eta_s is not None and eta > self.max_eta_s and not self.eta_kill:
            self.eta_kill = f"ETA {match.group(4)} at step {match.group(1)} exceeds max_eta_s={self.max_eta_s:g}"
        if self.s_per_step is None:  # the record keeps the first step's timing: the pre-flight figure
            self.s_per_step, self.eta_s = float(match.group(3)), eta
            self.gpu_memory = gpu_memory()
            note = f"[mlexp] first step seen: {self.s_per_step:.3g} s/step, ETA {match.group(4)}"
            self.write(note + (f", GPU memory: {self.gpu_memory}" if self.gpu_memory else ""))


@dataclass(frozen=True)
class Limits:
    wall_limit_s: float | None = None
    silence_limit_s: float | None = 300.0


def _wrap(cmd: list[str], env: Mapping[str, str], sandbox: SandboxPolicy | None, no_network: bool,
          emit: Callable[[str], None]) -> tuple[list[str], dict[str, str], str, str]:  # fmt: skip
    """(command, environment, network description, sandbox description) for the chosen containment."""
    if sandbox is not None:
        network = "allowed (by name)" if sandbox.network else "cut (bwrap --unshare-net)"
        return bwrap_command(sandbox, cmd, env), sandbox_env(env), network, sandbox.describe()
    if not no_network:
        return cmd, dict(env), "allowed", NO_SANDBOX
    prefix, why = network_isolation()
    if prefix:
        return [*prefix, *cmd], dict(env), "cut (unshare -n)", NO_SANDBOX
    emit(f"[mlexp] --no-network requested but network could NOT be cut: {why}")
    return cmd, dict(env), f"NOT cut: {why}", NO_SANDBOX


def _start(cmd: list[str], cwd: Path, env: Mapping[str, str], cage: MemoryCage, sandboxed: bool) -> subprocess.Popen:
    steps = [] if sandboxed else [_die_with_parent]  # bwrap's --die-with-parent does this inside the sandbox
    join = cage.preexec()
    if join:
        steps.append(join)
    try:
        return subprocess.Popen(
            cmd, cwd=str(cwd), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_preexec(steps),
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise ScriptError(f"cannot start {cmd[0]}: {exc.strerror}") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise ExecutorError(f"cannot start the run process: {exc}") from exc


def _watch(proc: subprocess.Popen, tee: _Tee, limits: Limits, cage: MemoryCage, start: float) -> tuple[str, str]:
    """Poll until the process ends or a limit is hit: ('', '') or (exit reason, message) of the kill."""
    while proc.poll() is None:
        now = time.monotonic()
        if cage.oom_killed():
            return "memory", f"killed: the run's processes together exceeded the memory limit ({cage.describe()})"
        if tee.log_error:
            return "error", f"killed: {tee.log_error} (its output would be lost; free space and run it again)"
        if tee.eta_kill:
            return "wall_limit", f"killed early: {tee.eta_kill} (fix the config rather than wait)"
        if limits.wall_limit_s is not None and now - start > limits.wall_limit_s:
            return "wall_limit", f"killed: ran past the wall-clock limit of {limits.wall_limit_s:g}s"
        if limits.silence_limit_s is not None and now - tee.last_output > limits.silence_limit_s:
            return "silence", f"killed: no output for {limits.silence_limit_s:g}s (silence rule)"
        time.sleep(0.1)
    return "", ""


def _classify(returncode: int | None, killed_for: str, tail: list[str], sandboxed: bool,
              cage: MemoryCage) -> tuple[ExitReason, str]:  # fmt: skip
    """Why the process ended, from the watchdog's verdict, the exit status and the output."""
    if killed_for:
        return killed_for, ""  # type: ignore[return-value]
    if returncode == 0:
        return "ok", ""
    if cage.oom_killed():
        return "memory", f"killed by the kernel: the run exceeded its memory limit ({cage.describe()})"
    if any(hint in line for line in tail[-200:] for hint in MEMORY_HINTS):
        return "memory", ""
    signum = -returncode if returncode is not None and returncode < 0 else None
    if sandboxed and returncode is not None and returncode > 128:
        signum = returncode - 128  # bwrap exits 128+N when the script died of signal N
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return "killed", f"killed by signal {name}"  # a signal we did not send (OOM killer, a person)
    return "error", ""


def run_process(
    cmd: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path | None = None,
    wall_limit_s: float | None = None,
    silence_limit_s: float | None = 300.0,
    on_line: Callable[[str], None] | None = None,
    memory_limit_mb: int | None = None,
    no_network: bool = False,
    redact: Callable[[str], str] | None = None,
    on_start: Callable[[int], None] | None = None,
    tail_lines: int = 20000,
    max_eta_s: float | None = None,
    sandbox: SandboxPolicy | None = None,
) -> ProcessResult:
    """Start `cmd` in a new session (its own process group), in `sandbox` unless None, tee its output, enforce
    the limits; every process of the run is gone when this returns."""
    emit = on_line or (lambda line: None)
    cmd, env, network, sandbox_text = _wrap(list(cmd), env, sandbox, no_network, emit)
    cage = MemoryCage.create(memory_limit_mb, Path(cwd).name)
    log = open(log_path, "a", encoding="utf-8", buffering=1) if log_path else None
    start = time.monotonic()
    try:
        proc = _start(cmd, Path(cwd), env, cage, sandbox is not None)
    except BaseException:
        cage.close()
        if log:
            log.close()
        raise
    if on_start:
        on_start(proc.pid)
    tee = _Tee(emit=emit, redact=redact or Redactor(), log=log, max_eta_s=max_eta_s, tail=deque(maxlen=tail_lines))
    assert proc.stdout is not None
    thread = threading.Thread(target=tee.read, args=(proc.stdout,), name="mlexp-tee", daemon=True)
    thread.start()
    killed_for, message = "", ""
    try:
        killed_for, message = _watch(proc, tee, Limits(wall_limit_s, silence_limit_s), cage, start)
        if killed_for:
            emit(f"[mlexp] {message}")
            _kill_group(proc)
    except BaseException:  # KeyboardInterrupt or the caller's own death: never leave the group behind
        _kill_group(proc)
        raise
    finally:
        proc.wait()
        _kill_group(proc, grace=0.0)  # children that outlived the main process still hold the pipe
        cage.kill_all()  # daemons that left the process group (no-sandbox runs; the sandbox kills its own)
        thread.join(timeout=5.0)
        if log:
            try:
                if killed_for and tee.log is not None:
                    log.write(f"[{time.strftime('%H:%M:%S')}] [mlexp] {message}\n")
                log.close()
            except OSError:  # disk full: the reason is in the result (and the record), not in this log
                pass
    reason, why = _classify(proc.returncode, killed_for, list(tee.tail), sandbox is not None, cage)
    if tee.log_error and not killed_for:  # it ended (or failed on the same full disk) before the watchdog saw it
        reason, why = "error", f"{tee.log_error} (its output from then on is lost; free space and run it again)"
    memory_text = cage.describe()
    cage.close()
    return ProcessResult(
        exit_code=proc.returncode, exit_reason=reason, duration_s=time.monotonic() - start, tail=list(tee.tail),
        eta_s=tee.eta_s, s_per_step=tee.s_per_step, gpu_memory=tee.gpu_memory, network=network,
        message=message or why, sandbox=sandbox_text, memory_limit=memory_text, final_lines=tee.final_lines,
    )  # fmt: skip


def _kill_group(proc: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group, wait `grace`, then SIGKILL whatever is left."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid  # the leader is gone; its group id was its pid (start_new_session)
    if grace > 0:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
