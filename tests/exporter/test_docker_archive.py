"""docker-archive tars (`docker save` format): checked against skopeo both ways."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from builder.exporter import ArchiveError, load_archive, save_to_path
from builder.image import mediatypes as mt
from builder.image.digest import sha256_digest
from builder.store import ContentStore

from tests.exporter.conftest import run, tool, tree_of


def _unpacked(store, image, where: Path) -> dict:
    where.mkdir()
    store.unpack_image(image, where)
    return tree_of(where)


def test_skopeo_reads_what_pybuild_saves_and_copies_it_to_oci(store, busybox_image, tmp_path):
    out = tmp_path / "bb-docker.tar"
    save_to_path(store, ["busybox"], str(out), "docker")
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    info = json.loads(run(tool("skopeo"), "inspect", f"docker-archive:{out}"))
    assert info["Layers"] == busybox_image.diff_ids  # docker-archive layers are uncompressed tars
    assert info["Architecture"] == busybox_image.config.architecture
    layout = tmp_path / "layout"
    run(tool("skopeo"), "copy", f"docker-archive:{out}", f"oci:{layout}:bb")
    run(tool("umoci"), "unpack", "--image", f"{layout}:bb", str(tmp_path / "bundle"))
    assert tree_of(tmp_path / "bundle" / "rootfs") == _unpacked(store, busybox_image, tmp_path / "ours")


def test_pybuild_loads_what_skopeo_writes_as_docker_archive(store, busybox_image, busybox_archive, tmp_path):
    theirs = tmp_path / "skopeo-docker.tar"
    run(tool("skopeo"), "copy", f"oci-archive:{busybox_archive}", f"docker-archive:{theirs}:team/bb:7")
    with ContentStore(tmp_path / "other") as other:
        loaded = load_archive(other, theirs)
        assert loaded[0].names == ["docker.io/team/bb:7"]
        image = other.get_image("team/bb:7")
        assert image.id == busybox_image.id  # the same config bytes travel through skopeo
        assert image.diff_ids == busybox_image.diff_ids
        assert _unpacked(other, image, tmp_path / "theirs") == _unpacked(store, busybox_image, tmp_path / "ours")


def test_docker_round_trip_is_reproducible(store, busybox_image, tmp_path):
    first, second = tmp_path / "1.tar", tmp_path / "2.tar"
    save_to_path(store, ["busybox"], str(first), "docker")
    with ContentStore(tmp_path / "other") as other:
        load_archive(other, first)
        image = other.get_image("busybox")
        assert image.layers[0].media_type == mt.OCI_LAYER_TAR and image.id == busybox_image.id
        save_to_path(other, ["busybox"], str(second), "docker")
    assert first.read_bytes() == second.read_bytes()


# ---------------------------------------------------------------- hand-made archives

def _layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _config(diff_ids: list[str]) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def _archive(path: Path, files: dict[str, bytes], links: dict[str, str] = {}) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def test_gzip_compressed_layers_are_kept_compressed_and_checked(store, tmp_path):
    layer = _layer_tar({"etc/hello": b"hi\n"})
    files = {
        "cfg.json": _config([sha256_digest(layer)]),
        "l1/layer.tar": gzip.compress(layer),
        "manifest.json": json.dumps([{"Config": "cfg.json", "RepoTags": ["gz:1"],
                                      "Layers": ["l1/layer.tar"]}]).encode(),
    }
    load_archive(store, _archive(tmp_path / "gz.tar", files))
    image = store.get_image("gz:1")
    assert image.layers[0].media_type == mt.OCI_LAYER_GZIP
    assert _unpacked(store, image, tmp_path / "out")["etc/hello"][0] == "file"


def test_layers_that_do_not_match_the_config_are_refused(store, tmp_path):
    layer = _layer_tar({"a": b"1"})
    wrong = _config([sha256_digest(b"something else")])
    for name, blob in (("plain", layer), ("gzip", gzip.compress(layer))):
        files = {"cfg.json": wrong, "l/layer.tar": blob,
                 "manifest.json": json.dumps([{"Config": "cfg.json", "Layers": ["l/layer.tar"]}]).encode()}
        with pytest.raises(ArchiveError, match="does not match"):
            load_archive(store, _archive(tmp_path / f"{name}.tar", files))
    assert store.list_images() == []


def test_old_docker_symlinked_duplicate_layers_load(store, tmp_path):
    layer = _layer_tar({"x": b"x"})
    digest = sha256_digest(layer)
    files = {
        "cfg.json": _config([digest, digest]),
        "aaa/layer.tar": layer,
        "manifest.json": json.dumps([{"Config": "cfg.json", "RepoTags": ["dup:1"],
                                      "Layers": ["aaa/layer.tar", "bbb/layer.tar"]}]).encode(),
    }
    load_archive(store, _archive(tmp_path / "dup.tar", files, {"bbb/layer.tar": "../aaa/layer.tar"}))
    assert [layer.digest for layer in store.get_image("dup:1").layers] == [digest, digest]


@pytest.mark.parametrize("entry, message", [
    ({"Config": "../../etc/passwd", "Layers": []}, "outside the archive"),
    ({"Config": "nope.json", "Layers": []}, "no member"),
    ({"Config": "cfg.json", "Layers": "l/layer.tar"}, "list of Layers"),
    ({"Config": "cfg.json", "Layers": [], "RepoTags": ["Not A Name"]}, "bad RepoTags"),
])
def test_malformed_manifest_entries(store, tmp_path, entry, message):
    files = {"cfg.json": _config([]), "manifest.json": json.dumps([entry]).encode()}
    with pytest.raises(ArchiveError, match=message):
        load_archive(store, _archive(tmp_path / "m.tar", files))
    assert store.list_images() == []
