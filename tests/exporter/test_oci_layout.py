"""OCI image layout archives: what pybuild writes, skopeo and umoci read; what skopeo writes, pybuild loads."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from builder.errors import PybuildError
from builder.exporter import ArchiveError, load_archive, save_to_path
from builder.image.digest import sha256_digest
from builder.store import ContentStore

from tests.exporter.conftest import run, tool, tree_of
from tests.store.conftest import load_make_busybox


@pytest.fixture(scope="module")
def busybox_rootfs(tmp_path_factory) -> Path:
    """The tree make_busybox.py packs, laid out afresh: what every unpack must reproduce."""
    root = tmp_path_factory.mktemp("rootfs") / "rootfs"
    root.mkdir()
    load_make_busybox().build_rootfs(root)
    return root


def test_skopeo_inspects_what_pybuild_saves(store, busybox_image, tmp_path):
    out = tmp_path / "bb.tar"
    save_to_path(store, ["busybox"], str(out), "oci")
    info = json.loads(run(tool("skopeo"), "inspect", f"oci-archive:{out}"))
    assert info["Digest"] == busybox_image.digest
    assert info["Layers"] == [layer.digest for layer in busybox_image.layers]
    assert info["Architecture"] == busybox_image.config.architecture
    config = json.loads(run(tool("skopeo"), "inspect", "--config", f"oci-archive:{out}"))
    assert config["rootfs"]["diff_ids"] == busybox_image.diff_ids


def test_umoci_unpacks_what_pybuild_saves_to_the_same_tree(store, busybox_image, busybox_rootfs, tmp_path):
    out = tmp_path / "bb.tar"
    save_to_path(store, ["busybox"], str(out), "oci")
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(out) as tar:
        tar.extractall(layout, filter="tar")
    run(tool("umoci"), "unpack", "--image", f"{layout}:latest", str(tmp_path / "bundle"))
    ours = tmp_path / "ours"
    ours.mkdir()
    store.unpack_image(busybox_image, ours)
    expected = tree_of(busybox_rootfs)
    assert len(expected) > 100  # busybox plus its applet links
    assert tree_of(tmp_path / "bundle" / "rootfs") == expected
    assert tree_of(ours) == expected


def test_pybuild_loads_what_skopeo_writes(store, busybox_image, busybox_rootfs, tmp_path):
    ours = tmp_path / "ours.tar"
    save_to_path(store, ["busybox"], str(ours), "oci")
    theirs = tmp_path / "skopeo.tar"
    # Recompressing to zstd makes skopeo write new layer and manifest blobs of its own.
    run(tool("skopeo"), "copy", "--dest-compress-format", "zstd", "--dest-compress",
        f"oci-archive:{ours}", f"oci-archive:{theirs}:docker.io/library/bbz:1")
    with ContentStore(tmp_path / "other") as other:
        loaded = load_archive(other, theirs)
        assert [i.names for i in loaded] == [["docker.io/library/bbz:1"]]
        image = other.get_image("bbz:1")
        assert image.layers[0].media_type.endswith("+zstd")
        assert image.digest != busybox_image.digest and image.diff_ids == busybox_image.diff_ids
        target = tmp_path / "unpacked"
        target.mkdir()
        other.unpack_image(image, target)
    assert tree_of(target) == tree_of(busybox_rootfs)


def test_save_load_save_round_trips_byte_for_byte(store, busybox_image, tmp_path):
    first, second = tmp_path / "1.tar", tmp_path / "2.tar"
    save_to_path(store, ["busybox"], str(first), "oci")
    with ContentStore(tmp_path / "other") as other:
        loaded = load_archive(other, first)
        assert [(i.digest, i.names) for i in loaded] == [(busybox_image.digest, ["docker.io/library/busybox:latest"])]
        save_to_path(other, ["busybox"], str(second), "oci")
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("compress", [lambda data: gzip.compress(data, 1),
                                      lambda data: __import__("zstandard").ZstdCompressor().compress(data)],
                         ids=["gzip", "zstd"])
def test_compressed_archives_load(store, busybox_archive, tmp_path, compress):
    packed = tmp_path / "bb.tar.z"
    packed.write_bytes(compress(busybox_archive.read_bytes()))
    loaded = load_archive(store, packed)
    assert loaded[0].names == ["docker.io/library/busybox:latest"]
    assert list(store.scratch.path.iterdir()) == []  # the inflated copy is gone


def test_an_image_saved_twice_under_two_names_keeps_both(store, busybox_image, tmp_path):
    store.tag("busybox", "localhost:5000/tools/bb:2")
    out = tmp_path / "two.tar"
    save_to_path(store, ["busybox", "localhost:5000/tools/bb:2"], str(out), "oci")
    with ContentStore(tmp_path / "other") as other:
        loaded = load_archive(other, out)
        assert sorted(loaded[0].names) == ["docker.io/library/busybox:latest", "localhost:5000/tools/bb:2"]


# ---------------------------------------------------------------- hostile and broken archives

def _layout_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _valid_members(store, busybox_archive) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    with tarfile.open(busybox_archive) as tar:
        for info in tar:
            if info.isfile():
                out.append(_file(info.name, tar.extractfile(info).read()))
    return out


def test_member_names_escaping_the_archive_are_refused(store, busybox_archive, tmp_path):
    for evil in ("../evil", "/etc/evil", "blobs/../../evil"):
        path = _layout_tar(tmp_path / "evil.tar", _valid_members(store, busybox_archive) + [_file(evil, b"x")])
        with pytest.raises(ArchiveError, match="absolute|outside the archive"):
            load_archive(store, path)
    assert store.list_images() == []


def test_a_blob_symlinked_out_of_the_archive_is_not_followed(store, busybox_archive, tmp_path):
    members = _valid_members(store, busybox_archive)
    index = json.loads(dict((i.name, d) for i, d in members)["index.json"])
    manifest = index["manifests"][0]["digest"].split(":")[1]
    link = tarfile.TarInfo(f"blobs/sha256/{manifest}")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    kept = [(i, d) for i, d in members if not i.name.endswith(manifest)] + [(link, None)]
    with pytest.raises(ArchiveError, match="absolute"):
        load_archive(store, _layout_tar(tmp_path / "link.tar", kept))


def test_tampered_blob_is_caught_by_its_digest(store, busybox_archive, tmp_path):
    members = _valid_members(store, busybox_archive)
    index = json.loads(dict((i.name, d) for i, d in members)["index.json"])
    config_name = None
    for info, data in members:
        if b'"rootfs"' in data:
            config_name = info.name
    tampered = [(i, d.replace(b"amd64", b"AMD64") if i.name == config_name else d) for i, d in members]
    with pytest.raises(Exception, match="does not match its digest"):
        load_archive(store, _layout_tar(tmp_path / "t.tar", tampered))
    assert store.list_images() == [] and index


def test_size_lies_and_missing_blobs_are_errors(store, busybox_archive, tmp_path):
    members = _valid_members(store, busybox_archive)
    layer = max(members, key=lambda m: len(m[1]))
    shorter = [(i, d) if i.name != layer[0].name else _file(i.name, d[:-10]) for i, d in members]
    with pytest.raises(PybuildError, match="descriptor says|does not match its digest"):
        load_archive(store, _layout_tar(tmp_path / "short.tar", shorter))
    missing = [(i, d) for i, d in members if i.name != layer[0].name]
    with pytest.raises(ArchiveError, match="is missing"):
        load_archive(store, _layout_tar(tmp_path / "missing.tar", missing))


@pytest.mark.parametrize("content, message", [
    (b"", "not a tar archive"),
    (b"just some text, not a tar" * 40, "not a tar archive"),
    (gzip.compress(b"not a tar inside gzip" * 100), "not a tar archive"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt"),
])
def test_files_that_are_not_archives(store, tmp_path, content, message):
    path = tmp_path / "bad.tar"
    path.write_bytes(content)
    with pytest.raises(ArchiveError, match=message):
        load_archive(store, path)


def test_broken_index_and_unknown_layouts(store, tmp_path):
    bad_json = _layout_tar(tmp_path / "j.tar", [_file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                                               _file("index.json", b"{not json")])
    with pytest.raises(ArchiveError, match="not valid JSON"):
        load_archive(store, bad_json)
    huge = _layout_tar(tmp_path / "h.tar", [_file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                                            _file("index.json", b" " * (9 << 20))])
    with pytest.raises(ArchiveError, match="larger than"):
        load_archive(store, huge)
    neither = _layout_tar(tmp_path / "n.tar", [_file("hello.txt", b"hi")])
    with pytest.raises(ArchiveError, match="neither an OCI image layout"):
        load_archive(store, neither)
    with pytest.raises(ArchiveError, match="no such file"):
        load_archive(store, tmp_path / "absent.tar")
    assert sha256_digest(b"") and store.list_images() == []


def test_a_decompression_bomb_is_refused(store, tmp_path, monkeypatch):
    import builder.exporter.archive as archive

    monkeypatch.setattr(archive, "MIN_INFLATE_LIMIT", 1 << 20)  # so the test needs only a small bomb
    member = tarfile.TarInfo("blobs/sha256/" + "0" * 64)
    member.size = 64 << 20
    bomb = tmp_path / "bomb.tar.gz"  # a tar holding 64 MiB of zeros, gzipped to ~64 kB
    bomb.write_bytes(gzip.compress(member.tobuf() + bytes(member.size) + bytes(1024), 9))
    with pytest.raises(ArchiveError, match="decompression bomb"):
        load_archive(store, bomb)
    assert list(store.scratch.path.iterdir()) == []


def test_an_oci_layout_directory_written_by_skopeo_loads(store, busybox_archive, tmp_path):
    layout = tmp_path / "layout"
    run(tool("skopeo"), "copy", f"oci-archive:{busybox_archive}", f"oci:{layout}:docker.io/library/dir:1")
    loaded = load_archive(store, layout)
    assert loaded[0].names == ["docker.io/library/dir:1"]
    assert store.get_image("dir:1").diff_ids


def test_a_layout_directory_cannot_reach_outside_itself(store, busybox_archive, tmp_path):
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(busybox_archive) as tar:
        tar.extractall(layout, filter="tar")
    index = json.loads((layout / "index.json").read_text())
    blob = layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]
    outside = tmp_path / "secret"
    outside.write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(outside)
    with pytest.raises(ArchiveError, match="outside the directory"):
        load_archive(store, layout)


def test_a_multi_platform_image_travels_whole(store, tmp_path):
    from builder.image.oci import Platform
    from tests.store.test_images import make_image

    amd = make_image(store, tmp_path, None, {"arch": "amd64"}, Platform("linux", "amd64"))
    arm = make_image(store, tmp_path, None, {"arch": "arm64"}, Platform("linux", "arm64"))
    multi = store.put_index([amd, arm], name="multi:1")
    out = tmp_path / "multi.tar"
    save_to_path(store, ["multi:1"], str(out), "oci")
    raw = json.loads(run(tool("skopeo"), "inspect", "--raw", f"oci-archive:{out}"))
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json" and len(raw["manifests"]) == 2
    with ContentStore(tmp_path / "other") as other:
        assert load_archive(other, out)[0].digest == multi.digest
        assert other.get_image("multi:1", Platform.parse("linux/arm64")).manifest_digest == arm.digest
        assert other.get_image("multi:1", Platform.parse("linux/amd64")).manifest_digest == amd.digest
    docker = tmp_path / "arm.tar"
    save_to_path(store, ["multi:1"], str(docker), "docker", Platform.parse("linux/arm64"))
    info = json.loads(run(tool("skopeo"), "inspect", "--override-arch", "arm64", f"docker-archive:{docker}"))
    assert info["Architecture"] == "arm64"


def test_a_truncated_archive_is_refused(store, busybox_archive, tmp_path):
    cut = tmp_path / "cut.tar"
    cut.write_bytes(busybox_archive.read_bytes()[: busybox_archive.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="truncated"):
        load_archive(store, cut)
    assert store.list_images() == [] and store.blobs.digests() == []


def test_index_platforms_saved_without_their_layers_are_skipped(store, tmp_path):
    from builder.image.oci import Platform
    from tests.store.test_images import make_image

    amd = make_image(store, tmp_path, None, {"arch": "amd64"}, Platform("linux", "amd64"))
    arm = make_image(store, tmp_path, None, {"arch": "arm64"}, Platform("linux", "arm64"))
    store.put_index([amd, arm], name="partial:1")
    out = tmp_path / "partial.tar"
    save_to_path(store, ["partial:1"], str(out), "oci")
    # Drop the arm64 layer from the archive, as a single-platform pull then save would.
    kept = tmp_path / "kept.tar"
    with tarfile.open(out) as src, tarfile.open(kept, "w") as dst:
        for info in src:
            if not info.name.endswith(arm.layers[0].digest[7:]):
                dst.addfile(info, src.extractfile(info) if info.isfile() else None)
    with ContentStore(tmp_path / "other") as other:
        load_archive(other, kept)
        assert other.get_image("partial:1", Platform.parse("linux/amd64")).manifest_digest == amd.digest
        with pytest.raises(Exception, match="no manifest for linux/arm64"):
            other.get_image("partial:1", Platform.parse("linux/arm64"))


def test_an_oci_archive_also_reads_as_a_docker_archive(store, busybox_image, busybox_rootfs, tmp_path):
    out = tmp_path / "both.tar"
    save_to_path(store, ["busybox"], str(out), "oci")
    info = json.loads(run(tool("skopeo"), "inspect", f"docker-archive:{out}"))
    assert info["Layers"] == busybox_image.diff_ids
    run(tool("skopeo"), "copy", f"docker-archive:{out}", f"oci:{tmp_path / 'layout'}:bb")
    run(tool("umoci"), "unpack", "--image", f"{tmp_path / 'layout'}:bb", str(tmp_path / "bundle"))
    assert tree_of(tmp_path / "bundle" / "rootfs") == tree_of(busybox_rootfs)
