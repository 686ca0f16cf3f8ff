"""Push and pull against a real plain-http registry, cross-checked with skopeo."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from builder.registry.client import OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, RepositoryClient
from builder.registry.errors import NoMatchingPlatformError, NotFoundError
from builder.image.oci import Platform
from builder.registry.pull import pull_image
from builder.registry.push import push_image
from builder.registry.sources import BlobSources
from builder.registry.transport import Transport
from images import DirBlobStore, make_image, make_index


def skopeo_json(*args: str) -> dict:
    out = subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


def small_image(store, tag: str = "a", **kw):
    return make_image(store, [{"etc/hello": f"hello {tag}\n".encode()}, {"bin/tool": os.urandom(3000)}], **kw)


def test_pushed_image_is_read_and_verified_by_skopeo(plain_registry, store, skopeo, tmp_path):
    image = small_image(store)
    ref = f"{plain_registry.host}/team/app:1.0"
    result = push_image(ref, store, image.manifest)

    assert result.digest == image.manifest.digest
    assert sorted(result.uploaded) == sorted([image.config_digest, *image.layer_digests])
    assert result.tags == ["1.0"]
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         check=True, capture_output=True, timeout=60).stdout
    assert raw == image.manifest.content  # byte for byte, so the digest is preserved
    # skopeo copy downloads and verifies every blob against the manifest.
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'oci'}:x"],
                   check=True, capture_output=True, timeout=120)
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.manifest.digest


def test_extra_tags_point_at_the_same_manifest(plain_registry, store):
    image = small_image(store, "tags")
    result = push_image(f"{plain_registry.host}/team/tags:1.0", store, image.manifest, extra_tags=("1", "latest"))
    assert result.tags == ["1.0", "1", "latest"]
    client = RepositoryClient(Transport(plain_registry.host), "team/tags")
    assert sorted(client.list_tags()) == ["1", "1.0", "latest"]
    assert {client.head_manifest(t) for t in result.tags} == {image.manifest.digest}


def test_pull_round_trip_into_an_empty_store(plain_registry, store, tmp_path):
    image = small_image(store, "round")
    ref = f"{plain_registry.host}/team/round:v1"
    push_image(ref, store, image.manifest)

    fresh = DirBlobStore(tmp_path / "fresh")
    pulled = pull_image(ref, fresh)
    assert pulled.manifest.digest == image.manifest.digest
    assert pulled.index is None
    assert fresh.blobs() == store.blobs()
    for digest in fresh.blobs():
        assert fresh.path(digest).read_bytes() == store.path(digest).read_bytes()


def test_pull_skips_blobs_already_in_the_store(plain_registry, store):
    image = small_image(store, "skip")
    ref = f"{plain_registry.host}/team/skip:v1"
    push_image(ref, store, image.manifest)
    puts_before = store.puts
    pulled = pull_image(ref, store)
    assert pulled.downloaded == []
    assert sorted(pulled.skipped) == sorted([image.config_digest, *image.layer_digests])
    assert store.puts == puts_before


def test_repush_of_an_unchanged_image_uploads_nothing(plain_registry, store):
    image = small_image(store, "again")
    ref = f"{plain_registry.host}/team/again:v1"
    push_image(ref, store, image.manifest)
    again = push_image(ref, store, image.manifest)
    assert again.uploaded == [] and again.mounted == []
    assert len(again.existing) == 3


def test_cross_repository_mount_when_the_blob_came_from_another_repo(plain_registry, store, tmp_path):
    sources = BlobSources(tmp_path / "sources.db")
    image = small_image(store, "mount")
    push_image(f"{plain_registry.host}/team/origin:v1", store, image.manifest, sources=sources)
    moved = push_image(f"{plain_registry.host}/other/copy:v1", store, image.manifest, sources=sources)
    assert sorted(moved.mounted) == sorted([image.config_digest, *image.layer_digests])
    assert moved.uploaded == []
    client = RepositoryClient(Transport(plain_registry.host), "other/copy")
    assert client.blob_size(image.layer_digests[0]) is not None


def test_large_blob_goes_up_in_chunks_and_comes_back_intact(plain_registry, store, tmp_path):
    import gzip

    payload = gzip.compress(os.urandom(3 << 20), compresslevel=1)  # incompressible: ~3 MiB blob
    image = make_image(store, raw_layers=[payload])
    ref = f"{plain_registry.host}/team/chunked:v1"
    push_image(ref, store, image.manifest, chunk_size=512 << 10)  # forces ~6 PATCH requests
    fresh = DirBlobStore(tmp_path / "fresh")
    pull_image(ref, fresh)
    assert fresh.path(image.layer_digests[0]).read_bytes() == payload


def test_medium_blob_streams_from_the_file_in_one_put(plain_registry, store, tmp_path):
    import gzip

    payload = gzip.compress(os.urandom(9 << 20), compresslevel=0)  # above the in-memory limit
    image = make_image(store, raw_layers=[payload])
    ref = f"{plain_registry.host}/team/streamed:v1"
    assert push_image(ref, store, image.manifest).uploaded
    fresh = DirBlobStore(tmp_path / "fresh")
    pull_image(ref, fresh)
    assert fresh.path(image.layer_digests[0]).read_bytes() == payload


@pytest.mark.parametrize("fmt,expected", [("oci", OCI_MANIFEST), ("v2s2", DOCKER_MANIFEST)])
def test_pull_what_skopeo_pushed_in_both_media_types(plain_registry, store, tmp_path, skopeo, fmt, expected):
    image = small_image(store, fmt)
    layout = tmp_path / "layout"
    _write_oci_layout(layout, store, image.manifest)
    ref = f"{plain_registry.host}/skopeo/{fmt}:v1"
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--format", fmt,
                    f"oci:{layout}:x", f"docker://{ref}"], check=True, capture_output=True, timeout=120)
    fresh = DirBlobStore(tmp_path / "fresh")
    pulled = pull_image(ref, fresh)
    assert pulled.manifest.media_type == expected
    # skopeo may recompress nothing, but it rewrites the manifest for v2s2: the layers match.
    assert [l.digest for l in pulled.layers] == image.layer_digests


def test_two_platform_index_from_skopeo_pulls_the_requested_platform(plain_registry, store, tmp_path, skopeo):
    amd = small_image(store, "amd64", arch="amd64")
    arm = small_image(store, "arm64", arch="arm64")
    index = make_index(store, {"amd64": amd, "arm64": arm})
    layout = tmp_path / "layout"
    _write_oci_layout(layout, store, index)
    ref = f"{plain_registry.host}/multi/app:v1"
    subprocess.run(["skopeo", "copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:x", f"docker://{ref}"],
                   check=True, capture_output=True, timeout=120)

    fresh = DirBlobStore(tmp_path / "fresh")
    pulled = pull_image(ref, fresh, Platform("linux", "arm64"))
    assert pulled.index is not None and pulled.index.media_type == OCI_INDEX
    assert pulled.manifest.digest == arm.manifest.digest
    assert fresh.has_blob(arm.config_digest) and not fresh.has_blob(amd.config_digest)
    with pytest.raises(NoMatchingPlatformError, match="linux/s390x.*available: linux/amd64, linux/arm64"):
        pull_image(ref, fresh, Platform("linux", "s390x"))


def test_push_a_multi_platform_index_then_skopeo_copies_all_of_it(plain_registry, store, tmp_path, skopeo):
    amd = small_image(store, "i-amd64", arch="amd64")
    arm = small_image(store, "i-arm64", arch="arm64")
    index = make_index(store, {"amd64": amd, "arm64": arm})
    ref = f"{plain_registry.host}/multi/pushed:v1"
    result = push_image(ref, store, index)
    assert result.digest == index.digest
    subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false", f"docker://{ref}",
                    f"oci:{tmp_path / 'copy'}:x"], check=True, capture_output=True, timeout=120)
    blobs = {p.name for p in (tmp_path / "copy" / "blobs" / "sha256").iterdir()}
    assert arm.manifest.digest.split(":")[1] in blobs and amd.config_digest.split(":")[1] in blobs


def test_pull_of_a_missing_tag_is_a_clear_error(plain_registry, store):
    with pytest.raises(NotFoundError, match="not found"):
        pull_image(f"{plain_registry.host}/nobody/here:v9", store)


def _write_oci_layout(layout, store, root) -> None:
    """An OCI image layout holding every blob of ``store`` and ``root`` tagged x (skopeo's input)."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for digest in store.blobs():
        (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(store.path(digest).read_bytes())
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": root.media_type, "digest": root.digest, "size": len(root.content),
        "annotations": {"org.opencontainers.image.ref.name": "x"}}]}))


