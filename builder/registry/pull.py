"""Pull: tag → manifest (or index → the platform's manifest) → config and layers into the store.

Every byte is verified against its descriptor's digest and size before the store keeps
it (the store verifies again on ``put_blob``); blobs already present are skipped;
layers download in parallel.
"""
from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Protocol

from builder.image.oci import Platform
from builder.registry.client import MANIFEST_TYPES, OCI_MANIFEST, Manifest, RepositoryClient
from builder.registry.errors import NoMatchingPlatformError, UnsupportedManifestError, VerificationError
from builder.registry.parallel import run_parallel
from builder.registry.platform import platform_of, select_manifest
from builder.registry.reference import Reference, parse_reference
from builder.registry.sources import BlobSources
from builder.registry.transport import RegistryOptions, Transport

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
# A declared size above this is hostile, not an image layer.
MAX_BLOB_SIZE = 1 << 40
_DIGEST_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


class BlobSink(Protocol):
    """What pull needs from the content store."""

    def has_blob(self, digest: str) -> bool: ...

    def put_blob(self, stream: BinaryIO, expected_digest: str, expected_size: int):
        """Store the stream's content; must refuse (raise, keep nothing) on a digest or size mismatch."""


@dataclass(frozen=True)
class BlobDescriptor:
    """A validated content descriptor from a manifest."""

    media_type: str
    digest: str
    size: int


@dataclass
class PulledImage:
    """What a pull produced: the platform manifest, its config and layers, and the index if any."""

    reference: Reference
    manifest: Manifest
    config: BlobDescriptor
    layers: list[BlobDescriptor]
    platform: Platform | None
    index: Manifest | None = None
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """The digest to pin this pull with (the index's if the tag named one)."""
        return (self.index or self.manifest).digest


