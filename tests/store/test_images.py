"""Images in the store: names with docker's normalisation, lookup by name/ID/digest, removal."""
from __future__ import annotations

import pytest

from builder.image import mediatypes as mt
from builder.image.layer import LayerWriter
from builder.image.oci import Descriptor, ImageConfig, Index, Platform, RootFS
from builder.store import ImageNotFoundError
from builder.store.errors import ImageInUseError
from builder.store.names import InvalidReferenceError, familiar_name, normalize_name, split_name


def make_layer(store, tmp_path, files: dict[str, str]):
    src = tmp_path / f"src{len(list(tmp_path.iterdir()))}"
    src.mkdir()
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    with store.blob_writer() as out:
        layer = LayerWriter(source_date_epoch=0).write(src, out)
        out.commit(layer.digest, layer.size)
    return layer


def make_image(store, tmp_path, name="app:1", files=None, platform=None):
    layer = make_layer(store, tmp_path, files or {"hello.txt": "hello"})
    config = ImageConfig.for_platform(platform or Platform.host(), created="2024-01-02T03:04:05Z",
                                      rootfs=RootFS([layer.diff_id]))
    return store.put_image(config, [layer.descriptor()], name=name)


def test_names_are_stored_normalised_and_shown_short():
    assert normalize_name("busybox") == "docker.io/library/busybox:latest"
    assert normalize_name("team/app:2") == "docker.io/team/app:2"
    assert normalize_name("localhost:5000/app") == "localhost:5000/app:latest"
    assert familiar_name("docker.io/library/busybox:latest") == "busybox:latest"
    assert split_name("docker.io/team/app:2") == ("team/app", "2")
    with pytest.raises(InvalidReferenceError):
        normalize_name("Bad Name")
    with pytest.raises(InvalidReferenceError, match="digest"):
        normalize_name("busybox@sha256:" + "a" * 64)


def test_put_image_and_read_it_back_by_name_id_and_digest(store, tmp_path):
    image = make_image(store, tmp_path, "app:1")
    assert image.names == ["docker.io/library/app:1"]
    for text in ("app:1", "docker.io/library/app:1", image.digest, image.id, image.id[7:19],
                 f"app@{image.digest}"):
        got = store.get_image(text)
        assert (got.digest, got.id) == (image.digest, image.id)
    assert got.config.created == "2024-01-02T03:04:05Z"
    assert got.manifest.media_type == mt.OCI_MANIFEST
    assert got.diff_ids == [store.index.diff_id_of(got.layers[0].digest)]
    with pytest.raises(ImageNotFoundError, match="no such image: app:2"):
        store.get_image("app:2")


def test_put_image_refuses_layers_not_in_the_store(store):
    missing = Descriptor(mt.OCI_LAYER_GZIP, "sha256:" + "1" * 64, 10)
    config = ImageConfig.for_platform(Platform.host(), rootfs=RootFS(["sha256:" + "2" * 64]))
    with pytest.raises(Exception, match="not in the store"):
        store.put_image(config, [missing], name="x")


def test_tag_untag_and_list(store, tmp_path):
    image = make_image(store, tmp_path, "app:1")
    assert store.tag("app:1", "registry.example:5000/team/app:v1") == "registry.example:5000/team/app:v1"
    rows = store.list_images()
    assert [r.name for r in rows] == ["docker.io/library/app:1", "registry.example:5000/team/app:v1"]
    assert {r.id for r in rows} == {image.id}
    assert store.untag("app:1")
    assert [r.name for r in store.list_images()] == ["registry.example:5000/team/app:v1"]


def test_ambiguous_id_prefix_is_an_error(store, tmp_path):
    a = make_image(store, tmp_path, "a", {"a": "1"})
    b = make_image(store, tmp_path, "b", {"b": "2"})
    common = 0
    while a.id[7 + common] == b.id[7 + common]:
        common += 1
    if common >= 4:
        with pytest.raises(ImageNotFoundError, match="ambiguous"):
            store.resolve(a.id[7:7 + common])
    assert store.resolve(a.id[7:7 + max(common + 1, 4)]) == a.digest


