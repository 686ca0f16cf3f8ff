"""What the store holds and what each part costs: ``system df``, the build-cache listing, GC's figures.

Sizes are apparent bytes (``st_size``) of what lives under the store root:

* blob files (``blobs/sha256``); a lazy blob (known, not downloaded) costs nothing,
* layer snapshots, as recorded in the index when they were unpacked,
* ``RUN --mount=type=cache`` directories (``cache/mounts/<id>``), measured by walking them; the
  figure is kept in ``ROOT/gc.json`` and walked again when older than ``MOUNT_REMEASURE_S`` or
  when a mount directory appears or goes, so the cheap estimate ``quick_size`` never walks a tree.

Roots hold content: images (named ones are pinned), build-cache records (their layer blobs) and
cache mounts (their own directory). ``Holdings`` counts references over a set of roots, so
keeping or dropping one root is priced exactly (a blob goes when its last holder goes, a snapshot
when the last blob with its diffID goes). ``step:`` records are the solver's bookkeeping (the
inputs of the last build of each step position, used to explain misses); they hold nothing and
are left out of listings and sizes.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from builder.store.store import ContentStore

STEP_PREFIX = "step:"
STATE_FILE = "gc.json"
MOUNT_REMEASURE_S = 600.0


# ------------------------------------------------------------------ the state file


def read_state(root: Path) -> dict[str, Any]:
    """``ROOT/gc.json``: the cache-mount figures and what the last automatic GC did."""
    try:
        data = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_state(root: Path, **changes: Any) -> None:
    """Merge ``changes`` into ``gc.json`` (atomic replace; best effort: the figures can be rebuilt)."""
    state = read_state(root)
    state.update(changes)
    tmp = root / f".{STATE_FILE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(state, sort_keys=True))
        tmp.replace(root / STATE_FILE)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


# ------------------------------------------------------------------ cache mounts


@dataclass(frozen=True)
class CacheMount:
    """One ``RUN --mount=type=cache`` directory (named by a hash of its id)."""

    ident: str
    path: Path
    size: int
    last_used: float  # the newest change anywhere in the tree

    def to_json(self) -> dict[str, Any]:
        return {"id": self.ident, "size": self.size, "last_used": self.last_used}


def mounts_dir(root: Path) -> Path:
    return root / "cache" / "mounts"


def _walk_mount(path: Path) -> tuple[int, float]:
    """(apparent bytes, newest mtime) of a directory tree."""
    size = 0
    newest = 0.0
    try:
        newest = os.lstat(path).st_mtime
    except FileNotFoundError:
        return 0, 0.0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return size, newest


def cache_mounts(root: Path, *, refresh: bool = False) -> list[CacheMount]:
    """The cache-mount directories with their sizes: the recorded figures, walked again when
    stale, when the set of directories changed, or when ``refresh`` asks."""
    base = mounts_dir(root)
    try:
        names = sorted(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
        base_mtime = base.stat().st_mtime
    except FileNotFoundError:
        return []
    state = read_state(root)
    recorded = state.get("mounts") if isinstance(state.get("mounts"), dict) else {}
    measured_at = float(state.get("mounts_measured_at") or 0)
    stale = (refresh or time.time() - measured_at > MOUNT_REMEASURE_S or base_mtime > measured_at
             or sorted(recorded) != names)
    if stale:
        now = time.time()
        recorded = {}
        for name in names:
            size, newest = _walk_mount(base / name)
            recorded[name] = [size, newest]
        update_state(root, mounts=recorded, mounts_measured_at=now)
    return [CacheMount(name, base / name, int(recorded[name][0]), float(recorded[name][1]))
            for name in names if name in recorded]


# ------------------------------------------------------------------ sizes


def blob_sizes(store: "ContentStore") -> dict[str, int]:
    """Bytes of every blob file on disk (one directory listing and a stat per blob)."""
    out: dict[str, int] = {}
    try:
        entries = list(os.scandir(store.blobs.dir))
    except FileNotFoundError:
        return out
    for entry in entries:
        if len(entry.name) != 64:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed by another process since the listing
            continue
        out["sha256:" + entry.name] = st.st_size
    return out


def quick_size(store: "ContentStore") -> int:
    """The store's size as GC counts it, without walking any tree: blob files + recorded snapshot
    sizes + the recorded cache-mount figures."""
    blobs = sum(blob_sizes(store).values())
    snaps = store.index.query("SELECT COALESCE(SUM(size), 0) FROM snapshots")[0][0]
    mounts = sum(m.size for m in cache_mounts(store.root))
    return blobs + int(snaps) + mounts


# ------------------------------------------------------------------ roots and holdings


@dataclass(frozen=True)
class Root:
    """Something that keeps content alive: an image, a build-cache record or a cache mount."""

    kind: str  # "image" | "cache" | "mount"
    ident: str  # image digest, cache key, mount id
    last_used: float
    blobs: frozenset[str] = frozenset()
    bytes: int = 0  # what the root itself occupies (a mount's directory)
    named: bool = False  # an image with a name: never collected


def content_graph(store: "ContentStore") -> dict[str, list[str]]:
    """parent digest -> child digests, from the index's ``edges`` in one query."""
    children: dict[str, list[str]] = {}
    for parent, child in store.index.query("SELECT parent, child FROM edges"):
        children.setdefault(parent, []).append(child)
    return children


