"""The metadata cache: (path, size, mtime, ctime, inode, device) -> sha256.

A file whose stat fields all still match what was recorded when it was
hashed is not read again. ctime is part of the key because every write
changes it and it cannot be set from user space, so ``touch -d`` restoring
an old mtime after an edit still invalidates the entry.

"Racily clean" files (git's term) are never recorded: if a file changed
within ``RACY_NS`` of being hashed, a later write in the same timestamp
tick could leave every stat field unchanged, so such a file is simply
hashed again next time.

Stored as one SQLite database in WAL mode, so concurrent builds can read
while one writes; a damaged database is moved aside and rebuilt, since the
cache only ever saves work.
"""
from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1
RACY_NS = 1_000_000_000  # a changed file is trusted only once it is this old

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    digest TEXT NOT NULL
) WITHOUT ROWID
"""


@dataclass(frozen=True)
class StatKey:
    """The stat fields that must all be unchanged for a cached digest to hold."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int

    @classmethod
    def of(cls, st: os.stat_result) -> "StatKey":
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    def is_racy(self, now_ns: int) -> bool:
        return now_ns - max(self.mtime_ns, self.ctime_ns) < RACY_NS


class MetadataCache:
    """A persistent stat -> digest map under ``directory`` (``metadata.db``)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "metadata.db"
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple] = []

    # -- opening ---------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError:
            # Damaged or foreign file: keep it for inspection and start afresh.
            os.replace(self.path, self.path.with_suffix(f".damaged-{int(time.time())}"))
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            db.execute("DROP TABLE IF EXISTS files")
        db.execute(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return db

    # -- reading ---------------------------------------------------------
    def load_tree(self, root: Path | str) -> dict[str, tuple[StatKey, str]]:
        """Every entry recorded under the directory ``root`` (absolute paths), in one query."""
        prefix = str(root).rstrip("/") + "/"
        # All keys that start with prefix sort between prefix and prefix with "/" -> "0".
        upper = prefix[:-1] + "0"
        try:
            rows = self._connect().execute(
                "SELECT path, size, mtime_ns, ctime_ns, ino, dev, digest FROM files"
                " WHERE path >= ? AND path < ?", (prefix, upper)
            ).fetchall()
        except sqlite3.DatabaseError:
            return {}
        return {r[0]: (StatKey(r[1], r[2], r[3], r[4], r[5]), r[6]) for r in rows}

    def lookup(self, path: str, key: StatKey) -> str | None:
        try:
            row = self._connect().execute(
                "SELECT size, mtime_ns, ctime_ns, ino, dev, digest FROM files WHERE path = ?", (path,)
            ).fetchone()
        except sqlite3.DatabaseError:
            return None
        if row is None or StatKey(*row[:5]) != key:
            return None
        return row[5]

    # -- writing ---------------------------------------------------------
    def record(self, path: str, key: StatKey, digest: str, now_ns: int | None = None) -> bool:
        """Remember a digest (kept in memory until ``flush``); False if too fresh to trust."""
        if key.is_racy(time.time_ns() if now_ns is None else now_ns):
            return False
        self._pending.append((path, key.size, key.mtime_ns, key.ctime_ns, key.ino, key.dev, digest))
        return True

    def flush(self) -> int:
        """Write what was recorded in one transaction; returns the number of rows."""
        rows, self._pending = self._pending, []
        if not rows:
            return 0
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?)", rows)
            db.execute("COMMIT")
        except sqlite3.DatabaseError:
            # Another build holding the lock past the timeout, a full disk: the
            # cache is an optimisation, so losing one write is fine.
            if self._db is not None and self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return 0
        return len(rows)

    def forget_missing(self, root: Path | str, seen: set[str]) -> int:
        """Drop entries under ``root`` for files that were not seen by a full walk."""
        stale = [p for p in self.load_tree(root) if p not in seen]
        if stale:
            try:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE")
                db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in stale])
                db.execute("COMMIT")
            except sqlite3.DatabaseError:
                return 0
        return len(stale)

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> "MetadataCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
