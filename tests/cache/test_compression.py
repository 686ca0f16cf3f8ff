"""``--cache-to ...,compression=zstd``: the exported cache carries zstd layers, an empty machine
builds from it without running anything, and the image it pushes is valid (skopeo reads and
copies it; its config and diff_ids are the exporting machine's).

Machine A builds (its step layers are gzip, as always) and exports; machine B starts empty.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest
import zstandard

from builder.cache.format import STEPS_MEDIA_TYPE
from builder.image import mediatypes as mt
from tests.build.conftest import image_tree
from tests.cache.conftest import blob_files
from tests.cache.test_shared_cache import checkout, layer_digests, statuses


def skopeo(*args: str) -> str:
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo missing: install it (.ci/install)")
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True, timeout=120).stdout


def raw_manifest(ref: str) -> dict:
    return json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}"))


def image_layers(builder, image_id) -> list[tuple[str, str, str]]:
    """(digest, media type, diffID) of each layer of the image ``image_id`` in ``builder``'s store."""
    store = builder.store()
    try:
        digest = next(i.digest for i in store.list_images() if i.id == image_id)
        image = store.get_image(digest)
        return [(d.digest, d.media_type, diff) for d, diff in zip(image.layers, image.config.diff_ids)]
    finally:
        store.close()


def test_zstd_registry_cache_builds_an_empty_machine_and_its_push_is_valid(
        machines, registry, base_ref, counter, tmp_path):
    a, b = machines("a"), machines("b")
    checkout(a, base_ref, counter.url)
    checkout(b, base_ref, counter.url)
    cache = f"{registry.host}/cache/zstd:main"
    image_a, _ = a.build(tags=[f"{registry.host}/app/zstd:a"], outputs=["type=registry"],
                         cache_to=[f"type=registry,ref={cache},mode=max,compression=zstd,compression-level=5"])
    assert counter.hits == 2
    a_layers = image_layers(a, image_a)
    base_diff = a_layers[0][2]
    # A's own image keeps the layers its build made (gzip); the cache's compression is the cache's.
    assert {media for _, media, _ in a_layers} == {mt.OCI_LAYER_GZIP}

    manifest = raw_manifest(cache)
    document = json.loads(skopeo("inspect", "--config", "--raw", "--tls-verify=false", f"docker://{cache}"))
    listed = {layer["digest"]: layer for layer in document["layers"]}
    # The manifest lists every cache layer, and the steps blob the document names (kept apart:
    # a build cached to the end never downloads it).
    layer_descs = [d for d in manifest["layers"] if d["mediaType"] != STEPS_MEDIA_TYPE]
    assert {d["digest"] for d in layer_descs} == set(listed)
    assert [d for d in manifest["layers"] if d["mediaType"] == STEPS_MEDIA_TYPE] == [document["stepsBlob"]]
    by_type = {}
    for desc in layer_descs:
        entry = listed[desc["digest"]]
        assert (entry["mediaType"], entry["size"]) == (desc["mediaType"], desc["size"])
        by_type.setdefault(entry["diffID"] == base_diff, set()).add(desc["mediaType"])
    assert by_type == {True: {mt.OCI_LAYER_GZIP}, False: {mt.OCI_LAYER_ZSTD}}, \
        "the build's own layers are zstd; the base image's stay as its registry has them"
    for rec in document["records"]:
        for lr in rec["state"]["layers"]:  # each record names the blob its layer is in *in the cache*
            assert listed[lr["digest"]]["diffID"] == lr["diff_id"]
            assert lr["media_type"] == (mt.OCI_LAYER_GZIP if lr["diff_id"] == base_diff else mt.OCI_LAYER_ZSTD)
    # The zstd blobs are in A's store as variants of the gzip layers (a later export reuses them).
    store = a.store()
    try:
        for digest, layer in listed.items():
            assert store.has_blob(digest)
            assert (digest, layer["mediaType"]) in store.index.layer_blobs_for(layer["diffID"])
    finally:
        store.close()

    push = f"{registry.host}/app/zstd:b"
    image_b, report = b.build(tags=[push], outputs=["type=registry"], cache_from=[f"type=registry,ref={cache}"])
    assert statuses(report) == ["CACHED"] * 8
    assert counter.hits == 2, "no RUN may execute on machine B"
    assert image_b == image_a, "same config, same diff_ids: same image id"
    b_layers = image_layers(b, image_b)
    assert [diff for *_, diff in b_layers] == [diff for *_, diff in a_layers]
    assert [media for _, media, _ in b_layers] == [mt.OCI_LAYER_GZIP] + [mt.OCI_LAYER_ZSTD] * (len(b_layers) - 1)
    # Lazy: B pushed to the registry holding the cache, so it downloaded no layer.
    assert not layer_digests(b, image_b) & blob_files(b.root)

    # The pushed image is valid: its manifest's media types match the blobs (skopeo copy verifies
    # every digest; we check each layer decompresses to its config's diffID).
    pushed = raw_manifest(push)
    assert [d["mediaType"] for d in pushed["layers"]] == [media for _, media, _ in b_layers]
    layout = tmp_path / "copied"
    skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{push}", f"oci:{layout}:b")
    config = json.loads(skopeo("inspect", "--config", "--raw", f"oci:{layout}:b"))
    assert config["rootfs"]["diff_ids"] == [diff for *_, diff in a_layers]
    for desc, diff_id in zip(pushed["layers"], config["rootfs"]["diff_ids"]):
        blob = (layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes()
        if desc["mediaType"] == mt.OCI_LAYER_ZSTD:
            tar = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True).read()
        else:
            import gzip
            tar = gzip.decompress(blob)
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id

    # A layer needed later is fetched then (verified against its digest and diffID) and unpacks.
    tree = image_tree(b, image_b, tmp_path / "tree")
    assert (tree / "fetched").read_text() == "run 1\nnumpy==2.0\n"
    assert (tree / "src" / "main.py").read_text() == "print('hello')\n"


