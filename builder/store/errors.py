"""Errors of the content store: missing images and blobs, corrupt content, a busy store."""
from __future__ import annotations

from builder.errors import PybuildError


class StoreError(PybuildError):
    """Base class for content-store failures."""


class BlobNotFoundError(StoreError):
    """A blob the caller asked for is not in the store."""


class ImageNotFoundError(StoreError):
    """No image in the store answers to a reference or ID."""

    hint = "list the images in the store with `pybuild images`"


class DigestMismatchError(StoreError):
    """Content did not match the digest or size it was announced with."""


class ContentTooLargeError(StoreError):
    """Content exceeded the size it was announced with or a sanity limit."""


class StoreBusyError(StoreError):
    """Another process holds a lock this operation needs for too long."""

    hint = "another pybuild process is using the store; retry when it has finished"


class ImageInUseError(StoreError):
    """An image cannot be removed without ``--force``."""
