"""Small real OCI images for the registry tests, and a directory blob store to hold them.

``DirBlobStore`` verifies digest and size on ``put_blob`` exactly like the content store
must (it stands in for ``builder.store`` until that lands, so these tests exercise the
registry client against real registries, not the store).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.registry.client import OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST, Manifest

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class DirBlobStore:
    """blobs/<algo>/<hex>, written through a temp file and renamed only when verified."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        self.puts = 0

    def path(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        return self.root / "blobs" / algo / hexpart

    def has_blob(self, digest: str) -> bool:
        return self.path(digest).exists()

    def open_blob(self, digest: str):
        return open(self.path(digest), "rb")

    def put_blob(self, stream, expected_digest: str, expected_size: int) -> str:
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "blobs")
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = stream.read(1 << 20)
                    if not block:
                        break
                    h.update(block)
                    size += len(block)
                    out.write(block)
            if size != expected_size or f"sha256:{h.hexdigest()}" != expected_digest:
                raise ValueError(f"blob mismatch: {size} bytes sha256:{h.hexdigest()}")
            os.replace(tmp, self.path(expected_digest))
            self.puts += 1
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return expected_digest

    def add_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.path(digest).write_bytes(data)
        return digest

    def blobs(self) -> set[str]:
        return {f"sha256:{p.name}" for p in (self.root / "blobs" / "sha256").iterdir()}


def layer_tar_gz(files: dict[str, bytes], compresslevel: int = 1) -> tuple[bytes, str]:
    """A gzip'd layer tar of ``files`` and its diff_id (digest of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, compresslevel=compresslevel, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


@dataclass
class TestImage:
    manifest: Manifest
    config_digest: str
    layer_digests: list[str]


def make_image(
    store: DirBlobStore,
    layers: list[dict[str, bytes]] | None = None,
    arch: str = "amd64",
    docker_types: bool = False,
    raw_layers: list[bytes] | None = None,
) -> TestImage:
    """Assemble an image from file maps (or pre-made gzip blobs) into ``store``."""
    descs, diff_ids = [], []
    layer_type = DOCKER_LAYER if docker_types else OCI_LAYER_GZIP
    blobs = []
    for files in layers or []:
        blob, diff_id = layer_tar_gz(files)
        blobs.append((blob, diff_id))
    for blob in raw_layers or []:
        blobs.append((blob, "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()))
    for blob, diff_id in blobs:
        digest = store.add_bytes(blob)
        descs.append({"mediaType": layer_type, "digest": digest, "size": len(blob)})
        diff_ids.append(diff_id)
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }, sort_keys=True).encode()
    config_digest = store.add_bytes(config)
    manifest_type = DOCKER_MANIFEST if docker_types else OCI_MANIFEST
    doc = {
        "schemaVersion": 2, "mediaType": manifest_type,
        "config": {"mediaType": DOCKER_CONFIG if docker_types else OCI_CONFIG,
                   "digest": config_digest, "size": len(config)},
        "layers": descs,
    }
    content = json.dumps(doc, sort_keys=True).encode()
    digest = store.add_bytes(content)
    return TestImage(Manifest(content, manifest_type, digest), config_digest, [d["digest"] for d in descs])


def make_index(store: DirBlobStore, images: dict[str, TestImage]) -> Manifest:
    """An OCI index over per-architecture images."""
    doc = {
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": img.manifest.media_type, "digest": img.manifest.digest,
             "size": len(img.manifest.content), "platform": {"os": "linux", "architecture": arch}}
            for arch, img in images.items()
        ],
    }
    content = json.dumps(doc, sort_keys=True).encode()
    return Manifest(content, OCI_INDEX, store.add_bytes(content))
