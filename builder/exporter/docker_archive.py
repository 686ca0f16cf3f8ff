"""``docker save`` archives (``manifest.json``, ``<id>.json`` configs, ``<id>/layer.tar``): load and save.

The format has no registry manifest, so loading builds an OCI manifest over
the layers as they are in the archive (uncompressed tars stay uncompressed,
compressed ones keep their compression) and checks every layer against the
config's diffIDs. Saving writes uncompressed layer tars, as docker does.
"""
from __future__ import annotations

import hashlib
from typing import BinaryIO

from builder.exporter.archive import ArchiveError, ArchiveWriter, TarArchive
from builder.exporter.model import ExportItem, LoadedImage
from builder.image import mediatypes as mt
from builder.image.compress import decompressor, detect_compression
from builder.image.errors import ImageError
from builder.image.oci import Descriptor, ImageConfig, Manifest, canonical_json
from builder.registry.reference import Reference
from builder.store import ContentStore, StoreError
from builder.store.names import InvalidReferenceError, normalize_name, parse_reference

MANIFEST_FILE = "manifest.json"
_CHUNK = 1 << 20


def is_docker_archive(archive: TarArchive) -> bool:
    return archive.has(MANIFEST_FILE)


def load_docker_archive(store: ContentStore, archive: TarArchive) -> list[LoadedImage]:
    entries = archive.read_json(MANIFEST_FILE)
    if not isinstance(entries, list) or not entries:
        raise ArchiveError(f"{archive.source}: manifest.json must be a non-empty list")
    loaded: dict[str, LoadedImage] = {}
    with store.lease():
        for i, entry in enumerate(entries):
            where = f"{archive.source}: manifest.json[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                    or not isinstance(entry.get("Layers"), list) \
                    or not all(isinstance(x, str) for x in entry["Layers"]):
                raise ArchiveError(f"{where} needs a Config path and a list of Layers paths")
            tags = entry.get("RepoTags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise ArchiveError(f"{where}: RepoTags must be a list of strings")
            names = []
            for tag in tags:  # checked before anything is stored
                try:
                    names.append(normalize_name(tag))
                except InvalidReferenceError as exc:
                    raise ArchiveError(f"{where}: bad RepoTags entry {tag!r}: {exc}") from None
            digest, config_digest = _load_one(store, archive, entry["Config"], entry["Layers"], where)
            item = loaded.setdefault(digest, LoadedImage(digest, config_digest))
            for name in names:
                item.take_name(store, name)
    return list(loaded.values())


def _load_one(store: ContentStore, archive: TarArchive, config_path: str, layer_paths: list[str],
              where: str) -> tuple[str, str]:
    with archive.open(config_path) as fh:
        if archive.size(config_path) > 8 << 20:
            raise ArchiveError(f"{where}: config {config_path} is implausibly large")
        config_bytes = fh.read()
    try:
        config = ImageConfig.from_json(config_bytes)
    except ImageError as exc:
        raise ArchiveError(f"{where}: {exc}") from None
    if len(config.diff_ids) != len(layer_paths):
        raise ArchiveError(f"{where}: {len(layer_paths)} layers but the config lists {len(config.diff_ids)} diff_ids")
    config_digest, config_size = store.put_bytes(config_bytes)
    layers = [_load_layer(store, archive, path, diff_id, where)
              for path, diff_id in zip(layer_paths, config.diff_ids)]
    manifest = Manifest(Descriptor(mt.OCI_CONFIG, config_digest, config_size), layers)
    digest, _ = store.put_bytes(manifest.to_json())
    store.add_image(digest, mt.OCI_MANIFEST)
    return digest, config_digest


def _load_layer(store: ContentStore, archive: TarArchive, path: str, diff_id: str, where: str) -> Descriptor:
    size = archive.size(path)
    with archive.open(path) as fh:
        compression = detect_compression(fh.peek(4)[:4])
        if compression == mt.UNCOMPRESSED:
            # The uncompressed tar *is* the diff: its digest must be the diffID.
            try:
                digest, size = store.put_blob(fh, diff_id, size)
            except (ImageError, StoreError) as exc:
                raise ArchiveError(f"{where}: layer {path}: {exc}") from None
            return Descriptor(mt.OCI_LAYER_TAR, digest, size)
        digest, size = store.put_blob(fh, None, size)
    with store.open_blob(digest) as blob, decompressor(blob, compression) as stream:
        h = hashlib.sha256()
        try:
            while chunk := stream.read(_CHUNK):
                h.update(chunk)
        except Exception as exc:
            raise ArchiveError(f"{where}: layer {path} is corrupt: {exc}") from None
    if "sha256:" + h.hexdigest() != diff_id:
        raise ArchiveError(f"{where}: layer {path} does not match diffID {diff_id} from the config")
    return Descriptor(mt.layer_media_type(compression), digest, size)


def save_docker_archive(store: ContentStore, items: list[ExportItem], out: BinaryIO, mtime: int = 0) -> None:
    """Write ``items`` (already resolved to one platform manifest each) as a ``docker save`` archive."""
    writer = ArchiveWriter(out, mtime)
    written: set[str] = set()
    entries = []
    repositories: dict[str, dict[str, str]] = {}
    for item in items:
        manifest = Manifest.from_json(store.read_blob(item.digest))
        config = ImageConfig.from_json(store.read_blob(manifest.config.digest))
        config_name = manifest.config.digest.split(":", 1)[1] + ".json"
        if config_name not in written:
            written.add(config_name)
            writer.add_bytes(config_name, store.read_blob(manifest.config.digest))
        layer_names = []
        for layer, diff_id in zip(manifest.layers, config.diff_ids):
            name = diff_id.split(":", 1)[1] + "/layer.tar"
            layer_names.append(name)
            if name not in written:
                written.add(name)
                _write_layer(store, writer, name, layer, diff_id)
        tags = []
        for stored in item.names:
            ref = parse_reference(stored)
            tags.append(ref.familiar())
            repo = Reference(ref.registry, ref.repository).familiar()
            if layer_names:
                repositories.setdefault(repo, {})[ref.tag or "latest"] = layer_names[-1].split("/")[0]
        entries.append({"Config": config_name, "RepoTags": tags or None, "Layers": layer_names})
    writer.add_bytes(MANIFEST_FILE, canonical_json(entries))
    if repositories:
        writer.add_bytes("repositories", canonical_json(repositories))
    writer.close()


def _write_layer(store: ContentStore, writer: ArchiveWriter, name: str, layer: Descriptor, diff_id: str) -> None:
    compression = mt.layer_compression(layer.media_type)
    if compression == mt.UNCOMPRESSED:
        with store.open_blob(layer.digest) as fh:
            writer.add_stream(name, fh, store.blob_size(layer.digest))
        return
    # The tar header needs the size first: inflate into scratch space, checking the diffID.
    scratch = store.scratch.path / f"layer-{diff_id[7:19]}.tar"
    try:
        h = hashlib.sha256()
        with store.open_blob(layer.digest) as blob, decompressor(blob, compression) as stream, \
                open(scratch, "wb") as out:
            while chunk := stream.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        if "sha256:" + h.hexdigest() != diff_id:
            raise ArchiveError(f"layer {layer.digest} in the store does not unpack to its diffID {diff_id}")
        with open(scratch, "rb") as fh:
            writer.add_stream(name, fh, scratch.stat().st_size)
    finally:
        scratch.unlink(missing_ok=True)
