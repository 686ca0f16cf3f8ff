"""Errors of image import and export."""
from __future__ import annotations

from builder.errors import PybuildError


class ArchiveError(PybuildError):
    """An image archive is unreadable, malformed or hostile."""

    hint = "pybuild load reads OCI image layouts and `docker save` archives, plain or gzip/zstd-compressed"


class ExportError(ArchiveError):
    """An archive cannot be written (the destination, not the input, is the problem)."""

    hint = None
