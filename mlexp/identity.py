"""Experiment identity (§11 of the practices guide): a hash of the resolved config plus the commit of the code.

Same config + same code = same identity = the run is skipped. Changed config or changed code = a new identity, so
results from different code versions are never silently compared. The code commit is the last commit that touched
the code dir plus, when the code dir has uncommitted changes, a hash of those changes (a dirty tree is not the
commit it says). A code dir outside git is identified by a hash of its source files.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from collections.abc import Iterable
from pathlib import Path

from mlexp.errors import ConfigError

# Files that make up "the code" when the code dir is not in git. Outputs (parquet, logs, checkpoints) are not code.
CODE_SUFFIXES = {".py", ".sh", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json", ".txt", ".r", ".jl", ".c", ".cpp"}
# A directory holding one of these is a runs root or a run dir, never code.
OUTPUT_MARKERS = ("registry.json", "record.json", "metadata.json")


def _check_value(value: object, where: str) -> object:
    """Reject what would make the hash ambiguous or the config unreproducible (NaN, objects, non-str keys)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"config value {where} is {value}; use a finite number or null")
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"config key {key!r} under {where or 'the top level'} is not a string")
            out[key] = _check_value(item, f"{where}.{key}" if where else key)
        return out
    if isinstance(value, list | tuple):
        return [_check_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ConfigError(f"config value {where} has type {type(value).__name__}; only JSON types are allowed")


def resolve_config(config: object, *, seed: int, smoke: bool) -> dict:
    """The config the run really uses: the user's keys plus seed and smoke, validated as plain JSON."""
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a mapping of names to values, got {type(config).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    resolved = _check_value(dict(config), "")
    assert isinstance(resolved, dict)
    for key, want in (("seed", seed), ("smoke", bool(smoke))):
        if key in resolved and resolved[key] != want:
            raise ConfigError(f"config sets {key}={resolved[key]!r} but the run asks for {key}={want!r}; set it once")
        resolved[key] = want
    return resolved


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON form (sorted keys, no whitespace): key order never changes the identity."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _git(code_dir: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(code_dir), *args], capture_output=True, timeout=30, check=False, text=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", "surrogateescape")


def _is_excluded(path: Path, exclude: Iterable[Path]) -> bool:
    return any(path == ex or ex in path.parents for ex in exclude)


def _files_hash(code_dir: Path, exclude: list[Path]) -> str:
    digest = hashlib.sha256()
    skipped_dirs: set[Path] = set()
    for path in sorted(code_dir.rglob("*")):
        rel = path.relative_to(code_dir)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if path.is_dir():
            if any((path / marker).exists() for marker in OUTPUT_MARKERS):
                skipped_dirs.add(path)
            continue
        if _is_excluded(path, exclude) or any(d in path.parents for d in skipped_dirs):
            continue
        if path.suffix.lower() not in CODE_SUFFIXES or not path.is_file():
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_commit(code_dir: Path, *, exclude: Iterable[Path] = ()) -> str:
    """`<sha>` of the last commit touching `code_dir`, `<sha>+<diff hash>` when dirty, `files-<hash>` outside git.

    Only changes inside `code_dir` count as dirty: a neighbour editing another part of the repo does not change
    the identity of this code. Paths under `exclude` (e.g. a runs root inside the code dir) never count.
    """
    code_dir = Path(code_dir).resolve()
    excluded = [Path(p).resolve() for p in exclude]
    head = _git(code_dir, "rev-parse", "--short=10", "HEAD")
    if head is None:
        return "files-" + _files_hash(code_dir, excluded)[:10]
    # The last commit that touched the code dir, not HEAD: when the code dir is one folder of a larger repo, a
    # commit elsewhere in that repo must not change the identity of this code (seeds of one series would get
    # different identities, and completed runs would be repeated instead of skipped).
    last = (_git(code_dir, "log", "-1", "--format=%H", "--", ".") or "").strip()
    head = last[:10] if last else head.strip()
    diff = _git(code_dir, "diff", "HEAD", "--binary", "--", ".") or ""
    untracked = _git(code_dir, "ls-files", "--others", "--exclude-standard", "-z", "--", ".") or ""
    top = Path((_git(code_dir, "rev-parse", "--show-toplevel") or str(code_dir)).strip())
    extra = hashlib.sha256()
    for rel in sorted(filter(None, untracked.split("\0"))):
        path = (code_dir / rel).resolve()
        if not path.exists():  # ls-files may answer relative to the repo top in older gits
            path = (top / rel).resolve()
        if _is_excluded(path, excluded) or not path.is_file():
            continue
        if path.suffix.lower() not in CODE_SUFFIXES:
            continue
        extra.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    if not diff and extra.hexdigest() == hashlib.sha256().hexdigest():
        return head
    dirty = hashlib.sha256(diff.encode("utf-8", "surrogateescape") + extra.digest()).hexdigest()
    return f"{head}+{dirty[:8]}"


def make_identity(config_digest: str, commit: str) -> str:
    """`{config_hash[:8]}_{commit}`, the directory name and registry key of a run."""
    return f"{config_digest[:8]}_{commit}"
