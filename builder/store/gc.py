"""Garbage collection: removing what nothing needs, and keeping the store under a size.

Roots are the images (named or not), build-cache records and cache mounts; everything reachable
from them through the content graph stays. Files on disk are the truth, so blobs the index never
heard of (a crash between rename and record) are found and removed too, and ``remote_blobs`` rows
(lazy blobs) nothing reachable needs are forgotten.

* ``prune`` — ``pybuild system prune``: unnamed images, then build cache (all of it, what is
  unused for a while, or least recently used first until the store fits a size), then the blobs
  and snapshots nothing references any more. Waits for running builds (their lease).
* ``maybe_gc`` — after every build: when the store is over its configured size (``gc_policy``),
  least recently used build cache and unnamed images go until it fits. It never waits: when a
  build, pull or load holds a lease it does nothing and the next build's end tries again.
* ``collect`` — right after ``rmi`` or a load: the content of what was just dropped.

Named images are never collected, and nothing is while any process holds a lease (builds hold
one from start to finish), so a running build keeps everything it uses; snapshots held by their
use-locks (overlay-mounted by a running container) are skipped.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from builder.errors import PybuildError, UsageError
from builder.store.errors import BlobNotFoundError
from builder.store.locks import optional_lock
from builder.store.snapshots import snapshot_dir, tree_size, unpack_lock, use_lock
from builder.store.tmpdirs import clean_stale_scratch, remove_tree
from builder.store.usage import (  # noqa: F401  (DiskUsage, UsageLine, disk_usage: re-exported)
    STEP_PREFIX, CacheMount, DiskUsage, Holdings, Root, StoreModel, UsageLine, cache_mounts, closure,
    content_graph, disk_usage,
    quick_size, read_state, update_state,
)

if TYPE_CHECKING:
    from builder.store.store import ContentStore

ENV_KEEP_STORAGE = "PYBUILD_GC_KEEP_STORAGE"
CONFIG_FILE = "config.json"
# BuildKit's default: 10% of the disk, and its broader policies stop at 20GB.
DEFAULT_FRACTION = 0.10
DEFAULT_CAP = 20 * 10**9


# ------------------------------------------------------------------ configuration

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i?)b?|b?)\s*", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """``512MB``, ``10GB``, ``1.5GiB``, ``2000000`` in bytes (kB/MB/GB decimal, KiB/MiB/GiB binary)."""
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise UsageError(f"bad {what} {text!r}: expected a number of bytes with an optional unit "
                         "(B, kB, MB, GB, TB, or KiB, MiB, GiB, TiB), e.g. 10GB")
    number, letter, binary = float(match.group(1)), (match.group(2) or "").lower(), match.group(3)
    power = "kmgtp".index(letter) + 1 if letter else 0
    return int(number * (1024 if binary else 1000) ** power)


@dataclass(frozen=True)
class GcPolicy:
    """The automatic GC's size limit (None: off) and where it came from."""

    keep_storage: int | None
    source: str


def default_keep_storage(root: Path) -> int:
    """10% of the filesystem holding the store, at most 20GB."""
    try:
        st = os.statvfs(root)
    except OSError:
        return DEFAULT_CAP
    return min(DEFAULT_CAP, int(st.f_blocks * st.f_frsize * DEFAULT_FRACTION))


def _policy_value(value: object, where: str, root: Path) -> GcPolicy:
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "false", "none")):
        return GcPolicy(None, where)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or \
            (isinstance(value, (int, float)) and value < 0):
        raise UsageError(f"{where}: keepStorage must be a size like \"10GB\", or \"off\"")
    size = int(value) if isinstance(value, (int, float)) else parse_size(value, f"size in {where}")
    return GcPolicy(size or None, where)  # 0 turns it off


def gc_policy(root: Path) -> GcPolicy:
    """``PYBUILD_GC_KEEP_STORAGE``, else ``ROOT/config.json`` ``{"gc": {"keepStorage": ...}}``, else
    the default (10% of the filesystem, at most 20GB). ``0`` or ``off`` turns automatic GC off."""
    env = os.environ.get(ENV_KEEP_STORAGE)
    if env is not None and env.strip():
        return _policy_value(env, ENV_KEEP_STORAGE, root)
    path = root / CONFIG_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        doc = None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if doc is not None:
        gc = doc.get("gc") if isinstance(doc, dict) else None
        if gc is not None and not isinstance(gc, dict):
            raise UsageError(f"{path}: \"gc\" must be an object like {{\"keepStorage\": \"10GB\"}}")
        if gc:
            if gc.get("enabled") is False:
                return GcPolicy(None, str(path))
            if "keepStorage" in gc:
                return _policy_value(gc["keepStorage"], str(path), root)
    return GcPolicy(default_keep_storage(root), "the default: 10% of the filesystem, at most 20GB")


# ------------------------------------------------------------------ reports


