"""Blobs: every byte verified on the way in, published atomically, found by digest."""
from __future__ import annotations

import hashlib
import io
import os

import pytest

from builder.image.digest import sha256_digest
from builder.image.errors import InvalidDigestError
from builder.image.layer import LayerWriter
from builder.store import BlobNotFoundError, ContentStore, DigestMismatchError
from builder.store.errors import ContentTooLargeError


def test_put_blob_streams_in_and_reads_back(store):
    data = os.urandom(3 << 20)  # several chunks
    digest, size = store.put_blob(io.BytesIO(data))
    assert digest == sha256_digest(data) and size == len(data)
    assert store.has_blob(digest)
    with store.open_blob(digest) as fh:
        assert fh.read() == data
    assert store.blob_path(digest).name == digest[7:]
    assert store.blob_size(digest) == len(data)


def test_put_blob_with_the_right_expectations_succeeds(store):
    data = b"hello"
    assert store.put_blob(io.BytesIO(data), sha256_digest(data), 5) == (sha256_digest(data), 5)


def test_wrong_digest_is_refused_and_nothing_is_kept(store):
    with pytest.raises(DigestMismatchError, match="does not match its digest"):
        store.put_blob(io.BytesIO(b"evil"), sha256_digest(b"good"))
    assert store.blobs.digests() == []
    assert list((store.root / "tmp").rglob("blob-*")) == []


def test_short_and_long_content_against_the_announced_size(store):
    with pytest.raises(DigestMismatchError, match="3 bytes, but 4 were announced"):
        store.put_blob(io.BytesIO(b"abc"), expected_size=4)
    with pytest.raises(ContentTooLargeError, match="longer than the announced 2 bytes"):
        store.put_blob(io.BytesIO(b"abc"), expected_size=2)
    assert store.blobs.digests() == []


def test_absurd_announced_size_is_refused_before_reading(store):
    class Unreadable(io.RawIOBase):
        def readinto(self, b):
            raise AssertionError("must not be read")

    with pytest.raises(ContentTooLargeError):
        store.put_blob(Unreadable(), sha256_digest(b"x"), 1 << 62)


def test_bad_digest_strings_are_refused(store):
    with pytest.raises(InvalidDigestError):
        store.put_blob(io.BytesIO(b"x"), "md5:abc")
    with pytest.raises(InvalidDigestError):
        store.has_blob("sha256:../../etc/passwd")


def test_present_blob_is_not_read_again(store):
    data = b"already here"
    store.put_bytes(data)

    class Unreadable(io.RawIOBase):
        def readinto(self, b):
            raise AssertionError("must not be read")

    assert store.put_blob(Unreadable(), sha256_digest(data), len(data)) == (sha256_digest(data), len(data))


def test_blobs_are_read_only_files(store):
    digest, _ = store.put_bytes(b"immutable")
    assert os.stat(store.blob_path(digest)).st_mode & 0o222 == 0


def test_missing_and_deleted_blobs(store):
    digest, _ = store.put_bytes(b"short-lived")
    assert store.delete_blob(digest)
    assert not store.has_blob(digest)
    assert not store.delete_blob(digest)
    with pytest.raises(BlobNotFoundError):
        store.open_blob(digest)


def test_blob_writer_takes_a_layer_straight_from_the_layer_writer(store, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("content")
    with store.blob_writer() as out:
        layer = LayerWriter(source_date_epoch=0).write(src, out)
        assert out.commit(layer.digest, layer.size) == (layer.digest, layer.size)
    with store.open_blob(layer.digest) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == layer.digest[7:]


def test_blob_writer_abandoned_leaves_nothing(store):
    with store.blob_writer() as out:
        out.write(b"partial")
    assert store.blobs.digests() == []
    assert list(store.scratch.path.iterdir()) == []


def test_read_blob_detects_corruption_on_disk(store):
    digest, _ = store.put_bytes(b'{"a": 1}')
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b'{"a": 2}')
    with pytest.raises(Exception, match="corrupt"):
        store.read_blob(digest)


def test_store_root_that_cannot_be_created_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    from builder.store import StoreError

    with pytest.raises(StoreError, match="cannot open the store"):
        ContentStore(blocker / "store")


def test_a_corrupt_index_is_a_clear_error(tmp_path):
    from builder.store import StoreError

    root = tmp_path / "store"
    root.mkdir()
    (root / "index.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the store index .*not a database"):
        ContentStore(root)
