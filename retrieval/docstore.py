"""The index's source of truth: a SQLite file of papers and their searchable units.

A *unit* is what gets a keyword-index document and a vector: one arXiv abstract, or one page-tagged chunk of an added
PDF. Units are numbered by SQLite's INTEGER PRIMARY KEY (`uid`, 1, 2, ...), which the keyword index (retrieval/
keyword.py), the vector file and the Chroma ids use as their key. Every import batch is committed in one
transaction together with its file checkpoint, so a killed import loses at most the batch in flight and a rerun
resumes at the committed offset; `papers.id` is the primary key, so a record is never stored twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from retrieval.arxiv_import import Record
from retrieval.errors import PaperIndexError

MMAP_BYTES = 1 << 34  # address space only; pages are mapped as they are read

SCHEMA = """
CREATE TABLE IF NOT EXISTS papers (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, title TEXT, authors TEXT, abstract TEXT, categories TEXT,
    date TEXT, year INTEGER, sha256 TEXT, path TEXT, parser TEXT, fulltext TEXT
);
CREATE INDEX IF NOT EXISTS papers_sha ON papers(sha256);
CREATE TABLE IF NOT EXISTS units (
    uid INTEGER PRIMARY KEY, paper_id TEXT NOT NULL, chunk INTEGER, page INTEGER, text TEXT,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS units_paper ON units(paper_id);
CREATE TABLE IF NOT EXISTS imports (
    source TEXT PRIMARY KEY, offset INTEGER NOT NULL, lines INTEGER NOT NULL, imported INTEGER NOT NULL,
    duplicates INTEGER NOT NULL, malformed INTEGER NOT NULL, done INTEGER NOT NULL, updated REAL
);
CREATE TABLE IF NOT EXISTS bad_files (path TEXT PRIMARY KEY, sha256 TEXT, error TEXT, at REAL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class DocStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)  # explicit BEGIN/COMMIT below
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # reads through a memory map: a search's ~10 random row lookups in a GB-sized file cost ~3x less than
            # through read() calls (writes still go through SQLite's journal, so crash safety is unchanged)
            self.db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            self.db.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:  # a read-only or full home, a database locked by a stuck writer
            raise PaperIndexError(
                f"cannot open the paper index {path}: {exc}; its folder must be writable with free space "
                "(REPLICATE_HOME, or --index-dir)"
            ) from exc
        except sqlite3.DatabaseError as exc:  # not a database, or damaged
            raise PaperIndexError(
                f"the paper index {path} is damaged ({exc}); rebuild it (move it aside, then `replicate index "
                "import` / `index add` again)"
            ) from exc

    def close(self) -> None:
        self.db.close()

    # -- meta ---------------------------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- import checkpoints -------------------------------------------------------------------------------------
    def checkpoint(self, source: str) -> dict | None:
        row = self.db.execute(
            "SELECT offset, lines, imported, duplicates, malformed, done FROM imports WHERE source=?", (source,)
        ).fetchone()
        if not row:
            return None
        return dict(zip(("offset", "lines", "imported", "duplicates", "malformed", "done"), row, strict=True))

    def add_arxiv_batch(self, records: list[Record], source: str, state: dict) -> tuple[list[Record], int, int]:
        """Insert new records and their units, and move the checkpoint, in ONE transaction.

        Returns (new records, duplicates, uid of the first new unit): the new units' uids are consecutive, in the
        order of the new records (one writer at a time: BEGIN IMMEDIATE)."""
        seen: set[str] = set()
        fresh: list[Record] = []
        for rec in records:
            if rec.id not in seen:
                seen.add(rec.id)
                fresh.append(rec)
        ids = [r.id for r in fresh]
        existing: set[str] = set()
        for i in range(0, len(ids), 900):  # SQLite's bound-variable limit
            part = ids[i : i + 900]
            marks = ",".join("?" * len(part))
            existing.update(r[0] for r in self.db.execute(f"SELECT id FROM papers WHERE id IN ({marks})", part))
        new = [r for r in fresh if r.id not in existing]
        dupes = len(records) - len(new)
        state["imported"] += len(new)
        state["duplicates"] += dupes
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO papers(id, source, title, authors, abstract, categories, date, year) "
                "VALUES (?, 'arxiv', ?, ?, ?, ?, ?, ?)",
                [(r.id, r.title, r.authors, r.abstract, " ".join(r.categories), r.date, r.year) for r in new],
            )
            first = self.db.execute("SELECT COALESCE(MAX(uid), 0) + 1 FROM units").fetchone()[0]
            self.db.executemany("INSERT INTO units(paper_id) VALUES (?)", [(r.id,) for r in new])
            self._save_checkpoint(source, state)
            self.db.execute("COMMIT")
        except BaseException as exc:
            if self.db.in_transaction:  # a failed COMMIT (disk full) may already have ended the transaction
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):  # disk full, read-only folder, locked database
                raise PaperIndexError(
                    f"cannot write {self.path}: {exc}; nothing of this batch was stored - fix that, then rerun the "
                    "import (it resumes at the last stored batch)"
                ) from exc
            raise
        return new, dupes, int(first)

    def _save_checkpoint(self, source: str, state: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO imports(source, offset, lines, imported, duplicates, malformed, done, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                source,
                state["offset"],
                state["lines"],
                state["imported"],
                state["duplicates"],
                state["malformed"],
                int(state.get("done", 0)),
                time.time(),
            ),
        )

    def finish_import(self, source: str, state: dict) -> None:
        state["done"] = 1
        self._save_checkpoint(source, state)

    # -- full-text papers ---------------------------------------------------------------------------------------
    def paper_by_sha(self, sha256: str) -> str | None:
        row = self.db.execute("SELECT id FROM papers WHERE sha256=?", (sha256,)).fetchone()
        return row[0] if row else None

    def add_pdf_paper(self, paper_id: str, meta: dict, fulltext: str, chunks: list[tuple[int, int, str]]) -> None:
        """Insert (or replace) a full-text paper and its chunks atomically; old chunks are tombstoned."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("UPDATE units SET deleted=1 WHERE paper_id=?", (paper_id,))
            self.db.execute("DELETE FROM papers WHERE id=?", (paper_id,))
            self.db.execute(
                "INSERT INTO papers(id, source, title, authors, abstract, categories, date, year, sha256, path, "
                "parser, fulltext) VALUES (?, 'pdf', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    paper_id,
                    meta.get("title", ""),
                    meta.get("authors", ""),
                    meta.get("abstract", ""),
                    meta.get("categories", ""),
                    meta.get("date", ""),
                    meta.get("year") or 0,
                    meta.get("sha256"),
                    meta.get("path"),
                    meta.get("parser"),
                    fulltext,
                ),
            )
            self.db.executemany(
                "INSERT INTO units(paper_id, chunk, page, text) VALUES (?, ?, ?, ?)",
                [(paper_id, c, p, t) for c, p, t in chunks],
            )
            self.db.execute("DELETE FROM bad_files WHERE path=?", (meta.get("path"),))
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def record_bad_file(self, path: str, sha256: str | None, error: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO bad_files(path, sha256, error, at) VALUES (?, ?, ?, ?)",
            (path, sha256, error, time.time()),
        )

    def bad_files(self) -> list[dict]:
        rows = self.db.execute("SELECT path, error FROM bad_files ORDER BY at").fetchall()
        return [{"path": p, "error": e} for p, e in rows]

    # -- reads --------------------------------------------------------------------------------------------------
    def max_uid(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(uid), 0) FROM units").fetchone()[0]

    def count_papers(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM papers").fetchone()[0]

    def count_by_source(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT source, COUNT(*) FROM papers GROUP BY source").fetchall())

    def count_units(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM units WHERE deleted=0").fetchone()[0]

    def deleted_uids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT uid FROM units WHERE deleted=1")]

    def iter_units(self, lo: int, hi: int, chunk: int = 20000) -> Iterator[list[tuple]]:
        """(uid, title, text, categories, date) for uids in [lo, hi), in uid order, `chunk` rows at a time."""
        sql = (
            "SELECT u.uid, p.title, COALESCE(u.text, p.abstract), p.categories, p.date FROM units u "
            "JOIN papers p ON p.id = u.paper_id WHERE u.uid >= ? AND u.uid < ? ORDER BY u.uid LIMIT ?"
        )
        yield from self._pages(sql, lo, hi, chunk)

    def iter_keyword_units(self, lo: int, hi: int, chunk: int = 20000) -> Iterator[list[tuple]]:
        """(uid, paper_id, title, text, categories, date, source) of the live units with uid in [lo, hi), in uid
        order: what the keyword index needs to (re)index them."""
        sql = (
            "SELECT u.uid, u.paper_id, p.title, COALESCE(u.text, p.abstract), p.categories, p.date, p.source "
            "FROM units u JOIN papers p ON p.id = u.paper_id "
            "WHERE u.uid >= ? AND u.uid < ? AND u.deleted = 0 ORDER BY u.uid LIMIT ?"
        )
        yield from self._pages(sql, lo, hi, chunk)

    def _pages(self, sql: str, lo: int, hi: int, chunk: int) -> Iterator[list[tuple]]:
        """Rows of `sql` (parameters: uid from, uid to, limit; first column the uid) in pages of `chunk`."""
        cur = lo
        while cur < hi:
            rows = self.db.execute(sql, (cur, hi, chunk)).fetchall()
            if not rows:
                return
            yield rows
            cur = rows[-1][0] + 1

    def drop_checkpoint(self, source: str) -> None:
        self.db.execute("DELETE FROM imports WHERE source=?", (source,))

    def unit_rows(self, uids: list[int]) -> dict[int, tuple]:
        """uid -> (paper_id, chunk, page, text, title, year, source, abstract) for the given uids."""
        out: dict[int, tuple] = {}
        for i in range(0, len(uids), 900):
            part = uids[i : i + 900]
            marks = ",".join("?" * len(part))
            sql = (
                "SELECT u.uid, u.paper_id, u.chunk, u.page, u.text, p.title, p.year, p.source, p.abstract "
                f"FROM units u JOIN papers p ON p.id = u.paper_id WHERE u.uid IN ({marks})"
            )
            for row in self.db.execute(sql, part):
                out[row[0]] = row[1:]
        return out

    def paper(self, paper_id: str) -> dict | None:
        row = self.db.execute(
            "SELECT id, source, title, authors, abstract, categories, date, year, sha256, path, parser, fulltext "
            "FROM papers WHERE id=?",
            (paper_id,),
        ).fetchone()
        if not row:
            return None
        keys = ("id", "source", "title", "authors", "abstract", "categories", "date", "year", "sha256", "path")
        out = dict(zip(keys, row[:10], strict=True))
        out["parser"], out["fulltext"] = row[10], row[11]
        return out

    def import_summaries(self) -> list[dict]:
        rows = self.db.execute("SELECT source, lines, imported, duplicates, malformed, done FROM imports").fetchall()
        keys = ("source", "lines", "imported", "duplicates", "malformed", "done")
        return [dict(zip(keys, r, strict=True)) for r in rows]


def dumps(obj: object) -> str:
    return json.dumps(obj, sort_keys=True)
