"""``pybuild system check``: an fsck of one store root.

What is checked, under the garbage-collection lock (so no build, pull or prune
is half-way through a change while we look):

* every blob file is re-hashed and must match its name; anything else in
  ``blobs/`` (a temp file, a symlink, a bad name) is stray;
* every reference names a recorded image; every image's manifest (or index),
  config and layers are present (or lazy: known in ``remote_blobs``, fetched
  on first use), parse, agree on sizes and diffIDs, and the content graph
  (``edges``) and layer rows the garbage collector relies on are recorded;
* index rows that point at nothing: build-cache entries needing a blob that is
  gone, layer rows and graph edges of blobs that are gone;
* snapshots recorded but missing on disk, and present but unrecorded;
* ``tmp/`` entries left by dead processes that the start-up cleanup (run when
  the store is opened) could not remove;
* SQLite's own ``quick_check`` of the index.

``check_store`` returns a ``CheckReport``; with ``repair=True`` it also fixes
what is safely fixable — drops dangling rows, removes corrupt blobs and then
the images and cache entries that needed them (saying so), re-records missing
graph rows, removes stray files and orphaned temp directories — and checks
again. Unreferenced blobs and snapshots are not problems: ``prune`` reclaims
them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from builder.errors import PybuildError
from builder.image import mediatypes as mt
from builder.image.oci import ImageConfig, Index, Manifest
from builder.store.locks import try_lock
from builder.store.tmpdirs import remove_tree, unmount_below

if TYPE_CHECKING:
    from builder.store.store import ContentStore

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_MAX_JSON = 8 << 20
_LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the store, as one line: ``<kind>: <message>``."""

    kind: str
    subject: str      # the digest, name, key or path the problem is about
    message: str
    repairable: bool = True

    def line(self) -> str:
        return f"{self.kind}: {self.message}" + ("" if self.repairable else " (not repairable)")


