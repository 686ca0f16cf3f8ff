"""``ContentStore``: the one object the rest of pybuild uses to keep images.

Layout of a store root::

    ROOT/index.db            SQLite index (WAL): refs, images, graph, layers, snapshots, cache
    ROOT/blobs/sha256/<hex>  content, immutable, verified on entry
    ROOT/snapshots/sha256/<hex>/  unpacked layers by diffID (read-only by convention)
    ROOT/locks/              flock files: gc.lock, one per snapshot
    ROOT/tmp/                per-process scratch, cleaned of dead processes' files on open

Many processes may share one root. Blob writes are atomic renames, the
index serialises writers, and ``lease()`` (shared) keeps garbage
collection (exclusive) from removing content that a running operation
has written but not yet referenced.
"""
from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from builder.image import mediatypes as mt
from builder.image.errors import InvalidImageError
from builder.image.oci import Descriptor, ImageConfig, Index, Manifest, Platform, parse_json_object
from builder.store.blobs import BlobStore, BlobWriter
from builder.store.errors import BlobNotFoundError, ImageInUseError, ImageNotFoundError, StoreError
from builder.store.image import Image, ImageSummary
from builder.store.index import CacheRecord, ImageRecord, StoreIndex
from builder.store.locks import file_lock
from builder.store.names import InvalidReferenceError, normalize_name, parse_reference
from builder.store.recovery import recover
from builder.store.tmpdirs import ScratchDir, clean_stale_scratch

# Manifests, indexes and configs are small; a bigger one is hostile.
MAX_JSON_BLOB = 8 << 20
_HEX_PREFIX = re.compile(r"(?:sha256:)?([0-9a-f]{4,64})")