def test_a_run_on_top_of_zstd_cache_layers_fetches_and_uses_them(machines, registry, base_ref, counter):
    a, b = machines("a"), machines("b")
    checkout(a, base_ref, counter.url)
    checkout(b, base_ref, counter.url)
    cache = f"{registry.host}/cache/zstd-run:main"
    a.build(cache_to=[f"type=registry,ref={cache},mode=max,compression=zstd"])
    b.write("src/main.py", "print('changed')\n")
    b.write("Dockerfile", b.context.joinpath("Dockerfile").read_text() + "RUN cat /fetched /src/main.py > /both\n")
    image_b, report = b.build(cache_from=[cache])
    assert counter.hits == 3  # only app's RUN after the changed COPY runs again; deps is all cached
    assert [s.status for s in report.steps if s.stage == "deps"] == ["CACHED"] * 3
    # The layer COPY --from=deps made came from the cache as zstd; the RUNs on top needed it, so
    # it was fetched (verified), and the image keeps it as zstd beside B's own gzip layers.
    layers = image_layers(b, image_b)
    assert [media for _, media, _ in layers] == [mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD] + [mt.OCI_LAYER_GZIP] * 3
    assert layers[1][0][7:] in blob_files(b.root)
    tree = image_tree(b, image_b, b.root.parent / "tree")
    assert (tree / "both").read_text() == "run 1\nnumpy==2.0\nprint('changed')\n"


