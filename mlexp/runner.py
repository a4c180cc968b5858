"""Run one script as its own process group and watch it (§12), with generated code contained.

- The script gets a scrubbed environment: a small allow-list of harmless variables plus the run contract; secrets
  (API keys, tokens, passwords) never pass unless the caller allows them by name. Every line it prints is teed live
  (to `on_line` and to console.log with a timestamp) after redacting secret values.
- The watchdog kills the whole process group (children too) when the script prints nothing for `silence_limit_s`
  (the 5-minute rule) or runs past `wall_limit_s`: SIGTERM, a short grace, then SIGKILL.
- After step 1 it reports s/step, the ETA and, where a GPU is visible, GPU memory headroom.
- `memory_limit_mb` caps the address space (RLIMIT_AS); `no_network` runs the script in a fresh network namespace
  (`unshare -n`) when the OS allows it and says so plainly when it does not.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlexp.errors import ExecutorError, ScriptError

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
MEMORY_HINTS = ("MemoryError", "CUDA out of memory", "OutOfMemoryError", "Cannot allocate memory", "std::bad_alloc")
KILL_GRACE_S = 3.0


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
    exit_reason: str  # ok | error | silence | wall_limit | killed | memory
    duration_s: float
    tail: list[str] = field(default_factory=list)
    eta_s: float | None = None
    s_per_step: float | None = None
    gpu_memory: str | None = None
    network: str = "allowed"
    message: str = ""


def _parse_duration(text: str) -> float:
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s


def _limits(memory_limit_mb: int | None) -> Callable[[], None] | None:
    if not memory_limit_mb:
        return None
    limit = int(memory_limit_mb) * 1024 * 1024

    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


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
) -> ProcessResult:
    """Start `cmd` in a new session (its own process group), tee its output, enforce the limits."""
    redact = redact or Redactor()
    emit = on_line or (lambda line: None)
    network = "allowed"
    cmd = list(cmd)
    if no_network:
        prefix, why = network_isolation()
        if prefix:
            cmd, network = [*prefix, *cmd], "cut (unshare -n)"
        else:
            network = f"NOT cut: {why}"
            emit(f"[mlexp] --no-network requested but network could NOT be cut: {why}")
    log = open(log_path, "a", encoding="utf-8", buffering=1) if log_path else None  # noqa: SIM115
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd, cwd=str(cwd), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_limits(memory_limit_mb),
        )  # fmt: skip
    except FileNotFoundError as exc:
        if log:
            log.close()
        raise ScriptError(f"cannot start {cmd[0]}: {exc.strerror}") from exc
    except OSError as exc:
        if log:
            log.close()
        raise ExecutorError(f"cannot start the run process: {exc}") from exc
    if on_start:
        on_start(proc.pid)
    tail: deque[str] = deque(maxlen=tail_lines)
    state: dict = {"last_output": time.monotonic(), "step_seen": False}
    result = ProcessResult(exit_code=None, exit_reason="ok", duration_s=0.0, network=network)

    def reader() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            state["last_output"] = time.monotonic()
            line = redact(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            tail.append(line)
            if log:
                log.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
            emit(line)
            match = STEP_LINE.search(line)
            if match:
                eta = _parse_duration(match.group(4))
                if max_eta_s is not None and eta > max_eta_s and not state.get("eta_kill"):
                    state["eta_kill"] = f"ETA {match.group(4)} at step {match.group(1)} exceeds max_eta_s={max_eta_s:g}"
                if not state["step_seen"]:  # the record keeps the first step's timing: the §12 pre-flight figure
                    state["step_seen"] = True
                    result.s_per_step, result.eta_s = float(match.group(3)), eta
                    result.gpu_memory = gpu_memory()
                    note = f"[mlexp] first step seen: {result.s_per_step:.3g} s/step, ETA {match.group(4)}"
                    if result.gpu_memory:
                        note += f", GPU memory: {result.gpu_memory}"
                    tail.append(note)
                    if log:
                        log.write(f"[{time.strftime('%H:%M:%S')}] {note}\n")
                    emit(note)

    thread = threading.Thread(target=reader, name="mlexp-tee", daemon=True)
    thread.start()
    killed_for: str | None = None
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if state.get("eta_kill"):
                killed_for = "wall_limit"
                result.message = f"killed early: {state['eta_kill']} (fix the config rather than wait)"
            elif wall_limit_s is not None and now - start > wall_limit_s:
                killed_for = "wall_limit"
                result.message = f"killed: ran past the wall-clock limit of {wall_limit_s:g}s"
            elif silence_limit_s is not None and now - state["last_output"] > silence_limit_s:
                killed_for = "silence"
                result.message = f"killed: no output for {silence_limit_s:g}s (silence rule)"
            if killed_for:
                emit(f"[mlexp] {result.message}")
                _kill_group(proc)
                break
            time.sleep(0.1)
    except BaseException:  # KeyboardInterrupt or the caller's own death: never leave the group behind
        _kill_group(proc)
        raise
    finally:
        proc.wait()
        _kill_group(proc, grace=0.0)  # children that outlived the main process still hold the pipe
        thread.join(timeout=5.0)
        if log:
            if killed_for:
                log.write(f"[{time.strftime('%H:%M:%S')}] [mlexp] {result.message}\n")
            log.close()
    result.duration_s = time.monotonic() - start
    result.exit_code = proc.returncode
    result.tail = list(tail)
    if killed_for:
        result.exit_reason = killed_for
    elif proc.returncode == 0:
        result.exit_reason = "ok"
    elif any(hint in line for line in list(tail)[-200:] for hint in MEMORY_HINTS):
        result.exit_reason = "memory"
    elif proc.returncode is not None and proc.returncode < 0:
        result.exit_reason = "killed"  # a signal we did not send (OOM killer, a person)
        result.message = f"killed by signal {signal.Signals(-proc.returncode).name}"
    else:
        result.exit_reason = "error"
    return result


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
