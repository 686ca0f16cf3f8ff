"""Hostile layers: every escape attempt is refused or contained, and nothing outside changes."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from builder.image import mediatypes as mt
from builder.image.errors import LayerError
from builder.image.layer import apply_layer
from builder.image.layer_apply import ExtractLimits

from .image_helpers import entry, make_tar, snapshot


@pytest.fixture
def sandbox(tmp_path):
    """A target dir beside an "outside" dir whose contents must never change."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    target = tmp_path / "target"
    target.mkdir()
    before = snapshot(tmp_path / "outside")
    host_passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest(), os.stat("/etc/passwd").st_nlink
    yield target, outside
    assert snapshot(outside) == before, "a hostile layer changed files outside the target"
    assert (hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest(), os.stat("/etc/passwd").st_nlink) == host_passwd
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "target"]


def apply(tar: bytes, target: Path, media_type: str = mt.OCI_LAYER_TAR):
    return apply_layer(io.BytesIO(tar), target, media_type)


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "./../escape", "a/b/../../../escape"])
def test_dotdot_paths_are_refused(sandbox, name):
    target, _ = sandbox
    with pytest.raises(LayerError, match=r"'\.\.' would leave the image root"):
        apply(make_tar([(entry(name), b"x")]), target)


def test_absolute_names_are_refused(sandbox):
    target, outside = sandbox
    with pytest.raises(LayerError, match="absolute path"):
        apply(make_tar([(entry(str(outside / "passwd")), b"pwned")]), target)


def test_symlinked_parent_is_resolved_inside_the_target(sandbox):
    target, outside = sandbox
    tar = make_tar([
        (entry("abs", tarfile.SYMTYPE, linkname=str(outside)), None),
        (entry("abs/passwd"), b"contained-1"),
        (entry("rel", tarfile.SYMTYPE, linkname="../../../../../../../.." + str(outside)), None),
        (entry("rel/passwd"), b"contained-2"),
        (entry("host-etc", tarfile.SYMTYPE, linkname="/etc"), None),
        (entry("host-etc/passwd"), b"contained-3"),
    ])
    apply(tar, target)
    # As in a chroot: the link targets are taken relative to the target root.
    assert (target / str(outside).lstrip("/") / "passwd").read_bytes() == b"contained-2"
    assert (target / "etc/passwd").read_bytes() == b"contained-3"
    assert os.readlink(target / "abs") == str(outside)  # the link itself is kept as written


def test_symlink_then_file_of_the_same_name_replaces_the_link(sandbox):
    target, outside = sandbox
    tar = make_tar([
        (entry("f", tarfile.SYMTYPE, linkname=str(outside / "passwd")), None),
        (entry("f"), b"replaces the link, does not write through it"),
    ])
    apply(tar, target)
    assert not (target / "f").is_symlink()
    assert (target / "f").read_bytes().startswith(b"replaces")


def test_symlink_loops_are_refused(sandbox):
    target, _ = sandbox
    tar = make_tar([
        (entry("a", tarfile.SYMTYPE, linkname="b"), None),
        (entry("b", tarfile.SYMTYPE, linkname="a"), None),
        (entry("a/file"), b"x"),
    ])
    with pytest.raises(LayerError, match="too many levels of symbolic links"):
        apply(tar, target)


@pytest.mark.parametrize("linkname", ["/etc/passwd", "../outside/passwd", "../../../../etc/passwd"])
def test_hardlinks_to_outside_are_refused(sandbox, linkname):
    target, _ = sandbox
    with pytest.raises(LayerError, match="target outside the image"):
        apply(make_tar([(entry("pw", tarfile.LNKTYPE, linkname=linkname), None)]), target)


def test_hardlink_through_a_symlink_stays_inside(sandbox):
    target, outside = sandbox
    tar = make_tar([
        (entry("o", tarfile.SYMTYPE, linkname=str(outside)), None),
        (entry("pw", tarfile.LNKTYPE, linkname="o/passwd"), None),
    ])
    with pytest.raises(LayerError, match="target does not exist in the image"):
        apply(tar, target)


def test_ten_thousand_level_path_is_refused(sandbox):
    target, _ = sandbox
    with pytest.raises(LayerError, match="longer than|deeper than"):
        apply(make_tar([(entry("a/" * 10_000 + "f"), b"x")]), target)
    assert list(target.iterdir()) == []


def test_deep_but_short_path_beyond_the_depth_limit_is_refused(sandbox):
    target, _ = sandbox
    with pytest.raises(LayerError, match="deeper than 256 levels"):
        apply(make_tar([(entry("a/" * 300 + "f"), b"x")]), target)


def test_sparse_file_claiming_a_terabyte_is_refused(sandbox):
    target, _ = sandbox
    info = entry("sparse")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": "sparse", "GNU.sparse.realsize": str(1 << 40)}
    with pytest.raises(LayerError, match="sparse files are not supported"):
        apply(make_tar([(info, b"")]), target)
    gnu_sparse = make_tar([(entry("old-sparse", tarfile.GNUTYPE_SPARSE), b"")], fmt=tarfile.GNU_FORMAT)
    with pytest.raises(LayerError, match="sparse files are not supported"):
        apply(gnu_sparse, target)


def claiming(size: int) -> bytes:
    """A tar whose one member 'big' has a few bytes of data but a header claiming ``size``."""
    tar = bytearray(make_tar([(entry("big"), b"only a little data")]))
    info = entry("big")
    info.size = size
    tar[:512] = info.tobuf(tarfile.GNU_FORMAT)[:512]  # base-256 size field when octal cannot hold it
    return bytes(tar)