@dataclass
class PruneReport:
    """What a collection removed."""

    images: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    cache_entries: int = 0
    cache_keys: list[str] = field(default_factory=list)
    cache_mounts: list[str] = field(default_factory=list)
    step_records: int = 0  # the solver's bookkeeping records dropped (--filter until)
    remote_blobs: int = 0  # lazy-blob rows nothing needs any more
    reclaimed: int = 0
    skipped_in_use: list[str] = field(default_factory=list)
    size_before: int = 0
    size_after: int = 0


# ------------------------------------------------------------------ entry points


def reachable(store: "ContentStore", roots: set[str]) -> frozenset[str]:
    """Every digest reachable from ``roots`` through the recorded content graph."""
    return closure(content_graph(store), roots)


def prune(store: "ContentStore", *, dangling: bool = True, cache: bool = False,
          cache_unused_for: float | None = None, keep_storage: int | None = None,
          timeout: float | None = 60.0) -> PruneReport:
    """Remove images without names (``dangling``), then build cache when ``cache`` is set —
    records and cache mounts; with ``cache_unused_for`` only those unused for that many seconds;
    with ``keep_storage`` only as many, least recently used first, as it takes to bring the store
    under that many bytes — and then every blob and snapshot nothing reachable needs.
    Waits up to ``timeout`` seconds for running builds, pulls and loads (their leases)."""
    with store.gc_lock(timeout):
        return _collect(store, dangling=dangling, cache=cache, unused_for=cache_unused_for,
                        keep_storage=keep_storage)


def maybe_gc(store: "ContentStore", keep: Iterable[str] = ()) -> PruneReport | None:
    """The automatic GC at the end of a build: if the store is over the configured size
    (``gc_policy``), remove least recently used build cache and unnamed images (not those in
    ``keep``, e.g. the image just built) until it fits, then what nothing references.

    Cheap when under the limit (no tree is walked). Never waits: if any process holds a lease
    it skips and the next build tries again. Never fails the build: problems are one warning line.
    """
    try:
        policy = gc_policy(store.root)
    except PybuildError as exc:
        _warn(f"automatic GC skipped: {exc}")
        return None
    limit = policy.keep_storage
    if limit is None:
        return None
    try:
        before = quick_size(store)
        if before <= limit:
            return None
        with optional_lock(store.root / "locks" / "gc.lock", exclusive=True) as free:
            if not free:
                update_state(store.root, last_gc={"time": time.time(), "outcome": "busy", "limit": limit,
                                                  "size_before": before})
                return None
            report = _collect(store, dangling=False, cache=True, unused_for=None, keep_storage=limit,
                              keep_images=set(keep), unnamed_images=True)
        update_state(store.root, last_gc={
            "time": time.time(), "outcome": "collected", "limit": limit, "size_before": report.size_before,
            "size_after": report.size_after, "reclaimed": report.reclaimed, "cache_records": report.cache_entries,
            "cache_mounts": len(report.cache_mounts), "images": len(report.images)})
        return report
    except (PybuildError, OSError, sqlite3.Error) as exc:
        _warn(f"automatic GC failed: {exc}")
        return None


def last_gc(root: Path) -> dict | None:
    """What the last automatic GC that had work did (``outcome`` collected or busy), if any."""
    info = read_state(Path(root)).get("last_gc")
    return info if isinstance(info, dict) else None


def collect(store: "ContentStore", candidates: set[str]) -> list[str]:
    """Delete those of ``candidates`` (and what they point to) that nothing references any more.

    Used right after an image is removed; when a build or load holds a lease it does nothing
    and leaves the content to the next ``prune``.
    """
    with optional_lock(store.root / "locks" / "gc.lock", exclusive=True) as free:
        if not free:
            return []
        children = content_graph(store)  # one read of the graph for both walks
        live = closure(children, {r.digest for r in store.index.images()} | store.index.cache_roots())
        gone = closure(children, candidates) - live
        dead = sorted(d for d in gone if store.has_blob(d))
        store.index.forget_blobs(dead)  # rows first: a kill in between leaves unreferenced files, not dangling rows
        for digest in dead:
            store.blobs.delete(digest)
        _forget_remote(store, gone)
        return dead


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ------------------------------------------------------------------ the collection


