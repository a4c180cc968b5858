"""The sandbox every harness run executes in: bubblewrap (`bwrap`) around the script's process tree.

Generated code is untrusted. `bwrap_command` wraps the script's command line so that inside it:

- the filesystem is `/` bound read-only; `$HOME`, `/root`, `/home`, `/tmp`, `/var/tmp` and `/run` are replaced by
  empty directories; only the paths the run is given come back (read-only): the code dir, the interpreter and its
  libraries, the data paths (named by the caller or found as existing paths among the config's values) and the
  cache folders the environment allow-list names;
- only RUN_DIR is writable, plus a private `/tmp` that disappears with the run;
- the script has its own PID namespace with a fresh `/proc` (no view of the runner's environment), its own IPC and
  UTS namespaces, no capabilities, and dies with the runner (`--die-with-parent`): when the script's main process
  ends or the runner dies, every process left in the namespace is killed, daemons included;
- no network namespace is shared unless the run is allowed the network by name: no TCP, no abstract UNIX sockets;
  filesystem UNIX sockets of the host (listed in /proc/net/unix) that would still be visible are covered by
  /dev/null, so `connect()` is refused.

Docs: docs/sandbox.md (what is blocked, what is allowed, how to opt out, measured overhead).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mlexp.errors import SandboxError

INSTALL_HINT = (
    "the sandbox needs bubblewrap (bwrap), which is not installed: install it (Debian/Ubuntu: "
    "`apt-get install bubblewrap`, Fedora: `dnf install bubblewrap`) or pass --no-sandbox to run a script you trust "
    "without it"
)
# Trees that hold a person's secrets or other processes' sockets and scratch files: hidden from every run.
MASKED_ROOTS = ("/tmp", "/var/tmp", "/run", "/root", "/home", "/dev/shm")
# Environment variables naming cache folders a run may read (models, datasets) when they exist.
CACHE_VARS = ("HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE")
# Never given back, whatever a config names: credentials and the replicate home (LLM endpoint, checkpoints).
SECRET_DIRS = (".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".netrc", ".config/gcloud", ".replicate")


@dataclass(frozen=True)
class SandboxPolicy:
    """What one sandboxed run may see and do. Paths are absolute on the machine that runs the script."""

    run_dir: Path
    code_dir: Path
    read_only: tuple[Path, ...] = ()  # data paths the run is given
    network: bool = False  # True only when the run was allowed the network by name
    home: Path = field(default_factory=Path.home)

    def describe(self) -> str:
        """One line for README.txt, metadata.json and the record."""
        net = "network allowed" if self.network else "no network"
        data = ", ".join(str(p) for p in self.read_only) or "none"
        return f"bwrap: read-only filesystem, writable RUN_DIR and private /tmp, own PID namespace, {net}; data: {data}"


NO_SANDBOX = "none: --no-sandbox (the script ran with the runner's own view of the machine)"


@lru_cache(maxsize=1)
def _bwrap_path() -> str | None:
    return shutil.which("bwrap")


def find_bwrap() -> str:
    """Path of a bwrap that can start a sandbox here; SandboxError (one line) when there is none."""
    path = _bwrap_path()
    if path is None:
        raise SandboxError(INSTALL_HINT)
    why = _probe(path)
    if why:
        raise SandboxError(f"bubblewrap cannot create a sandbox on this machine ({why}); pass --no-sandbox to run "
                           "a script you trust without it")  # fmt: skip
    return path


@lru_cache(maxsize=4)
def _probe(path: str) -> str:
    """'' when bwrap can make the namespaces we use, else its error (e.g. user namespaces disabled)."""
    cmd = [path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--unshare-net",
           "--die-with-parent", "--cap-drop", "ALL", "true"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def masked_roots(home: Path) -> list[Path]:
    """The real (not symlinked) directories replaced by empty ones, parents first. $HOME always gets its own
    empty directory, even inside another mask, so the run finds a home that exists and holds nothing."""
    out: list[Path] = []
    for raw in MASKED_ROOTS:
        path = Path(raw)
        if path.is_symlink() or not path.is_dir():
            continue  # e.g. /var/run -> /run: masking the target is enough
        path = path.resolve()
        if not _under(path, out):
            out.append(path)
    home = Path(home).resolve()
    if home != Path("/") and home not in out:
        out.append(home)
    return sorted(out, key=lambda p: len(p.parts))


def interpreter_paths() -> list[Path]:
    """What the interpreter running the script needs to read: prefixes, the real executable, sys.path, mlexp."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  str(Path(os.path.realpath(sys.executable)).parent.parent), *sys.path,
                  str(Path(__file__).resolve().parent)]  # fmt: skip
    return [Path(p).resolve() for p in candidates if p and Path(p).exists()]


