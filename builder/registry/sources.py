"""Where blobs came from: (digest → registry, repository) records that let a push
mount a blob from another repository on the same registry instead of uploading it.

Kept in a small sqlite file beside the content store; losing it only costs uploads.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from builder.store.index import retry_while_locked


class BlobSources:
    """A thread-safe map digest → set of (registry, repository) it is known to exist in."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, timeout=30)
        # A hint cache: losing the last writes only costs an upload, so skip the fsyncs.
        self._db.execute("PRAGMA synchronous=OFF")
        def setup() -> None:
            with self._db:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS blob_source ("
                    " digest TEXT NOT NULL, registry TEXT NOT NULL, repository TEXT NOT NULL,"
                    " PRIMARY KEY (digest, registry, repository))"
                )

        # Two pulls opening the file at once (parallel stages) must not fail with "locked".
        retry_while_locked(setup, 30)

    def record(self, registry: str, repository: str, digests: list[str]) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO blob_source VALUES (?, ?, ?)",
                [(d, registry, repository) for d in digests],
            )

    def repositories(self, digest: str, registry: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT repository FROM blob_source WHERE digest = ? AND registry = ? ORDER BY repository",
                (digest, registry),
            ).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        self._db.close()
