"""Writing a tree as a layer and applying it back: what goes in comes out, byte for byte."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.image import mediatypes as mt
from builder.image.digest import sha256_digest
from builder.image.errors import LayerError
from builder.image.layer import LayerWriter, apply_layer, source_date_epoch_from_env, write_layer

from .image_helpers import require_tool, requires_root, snapshot

T0 = 1_600_000_000


def build_tree(root: Path) -> Path:
    """A small rootfs with every kind of entry a layer carries."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("box\n")
    (root / "etc/motd").write_bytes(os.urandom(200_000))            # several chunks
    (root / "bin").mkdir()
    (root / "bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin/tool", 0o4755)                               # setuid survives
    os.link(root / "bin/tool", root / "bin/tool-alias")               # hard link
    os.symlink("tool", root / "bin/rel-link")
    os.symlink("/etc/hostname", root / "bin/abs-link")
    os.symlink("does/not/exist", root / "dangling")
    (root / "private").mkdir(mode=0o700)
    (root / "private/secret").write_text("s")
    os.chmod(root / "private/secret", 0o400)
    (root / "readonly").mkdir()
    (root / "readonly/inside").write_text("x")
    os.chmod(root / "readonly", 0o555)                                # children still extracted
    (root / "unicodé-名前").write_text("utf-8 names")
    long_dir = root / ("d" * 120) / ("e" * 120)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 150)).write_text("long names need PAX")
    (root / "empty").write_bytes(b"")
    os.mkfifo(root / "fifo")
    os.setxattr(root / "etc/hostname", "user.origin", b"test\x00\xffbinary")
    if os.geteuid() == 0:
        os.chown(root / "etc/hostname", 1234, 5678)
        os.chown(root / "bin/rel-link", 42, 43, follow_symlinks=False)
        os.chown(root / "private", 3_000_000, 3_000_000)             # too big for octal: PAX
        os.mknod(root / "null", 0o020666, os.makedev(1, 3))
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (T0, T0 + 7), follow_symlinks=False)
    os.utime(root, (T0, T0))
    return root


def write(source: Path, **options) -> tuple[bytes, object]:
    out = io.BytesIO()
    blob = write_layer(source, out, **options)
    return out.getvalue(), blob


@pytest.mark.parametrize("compression", [mt.GZIP, mt.ZSTD, mt.UNCOMPRESSED])
def test_tree_survives_write_then_apply(tmp_path, compression):
    src = build_tree(tmp_path / "src")
    data, blob = write(src, compression=compression)
    assert blob.media_type == mt.layer_media_type(compression)
    assert (blob.digest, blob.size) == (sha256_digest(data), len(data))

    dst = tmp_path / "dst"
    dst.mkdir()
    stats = apply_layer(io.BytesIO(data), dst, blob.media_type)
    assert snapshot(dst) == snapshot(src)
    assert stats.bytes == sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink()) - (src / "bin/tool").stat().st_size


def test_diff_id_is_the_digest_of_the_uncompressed_tar(tmp_path):
    src = build_tree(tmp_path / "src")
    gz, blob = write(src, compression=mt.GZIP)
    tar, plain = write(src, compression=mt.UNCOMPRESSED)
    assert blob.diff_id == plain.digest == plain.diff_id == sha256_digest(tar)
    assert blob.uncompressed_size == len(tar)
    import gzip
    assert gzip.decompress(gz) == tar


def test_entries_are_sorted_parents_first_without_names_or_atimes(tmp_path):
    src = build_tree(tmp_path / "src")
    tar, _ = write(src, compression=mt.UNCOMPRESSED)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        members = t.getmembers()
    names = [m.name for m in members]
    seen: set[str] = set()
    for name in names:
        parent = os.path.dirname(name)
        assert not parent or parent in seen, f"{name} came before its parent"
        seen.add(name)
    assert names[:3] == ["bin", "bin/abs-link", "bin/rel-link"]
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert all("atime" not in m.pax_headers and "ctime" not in m.pax_headers for m in members)
    link = next(m for m in members if m.name == "bin/tool-alias")
    assert link.islnk() and link.linkname == "bin/tool"
    assert next(m for m in members if m.name == "etc/hostname").pax_headers["SCHILY.xattr.user.origin"]


