"""Errors of the image format layer: malformed image JSON, bad digests, unsafe or broken layers."""
from __future__ import annotations

from builder.errors import PybuildError


class ImageError(PybuildError):
    """Base class for image-format failures."""


class InvalidImageError(ImageError):
    """An image manifest, index, config or descriptor is malformed."""


class InvalidDigestError(InvalidImageError):
    """A digest string is not ``sha256:<64 lowercase hex>``."""

    hint = "digests look like sha256:<64 hex digits>"


class InvalidPlatformError(ImageError):
    """A platform string is not ``OS/ARCH[/VARIANT]``."""

    hint = "platforms look like linux/amd64 or linux/arm64/v8"


class UnsupportedMediaTypeError(ImageError):
    """A media type (or compression) this tool does not handle."""


class LayerError(ImageError):
    """A layer cannot be written or applied: unsafe entries, corrupt data, I/O failure."""
