"""Snapshots over layer directories: overlayfs and the copy fallback give the same diffs."""
from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from builder.image.layer_writer import write_layer
from builder.runtime import linux
from builder.snapshot import Snapshotter, SnapshotError


def _mounts(under: Path) -> list[str]:
    """Mount points below ``under`` (other builds on this host mount elsewhere meanwhile)."""
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(under))]


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    """Two overlay-form layer snapshots: the second deletes /etc/b and makes /opt opaque."""
    l1 = tmp_path / "layer1"
    (l1 / "etc").mkdir(parents=True)
    (l1 / "etc" / "a").write_text("a1")
    (l1 / "etc" / "b").write_text("b1")
    (l1 / "opt" / "old").mkdir(parents=True)
    (l1 / "opt" / "old" / "f").write_text("old")
    (l1 / "bin").mkdir()
    (l1 / "bin" / "sh").symlink_to("busybox")
    l2 = tmp_path / "layer2"
    (l2 / "etc").mkdir(parents=True)
    os.mknod(l2 / "etc" / "b", stat.S_IFCHR | 0o644, 0)          # whiteout
    (l2 / "etc" / "c").write_text("c2")
    (l2 / "opt").mkdir()
    os.setxattr(l2 / "opt", "trusted.overlay.opaque", b"y")       # opaque
    (l2 / "opt" / "new").write_text("new")
    return [l1, l2]


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_text()
    return out


def _layer_names(diff) -> list[str]:
    buf = io.BytesIO()
    write_layer(diff.upper, buf, compression="none", overlay=diff.overlay,
                deleted=diff.deleted)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        return sorted(m.name.rstrip("/") for m in tar.getmembers())


@pytest.mark.parametrize("mode", ["overlay", "copy"])
def test_merged_view_and_diff(mode, tmp_path, layers) -> None:
    snaps = Snapshotter(tmp_path / "snaps", mode=mode)
    snap = snaps.prepare(layers)
    assert snap.kind == mode
    assert _tree(snap.mount_dir) == {
        "etc": "dir", "etc/a": "a1", "etc/c": "c2", "opt": "dir", "opt/new": "new", "bin": "dir", "bin/sh": "-> busybox",
    }
    (snap.mount_dir / "etc" / "a").unlink()
    (snap.mount_dir / "etc" / "c").write_text("changed")
    (snap.mount_dir / "added").write_text("added")
    diff = snaps.commit(snap)
    names = _layer_names(diff)
    assert "etc/.wh.a" in names and "etc/c" in names and "added" in names
    assert "bin/sh" not in names and "opt/new" not in names        # untouched: not in the diff
    assert layers[0].joinpath("etc", "a").read_text() == "a1"      # parents are never written
    snaps.cleanup(snap)
    assert not (tmp_path / "snaps" / snap.id).exists()
    assert _mounts(tmp_path) == []


def test_overlay_and_copy_diffs_agree(tmp_path, layers) -> None:
    results = {}
    for mode in ("overlay", "copy"):
        snaps = Snapshotter(tmp_path / mode, mode=mode)
        snap = snaps.prepare(layers)
        (snap.mount_dir / "etc" / "a").unlink()
        (snap.mount_dir / "opt" / "new").write_text("rewritten")
        (snap.mount_dir / "var" / "log").mkdir(parents=True)
        (snap.mount_dir / "var" / "log" / "x").write_text("x")
        results[mode] = [n for n in _layer_names(snaps.commit(snap)) if n not in ("etc", "opt")]
        snaps.cleanup(snap)
    assert results["overlay"] == results["copy"]


def test_no_parents_gives_an_empty_root(tmp_path) -> None:
    snaps = Snapshotter(tmp_path / "s")
    snap = snaps.prepare([])
    assert list(snap.mount_dir.iterdir()) == []
    (snap.mount_dir / "f").write_text("x")
    assert _layer_names(snaps.commit(snap)) == ["f"]
    snaps.cleanup(snap)


def test_auto_falls_back_to_copy_where_overlay_cannot_mount(tmp_path, layers) -> None:
    # An overlayfs cannot be the upper layer of another overlayfs: put the snapshotter's root on one.
    outer = tmp_path / "outer"
    for d in ("lower", "upper", "work", "merged"):
        (outer / d).mkdir(parents=True)
    linux.mount("overlay", str(outer / "merged"), "overlay", 0,
                f"lowerdir={outer / 'lower'},upperdir={outer / 'upper'},workdir={outer / 'work'}")
    try:
        snaps = Snapshotter(outer / "merged" / "snaps", mode="auto")
        snap = snaps.prepare(layers)
        assert snap.kind == "copy"
        assert (snap.mount_dir / "etc" / "c").read_text() == "c2"
        snaps.cleanup(snap)
        with pytest.raises(SnapshotError, match="overlay mount failed"):
            Snapshotter(outer / "merged" / "strict", mode="overlay").prepare(layers)
    finally:
        linux.umount2(str(outer / "merged"), linux.MNT_DETACH)


def test_missing_parent_is_an_error(tmp_path) -> None:
    with pytest.raises(SnapshotError, match="not a directory"):
        Snapshotter(tmp_path / "s").prepare([tmp_path / "nope"])


def test_recover_removes_snapshots_of_dead_processes(tmp_path, layers) -> None:
    import subprocess
    import sys
    root = tmp_path / "snaps"
    # A process that prepares a snapshot and dies without cleaning up (a killed build).
    code = (f"from builder.snapshot import Snapshotter; s = Snapshotter({str(root)!r}).prepare("
            f"[{str(layers[0])!r}]); print(s.id)")
    dead_id = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    snaps = Snapshotter(root)
    live = snaps.prepare(layers)
    assert sorted(_mounts(tmp_path)) == sorted([str(root / dead_id / "merged"), str(live.mount_dir)])
    assert snaps.recover() == 1
    assert not (root / dead_id).exists()
    assert _mounts(tmp_path) == [str(live.mount_dir)]        # ours is alive and untouched
    snaps.cleanup(live)
    assert snaps.recover() == 0


def test_volatile_overlay_for_thrown_away_changes(tmp_path, layers) -> None:
    """``volatile``: the overlay skips syncs (so unmounting it does not sync the upper filesystem)."""
    snaps = Snapshotter(tmp_path / "snaps", mode="overlay")
    kept, thrown = snaps.prepare(layers), snaps.prepare(layers, volatile=True)
    try:
        options = {line.split()[4]: set(line.partition(" - ")[2].split()[2].split(",")) for line in
                   Path("/proc/self/mountinfo").read_text().splitlines()}
        kernel = tuple(int(x) for x in os.uname().release.split(".")[:2])
        volatile = {"volatile", "fsync=volatile"}
        assert bool(options[str(thrown.mount_dir)] & volatile) == (kernel >= (5, 10))
        assert not options[str(kept.mount_dir)] & volatile
        (thrown.mount_dir / "etc" / "new").write_text("n")
        assert _tree(thrown.mount_dir)["etc/new"] == "n" and _tree(thrown.mount_dir)["etc/a"] == "a1"
    finally:
        snaps.cleanup(kept)
        snaps.cleanup(thrown)
    assert _mounts(tmp_path) == [] and list((tmp_path / "snaps").iterdir()) == []