def closure(children: dict[str, list[str]], digests: Iterable[str]) -> frozenset[str]:
    """``digests`` and everything reachable from them through ``children``."""
    seen: set[str] = set()
    todo = list(digests)
    while todo:
        digest = todo.pop()
        if digest not in seen:
            seen.add(digest)
            todo.extend(children.get(digest, ()))
    return frozenset(seen)


class StoreModel:
    """Everything GC and ``df`` price, read from the index and the blob directory in one go."""

    def __init__(self, store: "ContentStore", mounts: list[CacheMount] | None = None) -> None:
        index = store.index
        self.blob_sizes = blob_sizes(store)
        self.diff_of = dict(index.query("SELECT digest, diff_id FROM layers"))
        self.snapshot_sizes = {row[0]: int(row[1]) for row in index.snapshots()}
        self.children = content_graph(store)
        named = {digest for _, digest in index.refs()}
        self.roots: list[Root] = []
        for record in index.images():
            self.roots.append(Root("image", record.digest, record.stored, self.closure([record.digest]),
                                   named=record.digest in named))
        held: dict[str, list[str]] = {}
        for key, digest in index.query("SELECT key, digest FROM cache_blobs"):
            held.setdefault(key, []).append(digest)
        self.cache_rows: dict[str, tuple[float, float, int]] = {}
        for key, created, last_used, hits in index.query("SELECT key, created, last_used, hits FROM cache"):
            if key.startswith(STEP_PREFIX):
                continue
            self.cache_rows[key] = (created, last_used, hits)
            self.roots.append(Root("cache", key, last_used, self.closure(held.get(key, ()))))
        self.mounts = list(mounts or [])
        for m in self.mounts:
            self.roots.append(Root("mount", m.ident, m.last_used, bytes=m.size))

    def closure(self, digests: Iterable[str]) -> frozenset[str]:
        return closure(self.children, digests)

    def total(self) -> int:
        """Everything on disk now, referenced or not."""
        return (sum(self.blob_sizes.values()) + sum(self.snapshot_sizes.values())
                + sum(m.size for m in self.mounts))

    def of_kind(self, kind: str) -> list[Root]:
        return [r for r in self.roots if r.kind == kind]