def test_schema1_manifests_are_rejected_clearly(store):
    """distribution 2.8 no longer serves schema 1, so a tiny server plays an old registry."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from builder.registry.errors import UnsupportedManifestError

    body = json.dumps({"schemaVersion": 1, "name": "old/app", "tag": "v1", "fsLayers": [], "history": []}).encode()

    class OldRegistry(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            if "/manifests/" in self.path:
                self.send_header("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_header("Content-Length", "0")
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), OldRegistry)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with pytest.raises(UnsupportedManifestError, match="schema 1"):
            pull_image(f"127.0.0.1:{server.server_port}/old/app:v1", store)
    finally:
        server.shutdown()
        server.server_close()


def test_single_platform_image_of_the_wrong_platform_is_refused_before_downloading(plain_registry, store, tmp_path):
    image = small_image(store, "single", arch="amd64")
    ref = f"{plain_registry.host}/team/single:v1"
    push_image(ref, store, image.manifest)
    fresh = DirBlobStore(tmp_path / "fresh")
    with pytest.raises(NoMatchingPlatformError, match="is a linux/amd64 image, not linux/arm64"):
        pull_image(ref, fresh, Platform("linux", "arm64"))
    assert not any(fresh.has_blob(d) for d in image.layer_digests)
    assert pull_image(ref, fresh, Platform("linux", "amd64")).manifest.digest == image.manifest.digest
