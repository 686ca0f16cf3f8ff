"""Blobs by digest: ``ROOT/blobs/sha256/<hex>``, written atomically and verified on the way in.

A blob becomes visible only by ``rename`` of a complete, fsynced, verified
temp file, so readers never see a partial blob and a killed writer leaves
only scratch files (removed the next time the store is opened).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from builder.image.digest import parse_digest
from builder.store.errors import BlobNotFoundError, ContentTooLargeError, DigestMismatchError
from builder.store.tmpdirs import ScratchDir

CHUNK = 1 << 20
# Nothing legitimate comes near this; a stream claiming or reaching more is hostile.
MAX_BLOB_SIZE = 1 << 40


class BlobWriter:
    """A writable file that becomes a blob on ``commit``; ``abort`` (or leaving ``with`` on error) drops it.

    Usable as the ``out`` of ``LayerWriter.write``: the digest is computed as bytes pass.
    """

    def __init__(self, blobs: "BlobStore", max_size: int = MAX_BLOB_SIZE) -> None:
        self._blobs = blobs
        self._max = max_size
        self._hash = hashlib.sha256()
        self.size = 0
        fd, self._tmp = _mkstemp(blobs.scratch.path)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._done = False

    def write(self, data) -> int:
        n = len(data)
        if self.size + n > self._max:
            raise ContentTooLargeError(f"blob exceeds {self._max} bytes")
        self._hash.update(data)
        self._file.write(data)
        self.size += n
        return n

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def commit(self, expected_digest: str | None = None, expected_size: int | None = None) -> tuple[str, int]:
        """Verify, fsync and publish the blob; returns (digest, size)."""
        if self._done:
            raise ValueError("blob writer already finished")
        digest = self.digest
        try:
            _verify(digest, self.size, expected_digest, expected_size)
            os.fsync(self._file.fileno())
            self._file.close()
            self._blobs._publish(self._tmp, digest)
        finally:
            self.abort()
        return digest, self.size

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        if not self._done:
            self._done = True
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.abort()


class BlobStore:
    """The blob directory of one store root."""

    def __init__(self, root: Path, scratch: ScratchDir) -> None:
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scratch = scratch

    def path(self, digest: str) -> Path:
        return self.dir / parse_digest(digest).split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {digest} is not in the store") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {digest} is not in the store") from None

    def put(self, stream: BinaryIO, expected_digest: str | None = None,
            expected_size: int | None = None) -> tuple[str, int]:
        """Stream ``stream`` into the store, verifying it; returns (digest, size).

        When ``expected_digest`` is already present the stream is not read.
        """
        if expected_digest is not None:
            parse_digest(expected_digest)
            if expected_size is not None and (expected_size < 0 or expected_size > MAX_BLOB_SIZE):
                raise ContentTooLargeError(f"blob {expected_digest} claims an impossible size {expected_size}")
            path = self.path(expected_digest)
            if path.is_file():
                size = path.stat().st_size
                if expected_size is not None and size != expected_size:
                    raise DigestMismatchError(
                        f"blob {expected_digest} is {size} bytes in the store, but {expected_size} were expected")
                return expected_digest, size
        # Read at most one byte past the announced size: enough to prove a lie.
        limit = MAX_BLOB_SIZE if expected_size is None else expected_size
        with BlobWriter(self, max_size=MAX_BLOB_SIZE) as writer:
            readinto = getattr(stream, "readinto", None)
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while True:
                if readinto is not None:
                    n = readinto(buf)
                    if not n:
                        break
                    writer.write(view[:n])
                else:
                    data = stream.read(CHUNK)
                    if not data:
                        break
                    writer.write(data)
                if writer.size > limit:
                    raise ContentTooLargeError(
                        f"blob {expected_digest or '(stream)'} is longer than the announced {expected_size} bytes")
            return writer.commit(expected_digest, expected_size)

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _verify(digest, len(data), expected_digest, None)
        if self.has(digest):
            return digest, len(data)
        with BlobWriter(self) as writer:
            writer.write(data)
            return writer.commit(digest, len(data))

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    def digests(self) -> list[str]:
        """Every blob on disk (whatever the index says)."""
        out = []
        for entry in os.scandir(self.dir):
            if len(entry.name) == 64 and entry.is_file(follow_symlinks=False):
                out.append("sha256:" + entry.name)
        return sorted(out)

    def _publish(self, tmp: str, digest: str) -> None:
        os.chmod(tmp, 0o444)  # blobs are immutable
        os.replace(tmp, self.path(digest))
        _fsync_dir(self.dir)


def _verify(digest: str, size: int, expected_digest: str | None, expected_size: int | None) -> None:
    if expected_size is not None and size != expected_size:
        raise DigestMismatchError(
            f"blob {expected_digest or digest} is {size} bytes, but {expected_size} were announced")
    if expected_digest is not None and digest != expected_digest:
        raise DigestMismatchError(f"content does not match its digest: expected {expected_digest}, got {digest}")


def _mkstemp(directory: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix="blob-", dir=directory)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
