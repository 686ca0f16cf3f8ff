"""The metadata cache: (path, size, mtime, ctime, inode, device) -> sha256.

A file whose stat fields all still match what was recorded when it was
hashed is not read again. ctime is part of the key because every write
changes it and it cannot be set from user space, so ``touch -d`` restoring
an old mtime after an edit still invalidates the entry; the inode and device
catch a file replaced by another with the same times.

"Racily clean" files (git's term) are never recorded: if a file changed
within ``RACY_NS`` of being hashed, a later write in the same timestamp
tick could leave every stat field unchanged, so such a file is simply
hashed again next time.

Storage: one SQLite database (WAL mode, so concurrent builds read while one
writes) holding one compact record per tree root — a 20,000-file context
loads in one row instead of 20,000. A write merges into the stored record
inside a transaction, so concurrent builds of the same tree add up instead
of overwriting each other. A damaged database is moved aside and rebuilt:
the cache only ever saves work.
"""
from __future__ import annotations

import marshal
import os
import sqlite3
import time
from pathlib import Path
from typing import Mapping

SCHEMA_VERSION = 2
RACY_NS = 1_000_000_000  # a changed file is trusted only once it is this old

# (size, mtime_ns, ctime_ns, inode, device): all must match for a cached digest to hold
StatKey = tuple[int, int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def is_racy(key: StatKey, now_ns: int) -> bool:
    """True if the file changed too recently for its stat fields to prove it unchanged later.

    Judged on ctime alone: the kernel sets it on every change, while mtime can
    be anything (a file unpacked with a future mtime must still be cacheable).
    """
    return now_ns - key[2] < RACY_NS


_SCHEMA = "CREATE TABLE IF NOT EXISTS trees (root TEXT PRIMARY KEY, files BLOB NOT NULL) WITHOUT ROWID"

_BUSY_WAIT_S = 10.0  # how long opening waits out another process's lock


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc) or "busy" in str(exc)


# root-relative path -> (size, mtime_ns, ctime_ns, ino, dev, digest)
_Record = dict[str, tuple[int, int, int, int, int, str]]


def _decode(blob: bytes) -> _Record:
    try:
        data = marshal.loads(blob)
    except (ValueError, EOFError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


class MetadataCache:
    """A persistent stat -> digest map under ``directory`` (``metadata.db``)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "metadata.db"
        self._db: sqlite3.Connection | None = None
        self._pending: dict[str, _Record] = {}

    # -- opening ---------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        self.directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + _BUSY_WAIT_S
        while True:
            try:
                self._db = self._open()
                return self._db
            except sqlite3.OperationalError as exc:
                # Another process opening a new database switches it to WAL under an exclusive
                # lock, and SQLite may say "locked" at once rather than wait: that is no reason
                # to call the file damaged (and lose what the others saved). Wait for it.
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
            except sqlite3.DatabaseError:
                # Damaged or foreign file: keep it for inspection and start afresh.
                os.replace(self.path, self.path.with_name(f"metadata.damaged-{time.time_ns()}"))
                self._db = self._open()
                return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # No fsync: a crash can at worst damage the file, which is then set aside and
            # rebuilt (it is only a cache), while every build saves the fsyncs of a
            # checkpoint (~0.3 s for a 20,000-file tree on this machine's disk).
            db.execute("PRAGMA synchronous=OFF")
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                # Looked at again under the write lock: another process may have just made
                # the new layout and saved into it, which a second migration would drop.
                db.execute("BEGIN IMMEDIATE")
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    db.execute("DROP TABLE IF EXISTS files")  # version 1's layout
                    db.execute("DROP TABLE IF EXISTS trees")
                    db.execute(_SCHEMA)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            db.execute(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _read(self, db: sqlite3.Connection, root: str) -> _Record:
        row = db.execute("SELECT files FROM trees WHERE root = ?", (root,)).fetchone()
        return _decode(row[0]) if row else {}

    # -- reading ---------------------------------------------------------
    def load_relative(self, root: Path | str) -> dict[str, tuple]:
        """Everything recorded under ``root``: relpath -> (size, mtime_ns, ctime_ns, ino, dev, digest)."""
        try:
            return self._read(self._connect(), str(root).rstrip("/") or "/")
        except sqlite3.DatabaseError:
            return {}

    def load_tree(self, root: Path | str) -> dict[str, tuple[StatKey, str]]:
        """Everything recorded under the directory ``root``, by absolute path."""
        root = str(root).rstrip("/") or "/"
        try:
            record = self._read(self._connect(), root)
        except sqlite3.DatabaseError:
            return {}
        prefix = root.rstrip("/") + "/"
        return {prefix + rel: (v[:5], v[5]) for rel, v in record.items()}

    # -- writing ---------------------------------------------------------
    def record(self, root: str, relpath: str, key: StatKey, digest: str, now_ns: int | None = None) -> bool:
        """Remember a digest (kept in memory until ``flush``); False if too fresh to trust."""
        if is_racy(key, time.time_ns() if now_ns is None else now_ns):
            return False
        self._pending.setdefault(root.rstrip("/") or "/", {})[relpath] = (*key, digest)
        return True

    def has_pending(self, root: Path | str) -> bool:
        """Whether digests recorded under ``root`` are waiting for ``flush``."""
        return bool(self._pending.get(str(root).rstrip("/") or "/"))

    def flush(self, *, prune: Mapping[str, set[str]] | None = None) -> int:
        """Merge what was recorded into the stored trees, in one transaction each.

        ``prune`` maps a root to every relpath a complete walk of it found: entries
        for other paths (deleted files) are dropped, so a tree's record does not grow.
        """
        pending, self._pending = self._pending, {}
        prune = {k.rstrip("/") or "/": v for k, v in (prune or {}).items()}
        written = 0
        for root in set(pending) | set(prune):
            updates = pending.get(root, {})
            try:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE")
                record = self._read(db, root)
                if root in prune:
                    before = len(record)
                    record = {rel: v for rel, v in record.items() if rel in prune[root]}
                    if not updates and len(record) == before:
                        db.execute("COMMIT")
                        continue
                record.update(updates)
                db.execute("INSERT OR REPLACE INTO trees VALUES (?, ?)", (root, marshal.dumps(record)))
                db.execute("COMMIT")
                written += len(updates)
            except sqlite3.DatabaseError:
                # Another build holding the lock past the timeout, a full disk: the
                # cache is an optimisation, so losing one write is fine.
                if self._db is not None and self._db.in_transaction:
                    self._db.execute("ROLLBACK")
        return written

    def forget_missing(self, root: Path | str, seen: set[str]) -> int:
        """Drop entries under ``root`` whose absolute path is not in ``seen``."""
        root = str(root).rstrip("/") or "/"
        prefix = root.rstrip("/") + "/"
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            record = self._read(db, root)
            kept = {rel: v for rel, v in record.items() if prefix + rel in seen}
            db.execute("INSERT OR REPLACE INTO trees VALUES (?, ?)", (root, marshal.dumps(kept)))
            db.execute("COMMIT")
        except sqlite3.DatabaseError:
            if self._db is not None and self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return 0
        return len(record) - len(kept)

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> "MetadataCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
