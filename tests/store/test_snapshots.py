"""Layer snapshots: unpacked once, whiteouts in overlayfs form, checked against the diffID."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest

from builder.image.layer import LayerWriter
from builder.image.oci import ImageConfig, Platform, RootFS
from builder.store import DigestMismatchError

from tests.store.test_images import make_layer


def test_snapshot_holds_the_layer_and_is_made_once(store, busybox_image):
    layer = busybox_image.layers[0]
    path = store.layer_snapshot(layer)
    assert (path / "bin" / "busybox").is_file()
    assert os.readlink(path / "bin" / "sh") == "busybox"
    assert stat.S_IMODE(os.stat(path / "tmp").st_mode) == 0o1777
    inode = os.stat(path).st_ino
    assert store.layer_snapshot(busybox_image.diff_ids[0]) == path  # by diffID: the same directory
    assert os.stat(path).st_ino == inode
    assert store.image_snapshots(busybox_image) == [path]


def _layer_with_deletions(store, tmp_path):
    lower = make_layer(store, tmp_path, {"keep": "k", "gone": "g", "dir/old": "o"})
    upper_src = tmp_path / "upper"
    (upper_src / "dir").mkdir(parents=True)
    (upper_src / "dir" / "new").write_text("n")
    os.setxattr(upper_src / "dir", "trusted.overlay.opaque", b"y")
    os.mknod(upper_src / "gone", stat.S_IFCHR, os.makedev(0, 0))
    with store.blob_writer() as out:
        upper = LayerWriter(source_date_epoch=0).write(upper_src, out, overlay=True)
        out.commit(upper.digest, upper.size)
    config = ImageConfig.for_platform(Platform.host(), rootfs=RootFS([lower.diff_id, upper.diff_id]))
    return store.put_image(config, [lower.descriptor(), upper.descriptor()], name="layered")


@pytest.mark.skipif(os.geteuid() != 0, reason="overlayfs whiteouts need root")
def test_whiteouts_become_overlay_whiteouts_that_overlayfs_honours(store, tmp_path):
    image = _layer_with_deletions(store, tmp_path)
    lower, upper = store.image_snapshots(image)
    st = os.lstat(upper / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(upper / "dir", "trusted.overlay.opaque") == b"y"
    merged, work, up = tmp_path / "merged", tmp_path / "work", tmp_path / "rw"
    for d in (merged, work, up):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={upper}:{lower},upperdir={up},workdir={work}", str(merged)], check=True)
    try:
        assert sorted(os.listdir(merged)) == ["dir", "keep"]
        assert os.listdir(merged / "dir") == ["new"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_a_layer_that_does_not_match_its_diff_id_is_refused(store, tmp_path):
    layer = make_layer(store, tmp_path, {"a": "1"})
    wrong = "sha256:" + "3" * 64
    config = ImageConfig.for_platform(Platform.host(), rootfs=RootFS([wrong]))
    store.put_image(config, [layer.descriptor()], name="liar")
    with pytest.raises(DigestMismatchError, match="corrupt"):
        store.layer_snapshot(wrong)
    assert not (store.root / "snapshots" / "sha256" / wrong[7:]).exists()


def test_prune_drops_unused_snapshots_but_not_leased_ones(store, busybox_image, tmp_path):
    path = store.layer_snapshot(busybox_image.layers[0])
    diff_id = busybox_image.diff_ids[0]
    store.remove_image("busybox")
    with store.lease_snapshots([diff_id]):
        report = store.prune()
        assert report.skipped_in_use == [diff_id] and path.is_dir()
    report = store.prune()
    assert report.snapshots == [diff_id] and not path.exists()
    assert store.index.snapshots() == []


def test_a_built_layer_directory_can_be_adopted_as_its_snapshot(store, tmp_path):
    src = tmp_path / "step-output"
    src.mkdir()
    (src / "made-by-run").write_text("x")
    with store.blob_writer() as out:
        layer = LayerWriter(source_date_epoch=0).write(src, out)
        out.commit(layer.digest, layer.size)
    store.record_layer(layer.digest, layer.diff_id, layer.media_type)
    scratch = store.scratch.path / "adopt"
    os.rename(src, scratch)
    path = store.adopt_snapshot(layer.diff_id, scratch)
    assert path == store.snapshot_path(layer.diff_id) and (path / "made-by-run").is_file()
    assert not scratch.exists()
    assert store.layer_snapshot(layer.diff_id) == path


def test_without_root_opaque_directories_use_the_user_xattr(store, tmp_path, monkeypatch):
    # As a non-root user the kernel refuses trusted.* xattrs with EPERM (checked by hand with
    # setpriv); this suite runs as root, so that one refusal is simulated here.
    real_setxattr = os.setxattr

    def setxattr(path, name, value, *args, **kwargs):
        if name.startswith("trusted."):
            raise PermissionError(1, "Operation not permitted")
        return real_setxattr(path, name, value, *args, **kwargs)

    image = _layer_with_deletions(store, tmp_path)
    monkeypatch.setattr(os, "setxattr", setxattr)
    upper = store.layer_snapshot(image.layers[1])
    assert os.getxattr(upper / "dir", "user.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(upper / "gone").st_mode)