def parse_descriptor(obj: object, where: str) -> BlobDescriptor:
    if not isinstance(obj, dict):
        raise VerificationError(f"{where}: descriptor is not an object")
    digest, size, media = obj.get("digest"), obj.get("size"), obj.get("mediaType", "")
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise VerificationError(f"{where}: invalid digest {str(digest)[:80]!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > MAX_BLOB_SIZE:
        raise VerificationError(f"{where}: invalid size {str(size)[:40]!r} for {digest[:19]}")
    if not isinstance(media, str):
        raise VerificationError(f"{where}: invalid mediaType")
    return BlobDescriptor(media, digest, size)


def parse_image_manifest(manifest: Manifest, where: str) -> tuple[BlobDescriptor, list[BlobDescriptor]]:
    doc = json.loads(manifest.content)
    if doc.get("schemaVersion") != 2:
        raise UnsupportedManifestError(f"{where}: unsupported schemaVersion {doc.get('schemaVersion')!r}")
    config = parse_descriptor(doc.get("config"), f"{where} config")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise VerificationError(f"{where}: manifest has no layers list")
    layers = [parse_descriptor(l, f"{where} layer {i}") for i, l in enumerate(layers_raw)]
    return config, layers


def parse_index(manifest: Manifest, where: str) -> list[dict]:
    doc = json.loads(manifest.content)
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise VerificationError(f"{where}: index has no manifests list")
    return [e for e in entries if isinstance(e, dict)]


def resolve(
    client: RepositoryClient, ref: Reference, platform: Platform | None, any_platform: bool = False
) -> tuple[Manifest, Manifest | None, Platform | None]:
    """Fetch the manifest for ``ref`` (through its index when it names one).

    With ``any_platform`` an index without the wanted platform yields its first entry.
    """
    where = str(ref)
    top = client.get_manifest(ref.identifier)
    if not top.is_index:
        return top, None, None
    want = platform or Platform.host()
    entries = parse_index(top, where)
    try:
        entry = select_manifest(entries, want, where)
    except NoMatchingPlatformError:
        if not (any_platform and entries):
            raise
        entry = entries[0]
    child = _fetch_child(client, entry, where)
    return child, top, platform_of(entry)


def _fetch_child(client: RepositoryClient, entry: dict, where: str) -> Manifest:
    desc = parse_descriptor(entry, f"{where} index entry")
    child = client.get_manifest(desc.digest)
    if len(child.content) != desc.size:
        raise VerificationError(f"{where}: manifest {desc.digest[:19]} is {len(child.content)} bytes, index says {desc.size}")
    if child.media_type not in MANIFEST_TYPES:
        raise UnsupportedManifestError(f"{where}: index entry {desc.digest[:19]} is a {child.media_type}, not an image manifest")
    return child


def _config_platform(config_bytes: bytes, where: str) -> Platform:
    try:
        doc = json.loads(config_bytes)
        return Platform(str(doc["os"]), str(doc["architecture"]), doc.get("variant") or None)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise VerificationError(f"{where}: image config has no os/architecture") from None


def pull_image(
    ref: Reference | str,
    store: BlobSink,
    platform: Platform | None = None,
    *,
    options: RegistryOptions | None = None,
    sources: BlobSources | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Callable[[str], None] | None = None,
    sink_verifies: bool = False,
    all_platforms: bool = False,
    lazy_layers: bool = False,
) -> PulledImage:
    """Pull ``ref`` into ``store``: manifest, config and layers, all verified.

    With ``lazy_layers`` (what a build's FROM does) layers are not downloaded: the store
    records where they are (``add_remote_blobs``) and fetches each when it is first read.

    Blob digests are checked as they stream in, unless ``sink_verifies`` says the store's
    ``put_blob`` checks them itself (sizes are always checked here, to resume cut bodies).

    ``platform`` defaults to the host's when the reference names an index; a
    single-platform image is checked against ``platform`` (when given) before any layer
    is downloaded. ``all_platforms`` pulls every manifest of an index (``result.manifest``
    is still the wanted platform's, or the first). Naming the image in the store is the
    caller's job (see ``api.pull_to_store``).
    """
    if isinstance(ref, str):
        ref = parse_reference(ref)
    say = progress or (lambda msg: None)
    transport = Transport(ref.api_host, options)
    try:
        client = RepositoryClient(transport, ref.repository)
        manifest, index, chosen = resolve(client, ref, platform, any_platform=all_platforms)
        say(f"{ref}: manifest {manifest.digest}")
        config, layers = parse_image_manifest(manifest, str(ref))
        result = PulledImage(ref, manifest, config, layers, chosen, index)
        others: list[Manifest] = []
        if all_platforms and index is not None:
            for entry in parse_index(index, str(ref)):
                if entry.get("digest") != manifest.digest and entry.get("mediaType", OCI_MANIFEST) in MANIFEST_TYPES:
                    others.append(_fetch_child(client, entry, str(ref)))
        more_blobs: list[BlobDescriptor] = []
        for other in others:
            other_config, other_layers = parse_image_manifest(other, str(ref))
            more_blobs += [other_config, *other_layers]

        def fetch(desc: BlobDescriptor) -> None:
            if store.has_blob(desc.digest):
                result.skipped.append(desc.digest)
                return
            with client.open_blob(desc.digest, desc.size, verify_digest=not sink_verifies) as reader:
                store.put_blob(reader, desc.digest, desc.size)
            result.downloaded.append(desc.digest)
            say(f"{desc.digest[:19]}: downloaded {desc.size} bytes")

        if platform is not None and index is None:
            # A single-platform image: make sure it is the one asked for before the big downloads.
            config_bytes = client.fetch_blob_bytes(config.digest, config.size)
            actual = _config_platform(config_bytes, str(ref))
            if not actual.matches(platform):
                raise NoMatchingPlatformError(f"{ref} is a {actual} image, not {platform}")
            if not store.has_blob(config.digest):
                store.put_blob(io.BytesIO(config_bytes), config.digest, config.size)
                result.downloaded.append(config.digest)
        unique = list({d.digest: d for d in [config, *layers, *more_blobs]}.values())
        wanted = [d for d in unique if d.digest not in result.downloaded]
        if lazy_layers and hasattr(store, "add_remote_blobs"):
            deferred = {d.digest for d in layers}
            store.add_remote_blobs([(d.digest, d.size, d.media_type) for d in layers if not store.has_blob(d.digest)],
                                   {"type": "registry", "ref": f"{ref.registry}/{ref.repository}"})
            wanted = [d for d in wanted if d.digest not in deferred]
        run_parallel(fetch, wanted, concurrency)
        for doc in [manifest, *others, *filter(None, [index])]:
            if not store.has_blob(doc.digest):
                store.put_blob(io.BytesIO(doc.content), doc.digest, len(doc.content))
        if sources is not None:
            sources.record(ref.registry, ref.repository, [d.digest for d in unique])
        say(f"{ref}: {len(result.downloaded)} blobs downloaded, {len(result.skipped)} already present")
        return result
    finally:
        transport.close()