class Holdings:
    """Reference counts of blobs and snapshots over a set of kept roots, and the bytes they hold."""

    def __init__(self, model: StoreModel, roots: Iterable[Root] = ()) -> None:
        self.model = model
        self.blob_refs: Counter[str] = Counter()
        self.snap_refs: Counter[str] = Counter()  # held blobs per diffID
        self.size = 0
        for root in roots:
            self.add(root)

    def _blob_cost(self, digest: str) -> int:
        cost = self.model.blob_sizes.get(digest, 0)
        diff_id = self.model.diff_of.get(digest)
        if diff_id is not None and self.snap_refs[diff_id] == 0:
            cost += self.model.snapshot_sizes.get(diff_id, 0)
        return cost

    def add(self, root: Root) -> int:
        """Keep ``root``; returns the bytes it adds."""
        added = root.bytes
        for digest in root.blobs:
            if self.blob_refs[digest] == 0:
                added += self._blob_cost(digest)
                diff_id = self.model.diff_of.get(digest)
                if diff_id is not None:
                    self.snap_refs[diff_id] += 1
            self.blob_refs[digest] += 1
        self.size += added
        return added

    def remove(self, root: Root) -> int:
        """Drop ``root``; returns the bytes freed."""
        freed = root.bytes
        for digest in root.blobs:
            self.blob_refs[digest] -= 1
            if self.blob_refs[digest] == 0:
                del self.blob_refs[digest]
                diff_id = self.model.diff_of.get(digest)
                if diff_id is not None:
                    self.snap_refs[diff_id] -= 1
                    if self.snap_refs[diff_id] == 0:
                        del self.snap_refs[diff_id]
                freed += self._blob_cost(digest)
        self.size -= freed
        return freed

    def cost(self, root: Root) -> int:
        """What keeping ``root`` would add (0 when everything it needs is held anyway)."""
        extra = root.bytes
        diffs: set[str] = set()
        for digest in root.blobs:
            if self.blob_refs[digest] == 0:
                extra += self.model.blob_sizes.get(digest, 0)
                diff_id = self.model.diff_of.get(digest)
                if diff_id is not None and self.snap_refs[diff_id] == 0 and diff_id not in diffs:
                    diffs.add(diff_id)
                    extra += self.model.snapshot_sizes.get(diff_id, 0)
        return extra

    def alone(self, root: Root) -> int:
        """What only ``root`` holds (freed if it alone went); ``root`` must be held."""
        freed = root.bytes
        gone: Counter[str] = Counter()
        for digest in root.blobs:
            if self.blob_refs[digest] == 1:
                freed += self.model.blob_sizes.get(digest, 0)
                diff_id = self.model.diff_of.get(digest)
                if diff_id is not None:
                    gone[diff_id] += 1
        for diff_id, count in gone.items():
            if self.snap_refs[diff_id] == count:
                freed += self.model.snapshot_sizes.get(diff_id, 0)
        return freed


# ------------------------------------------------------------------ build-cache records


@dataclass(frozen=True)
class LayerUse:
    """One layer of a cache record's result."""

    digest: str
    diff_id: str
    size: int  # the descriptor's (compressed) size
    media_type: str
    where: str  # "present" (on disk) | "lazy" (fetched on first use) | "missing"
    own: bool  # the layer this step added

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "diff_id": self.diff_id, "size": self.size,
                "media_type": self.media_type, "where": self.where, "own": self.own}


