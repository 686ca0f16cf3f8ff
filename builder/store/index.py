"""The store's SQLite index: references, images, the content graph, layers, snapshots, build cache.

Blob *existence* lives in the filesystem (``blobs/sha256/<hex>``); the index
records what the blobs mean and how they hang together, so garbage
collection and lookups never parse JSON they do not need to.

Tables:
    refs         name (normalised ``docker.io/library/busybox:latest``) → target digest
    images       target digest (manifest or index) → media type, config digest, sizes
    edges        parent digest → child digest (index → manifests, manifest → config, layers)
    layers       layer blob digest → diffID and media type (snapshots are keyed by diffID)
    snapshots    diffID → unpacked size, created, last use
    cache        build-cache key → JSON result, created, last use, hit count
    cache_blobs  build-cache key → the blobs its result needs (GC roots)
    remote_blobs blob digest → where to fetch it (lazy blobs: known, not downloaded yet)

Every process opens its own connection in WAL mode with a busy timeout, so
readers never block writers and concurrent writers queue instead of failing.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refs (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_digest ON refs(digest);
CREATE TABLE IF NOT EXISTS images (
    digest TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    config_digest TEXT,
    created TEXT,
    size INTEGER NOT NULL,
    stored REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_config ON images(config_digest);
CREATE TABLE IF NOT EXISTS edges (
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    PRIMARY KEY (parent, child)
);
CREATE TABLE IF NOT EXISTS layers (
    digest TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    media_type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS layers_diff_id ON layers(diff_id);
CREATE TABLE IF NOT EXISTS snapshots (
    diff_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS remote_blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    source TEXT NOT NULL,
    recorded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cache_blobs (
    key TEXT NOT NULL REFERENCES cache(key) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (key, digest)
);
"""


def retry_while_locked(action, seconds: float) -> None:
    """Run ``action`` until SQLite stops saying "locked". Switching a database to WAL does not wait
    on the busy handler, so processes opening one file together retry here instead of failing."""
    delay = 0.01
    deadline = time.monotonic() + seconds
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


@dataclass(frozen=True)
class ImageRecord:
    """One stored image: its target digest (what references point at) and summary facts."""

    digest: str
    media_type: str
    config_digest: str | None
    created: str | None
    size: int
    stored: float


@dataclass(frozen=True)
class CacheRecord:
    """One build-cache entry: the JSON result the solver stored, with its use statistics."""

    key: str
    result: dict[str, Any]
    created: float
    last_used: float
    hits: int
    blobs: tuple[str, ...]


@dataclass(frozen=True)
class RemoteBlob:
    """A blob the store knows but has not downloaded: its size, type and where to get it.

    ``source`` is JSON: ``{"type": "registry", "ref": "host/repo"}`` or
    ``{"type": "local", "dir": "/path/to/oci-layout"}``.
    """

    digest: str
    size: int
    media_type: str
    source: dict[str, Any]


