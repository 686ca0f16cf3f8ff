"""OCI and Docker schema2 media types, and which compression each layer type uses."""
from __future__ import annotations

# OCI image-spec v1.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# Non-distributable layers: deprecated in image-spec 1.1 but still found in the wild.
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

# Docker image manifest v2, schema 2.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
# Schema 1 is only named so it can be rejected clearly.
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# Compression names used across the package.
UNCOMPRESSED = "none"
GZIP = "gzip"
ZSTD = "zstd"
COMPRESSIONS = (UNCOMPRESSED, GZIP, ZSTD)

MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})

LAYER_COMPRESSION: dict[str, str] = {
    OCI_LAYER_TAR: UNCOMPRESSED,
    OCI_LAYER_GZIP: GZIP,
    OCI_LAYER_ZSTD: ZSTD,
    OCI_LAYER_NONDIST_TAR: UNCOMPRESSED,
    OCI_LAYER_NONDIST_GZIP: GZIP,
    OCI_LAYER_NONDIST_ZSTD: ZSTD,
    DOCKER_LAYER_TAR: UNCOMPRESSED,
    DOCKER_LAYER_GZIP: GZIP,
    DOCKER_LAYER_ZSTD: ZSTD,
    DOCKER_FOREIGN_LAYER: GZIP,
}
LAYERS = frozenset(LAYER_COMPRESSION)

FOREIGN_LAYERS = frozenset({
    DOCKER_FOREIGN_LAYER, OCI_LAYER_NONDIST_TAR, OCI_LAYER_NONDIST_GZIP, OCI_LAYER_NONDIST_ZSTD,
})

_OCI_LAYER_FOR = {UNCOMPRESSED: OCI_LAYER_TAR, GZIP: OCI_LAYER_GZIP, ZSTD: OCI_LAYER_ZSTD}
_DOCKER_LAYER_FOR = {UNCOMPRESSED: DOCKER_LAYER_TAR, GZIP: DOCKER_LAYER_GZIP, ZSTD: DOCKER_LAYER_ZSTD}


def is_layer(media_type: str) -> bool:
    return media_type in LAYERS


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFESTS


def is_index(media_type: str) -> bool:
    return media_type in INDEXES


def layer_compression(media_type: str) -> str:
    """``none``, ``gzip`` or ``zstd`` for a layer media type."""
    from builder.image.errors import UnsupportedMediaTypeError

    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise UnsupportedMediaTypeError(f"unsupported layer media type {media_type!r}") from None


def layer_media_type(compression: str, docker: bool = False) -> str:
    """The layer media type for a compression, in the OCI or the Docker schema2 family."""
    from builder.image.errors import UnsupportedMediaTypeError

    table = _DOCKER_LAYER_FOR if docker else _OCI_LAYER_FOR
    try:
        return table[compression]
    except KeyError:
        raise UnsupportedMediaTypeError(
            f"unknown compression {compression!r}: expected one of {', '.join(COMPRESSIONS)}"
        ) from None


def to_docker(media_type: str) -> str:
    """The Docker schema2 equivalent of an OCI media type (identity when there is none)."""
    return _TO_DOCKER.get(media_type, media_type)


def to_oci(media_type: str) -> str:
    """The OCI equivalent of a Docker schema2 media type (identity when there is none)."""
    return _TO_OCI.get(media_type, media_type)


_TO_DOCKER = {
    OCI_MANIFEST: DOCKER_MANIFEST,
    OCI_INDEX: DOCKER_MANIFEST_LIST,
    OCI_CONFIG: DOCKER_CONFIG,
    OCI_LAYER_TAR: DOCKER_LAYER_TAR,
    OCI_LAYER_GZIP: DOCKER_LAYER_GZIP,
    OCI_LAYER_ZSTD: DOCKER_LAYER_ZSTD,
}
_TO_OCI = {v: k for k, v in _TO_DOCKER.items()}
