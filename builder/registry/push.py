"""Push: blobs (HEAD first, cross-repository mount when we know another repository on
the same registry has them, else upload), then config and manifest, then the index for a
multi-platform image, then the tags.

A re-push of an unchanged image costs only HEAD requests.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Protocol

from builder.registry.client import (
    DEFAULT_CHUNK_SIZE,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Manifest,
    RepositoryClient,
    digest_bytes,
)
from builder.registry.errors import RegistryError, UnsupportedManifestError
from builder.registry.parallel import run_parallel
from builder.registry.pull import BlobDescriptor, parse_descriptor
from builder.registry.reference import Reference, parse_reference
from builder.registry.sources import BlobSources
from builder.registry.transport import RegistryOptions, Transport

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8


class BlobSource(Protocol):
    """What push needs from the content store."""

    def open_blob(self, digest: str) -> BinaryIO: ...


@dataclass
class PushResult:
    reference: Reference
    digest: str
    media_type: str
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def _read_manifest(source: BlobSource, desc: BlobDescriptor) -> Manifest:
    with source.open_blob(desc.digest) as fh:
        content = fh.read(desc.size + 1)
    if len(content) != desc.size or digest_bytes(content, desc.digest.partition(":")[0]) != desc.digest:
        raise RegistryError(f"local manifest {desc.digest[:19]} is corrupt in the store")
    return Manifest(content, desc.media_type, desc.digest)


def push_image(
    ref: Reference | str,
    source: BlobSource,
    manifest: Manifest,
    *,
    options: RegistryOptions | None = None,
    sources: BlobSources | None = None,
    extra_tags: tuple[str, ...] = (),
    concurrency: int = DEFAULT_CONCURRENCY,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[str], None] | None = None,
) -> PushResult:
    """Push the image rooted at ``manifest`` (an image manifest or an index) to ``ref``.

    ``ref`` gives the registry, repository and tag (a digest-only reference pushes
    untagged); ``extra_tags`` are tagged too. Blobs are read from ``source``.
    """
    if isinstance(ref, str):
        ref = parse_reference(ref)
    if manifest.media_type not in MANIFEST_TYPES + INDEX_TYPES:
        raise UnsupportedManifestError(f"cannot push a manifest of type {manifest.media_type!r}")
    say = progress or (lambda msg: None)
    result = PushResult(ref, manifest.digest, manifest.media_type)
    transport = Transport(ref.api_host, options)
    client = RepositoryClient(transport, ref.repository, push=True)
    where = str(ref)

    # Gather every manifest in the tree (the root, and an index's children) and the blobs.
    manifests: list[Manifest] = []
    if manifest.is_index:
        for i, entry in enumerate(json.loads(manifest.content).get("manifests") or []):
            desc = parse_descriptor(entry, f"{where} index entry {i}")
            child = _read_manifest(source, desc)
            if child.media_type not in MANIFEST_TYPES:
                raise UnsupportedManifestError(f"{where}: nested index {desc.digest[:19]} is not supported")
            manifests.append(child)
    blobs: dict[str, BlobDescriptor] = {}
    for m in manifests or [manifest]:
        doc = json.loads(m.content)
        for i, d in enumerate([doc.get("config")] + list(doc.get("layers") or [])):
            desc = parse_descriptor(d, f"{where} manifest {m.digest[:19]} blob {i}")
            blobs.setdefault(desc.digest, desc)

    def push_blob(desc: BlobDescriptor) -> None:
        candidates = [r for r in (sources.repositories(desc.digest, ref.registry) if sources else [])
                      if r != ref.repository]
        outcome = client.upload_blob(
            desc.digest, desc.size, lambda: source.open_blob(desc.digest),
            mount_from=candidates[0] if candidates else None, chunk_size=chunk_size,
        )
        {"exists": result.existing, "mounted": result.mounted, "uploaded": result.uploaded}[outcome].append(desc.digest)
        if outcome != "exists":
            say(f"{desc.digest[:19]}: {outcome} ({desc.size} bytes)")

    try:
        # Big blobs first so the long uploads overlap the many small ones.
        ordered = sorted(blobs.values(), key=lambda d: -d.size)
        run_parallel(push_blob, ordered, concurrency)
        for child in manifests:
            if client.head_manifest(child.digest) != child.digest:
                client.put_manifest(child.digest, child.content, child.media_type)
        for t in extra_tags:
            ref.with_tag(t)  # validates the tag
        tags = list(dict.fromkeys(([ref.tag] if ref.tag else []) + list(extra_tags)))
        targets = tags or [manifest.digest]
        for target in targets:
            if client.head_manifest(target) != manifest.digest:
                client.put_manifest(target, manifest.content, manifest.media_type)
            if target in tags:
                result.tags.append(target)
        say(f"{ref.name}: pushed {manifest.digest}")
        if sources is not None:
            sources.record(ref.registry, ref.repository, list(blobs))
        return result
    finally:
        transport.close()
