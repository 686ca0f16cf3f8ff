"""Deletions across layers: whiteouts, opaque directories, and overlayfs upper dirs."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.image import mediatypes as mt
from builder.image.errors import LayerError
from builder.image.layer import apply_layer, write_layer

from .image_helpers import entry, make_tar, requires_root, snapshot


def layer_of(src: Path, **options) -> bytes:
    out = io.BytesIO()
    write_layer(src, out, compression=mt.UNCOMPRESSED, **options)
    return out.getvalue()


def names_of(tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return t.getnames()


def lower_tree(root: Path) -> Path:
    for rel in ("keep/a", "gone/file", "gone/sub/deep", "opaque/old1", "opaque/sub/old2", "replaced", "x/y/z"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return root


def test_explicit_deletions_become_whiteouts_that_delete_on_apply(tmp_path):
    lower = lower_tree(tmp_path / "lower")
    upper = tmp_path / "upper"
    (upper / "keep").mkdir(parents=True)
    (upper / "keep/new").write_text("new")
    tar = layer_of(upper, deleted=["gone", "keep/a", "x/y/z"])
    # Whiteouts sort among their siblings; those under directories absent from the
    # upper tree come last.
    assert names_of(tar) == [".wh.gone", "keep", "keep/.wh.a", "keep/new", "x/y/.wh.z"]

    root = tmp_path / "root"
    root.mkdir()
    apply_layer(io.BytesIO(layer_of(lower)), root, mt.OCI_LAYER_TAR)
    apply_layer(io.BytesIO(tar), root, mt.OCI_LAYER_TAR)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "keep", "keep/new", "opaque", "opaque/old1", "opaque/sub", "opaque/sub/old2", "replaced", "x", "x/y",
    ]


def test_opaque_marker_hides_lower_content_but_keeps_the_layers_own(tmp_path):
    root = lower_tree(tmp_path / "root")
    # The marker after the layer's own entries: those must survive anyway.
    tar = make_tar([
        (entry("opaque", tarfile.DIRTYPE, mode=0o755), None),
        (entry("opaque/sub", tarfile.DIRTYPE, mode=0o755), None),
        (entry("opaque/sub/new"), b"new"),
        (entry("opaque/.wh..wh..opq"), b""),
        (entry(".wh.missing-in-lower"), b""),
    ])
    stats = apply_layer(io.BytesIO(tar), root, mt.OCI_LAYER_TAR)
    assert stats.whiteouts == 2
    assert sorted(str(p.relative_to(root / "opaque")) for p in (root / "opaque").rglob("*")) == ["sub", "sub/new"]
    assert (root / "keep/a").exists()


def test_whiteout_never_deletes_an_entry_of_its_own_layer(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    tar = make_tar([(entry("f"), b"mine"), (entry(".wh.f"), b"")])
    apply_layer(io.BytesIO(tar), root, mt.OCI_LAYER_TAR)
    assert (root / "f").read_text() == "mine"


def test_entry_replaces_lower_entry_of_another_type(tmp_path):
    root = lower_tree(tmp_path / "root")
    os.symlink("/etc", root / "was-link")
    tar = make_tar([
        (entry("replaced", tarfile.DIRTYPE, mode=0o755), None),      # file → directory
        (entry("replaced/inside"), b"i"),
        (entry("gone"), b"now a file"),                              # directory → file
        (entry("was-link", tarfile.DIRTYPE, mode=0o755), None),      # symlink → directory, not followed
        (entry("was-link/passwd"), b"not the host's"),
    ])
    apply_layer(io.BytesIO(tar), root, mt.OCI_LAYER_TAR)
    assert (root / "replaced/inside").read_text() == "i"
    assert (root / "gone").read_text() == "now a file"
    assert (root / "was-link").is_dir() and not (root / "was-link").is_symlink()
    assert (root / "was-link/passwd").read_text() == "not the host's"


@requires_root
def test_overlayfs_upper_dir_becomes_an_oci_layer(tmp_path):
    """Change files through a real overlay mount, then turn its upper dir into a layer."""
    lower = lower_tree(tmp_path / "lower")
    os.setxattr(lower / "keep/a", "user.note", b"lower")
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off",
                    str(merged)], check=True)
    try:
        subprocess.run(["rm", "-rf", f"{merged}/gone", f"{merged}/x/y/z", f"{merged}/opaque"], check=True)
        (merged / "opaque").mkdir()                       # deleted then re-made: opaque
        (merged / "opaque/fresh").write_text("fresh")
        (merged / "keep/a").write_text("changed")         # copy-up keeps user xattrs
        (merged / "keep/b").write_text("added")
        (merged / "replaced").unlink()
        (merged / "replaced").mkdir()                     # file → directory
        expected = snapshot(merged, mtimes=False)
    finally:
        subprocess.run(["umount", str(merged)], check=True)

    tar = layer_of(upper, overlay=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        members = {m.name: m for m in t.getmembers()}
    assert {".wh.gone", "x/y/.wh.z", "opaque/.wh..wh..opq", "opaque/fresh", "keep/a", "keep/b"} <= set(members)
    assert all(m.isreg() and m.size == 0 for n, m in members.items() if "/.wh." in "/" + n)
    assert not any("overlay" in k for m in members.values() for k in m.pax_headers), "overlay xattrs leaked"
    assert members["keep/a"].pax_headers.get("SCHILY.xattr.user.note") == "lower"

    # Lower layer + this layer applied = what the overlay mount showed.
    root = tmp_path / "root"
    root.mkdir()
    apply_layer(io.BytesIO(layer_of(lower)), root, mt.OCI_LAYER_TAR)
    apply_layer(io.BytesIO(tar), root, mt.OCI_LAYER_TAR)
    assert snapshot(root, mtimes=False) == expected


@requires_root
def test_upper_dir_from_a_metacopy_overlay_is_refused(tmp_path):
    # With metacopy=on a chown through the mount copies up metadata only: no data to archive.
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_bytes(b"")
    os.setxattr(upper / "f", "trusted.overlay.metacopy", b"")
    with pytest.raises(LayerError, match="metacopy=off,redirect_dir=off"):
        layer_of(upper, overlay=True)