def test_zstd_local_cache_and_a_second_export_reuses_the_zstd_blobs(machines, base_ref, counter, tmp_path, monkeypatch):
    import builder.cache.recompress as recompress

    compressed = []
    real = recompress._recompress
    monkeypatch.setattr(recompress, "_recompress", lambda store, layer, want: compressed.append(layer.digest)
                        or real(store, layer, want))
    a, b = machines("a"), machines("b")
    checkout(a, base_ref, counter.url)
    checkout(b, base_ref, counter.url)
    cache_dir = tmp_path / "ci-cache"
    image_a, _ = a.build(cache_to=[f"type=local,dest={cache_dir},mode=max,compression=zstd,force-compression=true"])
    index = json.loads((cache_dir / "index.json").read_text())
    manifest = json.loads((cache_dir / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layer_descs = [d for d in manifest["layers"] if d["mediaType"] != STEPS_MEDIA_TYPE]
    assert {d["mediaType"] for d in layer_descs} == {mt.OCI_LAYER_ZSTD}, "force: the base layer too"
    first = len(compressed)
    assert first == len(layer_descs)
    # A second export (another destination) finds the zstd blobs in the store: nothing is compressed.
    a.build(cache_to=[f"type=local,dest={tmp_path / 'other'},mode=max,compression=zstd,force-compression=true"])
    assert len(compressed) == first

    image_b, report = b.build(cache_from=[f"type=local,src={cache_dir}"])
    assert statuses(report) == ["CACHED"] * 8
    assert counter.hits == 2
    assert image_b == image_a
    tree = image_tree(b, image_b, tmp_path / "tree")
    assert (tree / "fetched").read_text() == "run 1\nnumpy==2.0\n"


def test_a_machine_built_from_a_zstd_cache_can_export_it_as_gzip_again(machines, base_ref, counter, tmp_path):
    a, b, c = machines("a"), machines("b"), machines("c")
    for m in (a, b, c):
        checkout(m, base_ref, counter.url)
    image_a, _ = a.build(cache_to=[f"type=local,dest={tmp_path / 'zstd'},mode=max,compression=zstd"])
    # B's records hold zstd layers (lazy); compression=gzip fetches and converts them back.
    image_b, _ = b.build(cache_from=[f"type=local,src={tmp_path / 'zstd'}"],
                         cache_to=[f"type=local,dest={tmp_path / 'gzip'},mode=max,compression=gzip"])
    index = json.loads((tmp_path / "gzip" / "index.json").read_text())
    manifest = json.loads((tmp_path / "gzip" / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    assert {d["mediaType"] for d in manifest["layers"] if d["mediaType"] != STEPS_MEDIA_TYPE} == {mt.OCI_LAYER_GZIP}
    image_c, report = c.build(cache_from=[f"type=local,src={tmp_path / 'gzip'}"])
    assert statuses(report) == ["CACHED"] * 8
    assert counter.hits == 2
    assert image_a == image_b == image_c
    assert {media for _, media, _ in image_layers(c, image_c)} == {mt.OCI_LAYER_GZIP}


def test_the_zstd_variants_live_as_long_as_the_layers_they_hold(machines, base_ref, counter, tmp_path):
    from builder.store.gc import prune

    a = machines("a")
    checkout(a, base_ref, counter.url)
    cache_dir = tmp_path / "ci-cache"
    a.build(cache_to=[f"type=local,dest={cache_dir},mode=max,compression=zstd"])
    index = json.loads((cache_dir / "index.json").read_text())
    manifest = json.loads((cache_dir / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    zstd = {d["digest"][7:] for d in manifest["layers"] if d["mediaType"] == mt.OCI_LAYER_ZSTD}
    assert zstd and zstd <= blob_files(a.root)
    store = a.store()
    try:
        prune(store)  # unnamed images and unreferenced blobs: the build cache holds the variants
        assert zstd <= blob_files(a.root)
        prune(store, cache=True)  # all build cache: the layers go, and their variants with them
        assert not zstd & blob_files(a.root)
    finally:
        store.close()


def test_a_corrupt_stored_layer_fails_the_export_with_one_line(machines, base_ref, counter, tmp_path):
    from builder.errors import PybuildError

    a = machines("a")
    checkout(a, base_ref, counter.url)
    image, _ = a.build()
    store = a.store()
    try:
        digest, media, _diff = image_layers(a, image)[-1]
        assert media == mt.OCI_LAYER_GZIP
        path = store.blob_path(digest)
    finally:
        store.close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(PybuildError, match="exporting the build cache .*(cannot compress it as zstd|does not unpack)") \
            as exc:
        a.build(cache_to=[f"type=local,dest={tmp_path / 'c'},compression=zstd"])
    assert "\n" not in str(exc.value)
