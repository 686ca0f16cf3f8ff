"""Mutated archives: loading anything either works or fails with a one-line PybuildError, never a crash."""
from __future__ import annotations

import gzip
import io
import json
import tarfile

import zstandard

from hypothesis import HealthCheck, given, settings, strategies as st

from builder.errors import PybuildError
from builder.exporter import load_archive, save_archive
from builder.image.digest import sha256_digest
from builder.image.oci import Descriptor, ImageConfig, Platform, RootFS
from builder.image import mediatypes as mt
from builder.store import ContentStore


def _tiny_archives(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("fuzz-src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc/hello")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    layer = buf.getvalue()
    out = {}
    with ContentStore(root / "store") as store:
        digest, size = store.put_bytes(layer)
        config = ImageConfig.for_platform(Platform("linux", "amd64"), rootfs=RootFS([sha256_digest(layer)]))
        store.put_image(config, [Descriptor(mt.OCI_LAYER_TAR, digest, size)], name="tiny:1")
        for fmt in ("oci", "docker"):
            sink = io.BytesIO()
            save_archive(store, ["tiny:1"], sink, fmt)
            out[fmt] = sink.getvalue()
    # Compressed too: a corrupt stream must not leave a decompressor thread hanging (it once did).
    out["oci.gz"] = gzip.compress(out["oci"])
    out["docker.zst"] = zstandard.ZstdCompressor().compress(out["docker"])
    return out


ARCHIVES: dict[str, bytes] = {}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(["oci", "docker", "oci.gz", "docker.zst"]),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_mutated_archives_never_crash(tmp_path_factory, fmt, edits, cut):
    if not ARCHIVES:
        ARCHIVES.update(_tiny_archives(tmp_path_factory))
    data = bytearray(ARCHIVES[fmt])
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path_factory.mktemp("fuzz") / "mutated.tar"
    path.write_bytes(bytes(data))
    with ContentStore(path.parent / "store") as store:
        try:
            loaded = load_archive(store, path)
        except PybuildError as exc:
            assert "\n" not in str(exc)
            return
        # What loaded must be whole: every image readable, every blob verified.
        for item in loaded:
            image = store.get_image(item.digest)
            for layer in image.layers:
                with store.open_blob(layer.digest) as fh:
                    assert sha256_digest(fh.read()) == layer.digest
        json.dumps([i.names for i in loaded])