@dataclass
class CacheEntry:
    """One build-cache record as ``cache ls/show`` and ``system df -v`` list it."""

    key: str
    description: str  # the step that made it, e.g. "RUN make" (or "Dockerfile:4 RUN make")
    op: str | None  # from its inputs: run, copy, add, workdir, meta (None when not recorded)
    created: float
    last_used: float
    hits: int
    size: int  # its own layer: blob on disk + snapshot
    reclaimable: int  # freed if this record alone were removed
    shared: bool  # its own layer is also held by an image or another record
    layers: list[LayerUse] = field(default_factory=list)
    duration_s: float | None = None
    imported_from: str | None = None
    # KeyInputs JSON: the record's own when the solver stores it there, else that of the last
    # build of the step position that made this key (the solver's ``step:`` records).
    inputs: dict[str, Any] | None = None
    step: dict[str, Any] | None = None  # where it came from, when the solver records it

    @property
    def parent(self) -> str | None:
        return (self.inputs or {}).get("parent")

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "step": self.description, "op": self.op, "created": _rfc3339(self.created),
                "last_used": _rfc3339(self.last_used), "hits": self.hits, "size": self.size,
                "reclaimable": self.reclaimable, "shared": self.shared, "duration_s": self.duration_s,
                "imported_from": self.imported_from, "source": self.step, "inputs": self.inputs,
                "layers": [layer.to_json() for layer in self.layers]}


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def step_inputs(store: "ContentStore") -> dict[str, tuple[dict[str, Any], float]]:
    """cache key → (KeyInputs JSON, when) from the solver's ``step:`` records (the newest wins)."""
    out: dict[str, tuple[dict[str, Any], float]] = {}
    rows = store.index.query("SELECT result, last_used FROM cache WHERE key LIKE 'step:%'")
    for text, last_used in rows:
        try:
            doc = json.loads(text)
            key, inputs = doc["key"], doc["inputs"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(key, str) and isinstance(inputs, dict):
            if key not in out or out[key][1] < last_used:
                out[key] = (inputs, last_used)
    return out


def describe_step(result: dict[str, Any], inputs: dict[str, Any] | None) -> str:
    """The step behind a record: ``Dockerfile:LINE INSTRUCTION`` when the solver recorded where it
    came from, else the image-history text of its state (``RUN /bin/sh -c make``)."""
    step = result.get("step")
    if isinstance(step, dict) and step.get("instruction"):
        where = f"{step.get('dockerfile', 'Dockerfile')}:{step['line']} " if step.get("line") else ""
        return f"{where}{step['instruction']}"
    history = ((result.get("state") or {}).get("history") or [])
    if history and isinstance(history[-1], dict) and history[-1].get("created_by"):
        text = str(history[-1]["created_by"])
        return text[: -len(" # buildkit")] if text.endswith(" # buildkit") else text
    if inputs and inputs.get("op") == "from":
        return str(inputs.get("instruction"))
    return "(unknown step)"


def cache_entries(store: "ContentStore", model: StoreModel | None = None) -> list[CacheEntry]:
    """Every build-cache record (not the ``step:`` bookkeeping), least recently used first."""
    model = model or StoreModel(store)
    holdings = Holdings(model, model.roots)
    roots = {r.ident: r for r in model.of_kind("cache")}
    inputs_of = step_inputs(store)
    remote = _remote_digests(store)
    owners: Counter[str] = Counter()  # roots holding each blob, to tell a shared own layer
    for root in model.roots:
        owners.update(root.blobs)
    rows = store.index.query("SELECT key, result FROM cache")
    results = {key: text for key, text in rows if not key.startswith(STEP_PREFIX)}
    entries = []
    for key, (created, last_used, hits) in sorted(model.cache_rows.items(), key=lambda kv: (kv[1][1], kv[0])):
        try:
            result = json.loads(results.get(key) or "{}")
        except ValueError:
            result = {}
        inputs = result.get("inputs") if isinstance(result.get("inputs"), dict) else inputs_of.get(key, (None, 0))[0]
        layers = _layers(result, model, remote)
        own = next((lr for lr in layers if lr.own), None)
        size = 0
        if own is not None:
            size = model.blob_sizes.get(own.digest, 0) + model.snapshot_sizes.get(own.diff_id, 0)
        root = roots[key]
        duration = result.get("duration_s")
        entries.append(CacheEntry(
            key=key, description=describe_step(result, inputs), op=_op(result, inputs),
            created=created, last_used=last_used, hits=hits, size=size, reclaimable=holdings.alone(root),
            shared=own is not None and owners[own.digest] > 1, layers=layers,
            duration_s=float(duration) if isinstance(duration, (int, float)) else None,
            imported_from=result.get("imported_from"), inputs=inputs,
            step=result.get("step") if isinstance(result.get("step"), dict) else None))
    return entries


_OPS = {"RUN": "run", "COPY": "copy", "ADD": "add", "WORKDIR": "workdir"}


def _op(result: dict[str, Any], inputs: dict[str, Any] | None) -> str | None:
    """The step's kind: from its inputs, else from the instruction its history names."""
    if inputs and inputs.get("op"):
        return str(inputs["op"])
    step = result.get("step") if isinstance(result.get("step"), dict) else {}
    words = str(step.get("instruction") or describe_step(result, None)).split()
    if not words or words[0].startswith("("):
        return None
    return _OPS.get(words[0].upper(), "meta")


def _remote_digests(store: "ContentStore") -> set[str]:
    known = getattr(store.index, "remote_blob_digests", None)
    return set(known()) if known is not None else set()


def _layers(result: dict[str, Any], model: StoreModel, remote: set[str]) -> list[LayerUse]:
    state = result.get("state") or {}
    raw = state.get("layers") or []
    history = state.get("history") or []
    adds_layer = bool(history) and isinstance(history[-1], dict) and not history[-1].get("empty_layer")
    out = []
    for i, lr in enumerate(raw):
        if not isinstance(lr, dict):
            continue
        digest = str(lr.get("digest"))
        where = "present" if digest in model.blob_sizes else "lazy" if digest in remote else "missing"
        out.append(LayerUse(digest, str(lr.get("diff_id")), int(lr.get("size") or 0),
                            str(lr.get("media_type")), where, own=adds_layer and i == len(raw) - 1))
    return out


# ------------------------------------------------------------------ system df


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
    total: int = 0  # the store's size as GC counts it (blobs + snapshots + cache mounts)
    entries: list[CacheEntry] = field(default_factory=list)
    mounts: list[CacheMount] = field(default_factory=list)

    def rows(self) -> list[UsageLine]:
        return [self.images, self.blobs, self.snapshots, self.cache]


def disk_usage(store: "ContentStore", *, verbose: bool = False) -> DiskUsage:
    """What the store holds, by kind, and what pruning would give back.

    Images: blobs images use; reclaimable is what only unnamed images hold (``prune``).
    Build cache: records and cache mounts; size is their own layers (blob and snapshot) and
    mount directories, active the records whose own layer something else holds too, reclaimable
    what nothing but the cache holds (what ``prune -a`` frees).
    """
    mounts = cache_mounts(store.root, refresh=verbose)
    model = StoreModel(store, mounts)
    images = model.of_kind("image")
    cache_roots = [r for r in model.roots if r.kind != "image"]
    image_blobs = frozenset().union(*(r.blobs for r in images))
    named_blobs = frozenset().union(*(r.blobs for r in images if r.named))
    cache_blobs = frozenset().union(*(r.blobs for r in cache_roots))
    live = image_blobs | cache_blobs
    sizes = model.blob_sizes

    def bytes_of(digests) -> int:
        return sum(sizes.get(d, 0) for d in digests)

    image_line = UsageLine("Images", len(images), len([r for r in images if r.named]), bytes_of(image_blobs),
                           bytes_of(image_blobs - named_blobs - cache_blobs))
    blob_line = UsageLine("Blobs", len(sizes), len([d for d in sizes if d in live]), sum(sizes.values()),
                          bytes_of(set(sizes) - live))
    live_diffs = {model.diff_of[d] for d in live if d in model.diff_of}
    snaps = model.snapshot_sizes
    snap_line = UsageLine("Layer snapshots", len(snaps), len([d for d in snaps if d in live_diffs]),
                          sum(snaps.values()), sum(s for d, s in snaps.items() if d not in live_diffs))
    entries = cache_entries(store, model)
    own: dict[str, int] = {}
    for entry in entries:
        mine = next((lr for lr in entry.layers if lr.own), None)
        if mine is not None:
            own[mine.digest] = entry.size
    reclaimable = Holdings(model, model.roots).size - Holdings(model, images).size
    size = max(sum(own.values()) + sum(m.size for m in mounts), reclaimable)
    cache_line = UsageLine("Build cache", len(entries) + len(mounts), len([e for e in entries if e.shared]),
                           size, reclaimable)
    return DiskUsage(image_line, blob_line, snap_line, cache_line, model.total(), entries if verbose else [],
                     mounts)