@dataclass
class CheckReport:
    """What ``check_store`` found (and, with ``repair``, what it did and what is left)."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    remaining: list[Problem] | None = None   # after repair; None when no repair was asked for
    blobs: int = 0
    bytes_verified: int = 0
    images: int = 0
    refs: int = 0
    snapshots: int = 0
    cache_entries: int = 0

    @property
    def ok(self) -> bool:
        left = self.problems if self.remaining is None else self.remaining
        return not left

    def summary(self) -> str:
        return (f"{self.blobs} blobs ({_human(self.bytes_verified)} verified), {self.images} images, "
                f"{self.refs} references, {self.snapshots} snapshots, {self.cache_entries} cache entries")


def check_store(store: "ContentStore", *, repair: bool = False, timeout: float | None = 60.0) -> CheckReport:
    """Check ``store`` (holding its gc lock, waiting up to ``timeout``); repair it if asked."""
    with store.gc_lock(timeout):
        report = _Checker(store).run()
        if repair and report.problems:
            report.repaired = _Repairer(store, report).run()
            report.remaining = _Checker(store).run().problems
        elif repair:
            report.remaining = []
    return report


# ---------------------------------------------------------------- checking


class _Checker:
    def __init__(self, store: "ContentStore") -> None:
        self.store = store
        self.root = store.root
        self.report = CheckReport(store.root)
        self.on_disk: dict[str, int] = {}       # verified blob digest -> size
        self.corrupt: set[str] = set()
        # image digest -> the graph edges and layer rows it needs, for a repair to re-record
        self.expected: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str, str]]]] = {}
        self._image_digest = ""
        self._children: dict[str, set[str]] | None = None
        self._lazy: Callable[[str], bool] = getattr(store, "is_lazy_blob", lambda d: False)

    def problem(self, kind: str, subject: str, message: str, repairable: bool = True) -> None:
        self.report.problems.append(Problem(kind, subject, message, repairable))

    def available(self, digest: str) -> bool:
        """Usable: a verified file here, or a lazy blob the store can fetch."""
        return digest in self.on_disk or (digest not in self.corrupt and self._lazy(digest))

    def run(self) -> CheckReport:
        self._sqlite()
        self._blobs()
        images = self._images()
        self._refs(images)
        self._cache()
        self._layer_and_edge_rows(images)
        self._snapshots()
        self._tmp()
        return self.report

    # -- the index file itself

    def _sqlite(self) -> None:
        try:
            rows = self.store.index.query("PRAGMA quick_check")
        except sqlite3.Error as exc:
            rows = [(str(exc),)]
        result = "; ".join(str(r[0]) for r in rows)
        if result != "ok":
            self.problem("index-corrupt", "index.db", f"SQLite quick_check of index.db: {result[:300]}", False)

    # -- blobs

    def _blobs(self) -> None:
        base = self.root / "blobs"
        for entry in _scandir(base):
            if entry.name != "sha256" or not entry.is_dir(follow_symlinks=False):
                self.problem("stray-file", entry.path, f"{entry.path} does not belong in the blob directory")
        for entry in _scandir(base / "sha256"):
            if not _HEX64.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
                self.problem("stray-file", entry.path, f"{entry.path} is not a blob (a temp file, link or bad name)")
                continue
            digest = "sha256:" + entry.name
            try:
                got, size = _hash_file(entry.path)
            except OSError as exc:
                self.corrupt.add(digest)
                self.problem("corrupt-blob", digest, f"blob {digest} cannot be read: {exc.strerror or exc}")
                continue
            self.report.blobs += 1
            self.report.bytes_verified += size
            if got != digest:
                self.corrupt.add(digest)
                self.problem("corrupt-blob", digest,
                             f"blob {digest} is corrupt: its {size} bytes hash to {got}")
            else:
                self.on_disk[digest] = size

    def _read_json(self, digest: str) -> bytes | None:
        if digest not in self.on_disk or self.on_disk[digest] > _MAX_JSON:
            return None
        try:
            return (self.root / "blobs" / "sha256" / digest[7:]).read_bytes()
        except OSError:
            return None

    # -- images

    def _images(self) -> dict[str, str | None]:
        """Check every recorded image; returns digest -> why it is broken (None when fine)."""
        out: dict[str, str | None] = {}
        for record in self.store.index.images():
            self.report.images += 1
            self._image_digest = record.digest
            self.expected[record.digest] = ([], [])
            try:
                reason = self._image(record.digest, record.media_type, record.config_digest)
            except PybuildError as exc:  # a manifest or config that no longer parses
                reason = f"its content does not parse: {exc}"
            out[record.digest] = reason
            if reason is not None:
                names = self.store.index.refs_to(record.digest)
                named = f" ({', '.join(names)})" if names else ""
                self.problem("broken-image", record.digest, f"image {record.digest}{named}: {reason}")
        return out

    def _image(self, digest: str, media_type: str, config_digest: str | None) -> str | None:
        data = self._read_json(digest)
        if data is None:
            return self._absent(digest, "its manifest")
        if media_type in mt.INDEXES:
            index = Index.from_json(data)
            complete = 0
            for entry in index.manifests:
                self._edge(digest, entry.digest)
                if entry.media_type not in mt.MANIFESTS:
                    continue
                recorded = self.children(entry.digest)
                sub = self._read_json(entry.digest)
                if sub is None:
                    if recorded:   # it was complete when recorded: now it is gone
                        return self._absent(entry.digest, f"its manifest for {entry.platform}")
                    continue       # a platform never pulled
                if entry.size != len(sub):
                    return f"manifest {entry.digest} is {len(sub)} bytes, the index says {entry.size}"
                reason = self._manifest(entry.digest, sub, None, required=bool(recorded))
                if reason is not None and recorded:
                    return reason
                if reason is None:
                    complete += 1
            if not complete:
                return "none of its platforms' manifests is complete"
            return None
        return self._manifest(digest, data, config_digest, required=True)

    def _manifest(self, digest: str, data: bytes, config_digest: str | None, *, required: bool) -> str | None:
        manifest = Manifest.from_json(data)
        if config_digest is not None and manifest.config.digest != config_digest:
            return f"the index records config {config_digest}, its manifest names {manifest.config.digest}"
        config_bytes = self._read_json(manifest.config.digest)
        if config_bytes is None:
            return self._absent(manifest.config.digest, "its config")
        if len(config_bytes) != manifest.config.size:
            return f"config {manifest.config.digest} is {len(config_bytes)} bytes, the manifest says {manifest.config.size}"
        config = ImageConfig.from_json(config_bytes)
        if len(config.diff_ids) != len(manifest.layers):
            return f"{len(manifest.layers)} layers but its config lists {len(config.diff_ids)} diff_ids"
        for layer in manifest.layers:
            if not self.available(layer.digest):
                return self._absent(layer.digest, "its layer")
            size = self.on_disk.get(layer.digest)
            if size is not None and size != layer.size:
                return f"layer {layer.digest} is {size} bytes, the manifest says {layer.size}"
        if required:
            self._graph_rows(digest, manifest, config)
        return None

    def _absent(self, digest: str, what: str) -> str:
        state = "corrupt (see above)" if digest in self.corrupt else "missing"
        return f"{what} {digest} is {state}"

    def _graph_rows(self, digest: str, manifest: Manifest, config: ImageConfig) -> None:
        """The rows gc and snapshots depend on: without them prune could delete a live image's content."""
        for child in [manifest.config.digest, *[layer.digest for layer in manifest.layers]]:
            self._edge(digest, child)
        for layer, diff_id in zip(manifest.layers, config.diff_ids):
            self.expected[self._image_digest][1].append((layer.digest, diff_id, layer.media_type))
            if self.store.index.diff_id_of(layer.digest) != diff_id:
                self.problem("missing-row", layer.digest,
                             f"layer {layer.digest} of manifest {digest[:19]} has no layer row for diffID {diff_id[:19]}")

    def children(self, parent: str) -> set[str]:
        """Recorded graph edges from ``parent`` (read once for the whole check)."""
        if self._children is None:
            self._children = {}
            for p, c in self.store.index.query("SELECT parent, child FROM edges"):
                self._children.setdefault(p, set()).add(c)
        return self._children.get(parent, set())

    def _edge(self, parent: str, child: str) -> None:
        self.expected[self._image_digest][0].append((parent, child))
        if child not in self.children(parent):
            self.problem("missing-row", parent, f"content graph lacks the edge {parent[:19]} -> {child[:19]} "
                         "(prune could remove content still in use)")

    # -- references, cache, rows

    def _refs(self, images: dict[str, str | None]) -> None:
        for name, digest in self.store.index.refs():
            self.report.refs += 1
            if digest not in images:
                self.problem("dangling-ref", name, f"reference {name} points at {digest}, which is not a stored image")

    def _cache(self) -> None:
        keys = {k for k, _, _ in self.store.index.cache_keys()}
        self.report.cache_entries = len(keys)
        missing: dict[str, list[str]] = {}
        for key, digest in self.store.index.query("SELECT key, digest FROM cache_blobs ORDER BY key, digest"):
            if key not in keys:
                self.problem("dangling-row", "cache_blobs:" + key, f"cache_blobs row of {key[:24]} has no cache entry")
            elif not self.available(digest):
                missing.setdefault(key, []).append(digest)
        for key, digests in sorted(missing.items()):
            self.problem("dangling-cache", key, f"build-cache entry {key[:24]} needs {digests[0]}, which is "
                         + ("corrupt" if digests[0] in self.corrupt else "missing"))

    def _layer_and_edge_rows(self, images: dict[str, str | None]) -> None:
        for digest, _diff_id in self.store.index.query("SELECT digest, diff_id FROM layers ORDER BY digest"):
            if not self.available(digest):
                self.problem("dangling-row", digest, f"layer row of {digest} points at a blob that is not stored")
        parents = {r[0] for r in self.store.index.query("SELECT DISTINCT parent FROM edges")}
        for parent in sorted(parents):
            if parent not in images and not self.available(parent):
                self.problem("dangling-row", parent, f"content graph edges of {parent} point from a blob that is not stored")

    # -- snapshots

    def _snapshots(self) -> None:
        base = self.root / "snapshots" / "sha256"
        recorded = {row[0] for row in self.store.index.snapshots()}
        present = set()
        for entry in _scandir(base):
            if _HEX64.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                present.add("sha256:" + entry.name)
            else:
                self.problem("stray-file", entry.path, f"{entry.path} is not a snapshot directory")
        self.report.snapshots = len(present)
        for diff_id in sorted(recorded - present):
            self.problem("missing-snapshot", diff_id, f"snapshot {diff_id} is recorded but not on disk")
        for diff_id in sorted(present - recorded):
            self.problem("unrecorded-snapshot", diff_id,
                         f"snapshot {diff_id} is on disk but not recorded (an interrupted unpack or removal)")

    # -- temp files of dead processes

    def _tmp(self) -> None:
        tmp = self.root / "tmp"
        own = self.store.scratch._path
        bases = sorted({e.name[: -len(_LOCK_SUFFIX)] if e.name.endswith(_LOCK_SUFFIX) else e.name
                        for e in _scandir(tmp)})
        for base in bases:
            path = tmp / base
            lock = tmp / (base + _LOCK_SUFFIX)
            if own is not None and path == own:
                continue
            if lock.exists() and _held(lock):
                continue   # a live process's scratch
            shown = path if os.path.lexists(path) else lock
            self.problem("orphaned-temp", str(path), f"{shown} was left by a process that is gone")


