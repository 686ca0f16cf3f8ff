"""OCI image layout archives (``oci-layout``, ``index.json``, ``blobs/sha256/...``): load and save.

Names travel in the index entries' annotations, as containerd and docker
write them: ``io.containerd.image.name`` holds the full reference and
``org.opencontainers.image.ref.name`` the tag.
"""
from __future__ import annotations

from typing import BinaryIO

from builder.exporter.archive import ArchiveError, ArchiveWriter, TarArchive
from builder.exporter.model import ExportItem, LoadedImage
from builder.image import mediatypes as mt
from builder.image.errors import ImageError
from builder.image.oci import Descriptor, Index, Manifest, canonical_json
from builder.store import ContentStore, ImageNotFoundError
from builder.store.names import InvalidReferenceError, normalize_name, parse_reference

LAYOUT_FILE = "oci-layout"
DOCKER_MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
MAX_NESTING = 4


def is_oci_layout(archive: TarArchive) -> bool:
    return archive.has(LAYOUT_FILE) and archive.has(INDEX_FILE)


def _blob_member(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


def load_oci_layout(store: ContentStore, archive: TarArchive) -> list[LoadedImage]:
    layout = archive.read_json(LAYOUT_FILE)
    if not isinstance(layout, dict) or not isinstance(layout.get("imageLayoutVersion"), str):
        raise ArchiveError(f"{archive.source}: oci-layout has no imageLayoutVersion")
    try:
        index = Index.from_dict(archive.read_json(INDEX_FILE), "index.json")
    except ImageError as exc:
        raise ArchiveError(f"{archive.source}: {exc}") from None
    if not index.manifests:
        raise ArchiveError(f"{archive.source}: index.json lists no images")
    loaded: dict[str, LoadedImage] = {}
    with store.lease():
        for entry in index.manifests:
            if entry.media_type not in mt.MANIFESTS and entry.media_type not in mt.INDEXES:
                continue  # artifacts and attestations are not images
            _ingest(store, archive, entry, required=True, depth=0)
            record = store.add_image(entry.digest, entry.media_type)
            item = loaded.setdefault(entry.digest, LoadedImage(entry.digest, record.config_digest))
            name = _name_from(entry)
            if name is not None:
                item.take_name(store, name)
    if not loaded:
        raise ArchiveError(f"{archive.source}: index.json lists no image manifests")
    return list(loaded.values())


def _name_from(entry: Descriptor) -> str | None:
    """The stored name an index entry carries, if it carries a full one (a bare tag names nothing)."""
    notes = entry.annotations or {}
    for key in (NAME_ANNOTATION, REF_ANNOTATION):
        value = notes.get(key)
        if not value:
            continue
        if key == REF_ANNOTATION and ":" not in value and "/" not in value:
            continue  # just a tag such as "latest": no repository to put it in
        try:
            return normalize_name(value)
        except InvalidReferenceError:
            continue
    return None


def _ingest(store: ContentStore, archive: TarArchive, desc: Descriptor, *, required: bool, depth: int) -> bool:
    """Copy ``desc`` and what it points to into the store; False when an optional blob is absent."""
    member = _blob_member(desc.digest)
    if not archive.has(member):
        if required:
            raise ArchiveError(f"{archive.source}: blob {desc.digest} ({desc.media_type}) is missing")
        return False
    size = archive.size(member)
    if size != desc.size:
        raise ArchiveError(f"{archive.source}: blob {desc.digest} is {size} bytes, its descriptor says {desc.size}")
    with archive.open(member) as fh:
        store.put_blob(fh, desc.digest, desc.size)
    try:
        if desc.media_type in mt.MANIFESTS and not required:
            # A platform (or attestation) an index lists may be saved without its content: skip it whole.
            manifest = Manifest.from_json(store.read_blob(desc.digest))
            if not all(archive.has(_blob_member(d.digest)) for d in [manifest.config, *manifest.layers]):
                return False
        if desc.media_type in mt.MANIFESTS:
            manifest = Manifest.from_json(store.read_blob(desc.digest))
            for child in [manifest.config, *manifest.layers]:
                if child.media_type in mt.FOREIGN_LAYERS and not archive.has(_blob_member(child.digest)):
                    raise ArchiveError(f"{archive.source}: foreign layer {child.digest} is not in the archive")
                _ingest(store, archive, child, required=True, depth=depth + 1)
        elif desc.media_type in mt.INDEXES:
            if depth >= MAX_NESTING:
                raise ArchiveError(f"{archive.source}: image indexes nested deeper than {MAX_NESTING}")
            index = Index.from_json(store.read_blob(desc.digest))
            found = [_ingest(store, archive, child, required=False, depth=depth + 1)
                     for child in index.manifests if child.media_type in mt.MANIFESTS | mt.INDEXES]
            if not any(found):
                raise ArchiveError(f"{archive.source}: none of index {desc.digest[:19]}'s manifests is in the archive")
    except ImageError as exc:
        raise ArchiveError(f"{archive.source}: {exc}") from None
    return True


def save_oci_layout(store: ContentStore, items: list[ExportItem], out: BinaryIO, mtime: int = 0) -> None:
    """Write ``items`` as one OCI layout tar: every blob once, one index entry per name."""
    writer = ArchiveWriter(out, mtime)
    written: set[str] = set()
    entries: list[Descriptor] = []
    for item in items:
        for digest in _closure(store, item.digest, item.media_type):
            if digest not in written:
                written.add(digest)
                with store.open_blob(digest) as fh:
                    writer.add_stream(_blob_member(digest), fh, store.blob_size(digest))
        base = Descriptor(item.media_type, item.digest, store.blob_size(item.digest))
        if not item.names:
            entries.append(base)
        for name in item.names:
            tag = name.rpartition(":")[2] if ":" in name.rpartition("/")[2] else "latest"
            entries.append(Descriptor(base.media_type, base.digest, base.size,
                                      annotations={NAME_ANNOTATION: name, REF_ANNOTATION: tag}))
    writer.add_bytes(INDEX_FILE, Index(entries).to_json())
    writer.add_bytes(LAYOUT_FILE, canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
    # docker >= 25 writes this too, so tools that only know `docker save` archives can read it.
    legacy = [entry for entry in (_docker_entry(store, item) for item in items) if entry is not None]
    if legacy:
        writer.add_bytes(DOCKER_MANIFEST_FILE, canonical_json(legacy))
    writer.close()


def _docker_entry(store: ContentStore, item: ExportItem) -> dict | None:
    """The ``manifest.json`` entry of one image (the host's platform of an index), pointing into blobs/."""
    try:
        image = store.get_image(item.digest)
    except ImageNotFoundError:  # an index without the host's platform: the OCI index still has it
        return None
    tags = [parse_reference(name).familiar() for name in item.names]
    return {"Config": _blob_member(image.config_digest), "RepoTags": tags or None,
            "Layers": [_blob_member(layer.digest) for layer in image.layers]}


def _closure(store: ContentStore, digest: str, media_type: str) -> list[str]:
    """``digest`` and every blob it needs that the store has, children first."""
    out: list[str] = []
    if media_type in mt.INDEXES:
        for child in Index.from_json(store.read_blob(digest)).manifests:
            if child.media_type in mt.INDEXES and store.has_blob(child.digest) or \
                    child.media_type in mt.MANIFESTS and store.has_complete_manifest(child.digest):
                out += _closure(store, child.digest, child.media_type)
    else:
        manifest = Manifest.from_json(store.read_blob(digest))
        out += [manifest.config.digest] + [layer.digest for layer in manifest.layers]
    out.append(digest)
    return out
