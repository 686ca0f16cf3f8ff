"""Other tools read what we write: umoci unpacks our layers, skopeo copies our image, and we
apply the layers umoci writes. (Image-level store/export checks live in tests/store.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.image import mediatypes as mt
from builder.image.digest import digest_hex
from builder.image.layer import apply_layer, write_layer
from builder.image.oci import Descriptor, History, ImageConfig, Index, Manifest, Platform, format_created

from .image_helpers import require_tool, requires_root, snapshot


def write_oci_layout(layout: Path, layer_dirs: list[tuple[Path, dict]], compression: str,
                     tag: str = "t") -> ImageConfig:
    """A minimal OCI image layout holding one image made from ``layer_dirs``."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    config = ImageConfig.for_platform(Platform.host(), created=format_created(0))
    layers = []
    for src, options in layer_dirs:
        tmp = layout / "incoming"
        with open(tmp, "wb") as f:
            blob = write_layer(src, f, compression=compression, **options)
        tmp.rename(blobs / digest_hex(blob.digest))
        layers.append(blob.descriptor())
        config.rootfs.diff_ids.append(blob.diff_id)
        config.history.append(History(created=format_created(0), created_by=f"layer {src.name}"))

    def put(data: bytes) -> None:
        (blobs / digest_hex(Descriptor.of("x", data).digest)).write_bytes(data)

    put(config.to_json())
    manifest = Manifest(config.descriptor(), layers)
    put(manifest.to_json())
    index = Index([manifest.descriptor(annotations={"org.opencontainers.image.ref.name": tag})])
    (layout / "index.json").write_bytes(index.to_json())
    return config


def lower_and_upper(tmp_path: Path) -> tuple[Path, Path]:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for rel in ("etc/conf", "etc/old", "var/lib/state/a", "var/lib/state/b", "opt/app/bin"):
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_text(rel)
    os.symlink("conf", lower / "etc/conf-link")
    os.link(lower / "etc/conf", lower / "etc/conf-hard")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/conf").write_text("changed")
    (upper / "new").write_text("added")
    return lower, upper


@requires_root
@pytest.mark.parametrize("compression", [mt.GZIP, mt.UNCOMPRESSED])
def test_umoci_unpacks_our_layers_like_we_do(tmp_path, compression):
    umoci = require_tool("umoci")
    lower, upper = lower_and_upper(tmp_path)
    layout = tmp_path / "layout"
    write_oci_layout(layout, [(lower, {}), (upper, {"deleted": ["etc/old", "var/lib/state"]})], compression)

    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:t", str(bundle)], check=True, capture_output=True)
    ours = tmp_path / "ours"
    ours.mkdir()
    media_type = mt.layer_media_type(compression)
    manifest = Manifest.from_json((layout / "blobs/sha256" / json.loads((layout / "index.json").read_text())
                                   ["manifests"][0]["digest"][7:]).read_bytes())
    for layer in manifest.layers:
        with open(layout / "blobs/sha256" / digest_hex(layer.digest), "rb") as f:
            apply_layer(f, ours, media_type)
    theirs = snapshot(bundle / "rootfs", mtimes=False)
    assert "etc/old" not in theirs and "var/lib/state" not in theirs and theirs["new"]
    assert snapshot(ours, mtimes=False) == theirs


@requires_root
def test_we_apply_the_whiteouts_umoci_writes(tmp_path):
    umoci = require_tool("umoci")
    lower, _ = lower_and_upper(tmp_path)
    layout = tmp_path / "layout"
    write_oci_layout(layout, [(lower, {})], mt.GZIP)
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:t", str(bundle)], check=True, capture_output=True)
    rootfs = bundle / "rootfs"
    (rootfs / "etc/old").unlink()
    shutil.rmtree(rootfs / "var/lib/state")
    (rootfs / "var/lib/state").mkdir()           # recreated empty: umoci writes an opaque marker or whiteouts
    (rootfs / "opt/app/new").write_text("n")
    subprocess.run([umoci, "repack", "--image", f"{layout}:t2", str(bundle)], check=True, capture_output=True)

    index = Index.from_json((layout / "index.json").read_bytes())
    entry = next(m for m in index.manifests if m.annotations["org.opencontainers.image.ref.name"] == "t2")
    manifest = Manifest.from_json((layout / "blobs/sha256" / digest_hex(entry.digest)).read_bytes())
    assert len(manifest.layers) == 2
    ours = tmp_path / "ours"
    ours.mkdir()
    for layer in manifest.layers:
        with open(layout / "blobs/sha256" / digest_hex(layer.digest), "rb") as f:
            apply_layer(f, ours, layer.media_type)
    assert snapshot(ours, mtimes=False) == snapshot(rootfs, mtimes=False)


@pytest.mark.parametrize("compression", [mt.GZIP, mt.ZSTD])
def test_skopeo_copies_and_verifies_our_image(tmp_path, compression):
    skopeo = require_tool("skopeo")
    lower, upper = lower_and_upper(tmp_path)
    layout = tmp_path / "layout"
    written = write_oci_layout(layout, [(lower, {}), (upper, {"deleted": ["etc/old"]})], compression)
    info = json.loads(subprocess.run([skopeo, "inspect", f"oci:{layout}:t"], check=True,
                                     capture_output=True, text=True).stdout)
    assert len(info["Layers"]) == 2 and info["Os"] == "linux"
    # copy re-reads every blob and checks it against its digest and size
    subprocess.run([skopeo, "copy", "--quiet", f"oci:{layout}:t", f"oci:{tmp_path / 'copy'}:t"],
                   check=True, capture_output=True)
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci:{tmp_path / 'copy'}:t"],
                                       check=True, capture_output=True, text=True).stdout)
    assert config["rootfs"]["diff_ids"] == written.diff_ids