def _collect(store: "ContentStore", *, dangling: bool, cache: bool, unused_for: float | None,
             keep_storage: int | None, keep_images: set[str] = frozenset(),
             unnamed_images: bool = False) -> PruneReport:
    """One collection, under the exclusive GC lock. ``unnamed_images``: unnamed images are
    candidates in the least-recently-used order too (the automatic GC)."""
    report = PruneReport()
    mounts = cache_mounts(store.root, refresh=cache)
    model = StoreModel(store, mounts)
    report.size_before = model.total()
    victims: list[Root] = []
    if dangling:
        victims += [r for r in model.of_kind("image") if not r.named and r.ident not in keep_images]
    chosen = {r.ident for r in victims}
    cutoff = None if unused_for is None else time.time() - unused_for
    candidates: list[Root] = []
    if cache:
        candidates += [r for r in model.roots if r.kind in ("cache", "mount")
                       and (cutoff is None or r.last_used < cutoff)]
    if unnamed_images:
        candidates += [r for r in model.of_kind("image")
                       if not r.named and r.ident not in keep_images and r.ident not in chosen]
    candidates.sort(key=lambda r: (r.last_used, r.kind, r.ident))
    if keep_storage is None:
        victims += candidates
    else:
        kept = Holdings(model, [r for r in model.roots if not (r.kind == "image" and r.ident in chosen)])
        victims += _least_recently_used(kept, candidates, keep_storage, give_back=unnamed_images)
    _remove_roots(store, victims, report)
    if cutoff is not None:
        old = [k for k, last_used, _ in store.index.cache_keys() if k.startswith(STEP_PREFIX) and last_used < cutoff]
        report.step_records = store.index.cache_delete(old)
    _sweep(store, report)
    if report.cache_mounts:
        gone = set(report.cache_mounts)
        update_state(store.root, mounts={m.ident: [m.size, m.last_used] for m in mounts if m.ident not in gone},
                     mounts_measured_at=time.time())
    report.size_after = quick_size(store)
    return report


def _least_recently_used(kept: Holdings, candidates: list[Root], limit: int, *, give_back: bool) -> list[Root]:
    """The candidates to drop, oldest first, until what stays held fits ``limit``.

    With ``give_back`` (the automatic GC), when even dropping them all leaves the store over the
    limit (named images alone exceed it), those that free nothing after all — all they hold is
    kept for a named image anyway — stay: the last build, tagged, stays cached however tight the
    limit is."""
    dropped: list[Root] = []
    for root in candidates:
        if kept.size <= limit:
            break
        kept.remove(root)
        dropped.append(root)
    if not give_back or kept.size <= limit:
        return dropped
    for root in reversed(dropped[:]):
        if kept.cost(root) == 0:
            kept.add(root)
            dropped.remove(root)
    return dropped


def _remove_roots(store: "ContentStore", victims: list[Root], report: PruneReport) -> None:
    for root in victims:
        if root.kind == "image":
            store.index.delete_image(root.ident)
            report.images.append(root.ident)
    keys = [r.ident for r in victims if r.kind == "cache"]
    if keys:
        report.cache_entries = store.index.cache_delete(keys)
        report.cache_keys = keys
    for root in victims:
        if root.kind == "mount" and _remove_mount(store.root, root.ident):
            report.cache_mounts.append(root.ident)
            report.reclaimed += root.bytes


def _remove_mount(root: Path, ident: str) -> bool:
    base = root / "cache" / "mounts"
    lock = base / f"{ident}.lock"
    # Builds hold a lease while they run, so none is using it; a sharing=locked user would
    # also hold this lock (the check costs nothing).
    with optional_lock(lock, exclusive=True) as free:
        if not free:
            return False
        remove_tree(base / ident)
        try:
            lock.unlink()
        except FileNotFoundError:
            pass
    return True


def _sweep(store: "ContentStore", report: PruneReport) -> None:
    """Remove every blob and snapshot nothing reachable needs, and forget unneeded lazy blobs."""
    live = reachable(store, {r.digest for r in store.index.images()} | store.index.cache_roots())
    dead = [d for d in store.blobs.digests() if d not in live]
    store.index.forget_blobs(dead)  # rows first: a kill in between leaves unreferenced files, not dangling rows
    for digest in dead:
        report.reclaimed += _size(store, digest)
        store.blobs.delete(digest)
    report.blobs = dead
    report.remote_blobs = _forget_remote(store, live=live)
    keep = {diff_id for digest, diff_id in store.index.query("SELECT digest, diff_id FROM layers")
            if digest in live}
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


def _forget_remote(store: "ContentStore", gone: set[str] | None = None, *, live: set[str] | None = None) -> int:
    """Drop ``remote_blobs`` rows of lazy blobs in ``gone`` (or not in ``live``); returns how many."""
    known = getattr(store.index, "remote_blob_digests", None)
    forget = getattr(store.index, "forget_remote_blobs", None)
    if known is None or forget is None:
        return 0
    rows = known()
    drop = sorted(rows & gone if gone is not None else rows - (live or set()))
    if drop:
        forget(drop)
        store.index.forget_blobs(drop)
    return len(drop)


def _snapshot_ids(store: "ContentStore") -> list[str]:
    on_disk = set()
    base = store.root / "snapshots" / "sha256"
    for entry in os.scandir(base):
        if len(entry.name) == 64:
            on_disk.add("sha256:" + entry.name)
    return sorted(on_disk | {row[0] for row in store.index.snapshots()})


def _size(store: "ContentStore", digest: str) -> int:
    try:
        return store.blobs.size(digest)
    except BlobNotFoundError:  # removed by another process since the listing
        return 0
