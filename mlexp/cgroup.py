"""A memory limit for a run's whole process tree: a cgroup of its own, else plainly a per-process limit.

`MemoryCage.create(limit_mb, name)` makes a child cgroup of the runner's own cgroup with that limit: cgroup v2 when
the runner's v2 cgroup has the memory controller delegated to it, else the cgroup v1 memory hierarchy when it is
mounted and writable. The script's first process joins it between fork and exec, so every descendant is counted
and limited together (four workers of 400 MB under a 500 MB limit are killed, not 1.6 GB). Where neither exists
(no delegation, read-only /sys/fs/cgroup), the cage falls back to RLIMIT_AS on each process and says so in
`mode`/`describe()`: that caps each process, not the tree.

The cage also reports an OOM kill (`oom_killed`) so the runner can stop the run at once and call it `memory`, and
can kill every process still in it (`kill_all`), which catches daemons of a run made without the sandbox.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MemoryMode = Literal["cgroup2", "cgroup1", "per-process", "none"]


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, filesystem type + super options) of every mount of this process."""
    out: list[tuple[str, str]] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) >= 5 and len(rest) >= 3:
            out.append((fields[4].replace("\\040", " "), f"{rest[0]} {rest[2]}"))
    return out


def _own_cgroups() -> dict[str, str]:
    """Controller (or '' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                out[controller] = parts[2]
    return out


def _v2_parent() -> Path | None:
    """Our cgroup v2 directory if the memory controller is enabled for its children (delegated to us)."""
    own = _own_cgroups().get("")
    if own is None:
        return None
    for mount, kind in _mountinfo():
        if kind.startswith("cgroup2 "):
            path = Path(mount) / own.lstrip("/")
            try:
                if "memory" in (path / "cgroup.subtree_control").read_text().split() and os.access(path, os.W_OK):
                    return path
            except OSError:
                continue
    return None


def _v1_parent() -> Path | None:
    own = _own_cgroups().get("memory")
    if own is None:
        return None
    for mount, kind in _mountinfo():
        if kind.startswith("cgroup ") and "memory" in kind.split()[1].split(","):
            path = Path(mount) / own.lstrip("/")
            if (path / "memory.limit_in_bytes").exists() and os.access(path, os.W_OK):
                return path
    return None


@dataclass
class MemoryCage:
    mode: MemoryMode
    limit_mb: int | None
    path: Path | None = None
    why: str = ""

    @classmethod
    def create(cls, limit_mb: int | None, name: str) -> MemoryCage:
        if not limit_mb:
            return cls("none", None)
        errors = []
        for mode, parent in (("cgroup2", _v2_parent()), ("cgroup1", _v1_parent())):
            if parent is None:
                continue
            try:
                return cls._make(mode, parent / f"mlexp-{name}-{os.getpid()}-{time.monotonic_ns()}", limit_mb)  # type: ignore[arg-type]
            except OSError as exc:
                errors.append(f"{mode}: {exc.strerror or exc}")
        why = "; ".join(errors) or "no writable cgroup with the memory controller (v2 not delegated, no v1 memory)"
        return cls("per-process", limit_mb, why=why)

    @classmethod
    def _make(cls, mode: MemoryMode, path: Path, limit_mb: int) -> MemoryCage:
        path.mkdir()
        limit = str(int(limit_mb) * 1024 * 1024)
        try:
            if mode == "cgroup2":
                (path / "memory.max").write_text(limit)
                for knob, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                    if (path / knob).exists():
                        (path / knob).write_text(value)
            else:
                (path / "memory.limit_in_bytes").write_text(limit)
                if (path / "memory.memsw.limit_in_bytes").exists():  # memory + swap: no escape into swap
                    (path / "memory.memsw.limit_in_bytes").write_text(limit)
        except OSError:
            path.rmdir()
            raise
        return cls(mode, limit_mb, path)

    def describe(self) -> str:
        if self.mode == "none":
            return "none"
        if self.mode == "per-process":
            return f"{self.limit_mb} MB PER PROCESS (RLIMIT_AS), not for the whole run: {self.why}"
        return f"{self.limit_mb} MB for the whole process tree ({self.mode} {self.path})"

    def preexec(self) -> Callable[[], None] | None:
        """Runs in the child between fork and exec: join the cgroup (or cap the address space)."""
        if self.mode == "none":
            return None
        if self.mode == "per-process":
            limit = int(self.limit_mb or 0) * 1024 * 1024

            def cap() -> None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

            return cap
        assert self.path is not None  # a cgroup mode always has its directory
        procs = str(self.path / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))

        return join

    def oom_killed(self) -> bool:
        """True once the kernel killed a process of the run for exceeding the limit."""
        if self.path is None:
            return False
        name = "memory.events" if self.mode == "cgroup2" else "memory.oom_control"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            return False
        return False

    def pids(self) -> list[int]:
        if self.path is None:
            return []
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill_all(self) -> None:
        """SIGKILL every process still in the cgroup (daemons that left the process group included)."""
        if self.path is None:
            return
        if self.mode == "cgroup2" and (self.path / "cgroup.kill").exists():
            try:
                (self.path / "cgroup.kill").write_text("1")
                return
            except OSError:
                pass
        for _ in range(5):  # v1 has no cgroup.kill; a forking process may add pids while we kill
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)

    def close(self) -> None:
        """Kill what is left and remove the cgroup (a cgroup with live processes cannot be removed)."""
        if self.path is None:
            return
        self.kill_all()
        for _ in range(40):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)
