"""Hostile or broken manifests from a registry are refused with one clear line."""
from __future__ import annotations

import json

import pytest

from builder.registry.client import OCI_INDEX, OCI_MANIFEST, Manifest, digest_bytes
from builder.registry.errors import NoMatchingPlatformError, UnsupportedManifestError, VerificationError
from builder.registry.platform import select_manifest
from builder.registry.pull import parse_image_manifest
from builder.image.oci import Platform

GOOD = "sha256:" + "ab" * 32


def manifest(doc: dict) -> Manifest:
    content = json.dumps(doc).encode()
    return Manifest(content, OCI_MANIFEST, digest_bytes(content))


def image_doc(**layer) -> dict:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": GOOD, "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": GOOD, "size": 5,
                        **layer}]}


@pytest.mark.parametrize("layer,message", [
    ({"digest": "sha256:../../../../etc/passwd"}, "invalid digest"),
    ({"digest": "md5:" + "a" * 32}, "invalid digest"),
    ({"size": -1}, "invalid size"),
    ({"size": 1 << 50}, "invalid size"),
    ({"size": "12"}, "invalid size"),
    ({"size": True}, "invalid size"),
])
def test_hostile_layer_descriptors_are_refused(layer, message):
    with pytest.raises(VerificationError, match=message) as err:
        parse_image_manifest(manifest(image_doc(**layer)), "reg/app:1")
    assert "\n" not in str(err.value)


def test_wrong_schema_version_and_missing_layers():
    doc = image_doc()
    doc["schemaVersion"] = 3
    with pytest.raises(UnsupportedManifestError, match="schemaVersion"):
        parse_image_manifest(manifest(doc), "reg/app:1")
    doc = image_doc()
    del doc["layers"]
    with pytest.raises(VerificationError, match="no layers"):
        parse_image_manifest(manifest(doc), "reg/app:1")


def test_platform_selection_normalises_variants_and_skips_attestations():
    entries = [
        {"digest": GOOD, "size": 1, "mediaType": OCI_MANIFEST,
         "platform": {"os": "unknown", "architecture": "unknown"}},  # an attestation manifest
        {"digest": "sha256:" + "01" * 32, "size": 1, "mediaType": OCI_MANIFEST,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:" + "02" * 32, "size": 1, "mediaType": OCI_MANIFEST,
         "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
    ]
    assert select_manifest(entries, Platform("linux", "arm64"), "x")["digest"].startswith("sha256:01")
    assert select_manifest(entries, Platform("linux", "arm"), "x")["digest"].startswith("sha256:02")
    with pytest.raises(NoMatchingPlatformError, match=r"available: linux/arm/v7, linux/arm64/v8\)"):
        select_manifest(entries, Platform("linux", "riscv64"), "x")
