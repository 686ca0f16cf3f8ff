"""The busybox fixture image: what it contains, that it runs, and that it is reproducible."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from builder.store import ContentStore

from tests.store.conftest import load_make_busybox


def test_the_image_has_busybox_its_applets_and_a_minimal_etc(store, busybox_image, tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    store.unpack_image(busybox_image, root)
    assert (root / "bin" / "busybox").read_bytes() == open("/bin/busybox", "rb").read()
    applets = load_make_busybox().applets()
    assert {"sh", "ls", "cat", "echo"} <= set(applets)
    for name in applets:
        assert os.readlink(root / "bin" / name) == "busybox"
    assert (root / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    assert "root:x:0:" in (root / "etc" / "group").read_text()
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    assert busybox_image.config.config.cmd == ["sh"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_the_unpacked_image_runs_a_shell(store, busybox_image, tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    store.unpack_image(busybox_image, root)
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    out = subprocess.run([chroot, str(root), "/bin/sh", "-c", "echo hello from $(basename $0); ls /bin | wc -l"],
                         capture_output=True, text=True, timeout=30, env={"PATH": "/bin"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[:3] == ["hello", "from", "sh"] and int(lines[3]) > 100


def test_same_source_date_epoch_same_digest_other_epoch_other_digest(tmp_path):
    make = load_make_busybox()
    digests = []
    for i, epoch in enumerate((1_700_000_000, 1_700_000_000, 1_700_000_001)):
        with ContentStore(tmp_path / f"s{i}") as store:
            image = make.make_image(store, epoch=epoch)
            digests.append(image.digest)
            assert image.config.created == ("2023-11-14T22:13:20Z" if epoch == 1_700_000_000
                                            else "2023-11-14T22:13:21Z")
    assert digests[0] == digests[1] != digests[2]


def test_source_date_epoch_fixes_archive_mtimes(tmp_path, monkeypatch):
    import tarfile

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    out = tmp_path / "bb.tar"
    assert load_make_busybox().main(["-o", str(out)]) == 0
    with tarfile.open(out) as tar:
        assert {m.mtime for m in tar} == {1_700_000_000}
