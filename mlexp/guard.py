"""The tamper guard: sha256 hashes of every file a comparison depends on, recorded before the first run.

A replication's verdicts rest on three kinds of files: the harness's own source (the `mlexp` package: runner,
metrics parser, comparison), the data, and the evaluation files (the approved spec and targets, a tune target's
protected evaluate.py). `record_guard` hashes all of them into a guard file BEFORE the first run of a replication
(the smoke run included) and returns a seal (the sha256 of the guard file) to keep where runs cannot write;
`verify_guard` re-hashes them and lists every change, and a changed guard file when the seal no longer matches.

Why the check cannot be edited by the run: runs execute in the sandbox (`mlexp.sandbox`), where the harness
source, the data, the evaluation files and the guard file are read-only; and the checking code is this module as the
harness process imported it before any run, so an edit of the file on disk changes nothing in the running check.
With `--no-sandbox` the first half does not hold: the guard still flags the edit, but it runs in a later process
only if the person starts one.

`run_fingerprint` / `fingerprint_changes` are the per-run form `mlexp.api.run_script` uses around every run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from mlexp import atomic
from mlexp.errors import MlexpError

HARNESS_DIR = Path(__file__).resolve().parent
GUARD_VERSION = 2


class GuardError(MlexpError):
    """A guard cannot be recorded (already recorded, unreadable inputs)."""


class GuardRecord(BaseModel):
    """The guard file's content."""

    version: int = GUARD_VERSION
    created_at: str = ""
    harness: dict[str, str] = Field(default_factory=dict)
    data_paths: list[str] = Field(default_factory=list)
    data: dict[str, str] = Field(default_factory=dict)
    evaluation_paths: list[str] = Field(default_factory=list)
    evaluation: dict[str, str] = Field(default_factory=dict)


def hash_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def harness_fingerprint(root: str | Path | None = None) -> dict[str, str]:
    """sha256 of every source file of the harness (the `mlexp` package), keyed "mlexp/<relative path>"."""
    root = Path(root) if root is not None else HARNESS_DIR
    out = {}
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file() or path.suffix in (".pyc", ".pyo"):
            continue
        out[f"{root.name}/{path.relative_to(root).as_posix()}"] = hash_file(path)
    return out


