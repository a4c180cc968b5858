"""Opening the checkpoint database (REPLICATE_HOME/checkpoints.sqlite), and its failures as one line each.

The database is the only copy of where each replication stands that the graph can resume from; `runs/<ID>/state.json`
beside each replication is a plain copy of its latest state for people and scripts. So a database that is empty
(zero bytes: truncated by a full disk or a bad copy), not a database, or damaged is refused with a line that says so
and points at those copies, instead of SQLite quietly creating fresh tables in it (every replication would vanish:
"No replications yet") or a traceback. A locked database, a read-only home and a full disk are named too. Only
errors raised inside the checkpointer (langgraph's SQLite saver, or our own queries on this connection) are mapped;
a SQLite error anywhere else is not ours to explain here and propagates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent import paths
from agent.errors import AgentError


class CheckpointDBError(AgentError):
    """The checkpoint database cannot be opened, read or written; the message says why and what to do."""


def _copies_hint() -> str:
    copies = sorted(paths.runs_dir().glob("*/state.json"))
    where = f"{len(copies)} in {paths.runs_dir()}" if copies else "under each project's runs/ folder"
    return f"the latest state of each replication is copied in runs/<ID>/state.json ({where})"


def damaged(db: Path, why: str) -> CheckpointDBError:
    return CheckpointDBError(
        f"the checkpoint database {db} {why}; {_copies_hint()}; restore the database from a backup, or move it "
        f"aside (mv {db} {db}.broken) to start new replications"
    )


def explain(exc: sqlite3.Error, db: Path) -> CheckpointDBError | None:
    """The one-line error for a SQLite failure of the checkpoint database, or None when it is none we know."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return CheckpointDBError(
            f"the checkpoint database {db} is locked by another process (a long write or a stuck replicate); "
            "wait for it, then retry"
        )
    if "not a database" in text or "malformed" in text or "encrypted" in text:
        return damaged(db, f"is damaged ({exc})")
    if "disk is full" in text or "disk i/o" in text:
        return CheckpointDBError(
            f"cannot write the checkpoint database {db}: {exc}; free space, then `replicate resume ID` "
            "(the last completed step is kept)"
        )
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return CheckpointDBError(
            f"cannot write the checkpoint database {db} ({exc}): REPLICATE_HOME must be a writable folder "
            "(set REPLICATE_HOME to one)"
        )
    return None


def _raised_by_checkpointer(exc: BaseException) -> bool:
    """True when the error comes from the checkpointer (langgraph's SQLite saver, or this module)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and ("langgraph/checkpoint" in last or last == __file__)


@contextmanager
def connect() -> Iterator[sqlite3.Connection]:
    """A connection to the checkpoint database, refused when the file is empty or damaged, closed at the end."""
    db = paths.checkpoint_db()
    if db.exists() and db.stat().st_size == 0:
        raise damaged(db, "is empty (0 bytes: truncated, e.g. by a full disk)")
    try:
        conn = sqlite3.connect(str(db), check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header: garbage fails here
    except sqlite3.Error as exc:
        opened = explain(exc, db)
        if opened is None:
            raise
        raise opened from exc
    try:
        yield conn
    except sqlite3.Error as exc:
        mapped = explain(exc, db) if _raised_by_checkpointer(exc) else None
        if mapped is None:
            raise
        raise mapped from exc
    finally:
        conn.close()