class StoreIndex:
    """A thread-safe handle on ``index.db``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is crash-safe, just not last-txn durable
        self._db.execute("PRAGMA foreign_keys=ON")
        self._setup()

    def _setup(self) -> None:
        """WAL mode and the schema (idempotent: CREATE ... IF NOT EXISTS)."""
        def setup() -> None:
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)  # commits on its own
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                 (str(SCHEMA_VERSION),))

        retry_while_locked(setup, BUSY_TIMEOUT_MS / 1000)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: takes the write lock up front, no upgrade deadlocks)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- references

    def set_ref(self, name: str, digest: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO refs VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET digest=excluded.digest, "
                       "created=excluded.created", (name, digest, time.time()))

    def get_ref(self, name: str) -> str | None:
        rows = self.query("SELECT digest FROM refs WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def delete_ref(self, name: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM refs WHERE name = ?", (name,)).rowcount > 0

    def refs(self) -> list[tuple[str, str]]:
        """All (name, target digest), sorted by name."""
        return self.query("SELECT name, digest FROM refs ORDER BY name")

    def refs_to(self, digest: str) -> list[str]:
        return [r[0] for r in self.query("SELECT name FROM refs WHERE digest = ? ORDER BY name", (digest,))]

    # -- images and the content graph

    def record_image(self, record: ImageRecord, edges: list[tuple[str, str]],
                     layers: list[tuple[str, str, str]]) -> None:
        """Record an image with its graph edges and (blob digest, diffID, media type) layers, atomically."""
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO edges VALUES (?, ?)", edges)
            db.executemany("INSERT OR IGNORE INTO layers VALUES (?, ?, ?)", layers)
            db.execute("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?)",
                       (record.digest, record.media_type, record.config_digest, record.created,
                        record.size, record.stored))

    def image(self, digest: str) -> ImageRecord | None:
        rows = self.query("SELECT * FROM images WHERE digest = ?", (digest,))
        return ImageRecord(*rows[0]) if rows else None

    def images(self) -> list[ImageRecord]:
        return [ImageRecord(*r) for r in self.query("SELECT * FROM images ORDER BY stored DESC, digest")]

    def delete_image(self, digest: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM images WHERE digest = ?", (digest,))

    def children(self, digest: str) -> list[str]:
        return [r[0] for r in self.query("SELECT child FROM edges WHERE parent = ?", (digest,))]

    def diff_id_of(self, blob_digest: str) -> str | None:
        rows = self.query("SELECT diff_id FROM layers WHERE digest = ?", (blob_digest,))
        return rows[0][0] if rows else None

    def layer_blobs_for(self, diff_id: str) -> list[tuple[str, str]]:
        """(blob digest, media type) of every stored blob whose uncompressed tar is ``diff_id``."""
        return self.query("SELECT digest, media_type FROM layers WHERE diff_id = ?", (diff_id,))

    def record_layer(self, digest: str, diff_id: str, media_type: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO layers VALUES (?, ?, ?)", (digest, diff_id, media_type))

    def record_variant(self, digest: str, variant: str, diff_id: str, media_type: str) -> None:
        """``variant`` holds the layer of blob ``digest`` in another compression: a layer row, and
        a graph edge so whatever keeps ``digest`` keeps the variant too."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO layers VALUES (?, ?, ?)", (variant, diff_id, media_type))
            db.execute("INSERT OR IGNORE INTO edges VALUES (?, ?)", (digest, variant))

    def forget_blobs(self, digests: list[str]) -> None:
        """Drop graph and layer rows of blobs that garbage collection removed."""
        with self.transaction() as db:
            db.executemany("DELETE FROM edges WHERE parent = ?", [(d,) for d in digests])
            db.executemany("DELETE FROM layers WHERE digest = ?", [(d,) for d in digests])

    # -- snapshots

    def record_snapshot(self, diff_id: str, size: int) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?)", (diff_id, size, now, now))

    def touch_snapshot(self, diff_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE snapshots SET last_used = ? WHERE diff_id = ?", (time.time(), diff_id))

    def snapshots(self) -> list[tuple[str, int, float, float]]:
        return self.query("SELECT diff_id, size, created, last_used FROM snapshots ORDER BY diff_id")

    def delete_snapshot(self, diff_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM snapshots WHERE diff_id = ?", (diff_id,))

    # -- build cache

    def cache_put(self, key: str, result: dict[str, Any], blobs: list[str]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO cache VALUES (?, ?, ?, ?, 0) ON CONFLICT(key) DO UPDATE SET "
                       "result=excluded.result, last_used=excluded.last_used",
                       (key, json.dumps(result, sort_keys=True), now, now))
            db.execute("DELETE FROM cache_blobs WHERE key = ?", (key,))
            db.executemany("INSERT OR IGNORE INTO cache_blobs VALUES (?, ?)", [(key, d) for d in blobs])

    def cache_get(self, key: str, *, touch: bool = True) -> CacheRecord | None:
        with self.transaction() as db:
            row = db.execute("SELECT key, result, created, last_used, hits FROM cache WHERE key = ?",
                             (key,)).fetchone()
            if row is None:
                return None
            if touch:
                now = time.time()
                db.execute("UPDATE cache SET last_used = ?, hits = hits + 1 WHERE key = ?", (now, key))
                row = (row[0], row[1], row[2], now, row[4] + 1)
            blobs = tuple(r[0] for r in db.execute(
                "SELECT digest FROM cache_blobs WHERE key = ? ORDER BY digest", (key,)))
        return CacheRecord(row[0], json.loads(row[1]), row[2], row[3], row[4], blobs)

    def cache_keys(self) -> list[tuple[str, float, int]]:
        """(key, last use, hits) of every cache entry, least recently used first."""
        return self.query("SELECT key, last_used, hits FROM cache ORDER BY last_used, key")

    def cache_delete(self, keys: list[str]) -> int:
        with self.transaction() as db:
            return sum(db.execute("DELETE FROM cache WHERE key = ?", (k,)).rowcount for k in keys)

    def cache_roots(self) -> set[str]:
        return {r[0] for r in self.query("SELECT DISTINCT digest FROM cache_blobs")}

    # -- lazy (remote) blobs

    def record_remote_blobs(self, rows: list[tuple[str, int, str, dict[str, Any]]]) -> None:
        """Remember (digest, size, media type, source) of blobs that can be fetched when needed."""
        now = time.time()
        with self.transaction() as db:
            db.executemany("INSERT INTO remote_blobs VALUES (?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET "
                           "source=excluded.source, recorded=excluded.recorded",
                           [(d, size, media_type, json.dumps(source, sort_keys=True), now)
                            for d, size, media_type, source in rows])

    def remote_blob(self, digest: str) -> RemoteBlob | None:
        rows = self.query("SELECT digest, size, media_type, source FROM remote_blobs WHERE digest = ?", (digest,))
        if not rows:
            return None
        d, size, media_type, source = rows[0]
        return RemoteBlob(d, size, media_type, json.loads(source))

    def remote_blob_digests(self) -> set[str]:
        return {r[0] for r in self.query("SELECT digest FROM remote_blobs")}

    def forget_remote_blobs(self, digests: list[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM remote_blobs WHERE digest = ?", [(d,) for d in digests])