def data_fingerprint(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of data files; a directory contributes every file under it (hidden files skipped), keyed by path."""
    out = {}
    for item in paths:
        item = Path(item)
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if any(part.startswith(".") for part in path.relative_to(item).parts):
                    continue
                out[str(path)] = hash_file(path)
        elif item.is_file():
            out[str(item)] = hash_file(item)
        else:
            out[str(item)] = "missing"
    return out


STAT_MAX_FILES = 10_000  # per path: a per-run fingerprint must stay cheap on a dataset of a million files


def stat_fingerprint(paths: Iterable[str | Path]) -> dict[str, str]:
    """Size and mtime of data files (directories walked, at most STAT_MAX_FILES each): the cheap per-run form for
    data that may be gigabytes; the replication's guard (`record_guard`) hashes every byte once."""
    out = {}
    for item in paths:
        item = Path(item)
        files = list(itertools.islice(item.rglob("*"), STAT_MAX_FILES)) if item.is_dir() else [item]
        for path in files:
            try:
                st = path.stat()
                out[str(path)] = f"size={st.st_size} mtime_ns={st.st_mtime_ns}"
            except OSError:
                out[str(path)] = "missing"
    return out


def _shown(digest: str) -> str:
    """A sha256 shortened to 12 digits, prefixed; a stat fingerprint ("size=... mtime_ns=...") as it is."""
    return f"sha256 {digest[:12]}" if len(digest) == 64 else f"stat   {digest}"


def fingerprint_changes(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Human-readable list of what changed between two fingerprints: modified, removed and added files."""
    problems = []
    for name in sorted(set(recorded) | set(current)):
        if name not in current:
            problems.append(f"{name}: removed since it was recorded")
        elif name not in recorded:
            problems.append(f"{name}: added since the fingerprint was recorded")
        elif recorded[name] != current[name]:
            problems.append(f"{name}: content changed ({_shown(recorded[name])} -> {_shown(current[name])[7:]})")
    return problems


def tamper_check(
    recorded_harness: Mapping[str, str] | None = None,
    recorded_data: Mapping[str, str] | None = None,
    *,
    data_paths: Iterable[str | Path] | None = None,
) -> list[str]:
    """Compare recorded fingerprints with the files as they are now; an empty list means nothing changed.

    `data_paths` are the files/directories the data fingerprint was taken over (so files added to a data
    directory are flagged too); by default the recorded file names themselves are re-hashed.
    """
    problems = []
    if recorded_harness is not None:
        problems += [f"harness {p}" for p in fingerprint_changes(recorded_harness, harness_fingerprint())]
    if recorded_data is not None:
        current = data_fingerprint(list(data_paths) if data_paths is not None else list(recorded_data))
        problems += [f"data {p}" for p in fingerprint_changes(recorded_data, current)]
    return problems


def _resolved(paths: Iterable[str | Path]) -> list[str]:
    return [str(Path(p).expanduser().resolve()) for p in paths if p]


def record_guard(
    path: str | Path,
    *,
    data_paths: Iterable[str | Path] = (),
    evaluation_paths: Iterable[str | Path] = (),
    overwrite: bool = False,
) -> str:
    """Hash the harness source, the data and the evaluation files into `path` (JSON, atomic); return the seal.

    Call it once per replication, before its first run (the smoke run included). A guard that exists is never
    replaced silently (GuardError) unless `overwrite`: re-recording after a run would bless whatever it changed.
    The seal is the sha256 of the guard file: keep it where no run can write (the agent's state) and pass it to
    `verify_guard`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise GuardError(f"tamper guard {path} is already recorded; verify it, or pass overwrite=True to re-record")
    data, evaluation = _resolved(data_paths), _resolved(evaluation_paths)
    guard = GuardRecord(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), harness=harness_fingerprint(),
        data_paths=data, data=data_fingerprint(data), evaluation_paths=evaluation,
        evaluation=data_fingerprint(evaluation),
    )  # fmt: skip
    text = json.dumps(guard.model_dump(), indent=1, sort_keys=True) + "\n"
    atomic.write_text(path, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify_guard(path: str | Path, *, seal: str | None = None) -> list[str]:
    """What changed since `record_guard(path, ...)`: [] when nothing did.

    Lists changed, removed and added harness source files, data files and evaluation files; with `seal`, also a
    guard file that was rewritten. One problem line when the guard file is missing or unreadable (the check could
    not be made, which is itself a finding).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        guard = GuardRecord.model_validate_json(raw)
    except (OSError, ValueError) as exc:
        return [f"tamper guard {path} cannot be read ({type(exc).__name__}: {exc}): harness integrity not verified"]
    problems = []
    if seal is not None and hashlib.sha256(raw).hexdigest() != seal:
        problems.append(f"tamper guard {path} was rewritten after it was recorded (its seal does not match)")
    problems += [f"harness {p}" for p in fingerprint_changes(guard.harness, harness_fingerprint())]
    data_now = data_fingerprint(guard.data_paths or list(guard.data))
    problems += [f"data {p}" for p in fingerprint_changes(guard.data, data_now)]
    eval_now = data_fingerprint(guard.evaluation_paths or list(guard.evaluation))
    problems += [f"evaluation {p}" for p in fingerprint_changes(guard.evaluation, eval_now)]
    return problems


def write_guard(path: str | Path, data_paths: Iterable[str | Path] = ()) -> dict[str, object]:
    """Version-1 form kept for existing callers: record (or re-record) harness + data hashes; returns the guard."""
    record_guard(path, data_paths=data_paths, overwrite=True)
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_guard(path: str | Path) -> list[str]:
    """Version-1 form kept for existing callers: `verify_guard` without a seal."""
    return verify_guard(path)


def run_fingerprint(protected: Iterable[str | Path], data: Iterable[str | Path]) -> dict[str, str]:
    """What one run must not change: harness source and protected (evaluation) files by sha256, data by stat."""
    out = {f"harness {k}": v for k, v in harness_fingerprint().items()}
    out.update({f"evaluation {k}": v for k, v in data_fingerprint(_resolved(protected)).items()})
    out.update({f"data {k}": v for k, v in stat_fingerprint(_resolved(data)).items()})
    return out
