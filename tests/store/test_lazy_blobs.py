"""Lazy blobs: known to the store (digest, size, where), downloaded and verified on first read."""
from __future__ import annotations

import hashlib

import pytest

from builder.store.errors import BlobNotFoundError, StoreError


def layout_with(tmp_path, data: bytes):
    """A directory laid out like an OCI layout's blobs/, holding ``data``."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs = tmp_path / "layout" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / digest[7:]).write_bytes(data)
    return tmp_path / "layout", digest


def test_a_lazy_blob_is_fetched_on_first_read(store, tmp_path):
    data = b"layer bytes" * 1000
    layout, digest = layout_with(tmp_path, data)
    store.add_remote_blobs([(digest, len(data), "application/vnd.oci.image.layer.v1.tar")],
                           {"type": "local", "dir": str(layout)})
    assert store.is_lazy_blob(digest) and store.has_content(digest) and not store.has_blob(digest)
    with store.open_blob(digest) as fh:
        assert fh.read() == data
    assert store.has_blob(digest) and not store.is_lazy_blob(digest)


def test_a_blob_already_present_is_not_made_lazy(store, tmp_path):
    data = b"present"
    digest, _ = store.put_bytes(data)
    store.add_remote_blobs([(digest, len(data), "x")], {"type": "local", "dir": str(tmp_path)})
    assert store.index.remote_blob(digest) is None


def test_wrong_content_at_the_source_never_enters_the_store(store, tmp_path):
    data = b"the real layer"
    layout, digest = layout_with(tmp_path, data)
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(b"the evil layer")  # same size, other bytes
    store.add_remote_blobs([(digest, len(data), "x")], {"type": "local", "dir": str(layout)})
    with pytest.raises(StoreError):
        store.open_blob(digest)
    assert not store.has_blob(digest)
    leftovers = [p for p in (store.root / "tmp").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == [], "the refused download left no partial file"


def test_a_lazy_blob_whose_source_is_gone_is_a_clear_error(store, tmp_path):
    digest = "sha256:" + "ab" * 32
    store.add_remote_blobs([(digest, 10, "x")], {"type": "local", "dir": str(tmp_path / "gone")})
    with pytest.raises(BlobNotFoundError, match="cache directory"):
        store.open_blob(digest)


def test_an_unknown_blob_is_still_not_found(store):
    with pytest.raises(BlobNotFoundError):
        store.open_blob("sha256:" + "cd" * 32)
    assert not store.has_content("sha256:" + "cd" * 32)