# ---------------------------------------------------------------- repairing


class _Repairer:
    """Fix what ``_Checker`` found, in an order where each step sees the previous one's result."""

    def __init__(self, store: "ContentStore", report: CheckReport) -> None:
        self.store = store
        self.report = report
        self.done: list[str] = []

    def run(self) -> list[str]:
        by_kind: dict[str, list[Problem]] = {}
        for p in self.report.problems:
            by_kind.setdefault(p.kind, []).append(p)
        for p in by_kind.get("stray-file", []):
            self._remove(Path(p.subject), f"removed stray {p.subject}")
        for p in by_kind.get("corrupt-blob", []):
            self.store.blobs.delete(p.subject)
            self.done.append(f"removed corrupt blob {p.subject}")
        # With the corrupt blobs gone, look again: what needed them is now broken or dangling.
        checker = _Checker(self.store)
        second = checker.run()
        kinds: dict[str, list[Problem]] = {}
        for p in second.problems:
            kinds.setdefault(p.kind, []).append(p)
        for p in kinds.get("broken-image", []):
            names = self.store.index.refs_to(p.subject)
            for name in names:
                self.store.index.delete_ref(name)
            self.store.index.delete_image(p.subject)
            named = f" and its names {', '.join(names)}" if names else ""
            self.done.append(f"removed image {p.subject}{named}: {p.message.split(': ', 1)[-1]}")
        for p in kinds.get("dangling-ref", []):
            if self.store.index.delete_ref(p.subject):
                self.done.append(f"removed reference {p.subject} (its image is not stored)")
        dangling_keys = sorted({p.subject for p in kinds.get("dangling-cache", [])})
        if dangling_keys:
            self.store.index.cache_delete(dangling_keys)
            self.done.append(f"removed {len(dangling_keys)} build-cache entries whose content is gone")
        with self.store.index.transaction() as db:
            gone = db.execute("DELETE FROM cache_blobs WHERE key NOT IN (SELECT key FROM cache)").rowcount
        if gone:
            self.done.append(f"removed {gone} cache_blobs rows without a cache entry")
        rows = sorted({p.subject for p in kinds.get("dangling-row", []) if p.subject.startswith("sha256:")})
        if rows:
            self.store.index.forget_blobs(rows)
            self.done.append(f"removed layer and graph rows of {len(rows)} blobs that are not stored")
        if kinds.get("missing-row"):
            self._rerecord(checker)
        for p in kinds.get("missing-snapshot", []):
            self.store.index.delete_snapshot(p.subject)
            self.done.append(f"forgot snapshot {p.subject} (not on disk; it is unpacked again when needed)")
        for p in kinds.get("unrecorded-snapshot", []):
            path = self.store.root / "snapshots" / "sha256" / p.subject[7:]
            self._remove(path, f"removed unrecorded snapshot {p.subject} (it is unpacked again when needed)")
        for p in kinds.get("orphaned-temp", []):
            path = Path(p.subject)
            unmount_below(path)   # a killed build's RUN overlay mounts
            self._remove(path, f"removed orphaned temp {p.subject}")
            self._remove(Path(str(path) + _LOCK_SUFFIX), None)
        return self.done

    def _rerecord(self, found: "_Checker") -> None:
        """Record the graph edges and layer rows healthy images need (INSERT OR IGNORE: idempotent)."""
        broken = {p.subject for p in found.report.problems if p.kind == "broken-image"}
        for record in self.store.index.images():
            if record.digest in broken or record.digest not in found.expected:
                continue
            edges, layers = found.expected[record.digest]
            self.store.index.record_image(record, edges, layers)
        self.done.append("re-recorded the content graph and layer rows of the stored images")

    def _remove(self, path: Path, message: str | None) -> None:
        if not os.path.lexists(path):
            return
        if path.is_dir() and not path.is_symlink():
            # Out of the way first (one rename), so an interrupted removal leaves nothing half-gone in place.
            aside = self.store.scratch.path / f"removing-{path.name}"
            try:
                os.rename(path, aside)
                path = aside
            except OSError:
                pass
        remove_tree(path)
        if message:
            self.done.append(message)


# ---------------------------------------------------------------- helpers


def _scandir(path: Path) -> list[os.DirEntry]:
    try:
        return sorted(os.scandir(path), key=lambda e: e.name)
    except FileNotFoundError:
        return []


def _hash_file(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _held(lock_path: Path) -> bool:
    """Whether a live process holds the flock on ``lock_path``."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        return not try_lock(fd, exclusive=True)
    finally:
        os.close(fd)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}TB"


def report_json(report: CheckReport) -> str:
    """The report as JSON (for scripts and the soak)."""
    return json.dumps({
        "root": str(report.root), "ok": report.ok,
        "problems": [p.line() for p in report.problems],
        "repaired": report.repaired,
        "remaining": None if report.remaining is None else [p.line() for p in report.remaining],
        "blobs": report.blobs, "bytes_verified": report.bytes_verified, "images": report.images,
        "refs": report.refs, "snapshots": report.snapshots, "cache_entries": report.cache_entries,
    }, indent=2)