def test_size_larger_than_the_data_is_a_truncation_error_not_a_disk_filler(sandbox):
    target, _ = sandbox
    with pytest.raises(LayerError, match="truncated inside 'big'"):
        apply(claiming(16 << 30), target)  # 16 GiB: under the extraction limit
    assert (target / "big").stat().st_size < 10_240


def test_size_over_the_extraction_limit_is_refused_before_writing(sandbox):
    target, _ = sandbox
    with pytest.raises(LayerError, match=r"refusing layer entry 'big': the layer's files exceed 64 GiB"):
        apply(claiming(1 << 40), target)
    assert not (target / "big").exists()
    with pytest.raises(LayerError, match=r"exceed 1 MiB \(the limit; set \$PYBUILD_MAX_EXTRACT_BYTES"):
        apply_layer(io.BytesIO(make_tar([(entry(f"f{i}"), bytes(300_000)) for i in range(5)])), target,
                    mt.OCI_LAYER_TAR, limits=ExtractLimits(max_bytes=1 << 20))
    assert sorted(p.name for p in target.iterdir()) == ["f0", "f1", "f2"]


def test_entry_count_limit(sandbox):
    target, _ = sandbox
    with pytest.raises(LayerError, match=r"refusing layer entry 'f3': more than 3 entries"):
        apply_layer(io.BytesIO(make_tar([(entry(f"f{i}"), b"") for i in range(5)])), target,
                    mt.OCI_LAYER_TAR, limits=ExtractLimits(max_entries=3))


def test_limits_from_the_environment():
    assert ExtractLimits.from_env({}) == ExtractLimits()
    assert ExtractLimits.from_env({"PYBUILD_MAX_EXTRACT_BYTES": "512M", "PYBUILD_MAX_EXTRACT_ENTRIES": "1000"}) == \
        ExtractLimits(512 << 20, 1000)
    with pytest.raises(LayerError, match=r"PYBUILD_MAX_EXTRACT_BYTES='lots' is not a number"):
        ExtractLimits.from_env({"PYBUILD_MAX_EXTRACT_BYTES": "lots"})


def test_huge_extended_header_is_refused(sandbox):
    target, _ = sandbox
    pax = entry("././@PaxHeader", tarfile.XHDTYPE)
    pax.size = 1 << 32
    with pytest.raises(LayerError, match="extended header of 4294967296 bytes"):
        apply(pax.tobuf(tarfile.USTAR_FORMAT) + bytes(4096), target)


@pytest.mark.parametrize("blob, media_type, words", [
    (os.urandom(4096), mt.OCI_LAYER_TAR, "checksum mismatch"),
    (b"\x1f\x8b\x08\x00garbage" * 100, mt.OCI_LAYER_GZIP, "corrupt"),
    (gzip.compress(make_tar([(entry("f"), os.urandom(10_000))]))[:-2000], mt.OCI_LAYER_GZIP, "corrupt"),
    (b"\x28\xb5\x2f\xfd" + os.urandom(300), mt.OCI_LAYER_ZSTD, "corrupt"),
    (make_tar([(entry("f"), b"x" * 10_000)])[:3000], mt.OCI_LAYER_TAR, "truncated"),
], ids=["random-bytes", "bad-gzip", "cut-gzip", "bad-zstd", "cut-tar"])
def test_corrupt_blobs_are_clear_layer_errors(sandbox, blob, media_type, words):
    target, _ = sandbox
    with pytest.raises(LayerError, match=words):
        apply(blob, target, media_type)


def test_overlay_xattrs_in_a_layer_are_dropped(sandbox):
    target, _ = sandbox
    info = entry("d", tarfile.DIRTYPE, mode=0o755)
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.user.ok": "1"}
    apply(make_tar([(info, None)]), target)
    assert os.listxattr(target / "d") == ["user.ok"]


def test_device_nodes_only_when_permitted(sandbox):
    target, _ = sandbox
    dev = entry("mem", tarfile.CHRTYPE, mode=0o600, devmajor=1, devminor=1)
    stats = apply_layer(io.BytesIO(make_tar([(dev, None)])), target, mt.OCI_LAYER_TAR, devices=False)
    assert stats.skipped_devices == 1 and not os.path.lexists(target / "mem")


def test_non_directory_parent_is_a_clear_error(sandbox):
    target, _ = sandbox
    with pytest.raises(LayerError, match="'file' is not a directory"):
        apply(make_tar([(entry("file"), b"x"), (entry("file/child"), b"y")]), target)


def test_unsupported_entry_types_are_refused(sandbox):
    target, _ = sandbox
    with pytest.raises(LayerError, match="unsupported tar entry type 'V'"):
        apply(make_tar([(entry("vol", b"V"), b"")], fmt=tarfile.GNU_FORMAT), target)


def test_target_must_be_a_directory(tmp_path):
    with pytest.raises(LayerError, match="not a directory"):
        apply_layer(io.BytesIO(b""), tmp_path / "missing", mt.OCI_LAYER_TAR)


def test_absurd_mtime_is_a_clear_error(sandbox):
    target, _ = sandbox
    info = entry("f")
    info.pax_headers = {"mtime": "1" + "0" * 30}
    with pytest.raises(LayerError, match="cannot apply layer"):
        apply(make_tar([(info, b"x")]), target)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_is_a_clear_error_not_a_hang(tmp_path):
    import subprocess
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
    try:
        tar = make_tar([(entry(f"f{i}"), os.urandom(100_000)) for i in range(20)])
        with pytest.raises(LayerError, match="No space left on device"):
            apply(tar, small)
    finally:
        subprocess.run(["umount", str(small)], check=True)
