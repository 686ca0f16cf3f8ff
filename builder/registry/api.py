"""Registry operations on the content store: what ``pybuild pull/push`` and the solver call.

    pull_to_store(ref, store, platform=None) -> builder.store.image.Image
    push_from_store(name, store, target=None) -> PushResult

Pulled images are recorded under their reference (an index stays an index, holding the
platform that was pulled); which repositories blobs came from is remembered in
``<store root>/registry/sources.db`` so later pushes can mount instead of upload.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from builder.image import mediatypes as mt
from builder.image.oci import Index, Platform
from builder.registry.client import Manifest
from builder.registry.errors import RegistryError, VerificationError
from builder.store.errors import DigestMismatchError
from builder.registry.pull import pull_image
from builder.registry.push import PushResult, push_image
from builder.registry.reference import Reference, parse_reference
from builder.registry.sources import BlobSources
from builder.registry.transport import RegistryOptions

SOURCES_PATH = Path("registry") / "sources.db"


def _sources(store) -> BlobSources | None:
    root = getattr(store, "root", None)
    return BlobSources(Path(root) / SOURCES_PATH) if root is not None else None


def pull_to_store(
    ref: Reference | str,
    store,
    platform: Platform | str | None = None,
    *,
    options: RegistryOptions | None = None,
    progress: Callable[[str], None] | None = None,
    all_platforms: bool = False,
    lazy_layers: bool = False,
):
    """Pull ``ref`` into ``store`` (a ``ContentStore``), name it, and return the stored image
    (for ``platform``, or the host's; ``all_platforms`` stores every platform of an index;
    ``lazy_layers`` leaves layers to be fetched when first read)."""
    if isinstance(ref, str):
        ref = parse_reference(ref)
    if isinstance(platform, str):
        platform = Platform.parse(platform)
    sources = _sources(store)
    try:
        with store.lease():
            try:
                # ContentStore.put_blob verifies digest and size itself: no need to hash twice.
                pulled = pull_image(ref, store, platform, options=options, sources=sources,
                                    progress=progress, sink_verifies=True, all_platforms=all_platforms,
                                    lazy_layers=lazy_layers)
            except DigestMismatchError as exc:
                raise VerificationError(f"{ref.registry} sent bad content for {ref}: {exc}") from None
            top = pulled.index or pulled.manifest
            name = str(Reference(ref.registry, ref.repository, ref.tag)) if ref.tag else None
            store.add_image(top.digest, top.media_type, name=name)
    finally:
        if sources is not None:
            sources.close()
    return store.get_image(top.digest, platform or pulled.platform)


def push_from_store(
    name: str,
    store,
    target: Reference | str | None = None,
    *,
    options: RegistryOptions | None = None,
    progress: Callable[[str], None] | None = None,
    extra_tags: tuple[str, ...] = (),
) -> PushResult:
    """Push the stored image ``name`` to ``target`` (default: ``name`` itself, which must then be
    ``REGISTRY/REPO[:TAG]``). A multi-platform image whose platforms are all in the store is
    pushed as its index; one holding only some of them pushes the host platform's manifest."""
    digest = store.resolve(name)
    if target is None:
        try:
            target = parse_reference(name)
        except RegistryError:
            raise RegistryError(f"cannot push {name!r}: give the image a registry name first "
                                "(pybuild tag IMAGE REGISTRY/REPO:TAG)") from None
    elif isinstance(target, str):
        target = parse_reference(target)
    record = store.index.image(digest)
    media_type = record.media_type if record else None
    content = store.read_blob(digest)
    root = Manifest(content, media_type or mt.OCI_MANIFEST, digest)
    if media_type in mt.INDEXES:
        index = Index.from_json(content)
        if not all(store.has_blob(m.digest) for m in index.manifests):
            image = store.get_image(digest)
            if progress:
                progress(f"{name}: only {image.platform} is in the store; pushing that platform's manifest")
            root = Manifest(store.read_blob(image.manifest_digest), image.manifest.media_type, image.manifest_digest)
    sources = _sources(store)
    try:
        return push_image(target, store, root, options=options, sources=sources,
                          extra_tags=extra_tags, progress=progress)
    finally:
        if sources is not None:
            sources.close()
