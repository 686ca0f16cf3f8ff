"""What import and export hand around: images to write, and images that were loaded."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExportItem:
    """One image to save: its target digest and media type, and the stored names to give it."""

    digest: str
    media_type: str
    names: list[str] = field(default_factory=list)


@dataclass
class LoadedImage:
    """One image a load put in the store: its target digest, ID (config digest) and names."""

    digest: str
    id: str | None
    names: list[str] = field(default_factory=list)