def test_rmi_by_name_untags_and_by_id_needs_force_with_several_names(store, tmp_path):
    image = make_image(store, tmp_path, "app:1")
    store.tag("app:1", "app:2")
    assert store.remove_image("app:2") == (["docker.io/library/app:2"], [])
    store.tag("app:1", "app:3")
    with pytest.raises(ImageInUseError, match="use -f"):
        store.remove_image(image.id[7:19])
    untagged, deleted = store.remove_image(image.id[7:19], force=True)
    assert sorted(untagged) == ["docker.io/library/app:1", "docker.io/library/app:3"]
    assert deleted[0] == image.digest  # the image, then its content nothing else uses
    assert set(deleted) == {image.digest, image.id, image.layers[0].digest}
    assert store.list_images() == [] and store.blobs.digests() == []


def test_rmi_keeps_content_another_image_shares(store, tmp_path):
    a = make_image(store, tmp_path, "a:1", {"shared": "same"})
    layer = a.layers[0]
    config = ImageConfig.for_platform(Platform.host(), created="2025-01-01T00:00:00Z", rootfs=RootFS(a.diff_ids))
    b = store.put_image(config, [layer], name="b:1")
    _, deleted = store.remove_image("a:1")
    assert set(deleted) == {a.digest, a.id}
    assert store.has_blob(layer.digest) and store.get_image("b:1").digest == b.digest


def test_rmi_during_a_lease_leaves_content_for_prune(store, tmp_path):
    image = make_image(store, tmp_path, "a:1")
    with store.lease():
        assert store.remove_image("a:1")[1] == [image.digest]
    assert store.has_blob(image.layers[0].digest)
    assert set(store.prune().blobs) == {image.digest, image.id, image.layers[0].digest}


def test_multi_platform_index_resolves_to_the_asked_platform(store, tmp_path):
    amd = make_image(store, tmp_path, None, {"arch": "amd64"}, Platform("linux", "amd64"))
    arm = make_image(store, tmp_path, None, {"arch": "arm64"}, Platform("linux", "arm64"))
    digest = store.put_index([amd, arm], name="multi:1").digest
    index = Index.from_json(store.read_blob(digest))
    assert [str(m.platform) for m in index.manifests] == ["linux/amd64", "linux/arm64"]
    got = store.get_image("multi:1", Platform.parse("linux/arm64"))
    assert (got.digest, got.manifest_digest, got.platform.architecture) == (digest, arm.digest, "arm64")
    assert got.index is not None
    with pytest.raises(ImageNotFoundError, match="no manifest for linux/s390x"):
        store.get_image("multi:1", Platform.parse("linux/s390x"))


def test_build_cache_records_hits_and_keeps_its_blobs(store, tmp_path):
    layer = make_layer(store, tmp_path, {"cached": "yes"})
    store.cache_put("step-key", {"layer": layer.digest, "diff_id": layer.diff_id}, [layer.digest])
    assert store.prune().blobs == []  # the cache is a GC root
    first = store.cache_get("step-key")
    second = store.cache_get("step-key")
    assert first.result == {"layer": layer.digest, "diff_id": layer.diff_id}
    assert (first.hits, second.hits) == (1, 2) and second.last_used >= first.last_used
    assert store.cache_get("other") is None
    report = store.prune(cache=True)
    assert report.cache_entries == 1 and report.blobs == [layer.digest]


def test_old_cache_entries_go_first(store, tmp_path):
    store.cache_put("old", {"n": 1})
    store.index.query("UPDATE cache SET last_used = last_used - 7200 WHERE key = 'old'")
    store.cache_put("new", {"n": 2})
    assert store.prune(cache=True, cache_unused_for=3600).cache_entries == 1
    assert store.cache_get("old") is None and store.cache_get("new").result == {"n": 2}


def test_a_recorded_layer_outside_any_image_can_be_snapshotted(store, tmp_path):
    layer = make_layer(store, tmp_path, {"built": "by a step"})
    store.record_layer(layer.digest, layer.diff_id, layer.media_type)
    path = store.layer_snapshot(layer.diff_id)
    assert (path / "built").read_text() == "by a step"


def test_an_index_needs_one_image_per_platform(store, tmp_path):
    a = make_image(store, tmp_path, None, {"a": "1"}, Platform("linux", "arm64"))
    b = make_image(store, tmp_path, None, {"b": "2"}, Platform("linux", "arm64", "v8"))
    with pytest.raises(Exception, match="one image per platform"):
        store.put_index([a, b])
