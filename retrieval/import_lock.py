"""One importer per paper index at a time.

Two `replicate index import` runs of the same file into one index both read the same checkpoint, and the slower one
then fails inserting the records the faster one stored (UNIQUE constraint failed: papers.id); two of different files
would interleave their unit numbers with the keyword index's commits. So an import takes an OS file lock on the index
(released by the OS when the holder is killed) and a second importer is refused at once, with what to do: the first
one's progress is committed batch by batch, so rerunning after it ends resumes or finds the file done.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from retrieval.errors import PaperIndexError

F = TypeVar("F", bound=Callable[..., Any])


def one_importer(method: F) -> F:
    """Decorate a PaperIndex method (it has `self.path`, the index folder) so it runs under the index's import lock."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        folder = Path(self.path)
        lock = FileLock(str(folder / ".import.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout as exc:
            raise PaperIndexError(
                f"another `replicate index import` is writing the index at {folder}; wait for it to finish, then rerun "
                "(an import resumes where the last one stopped, and a finished file is skipped)"
            ) from exc
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()

    return locked  # type: ignore[return-value]  # same signature as `method`
