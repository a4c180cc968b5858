"""Atomic file writes: temp file in the same directory, fsync, os.replace.

A run killed at any instant (SIGKILL, full disk, power loss) leaves either the old file or the new one, never a
half-written one. Used for every file the harness writes and for the script-side helper's outputs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # flush to disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def strict(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, Infinity) replaced by None, so it is valid JSON (RFC 8259)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: strict(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(value) for value in obj]
    return obj


def write_json(path: Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Strict JSON: NaN and Infinity become null (Python's json would write tokens other parsers reject)."""
    text = json.dumps(strict(obj), indent=indent, sort_keys=False, default=str, allow_nan=False) + "\n"
    return write_text(path, text)


def write_csv(path: Path, frame: Any) -> Path:
    """A pandas DataFrame as CSV (no index column: the id column is explicit)."""
    return _atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_parquet(path: Path, frame: Any) -> Path:
    return _atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