class ContentStore:
    """Blobs, image references, unpacked layer snapshots and the build-cache index of one root."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).absolute()  # paths derived from it end up in mounts and other processes
        try:
            for sub in ("tmp", "locks", "snapshots/sha256"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            clean_stale_scratch(self.root / "tmp")
            self.scratch = ScratchDir(self.root / "tmp")
            self.blobs = BlobStore(self.root, self.scratch)
            self.index = StoreIndex(self.root / "index.db")
            recover(self)  # snapshot rows and directories a killed process left out of step
        except OSError as exc:
            raise StoreError(f"cannot open the store at {self.root}: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store index {self.root / 'index.db'}: {exc}") from None

    def close(self) -> None:
        self.index.close()
        self.scratch.close()

    def __enter__(self) -> "ContentStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ leases

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Keep garbage collection out while the block adds content it has not referenced yet."""
        with file_lock(self.root / "locks" / "gc.lock", exclusive=False):
            yield

    @contextmanager
    def gc_lock(self, timeout: float | None = 60.0) -> Iterator[None]:
        with file_lock(self.root / "locks" / "gc.lock", exclusive=True, timeout=timeout,
                       what=f"the store at {self.root} (held by a running build, pull or load)"):
            yield

    # ------------------------------------------------------------ blobs

    def put_blob(self, stream: BinaryIO, expected_digest: str | None = None,
                 expected_size: int | None = None) -> tuple[str, int]:
        """Stream a blob in, verified against ``expected_digest``/``expected_size``; returns (digest, size)."""
        return self.blobs.put(stream, expected_digest, expected_size)

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> tuple[str, int]:
        return self.blobs.put_bytes(data, expected_digest)

    def blob_writer(self) -> BlobWriter:
        """A file to write a blob into (e.g. ``LayerWriter.write(dir, w)``), published by ``w.commit()``."""
        return BlobWriter(self.blobs)

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is on disk here (a lazy blob is not)."""
        return self.blobs.has(digest)

    def is_lazy_blob(self, digest: str) -> bool:
        """Known but not downloaded: the index says where to fetch it when it is first read."""
        return not self.blobs.has(digest) and self.index.remote_blob(digest) is not None

    def has_content(self, digest: str) -> bool:
        """On disk, or fetchable on first use (a lazy blob)."""
        return self.blobs.has(digest) or self.index.remote_blob(digest) is not None

    def add_remote_blobs(self, blobs: list[tuple[str, int, str]], source: dict[str, Any]) -> None:
        """Make (digest, size, media type) blobs that ``source`` holds lazy: known, fetched on first read."""
        missing = [(d, size, media_type, source) for d, size, media_type in blobs if not self.blobs.has(d)]
        if missing:
            self.index.record_remote_blobs(missing)

    def fetch_blob(self, digest: str) -> bool:
        """Download a lazy blob (verified against its digest and size); False if it is not lazy."""
        if self.blobs.has(digest):
            return True
        remote = self.index.remote_blob(digest)
        if remote is None:
            return False
        from builder.store.lazy import fetch_remote_blob

        with self.lease():
            fetch_remote_blob(self, remote)
        return True

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob's content; a lazy blob is fetched first."""
        try:
            return self.blobs.open(digest)
        except BlobNotFoundError:
            if not self.fetch_blob(digest):
                raise
            return self.blobs.open(digest)

    def blob_path(self, digest: str) -> Path:
        """Where the blob lives (it may not exist); never write to it."""
        return self.blobs.path(digest)

    def blob_size(self, digest: str) -> int:
        return self.blobs.size(digest)

    def delete_blob(self, digest: str) -> bool:
        deleted = self.blobs.delete(digest)
        self.index.forget_blobs([digest])
        return deleted

    def read_blob(self, digest: str, max_size: int = MAX_JSON_BLOB) -> bytes:
        """A small blob's bytes (manifests, configs), re-verified against its digest."""
        with self.open_blob(digest) as fh:
            data = fh.read(max_size + 1)
        if len(data) > max_size:
            raise StoreError(f"blob {digest} is larger than {max_size} bytes; not a manifest or config")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise StoreError(f"blob {digest} is corrupt in the store (content does not match its digest)")
        return data

    # ------------------------------------------------------------ writing images

    def put_image(self, config: ImageConfig, layers: list[Descriptor], *, name: str | None = None,
                  annotations: dict[str, str] | None = None, docker_media_types: bool = False) -> Image:
        """Store ``config`` and a manifest over ``layers`` (already in the store); tag it ``name``."""
        if len(layers) != len(config.diff_ids):
            raise InvalidImageError(
                f"image has {len(layers)} layers but its config lists {len(config.diff_ids)} diff_ids")
        config_type = mt.DOCKER_CONFIG if docker_media_types else mt.OCI_CONFIG
        manifest_type = mt.DOCKER_MANIFEST if docker_media_types else mt.OCI_MANIFEST
        with self.lease():
            for layer in layers:
                if not self.has_content(layer.digest):
                    raise BlobNotFoundError(f"layer {layer.digest} is not in the store")
            config_bytes = config.to_json()
            config_digest, config_size = self.put_bytes(config_bytes)
            manifest = Manifest(Descriptor(config_type, config_digest, config_size), list(layers),
                                media_type=manifest_type, annotations=annotations)
            digest, _ = self.put_bytes(manifest.to_json())
            self.add_image(digest, name=name)
        return self.get_image(digest)

    def put_index(self, images: list[Image], *, name: str | None = None,
                  annotations: dict[str, str] | None = None) -> Image:
        """Store a multi-platform image: an index over ``images`` (one per platform); tag it ``name``."""
        if not images:
            raise InvalidImageError("an image index needs at least one image")
        platforms = [str(image.platform.normalized()) for image in images]
        if len(set(platforms)) != len(platforms):
            raise InvalidImageError(f"an image index needs one image per platform, got {', '.join(platforms)}")
        docker = all(image.manifest.media_type == mt.DOCKER_MANIFEST for image in images)
        entries = [Descriptor(image.manifest.media_type, image.manifest_digest, self.blob_size(image.manifest_digest),
                              platform=image.platform) for image in images]
        index = Index(entries, media_type=mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX,
                      annotations=annotations)
        with self.lease():
            digest, _ = self.put_bytes(index.to_json())
            self.add_image(digest, name=name)
        return self.get_image(digest)

    def add_image(self, digest: str, media_type: str | None = None, *, name: str | None = None) -> ImageRecord:
        """Record a manifest or index already in the store as an image (checking what it needs is present)."""
        stored = self.index.image(digest)
        record = stored or self._record(digest, media_type)
        if name is not None:
            self.index.set_ref(normalize_name(name), digest)
        return record

    def _record(self, digest: str, media_type: str | None) -> ImageRecord:
        doc = parse_json_object(self.read_blob(digest), f"content {digest[:19]}")
        kind = media_type or doc.get("mediaType")
        if kind in mt.INDEXES or (kind is None and "manifests" in doc):
            index = Index.from_dict(doc)
            edges = [(digest, m.digest) for m in index.manifests]
            layers: list[tuple[str, str, str]] = []
            size = len(self.read_blob(digest))
            present = []
            for entry in index.manifests:
                # Platforms pulled or saved without their content (and attestations without theirs) are skipped.
                if entry.media_type in mt.MANIFESTS and self.has_complete_manifest(entry.digest):
                    present.append(entry)
                    sub_edges, sub_layers, sub_config, sub_size = self._manifest_facts(entry.digest)
                    edges += sub_edges
                    layers += sub_layers
                    size += sub_size
            if not present:
                raise InvalidImageError(f"image index {digest[:19]} has none of its manifests in the archive or store")
            chosen = _pick(present, Platform.host()) or present[0]
            config_digest = Manifest.from_json(self.read_blob(chosen.digest)).config.digest
            created = ImageConfig.from_json(self.read_blob(config_digest)).created
            record = ImageRecord(digest, index.media_type, config_digest, created, size, time.time())
        else:
            edges, layers, config_digest, size = self._manifest_facts(digest)
            created = ImageConfig.from_json(self.read_blob(config_digest)).created
            record = ImageRecord(digest, Manifest.from_dict(doc).media_type, config_digest, created, size, time.time())
        self.index.record_image(record, edges, layers)
        return record

    def has_complete_manifest(self, manifest_digest: str) -> bool:
        """Whether a manifest and everything it points to are in the store."""
        if not self.has_blob(manifest_digest):
            return False
        manifest = Manifest.from_json(self.read_blob(manifest_digest))
        return self.has_blob(manifest.config.digest) and all(self.has_content(d.digest) for d in manifest.layers)

    def _manifest_facts(self, digest: str) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]], str, int]:
        """Graph edges, (layer, diffID, type) rows, config digest and content size of a stored manifest."""
        data = self.read_blob(digest)
        manifest = Manifest.from_json(data)
        config = ImageConfig.from_json(self.read_blob(manifest.config.digest))
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidImageError(f"manifest {digest[:19]} has {len(manifest.layers)} layers but its config "
                                    f"lists {len(config.diff_ids)} diff_ids")
        for layer in manifest.layers:
            if not self.has_content(layer.digest):
                raise BlobNotFoundError(f"layer {layer.digest} of manifest {digest[:19]} is not in the store")
        edges = [(digest, manifest.config.digest)] + [(digest, layer.digest) for layer in manifest.layers]
        layers = [(layer.digest, diff_id, layer.media_type)
                  for layer, diff_id in zip(manifest.layers, config.diff_ids)]
        size = len(data) + manifest.config.size + sum(layer.size for layer in manifest.layers)
        return edges, layers, manifest.config.digest, size

    # ------------------------------------------------------------ names

    def tag(self, source: str, name: str) -> str:
        """Point ``name`` at the image ``source`` resolves to; returns the stored name."""
        digest = self.resolve(source)
        stored = normalize_name(name)
        self.index.set_ref(stored, digest)
        return stored

    def untag(self, name: str) -> bool:
        return self.index.delete_ref(normalize_name(name))

    def names_of(self, digest: str) -> list[str]:
        return self.index.refs_to(digest)

    def resolve(self, text: str) -> str:
        """The target digest an image reference, digest or (unique) ID prefix names."""
        if not isinstance(text, str) or not text:
            raise ImageNotFoundError("empty image reference")
        ref = None
        try:
            ref = parse_reference(text)
        except InvalidReferenceError:
            if not _HEX_PREFIX.fullmatch(text):
                raise
        if ref is not None:
            if ref.digest is not None:
                if self.index.image(ref.digest) is not None:
                    return ref.digest
            else:
                digest = self.index.get_ref(str(ref))
                if digest is not None:
                    return digest
        match = _HEX_PREFIX.fullmatch(text)
        if match and (ref is None or ref.digest is None):
            found = self._by_id_prefix(match.group(1))
            if found is not None:
                return found
        raise ImageNotFoundError(f"no such image: {text}")

    def _by_id_prefix(self, prefix: str) -> str | None:
        hits = {
            r.digest for r in self.index.images()
            if r.digest[7:].startswith(prefix) or (r.config_digest or "")[7:].startswith(prefix)
        }
        if len(hits) > 1:
            raise ImageNotFoundError(f"image ID prefix {prefix!r} is ambiguous: it matches {len(hits)} images")
        return hits.pop() if hits else None

    # ------------------------------------------------------------ reading images

    def get_image(self, text: str, platform: Platform | None = None) -> Image:
        """The image ``text`` names, resolved to one platform (the host's by default) if it is an index."""
        digest = self.resolve(text)
        record = self.index.image(digest)
        if record is None:
            raise ImageNotFoundError(f"no such image: {text}")
        index = None
        manifest_digest = digest
        if record.media_type in mt.INDEXES:
            index = Index.from_json(self.read_blob(digest))
            present = [m for m in index.manifests
                       if m.media_type in mt.MANIFESTS and self.has_complete_manifest(m.digest)]
            want = platform or Platform.host()
            entry = _pick(present, want)
            if entry is None:
                if platform is None and len(present) == 1:
                    entry = present[0]
                else:
                    have = ", ".join(str(m.platform) for m in present if m.platform) or "none"
                    raise ImageNotFoundError(f"image {text} has no manifest for {want} in the store (it has: {have})")
            manifest_digest = entry.digest
        manifest = Manifest.from_json(self.read_blob(manifest_digest))
        config = ImageConfig.from_json(self.read_blob(manifest.config.digest))
        if platform is not None and index is None and not config.platform.matches(platform):
            raise ImageNotFoundError(f"image {text} is {config.platform}, not {platform}")
        return Image(digest, manifest_digest, manifest, manifest.config.digest, config, index,
                     self.index.refs_to(digest))

    def list_images(self) -> list[ImageSummary]:
        """One row per name, then one per image without a name (newest first)."""
        rows = []
        named = set()
        records = {r.digest: r for r in self.index.images()}
        for name, digest in self.index.refs():
            record = records.get(digest)
            if record is None:
                continue
            named.add(digest)
            rows.append(ImageSummary(name, digest, record.config_digest or digest, record.created, record.size))
        for record in records.values():
            if record.digest not in named:
                rows.append(ImageSummary(None, record.digest, record.config_digest or record.digest,
                                         record.created, record.size))
        return rows

    def remove_image(self, text: str, *, force: bool = False) -> tuple[list[str], list[str]]:
        """``rmi``: untag a name, or delete an image by ID/digest; returns (untagged, deleted digests).

        Removing by name drops only that name while others remain; by ID with
        several names it needs ``force`` (as docker does). When the image goes,
        its content that nothing else uses goes with it (or at the next
        ``prune`` if a build or load is running); the deleted digests are listed.
        """
        digest = self.resolve(text)
        names = self.index.refs_to(digest)
        by_name = False
        try:
            ref = parse_reference(text)
            by_name = ref.digest is None and str(ref) in names
        except InvalidReferenceError:
            pass
        if by_name:
            self.index.delete_ref(str(parse_reference(text)))
            untagged = [str(parse_reference(text))]
            if len(names) > 1:
                return untagged, []
        else:
            if len(names) > 1 and not force:
                raise ImageInUseError(
                    f"image {text} is referenced by {len(names)} names ({', '.join(names)}); "
                    "remove them by name or use -f")
            for name in names:
                self.index.delete_ref(name)
            untagged = names
        self.index.delete_image(digest)
        from builder.store.gc import collect

        deleted = collect(self, {digest})
        return untagged, [digest] + [d for d in deleted if d != digest]

    # ------------------------------------------------------------ snapshots, cache, gc (see their modules)

    def record_layer(self, digest: str, diff_id: str, media_type: str) -> None:
        """Tell the store which diffID a layer blob unpacks to (images do this themselves), so a
        layer built but not yet in any image can be snapshotted by its diffID."""
        if not self.has_content(digest):
            raise BlobNotFoundError(f"layer {digest} is not in the store")
        self.index.record_layer(digest, diff_id, media_type)

    def record_layer_variant(self, digest: str, variant: str, diff_id: str, media_type: str) -> None:
        """Record blob ``variant`` as layer ``digest`` recompressed (same diffID, e.g. the zstd blob
        ``--cache-to compression=zstd`` made): ``index.layer_blobs_for`` finds it, so it is made
        once, and GC keeps it for as long as ``digest`` is kept."""
        if not self.has_content(variant):
            raise BlobNotFoundError(f"layer {variant} is not in the store")
        self.index.record_variant(digest, variant, diff_id, media_type)

    def layer_snapshot(self, layer: str | Descriptor) -> Path:
        """The directory holding one layer unpacked (by diffID or manifest layer descriptor)."""
        from builder.store.snapshots import layer_snapshot

        return layer_snapshot(self, layer)

    def snapshot_path(self, diff_id: str) -> Path:
        """Where the snapshot of ``diff_id`` lives (it may not exist yet; ``layer_snapshot`` makes it)."""
        from builder.store.snapshots import snapshot_dir

        return snapshot_dir(self, diff_id)

    def adopt_snapshot(self, diff_id: str, directory: str | os.PathLike) -> Path:
        """Keep ``directory`` (on the store's filesystem) as the snapshot of layer ``diff_id``."""
        from builder.store.snapshots import adopt_snapshot

        return adopt_snapshot(self, diff_id, Path(directory))

    def image_snapshots(self, image: Image) -> list[Path]:
        """Every layer of ``image`` unpacked, bottom layer first (overlay ``lowerdir`` wants them reversed)."""
        return [self.layer_snapshot(layer) for layer in image.layers]

    def unpack_image(self, image: Image, target: str | os.PathLike) -> None:
        """Apply every layer of ``image`` in order onto the directory ``target`` (a flat root filesystem)."""
        from builder.image.layer import apply_layer

        for layer in image.layers:
            with self.open_blob(layer.digest) as blob:
                apply_layer(blob, target, layer.media_type)

    @contextmanager
    def lease_snapshots(self, diff_ids: list[str]) -> Iterator[None]:
        """Hold snapshots in use (e.g. overlay-mounted) so ``prune`` leaves them alone."""
        from builder.store.snapshots import lease_snapshots

        with lease_snapshots(self, diff_ids):
            yield

    def cache_put(self, key: str, result: dict[str, Any], blobs: list[str] = ()) -> None:
        """Record a build-cache result; ``blobs`` it needs are kept by garbage collection."""
        self.index.cache_put(key, result, list(blobs))

    def cache_get(self, key: str) -> CacheRecord | None:
        """A cache entry (counting a hit), or None when absent or when a blob it needs is gone."""
        record = self.index.cache_get(key)
        if record is not None and not all(self.has_content(d) for d in record.blobs):
            self.index.cache_delete([key])
            return None
        return record

    def prune(self, **options):
        from builder.store.gc import prune

        return prune(self, **options)

    def disk_usage(self):
        from builder.store.gc import disk_usage

        return disk_usage(self)


def _pick(entries: list[Descriptor], want: Platform) -> Descriptor | None:
    for entry in entries:
        if entry.platform is not None and entry.platform.matches(want):
            return entry
    return None


def open_store(root: str | os.PathLike) -> ContentStore:
    return ContentStore(root)
