"""Image names in the store: docker's normalisation for storage, docker's short form for display.

``busybox`` is stored as ``docker.io/library/busybox:latest`` and shown as
``busybox:latest``; ``localhost:5000/app:1`` stays as it is.
"""
from __future__ import annotations

from builder.registry.reference import InvalidReferenceError, Reference, parse_reference

__all__ = ["InvalidReferenceError", "normalize_name", "familiar_name", "split_name", "parse_reference"]


def normalize_name(text: str) -> str:
    """The stored form of a tag reference; raises ``InvalidReferenceError`` for a bad or digest reference."""
    ref = parse_reference(text)
    if ref.digest is not None:
        raise InvalidReferenceError(f"{text!r} names a digest; only NAME[:TAG] can be given to an image")
    return str(ref)


def familiar_name(stored: str) -> str:
    """How docker prints a stored name: ``docker.io/library/busybox:latest`` → ``busybox:latest``."""
    return parse_reference(stored).familiar()


def split_name(stored: str) -> tuple[str, str]:
    """(familiar repository, tag) of a stored name, for the REPOSITORY and TAG columns."""
    ref = parse_reference(stored)
    repo = Reference(ref.registry, ref.repository).familiar()
    return repo, ref.tag or "<none>"
