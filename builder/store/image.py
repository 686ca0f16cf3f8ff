"""An image as the store holds it: manifest, config and layers (and the index it came from)."""
from __future__ import annotations

from dataclasses import dataclass, field

from builder.image.oci import Descriptor, ImageConfig, Index, Manifest, Platform


@dataclass
class Image:
    """One platform's image, resolved from the store.

    ``digest`` is what references point at (the index digest for a
    multi-platform image, else the manifest digest); ``id`` is the config
    digest, as ``docker images`` shows it.
    """

    digest: str
    manifest_digest: str
    manifest: Manifest
    config_digest: str
    config: ImageConfig
    index: Index | None = None
    names: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.config_digest

    @property
    def layers(self) -> list[Descriptor]:
        return self.manifest.layers

    @property
    def diff_ids(self) -> list[str]:
        return self.config.diff_ids

    @property
    def platform(self) -> Platform:
        return self.config.platform

    @property
    def size(self) -> int:
        """Bytes of content this image needs: config plus (compressed) layers."""
        return self.manifest.config.size + sum(layer.size for layer in self.manifest.layers)

    def config_descriptor(self) -> Descriptor:
        return self.manifest.config


@dataclass(frozen=True)
class ImageSummary:
    """A row of ``pybuild images``: one (name, image) pair, or a dangling image with no name."""

    name: str | None
    digest: str
    id: str
    created: str | None
    size: int
