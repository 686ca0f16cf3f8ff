"""Choosing the manifest for a platform from an index (the Platform type is ``builder.image.oci``'s)."""
from __future__ import annotations

from builder.image.oci import Platform
from builder.registry.errors import NoMatchingPlatformError


def platform_of(entry: dict) -> Platform | None:
    p = entry.get("platform")
    if not isinstance(p, dict) or not isinstance(p.get("os"), str) or not isinstance(p.get("architecture"), str):
        return None
    variant = p.get("variant")
    return Platform(p["os"], p["architecture"], variant if isinstance(variant, str) and variant else None)


def select_manifest(entries: list[dict], want: Platform, where: str) -> dict:
    """The first index entry for ``want``; entries without a platform (attestations) never match."""
    for entry in entries:
        p = platform_of(entry)
        if p is not None and p.matches(want):
            return entry
    # "unknown/unknown" entries are attestations, not images: leave them out of the list.
    available = sorted({str(p) for p in map(platform_of, entries) if p and p.os != "unknown"})
    raise NoMatchingPlatformError(
        f"{where} has no image for {want} (available: {', '.join(available) or 'none'})"
    )
