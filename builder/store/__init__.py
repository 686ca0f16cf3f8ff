"""The content store: verified blobs by digest, image names, unpacked layer snapshots, build cache.

Use ``ContentStore(root)`` (or ``open_store``); see ``builder.store.store`` for the layout.

Modules:
    ``store``      – ``ContentStore``: the façade everything else calls.
    ``blobs``      – atomic, verified blob files; ``BlobWriter`` for streaming writes.
    ``index``      – the SQLite index (refs, images, content graph, layers, snapshots, cache).
    ``image``      – ``Image`` (manifest + config + layers) and ``ImageSummary``.
    ``names``      – docker's reference normalisation for stored names.
    ``snapshots``  – layers unpacked once, whiteouts in overlayfs form.
    ``gc``         – ``prune`` and ``disk_usage``.
    ``locks``, ``tmpdirs`` – flock helpers and crash-safe per-process scratch space.
"""
from __future__ import annotations

from builder.store.errors import (
    BlobNotFoundError, DigestMismatchError, ImageNotFoundError, StoreBusyError, StoreError,
)
from builder.store.image import Image, ImageSummary
from builder.store.store import ContentStore, open_store

__all__ = [
    "BlobNotFoundError", "ContentStore", "DigestMismatchError", "Image", "ImageNotFoundError",
    "ImageSummary", "StoreBusyError", "StoreError", "open_store",
]