def cache_paths(env: Mapping[str, str]) -> list[Path]:
    """Cache folders the run's environment names (HF_HOME, TORCH_HOME, ...) that exist: read-only."""
    return [Path(env[k]).resolve() for k in CACHE_VARS if env.get(k) and Path(env[k]).is_dir()]


def config_paths(config: object, bases: Sequence[Path]) -> list[Path]:
    """Existing files/directories named by string values of the config (absolute, `~`, or relative to a base)."""
    found: list[Path] = []

    def visit(value: object) -> None:
        if isinstance(value, Mapping):
            for item in value.values():
                visit(item)
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)
        elif isinstance(value, str) and ("/" in value or value.startswith("~")) and len(value) < 4096:
            path = Path(value).expanduser()
            for candidate in [path] if path.is_absolute() else [base / path for base in bases]:
                try:
                    if candidate.exists():
                        found.append(candidate.resolve())
                        break
                except OSError:
                    continue

    visit(config)
    return sorted(set(found))


def host_unix_sockets() -> list[Path]:
    """Filesystem paths of the UNIX sockets open in this network namespace (abstract ones start with '@')."""
    try:
        lines = Path("/proc/net/unix").read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    except OSError:
        return []
    paths = set()
    for line in lines:
        parts = line.split(maxsplit=7)
        if len(parts) == 8 and parts[7].startswith("/"):
            paths.add(Path(parts[7]))
    return sorted(paths)


def _gpu_devices() -> list[str]:
    dev = Path("/dev")
    return sorted(str(p) for p in dev.glob("nvidia*")) + ([str(dev / "dri")] if (dev / "dri").is_dir() else [])


def refused(path: Path, masks: Sequence[Path], home: Path) -> bool:
    """A path never bound back: a hidden tree itself or one of its ancestors (it would undo the hiding), a
    credentials folder, or the replicate home."""
    if any(mask == path or path in mask.parents for mask in masks):
        return True
    secret_roots = [home / name for name in SECRET_DIRS]
    if os.environ.get("REPLICATE_HOME"):
        secret_roots.append(Path(os.environ["REPLICATE_HOME"]).expanduser().resolve())
    return _under(path, secret_roots)


def visible_paths(policy: SandboxPolicy, env: Mapping[str, str]) -> list[Path]:
    """Every path bound back read-only over the masks, outermost first (a child bind after its parent)."""
    given = [policy.code_dir, *interpreter_paths(), *cache_paths(env), *policy.read_only]
    masks = masked_roots(policy.home)
    home = Path(policy.home).resolve()
    keep: list[Path] = []
    for path in sorted({p.resolve() for p in given}, key=lambda p: (len(p.parts), str(p))):
        if _under(path, masks) and not _under(path, keep) and not refused(path, masks, home):
            keep.append(path)
    return keep


def bwrap_command(policy: SandboxPolicy, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """`argv` wrapped in bwrap according to `policy` (see the module docstring)."""
    bwrap = find_bwrap()
    masks = masked_roots(policy.home)
    given = visible_paths(policy, env)
    run_dir = policy.run_dir.resolve()
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for device in _gpu_devices():
        cmd += ["--dev-bind-try", device, device]
    for mask in masks:
        cmd += ["--tmpfs", str(mask)]
    for path in given:
        cmd += ["--ro-bind", str(path), str(path)]
    cmd += ["--bind", str(run_dir), str(run_dir)]
    for sock in host_unix_sockets():
        # Still visible when outside the masks or inside a path bound back; RUN_DIR is fresh, so none is there.
        if (not _under(sock, masks) or _under(sock, given)) and not _under(sock, [run_dir]) and sock.exists():
            cmd += ["--ro-bind", "/dev/null", str(sock)]
    cmd += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not policy.network:
        cmd.append("--unshare-net")
    cmd += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--chdir", str(run_dir), "--", *argv]
    return cmd


def sandbox_env(env: Mapping[str, str]) -> dict[str, str]:
    """The run's environment as seen inside: TMPDIR is the private /tmp (the host's may be hidden)."""
    return {**env, "TMPDIR": "/tmp"}
