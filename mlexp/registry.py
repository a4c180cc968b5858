"""The run registry (JSON + file lock) and the `runs.yaml` stability log (§11).

The registry says *what was run*: one entry per identity with status running/completed/failed. Every update takes
the lock, re-reads the file and writes it atomically, so concurrent runners never lose each other's entries and a
killed runner never leaves a corrupt file. A `running` entry remembers the runner's pid, host and process start time;
if that process is gone, the next caller marks the entry failed ("killed") and kills the orphaned script's process
group, so a SIGKILLed runner never leaves a run that looks alive forever.

`runs.yaml` says *whether a run is safe to trust*: status stable/unstable/investigating, date, git commit,
environment, notes and metrics. It lives in the project dir (the runs root's parent) so it can be committed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from filelock import FileLock, Timeout

from mlexp import atomic
from mlexp.errors import RegistryError
from mlexp.record import RunRecord

LOCK_TIMEOUT_S = 60.0


def process_start_time(pid: int) -> float | None:
    """Start time of a live process (guards against pid reuse), None when it is not running."""
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except Exception:  # noqa: BLE001 - psutil missing, NoSuchProcess, AccessDenied: treat as gone/unknown below
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0.0
        return 0.0


def _runner_alive(record: RunRecord) -> bool:
    if record.runner_pid is None:
        return False
    started = process_start_time(record.runner_pid)
    if started is None:
        return False
    if record.runner_start_time and started and abs(started - record.runner_start_time) > 2.0:
        return False  # the pid was reused by another process
    return True


def _kill_orphan_group(pgid: int | None, not_before: float | None) -> None:
    """Kill the dead runner's script group, if its leader is still the process the runner started."""
    if not pgid or pgid <= 1:
        return
    started = process_start_time(pgid)
    if started is None or (not_before and started and started + 1.0 < not_before):
        return  # leader gone, or the pid now belongs to an older, unrelated process
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Registry:
    """All runs under one runs root, keyed by identity. `path` is the registry JSON file (created on first write)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = FileLock(str(self.path) + ".lock")

    # -- reading -------------------------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": 1, "runs": {}}
        except UnicodeDecodeError as exc:  # overwritten with binary data: as unparsable as bad JSON, never rewritten
            raise RegistryError(
                f"registry {self.path} is not valid registry JSON (not UTF-8 text: {exc.reason} at byte {exc.start}); "
                "fix or move it"
            ) from exc
        except OSError as exc:
            raise RegistryError(f"cannot read registry {self.path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
                raise ValueError("missing 'runs' mapping")
        except ValueError as exc:
            # Never overwrite a file we cannot parse: it may hold the only record of earlier runs.
            raise RegistryError(f"registry {self.path} is not valid registry JSON ({exc}); fix or move it") from exc
        return data

    def _write(self, data: dict[str, Any]) -> None:
        try:
            atomic.write_text(self.path, json.dumps(data, indent=2, default=str) + "\n")
        except OSError as exc:
            what = "disk full" if exc.errno in (28, 122) else (exc.strerror or str(exc))
            raise RegistryError(f"cannot write registry {self.path}: {what}; the previous registry is intact") from exc

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the file lock for one read-modify-write, never longer: other runners wait on it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout as exc:
            raise RegistryError(
                f"registry {self.path} is locked by another process for over {LOCK_TIMEOUT_S}s"
            ) from exc
        except OSError as exc:
            raise RegistryError(f"cannot lock registry {self.path}: {exc.strerror or exc}") from exc
        try:
            yield
        finally:
            self.lock.release()

    @contextmanager
    def claiming(self) -> Iterator[None]:
        """Hold the registry lock across a check and the registration it decides: `get` and `put` inside take the
        same (re-entrant) lock again, so two runners of one identity cannot both find it free and both run it."""
        with self._locked():
            yield

    def _reap(self, data: dict[str, Any]) -> bool:
        """Turn `running` entries whose runner died on this host into failed/killed. Returns True if changed."""
        host = socket.gethostname()
        changed = False
        for key, raw in data["runs"].items():
            if raw.get("status") != "running" or raw.get("runner_host") != host:
                continue
            record = RunRecord.model_validate(raw)
            if _runner_alive(record):
                continue
            _kill_orphan_group(record.child_pgid, record.runner_start_time)
            record.status = "failed"
            record.exit_reason = "killed"
            record.ended_at = record.ended_at or time.strftime("%Y-%m-%dT%H:%M:%S%z")
            record.error = (
                f"runner process {record.runner_pid} on {host} died while the run was in progress (interrupted)"
            )
            data["runs"][key] = record.model_dump(mode="json")
            changed = True
            try:  # best effort: the run dir's own record should agree with the registry
                record.save()
            except OSError:
                pass
        return changed

    # -- public --------------------------------------------------------------------------------------------------
    def all(self) -> list[RunRecord]:
        """Every run, oldest first, after reaping dead `running` entries."""
        with self._locked():
            data = self._read()
            if self._reap(data):
                self._write(data)
        records = [RunRecord.model_validate(raw) for raw in data["runs"].values()]
        return sorted(records, key=lambda r: (r.started_at or "", r.identity))

    def get(self, identity: str) -> RunRecord | None:
        with self._locked():
            data = self._read()
            if self._reap(data):
                self._write(data)
        raw = data["runs"].get(identity)
        return RunRecord.model_validate(raw) if raw else None

    def put(self, record: RunRecord) -> None:
        """Insert or replace one entry (never stores `skipped`, which describes a call, not a run)."""
        with self._locked():
            data = self._read()
            data["runs"][record.identity] = record.model_copy(update={"skipped": False}).model_dump(mode="json")
            self._write(data)

    def find(self, prefix: str) -> RunRecord:
        """The one run whose identity starts with `prefix` (or whose run dir name equals it)."""
        return _unique_match(self.all(), prefix, f"in {self.path}")


def list_runs(runs_root: str | Path, *, nested: bool = False) -> list[RunRecord]:
    """Every run recorded under a runs root (empty when nothing has run there yet).

    With `nested=True` also the registries of runs roots up to three levels below (e.g. a project's
    runs/<replication>/experiments/registry.json), so one listing covers a whole project.
    """
    paths = discover_registries(runs_root) if nested else [Path(runs_root) / "registry.json"]
    records = [record for path in paths for record in Registry(path).all()]
    return sorted(records, key=lambda r: (r.started_at or "", r.identity))


def discover_registries(root: str | Path, depth: int = 3) -> list[Path]:
    """registry.json files at `root` and up to `depth` folder levels below it (run dirs are not searched)."""
    root = Path(root)
    found = []
    for level in range(depth + 1):
        found += sorted(root.glob("/".join(["*"] * level + ["registry.json"])))
    return found


def find_run(root: str | Path, prefix: str) -> RunRecord:
    """The one run, in any registry under `root`, whose identity starts with `prefix`."""
    records = [r for path in discover_registries(root) for r in Registry(path).all()]
    return _unique_match(records, prefix, f"under {root}")


# -- runs.yaml stability log -------------------------------------------------------------------------------------
StabilityStatus = Literal["stable", "unstable", "investigating"]


def stability_status(record: RunRecord) -> tuple[StabilityStatus, str]:
    """Automatic status and note: failed → unstable, check problems → investigating, clean → stable."""
    if record.status == "failed":
        return "unstable", f"{record.exit_reason}: {(record.error or '').splitlines()[0][:200] if record.error else ''}"
    if record.check is not None and not record.check.ok:
        return "investigating", "; ".join(record.check.problems)[:400]
    kind = "smoke run" if record.smoke else "full run"
    return "stable", f"{kind} completed; post-run check passed"


class StabilityLog:
    """`runs.yaml`: a list of entries keyed by `id`. Notes a person edited (`notes_human`) are kept on update."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = FileLock(str(self.path) + ".lock")

    def read(self) -> list[dict[str, Any]]:
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or []
        except FileNotFoundError:
            return []
        except (OSError, yaml.YAMLError) as exc:
            raise RegistryError(f"cannot read stability log {self.path}: {exc}") from exc
        if not isinstance(data, list):
            raise RegistryError(f"stability log {self.path} must be a YAML list of runs")
        return data

    def upsert(self, record: RunRecord, *, config_path: str | None = None, notes: str | None = None) -> dict[str, Any]:
        status, note = stability_status(record)
        if notes:
            note = f"{notes} ({note})"
        entry = {
            "id": record.identity,
            "name": record.name,
            "config": config_path or str(Path(record.run_dir) / "config.yaml"),
            "status": status,
            "git_commit": record.code_commit,
            "date": (record.ended_at or record.started_at or "")[:16].replace("T", " "),
            "env": {k: v for k, v in record.env.items() if k in ENV_KEYS},
            "notes": note,
            "metrics": {k: round(float(v), 6) for k, v in record.metrics.items()},
        }
        try:
            with self.lock.acquire(timeout=LOCK_TIMEOUT_S):
                entries = self.read()
                for i, old in enumerate(entries):
                    if isinstance(old, dict) and old.get("id") == record.identity:
                        keep = {k: v for k, v in old.items() if k not in entry}  # human additions survive
                        entries[i] = {**entry, **keep}
                        break
                else:
                    entries.append(entry)
                header = "# runs.yaml: stability log written by mlexp (stable | unstable | investigating).\n"
                header += "# Check it for prior run status before launching jobs. Add your own keys: they are kept.\n"
                atomic.write_text(self.path, header + yaml.safe_dump(entries, sort_keys=False, allow_unicode=True))
        except Timeout as exc:
            raise RegistryError(f"stability log {self.path} is locked for over {LOCK_TIMEOUT_S}s") from exc
        except OSError as exc:
            raise RegistryError(f"cannot write stability log {self.path}: {exc.strerror or exc}") from exc
        return entry


ENV_KEYS = ("server", "host", "gpu", "cuda", "python", "torch", "vllm", "transformers", "sklearn", "numpy", "ray")


def _unique_match(records: list[RunRecord], prefix: str, where: str) -> RunRecord:
    """The one record whose identity starts with `prefix` (or whose run dir name equals it); else a clear error."""
    matches = [r for r in records if r.identity.startswith(prefix) or Path(r.run_dir).name == prefix]
    if not matches:
        raise RegistryError(f"no run matches {prefix!r} {where}")
    if len(matches) > 1:
        names = ", ".join(r.identity for r in matches[:5])
        raise RegistryError(f"{prefix!r} matches {len(matches)} runs ({names}); give more characters")
    return matches[0]
