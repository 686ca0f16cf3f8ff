"""Garbage collection and disk usage: what the store holds, and removing what nothing needs.

Roots are the images (named or not) and build-cache entries; everything
reachable from them through the content graph stays. Files on disk are the
truth, so blobs the index never heard of (a crash between rename and
record) are found and removed too.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from builder.store.errors import BlobNotFoundError
from builder.store.locks import optional_lock
from builder.store.snapshots import snapshot_dir, tree_size, unpack_lock, use_lock
from builder.store.tmpdirs import clean_stale_scratch, remove_tree

if TYPE_CHECKING:
    from builder.store.store import ContentStore


@dataclass
class PruneReport:
    """What ``prune`` removed."""

    images: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    cache_entries: int = 0
    reclaimed: int = 0
    skipped_in_use: list[str] = field(default_factory=list)


@dataclass
class UsageLine:
    """One row of ``system df``."""

    kind: str
    total: int
    active: int
    size: int
    reclaimable: int


@dataclass
class DiskUsage:
    images: UsageLine
    blobs: UsageLine
    snapshots: UsageLine
    cache: UsageLine

    def rows(self) -> list[UsageLine]:
        return [self.images, self.blobs, self.snapshots, self.cache]


def reachable(store: "ContentStore", roots: set[str]) -> set[str]:
    """Every digest reachable from ``roots`` through the recorded content graph."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        digest = todo.pop()
        if digest in seen:
            continue
        seen.add(digest)
        todo.extend(store.index.children(digest))
    return seen


def _live_diff_ids(store: "ContentStore", live: set[str]) -> set[str]:
    rows = store.index.query("SELECT digest, diff_id FROM layers")
    return {diff_id for digest, diff_id in rows if digest in live}


def prune(store: "ContentStore", *, dangling: bool = True, cache: bool = False,
          cache_unused_for: float | None = None, timeout: float | None = 60.0) -> PruneReport:
    """Remove images without names (``dangling``), build cache (``cache``: all of it, or with
    ``cache_unused_for`` only entries unused for that many seconds), and then every blob and
    snapshot nothing reachable needs. Waits up to ``timeout`` for running writers."""
    report = PruneReport()
    with store.gc_lock(timeout):
        if dangling:
            named = {digest for _, digest in store.index.refs()}
            for record in store.index.images():
                if record.digest not in named:
                    store.index.delete_image(record.digest)
                    report.images.append(record.digest)
        if cache:
            cutoff = None if cache_unused_for is None else time.time() - cache_unused_for
            keys = [k for k, last_used, _ in store.index.cache_keys() if cutoff is None or last_used < cutoff]
            report.cache_entries = store.index.cache_delete(keys)
        roots = {r.digest for r in store.index.images()} | store.index.cache_roots()
        live = reachable(store, roots)
        dead = [d for d in store.blobs.digests() if d not in live]
        for digest in dead:
            report.reclaimed += _size(store, digest)
            store.blobs.delete(digest)
        store.index.forget_blobs(dead)
        report.blobs = dead
        keep = _live_diff_ids(store, live)
        for diff_id in _snapshot_ids(store):
            if diff_id in keep:
                continue
            with optional_lock(use_lock(store, diff_id), exclusive=True) as free, \
                    optional_lock(unpack_lock(store, diff_id), exclusive=True) as idle:
                if not (free and idle):
                    report.skipped_in_use.append(diff_id)
                    continue
                path = snapshot_dir(store, diff_id)
                report.reclaimed += tree_size(path)
                remove_tree(path)
                store.index.delete_snapshot(diff_id)
                report.snapshots.append(diff_id)
        clean_stale_scratch(store.root / "tmp")
    return report


def collect(store: "ContentStore", candidates: set[str]) -> list[str]:
    """Delete those of ``candidates`` (and what they point to) that nothing references any more.

    Used right after an image is removed; when a build or load holds a lease it does nothing
    and leaves the content to the next ``prune``.
    """
    with optional_lock(store.root / "locks" / "gc.lock", exclusive=True) as free:
        if not free:
            return []
        live = reachable(store, {r.digest for r in store.index.images()} | store.index.cache_roots())
        dead = sorted(d for d in reachable(store, candidates) if d not in live and store.has_blob(d))
        for digest in dead:
            store.blobs.delete(digest)
        store.index.forget_blobs(dead)
        return dead


def _snapshot_ids(store: "ContentStore") -> list[str]:
    on_disk = set()
    base = store.root / "snapshots" / "sha256"
    for entry in os.scandir(base):
        if len(entry.name) == 64:
            on_disk.add("sha256:" + entry.name)
    return sorted(on_disk | {row[0] for row in store.index.snapshots()})


def disk_usage(store: "ContentStore") -> DiskUsage:
    records = store.index.images()
    named = {digest for _, digest in store.index.refs()}
    roots = {r.digest for r in records} | store.index.cache_roots()
    live = reachable(store, roots)
    live_named = reachable(store, named | store.index.cache_roots())
    sizes = {d: _size(store, d) for d in store.blobs.digests()}
    blob_total = sum(sizes.values())
    blob_dead = sum(s for d, s in sizes.items() if d not in live)
    images = UsageLine("Images", len(records), len([r for r in records if r.digest in named]),
                       sum(s for d, s in sizes.items() if d in live),
                       sum(s for d, s in sizes.items() if d in live and d not in live_named))
    blobs = UsageLine("Blobs", len(sizes), len([d for d in sizes if d in live]), blob_total, blob_dead)
    keep = _live_diff_ids(store, live)
    snaps = store.index.snapshots()
    snapshots = UsageLine("Layer snapshots", len(snaps), len([s for s in snaps if s[0] in keep]),
                          sum(s[1] for s in snaps), sum(s[1] for s in snaps if s[0] not in keep))
    cache_keys = store.index.cache_keys()
    cache_blobs = store.index.cache_roots()
    cache_size = sum(sizes.get(d, 0) for d in cache_blobs if d not in reachable(store, {r.digest for r in records}))
    cache = UsageLine("Build cache", len(cache_keys), len(cache_keys), cache_size, cache_size)
    return DiskUsage(images, blobs, snapshots, cache)


def _size(store: "ContentStore", digest: str) -> int:
    try:
        return store.blobs.size(digest)
    except BlobNotFoundError:  # removed by another process since the listing
        return 0
