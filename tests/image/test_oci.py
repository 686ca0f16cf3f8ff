"""The OCI data model: canonical JSON out, validated JSON in, unknown keys kept."""
from __future__ import annotations

import json

import pytest

from builder.image import mediatypes as mt
from builder.image.digest import DigestWriter, digest_hex, parse_digest, sha256_digest
from builder.image.errors import InvalidDigestError, InvalidImageError, InvalidPlatformError
from builder.image.oci import (
    ContainerConfig, Descriptor, Healthcheck, History, ImageConfig, Index, Manifest, Platform,
    format_created,
)

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# A config as docker writes it, with keys this model does not know (container, docker_version, ...).
DOCKER_CONFIG = json.dumps({
    "architecture": "amd64",
    "config": {
        "Hostname": "", "User": "app", "Env": ["PATH=/usr/bin", "A=b=c"], "Cmd": ["sh"],
        "ExposedPorts": {"80/tcp": {}, "443/tcp": {}}, "Volumes": {"/data": {}},
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000},
        "Labels": {"z": "1", "a": "2"}, "ArgsEscaped": True, "OnBuild": None,
    },
    "container": "3f9c", "docker_version": "24.0.7", "created": "2024-01-02T03:04:05.123456789Z",
    "history": [{"created": "2024-01-02T03:04:05Z", "created_by": "/bin/sh -c #(nop) ADD file:x in / "},
                {"created_by": "CMD [\"sh\"]", "empty_layer": True}],
    "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [EMPTY]},
}).encode()


def test_digest_helpers():
    assert sha256_digest(b"") == EMPTY
    assert parse_digest(EMPTY) == EMPTY
    assert digest_hex(EMPTY) == EMPTY[7:]
    sink = DigestWriter()
    sink.write(b"ab"), sink.write(b"c")
    assert (sink.digest, sink.size) == (sha256_digest(b"abc"), 3)


@pytest.mark.parametrize("bad, words", [
    ("sha512:" + "a" * 128, "unsupported digest algorithm 'sha512'"),
    ("sha256:" + "A" * 64, "expected sha256:<64"),
    ("sha256:abc", "expected sha256:<64"),
    ("e3b0c442", "expected sha256:<64"),
    (42, "not a string"),
])
def test_bad_digests_are_rejected_clearly(bad, words):
    with pytest.raises(InvalidDigestError, match=words.replace("(", r"\(").replace("<", "<")):
        parse_digest(bad)


def test_platform_parse_host_and_match():
    p = Platform.parse("linux/arm64/v8")
    assert (p.os, p.architecture, p.variant) == ("linux", "arm64", "v8")
    assert str(p) == "linux/arm64/v8"
    assert p.matches(Platform.parse("linux/aarch64"))
    assert Platform.parse("linux/arm").matches(Platform.parse("linux/arm/v7"))
    assert not Platform.parse("linux/amd64").matches(Platform.parse("linux/arm64"))
    assert Platform.host().os == "linux" and Platform.host().architecture
    for bad in ("linux", "linux/", "a/b/c/d", "linux/am d64", ""):
        with pytest.raises(InvalidPlatformError):
            Platform.parse(bad)


def test_docker_config_round_trips_with_unknown_fields():
    cfg = ImageConfig.from_json(DOCKER_CONFIG)
    assert cfg.platform == Platform("linux", "amd64")
    assert cfg.config.user == "app"
    assert cfg.config.env_map() == {"PATH": "/usr/bin", "A": "b=c"}
    assert cfg.config.exposed_ports == ["443/tcp", "80/tcp"]
    assert cfg.config.healthcheck == Healthcheck(test=["CMD", "true"], interval=30_000_000_000)
    assert cfg.diff_ids == [EMPTY]
    assert cfg.history[1].empty_layer
    assert cfg.extra == {"container": "3f9c", "docker_version": "24.0.7"}
    assert cfg.config.extra == {"Hostname": ""}

    out = cfg.to_json()
    again = json.loads(out)
    assert again["container"] == "3f9c" and again["config"]["Hostname"] == ""
    assert ImageConfig.from_json(out).to_json() == out  # canonical is a fixed point
    # Canonical: compact, Go key order, empty optionals dropped, map keys sorted.
    assert out.startswith(b'{"created":"2024-01-02T03:04:05.123456789Z","architecture":"amd64","os":"linux","config":{"User":"app"')
    assert b'": ' not in out and b', "' not in out
    assert b'"OnBuild"' not in out
    assert b'"Labels":{"a":"2","z":"1"}' in out