def test_same_tree_gives_the_same_digests(tmp_path):
    a = build_tree(tmp_path / "a")
    b = tmp_path / "b"
    subprocess.run(["cp", "-a", str(a), str(b)], check=True)  # new inodes and ctimes
    for tree in (a, b):
        os.utime(tree / "etc/motd", (T0 + 999, T0 + 7))  # atime differs from mtime: ignored
    first = write(a)[1]
    assert write(a)[1] == first
    assert write(b)[1].digest == first.digest


def test_source_date_epoch_clamps_mtimes(tmp_path):
    src = build_tree(tmp_path / "src")
    epoch = T0 + 3
    tar, blob = write(src, compression=mt.UNCOMPRESSED, source_date_epoch=epoch)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert {m.mtime for m in t.getmembers()} == {epoch}
    os.utime(src / "etc/hostname", (T0 + 500, T0 + 500))   # touched later: same layer
    assert write(src, compression=mt.UNCOMPRESSED, source_date_epoch=epoch)[1] == blob
    old = T0 - 100
    os.utime(src / "etc/hostname", (old, old))             # older than the epoch: kept as is
    tar, _ = write(src, compression=mt.UNCOMPRESSED, source_date_epoch=epoch)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert t.getmember("etc/hostname").mtime == old


def test_source_date_epoch_from_env():
    assert source_date_epoch_from_env({}) is None
    assert source_date_epoch_from_env({"SOURCE_DATE_EPOCH": "1700000000"}) == 1_700_000_000
    with pytest.raises(LayerError, match="not a whole number"):
        source_date_epoch_from_env({"SOURCE_DATE_EPOCH": "yesterday"})


def test_gnu_tar_lists_and_extracts_our_layers(tmp_path):
    src = build_tree(tmp_path / "src")
    data, blob = write(src, compression=mt.GZIP)
    layer = tmp_path / "layer.tar.gz"
    layer.write_bytes(data)
    tar = require_tool("tar")
    listing = subprocess.run([tar, "-tvzf", str(layer)], check=True, capture_output=True, text=True).stdout
    assert "bin/tool-alias link to bin/tool" in listing
    assert "bin/abs-link -> /etc/hostname" in listing
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run([tar, "--xattrs", "--xattrs-include=*", "--same-owner", "-xpzf", str(layer), "-C", str(out)],
                   check=True)
    os.utime(out, (T0, T0))
    assert snapshot(out) == snapshot(src)


def test_layer_writer_reports_bad_sources_clearly(tmp_path):
    with pytest.raises(LayerError, match="not a directory"):
        write_layer(tmp_path / "missing", io.BytesIO())
    with pytest.raises(LayerError, match="not a path inside the image"):
        write_layer(tmp_path, io.BytesIO(), deleted=["../x"])
    with pytest.raises(Exception, match="unknown compression"):
        LayerWriter(compression="brotli").write(tmp_path, io.BytesIO())


def test_sockets_are_skipped(tmp_path):
    import socket
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        tar, _ = write(src, compression=mt.UNCOMPRESSED)
    finally:
        sock.close()
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        assert t.getnames() == ["f"]


@requires_root
def test_ownership_and_devices_are_kept_only_when_asked(tmp_path):
    src = build_tree(tmp_path / "src")
    data, blob = write(src)
    dst = tmp_path / "dst"
    dst.mkdir()
    stats = apply_layer(io.BytesIO(data), dst, blob.media_type, same_owner=False, devices=False)
    assert stats.skipped_devices == 1 and not (dst / "null").exists()
    assert (dst / "etc/hostname").stat().st_uid == 0


@requires_root
def test_owner_is_set_even_where_a_setgid_directory_would_change_the_group(tmp_path):
    # Lower layer: a setgid directory owned by group 999. Our layer: a root:root file inside.
    root = tmp_path / "root"
    (root / "shared").mkdir(parents=True)
    os.chown(root / "shared", 0, 999)
    os.chmod(root / "shared", 0o2775)
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    os.chmod(src / "shared", 0o2775)
    os.chown(src / "shared", 0, 999)
    (src / "shared/file").write_text("x")
    os.chown(src / "shared/file", 0, 0)
    os.chmod(src / "shared/file", 0o666)       # wider than the umask allows at creation
    data, blob = write(src)
    apply_layer(io.BytesIO(data), root, blob.media_type)
    st = (root / "shared/file").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o666)


def test_an_empty_directory_gives_dockers_well_known_empty_layer(tmp_path):
    # docker and BuildKit hard-code this diffID for "no changes": 1024 zero bytes.
    _, blob = write(tmp_path, compression=mt.GZIP)
    assert blob.diff_id == "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    assert blob.uncompressed_size == 1024
