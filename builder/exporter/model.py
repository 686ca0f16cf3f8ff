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
    replaced: list[tuple[str, str]] = field(default_factory=list)  # (name, digest it pointed at before)

    def take_name(self, store, name: str) -> None:
        """Point ``name`` at this image, remembering the image it named before (if another)."""
        old = store.index.get_ref(name)
        if old is not None and old != self.digest:
            self.replaced.append((name, old))
        store.index.set_ref(name, self.digest)
        if name not in self.names:
            self.names.append(name)