def test_new_config_is_deterministic_and_escapes_like_go():
    def build() -> bytes:
        cfg = ImageConfig.for_platform(Platform.parse("linux/arm64/v8"), created=format_created(0))
        cfg.config = ContainerConfig(cmd=["echo", "a<b>&c"], working_dir="/app")
        cfg.rootfs.diff_ids.append(EMPTY)
        cfg.history.append(History(created=format_created(0), created_by="COPY . /app"))
        return cfg.to_json()

    assert build() == build()
    assert b'"a\\u003cb\\u003e\\u0026c"' in build()
    assert b'"variant":"v8","config"' in build()
    assert format_created(1.5) == "1970-01-01T00:00:01.5Z"


def test_manifest_and_index_round_trip():
    config = ImageConfig.for_platform(Platform.parse("linux/amd64"))
    layer = Descriptor(mt.OCI_LAYER_GZIP, EMPTY, 32, annotations={"b": "2", "a": "1"})
    manifest = Manifest(config.descriptor(), [layer])
    raw = manifest.to_json()
    assert raw.startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":')
    assert b'"annotations":{"a":"1","b":"2"}' in raw
    assert Manifest.from_json(raw) == manifest

    index = Index([manifest.descriptor(platform=Platform.parse("linux/amd64"))], annotations={"x": "y"})
    parsed = Index.from_json(index.to_json())
    assert parsed == index
    assert parsed.for_platform(Platform.parse("linux/amd64")).digest == sha256_digest(raw)
    assert parsed.for_platform(Platform.parse("linux/s390x")) is None


def test_manifest_without_layers_still_writes_the_field():
    manifest = Manifest(Descriptor(mt.OCI_EMPTY, sha256_digest(b"{}"), 2), [])
    assert b'"layers":[]' in manifest.to_json()


def test_docker_schema2_and_manifest_list():
    raw = json.dumps({
        "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG, "size": 7, "digest": EMPTY},
        "layers": [{"mediaType": mt.DOCKER_FOREIGN_LAYER, "size": 1, "digest": EMPTY,
                    "urls": ["https://example.com/layer"]}],
    })
    m = Manifest.from_json(raw)
    assert m.media_type == mt.DOCKER_MANIFEST
    assert m.layers[0].urls == ["https://example.com/layer"]
    assert mt.layer_compression(m.layers[0].media_type) == mt.GZIP
    lst = Index.from_json(json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": []}))
    assert lst.media_type == mt.DOCKER_MANIFEST_LIST


@pytest.mark.parametrize("raw, words", [
    (b"not json", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"schemaVersion":1,"name":"x"}', "schema 1"),
    (b'{"schemaVersion":2,"layers":[]}', "missing required field 'config'"),
    (b'{"schemaVersion":2,"mediaType":"text/plain","config":{},"layers":[]}', "is not an image manifest"),
    (b'{"schemaVersion":2,"manifests":[]}', "is an image index"),
    (b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"md5:00","size":1},"layers":[]}', "digest"),
    (b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"' + EMPTY.encode() + b'","size":-1},"layers":[]}', "negative"),
    (b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"' + EMPTY.encode() + b'","size":"1"},"layers":[]}', "integer"),
    (b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"' + EMPTY.encode() + b'","size":1},"layers":{}}', "'layers' must be a list"),
])
def test_malformed_manifests_raise_invalid_image_error(raw, words):
    with pytest.raises(InvalidImageError, match=words):
        Manifest.from_json(raw)


@pytest.mark.parametrize("doc, words", [
    ({"os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}, "'architecture'"),
    ({"os": "linux", "architecture": "amd64"}, "'rootfs'"),
    ({"os": "linux", "architecture": "amd64", "rootfs": {"type": "tar"}}, "type must be 'layers'"),
    ({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": ["x"]}}, "invalid digest"),
    ({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers"}, "config": {"Env": "A=1"}}, "'Env' must be a list"),
    ({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers"}, "history": {}}, "'history' must be a list"),
])
def test_malformed_configs_raise_invalid_image_error(doc, words):
    with pytest.raises(InvalidImageError, match=words):
        ImageConfig.from_json(json.dumps(doc))


def test_media_type_compression_mapping():
    assert mt.layer_media_type(mt.ZSTD) == mt.OCI_LAYER_ZSTD
    assert mt.layer_media_type(mt.GZIP, docker=True) == mt.DOCKER_LAYER_GZIP
    assert mt.layer_compression(mt.OCI_LAYER_TAR) == mt.UNCOMPRESSED
    assert mt.to_docker(mt.OCI_MANIFEST) == mt.DOCKER_MANIFEST
    assert mt.to_oci(mt.DOCKER_CONFIG) == mt.OCI_CONFIG
    from builder.image.errors import UnsupportedMediaTypeError
    with pytest.raises(UnsupportedMediaTypeError):
        mt.layer_compression("application/octet-stream")
    with pytest.raises(UnsupportedMediaTypeError):
        mt.layer_media_type("lz4")
