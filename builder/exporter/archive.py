"""Tar archives of images, read as hostile input and written byte-for-byte reproducibly.

Reading: one streaming pass, so standard input and compressed archives need
no scratch copy; blobs go straight into the store as they pass. Member names must be clean
relative paths (no absolute names, no ``..``); symlinks between members
(old ``docker save`` output links duplicate layers) are followed only
within the archive; member count and JSON sizes are bounded. Content is
never extracted to the filesystem: blobs stream straight into the store,
which verifies them.

Writing: plain USTAR/PAX entries with fixed owner, mode and mtime, in the
order the caller gives, via ``builder.image.tarformat``.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from builder.exporter.errors import ArchiveError
from builder.store.errors import StoreError
from builder.image.compress import GZIP_MAGIC, ZSTD_MAGIC
from builder.image import mediatypes as mt
from builder.image.tarformat import DIRTYPE, END_OF_ARCHIVE, REGTYPE, TarEntry, encode_header, padding

MAX_MEMBERS = 100_000  # image archives hold a few files per layer
MAX_JSON = 8 << 20
# Members other than blobs/sha256/* up to this size are kept in memory (JSON, VERSION files, tiny
# layers), up to MAX_SMALL_TOTAL in all; bigger ones stream into the store.
MAX_SMALL_MEMBER = MAX_JSON
MAX_SMALL_TOTAL = 64 << 20
MAX_LINK_HOPS = 16
# A compressed archive may inflate to this many times its size (image tars compress 2-4x;
# a decompression bomb does 1000x), and always to at least MIN_INFLATE_LIMIT.
MAX_INFLATE_RATIO = 100
MIN_INFLATE_LIMIT = 1 << 30
_CHUNK = 1 << 20


def _clean(name: str) -> str | None:
    """A member name as a clean relative path, or None for the archive root itself."""
    if "\0" in name or name.startswith("/"):
        raise ArchiveError(f"archive member {name!r} has an absolute or invalid name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive member {name!r} points outside the archive")
    return "/".join(parts) or None


class _Prefixed(io.RawIOBase):
    """``head`` followed by the rest of ``stream``, counting the bytes read from ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream
        self.consumed = len(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        # read1: take what a pipe has now rather than wait for a full buffer.
        read = getattr(self._stream, "read1", self._stream.read)
        data = read(len(buf))
        self.consumed += len(data)
        buf[: len(data)] = data
        return len(data)


class _BombGuard(io.RawIOBase):
    """Decompressed bytes, refused once they outgrow what the compressed input could honestly hold."""

    def __init__(self, inflated: BinaryIO, source: _Prefixed, label: str) -> None:
        self._inflated = inflated
        self._source = source
        self._label = label
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self._inflated.read(len(buf))
        self.produced += len(data)
        limit = max(MIN_INFLATE_LIMIT, MAX_INFLATE_RATIO * self._source.consumed)
        if self.produced > limit:
            raise ArchiveError(f"{self._label} inflates to more than {limit} bytes; "
                               "refusing a likely decompression bomb")
        buf[: len(data)] = data
        return len(data)


def _inflate(source: BinaryIO, compression: str) -> BinaryIO:
    """A single-threaded decompressing reader: an archive is read once, front to back, and a
    helper thread (as the layer decompressor uses) could be left blocked when a bad archive is
    abandoned half-read."""
    if compression == mt.GZIP:
        from isal import igzip

        return igzip.IGzipFile(fileobj=source, mode="rb")
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(source, read_size=_CHUNK, read_across_frames=True,
                                                      closefd=False)


_BLOB_MEMBER = re.compile(r"blobs/sha256/([0-9a-f]{64})")


class TarArchive:
    """An image archive (tar, plain or gzip/zstd-compressed) read in one streaming pass.

    Members named ``blobs/sha256/<hex>`` go straight into the store, verified against
    their names; other small members (JSON, ``VERSION``...) stay in memory, bigger ones
    (docker-archive layers) go into the store under the digest they turn out to have.
    Afterwards the archive answers ``has``/``size``/``open``/``read_json`` by member name,
    following links between members only inside the archive. Nothing is extracted.
    ``ingested`` lists the blobs this archive added to the store (for cleanup on failure).
    """

    def __init__(self, store, label: str) -> None:
        self.source = label  # what messages call it
        self._store = store
        self._small: dict[str, bytes] = {}
        self._blobs: dict[str, tuple[str, int]] = {}
        self._links: dict[str, str] = {}
        self.ingested: list[str] = []

    def read(self, stream: BinaryIO) -> "TarArchive":
        """Take in the whole archive from ``stream``; returns self."""
        label = self.source
        head = stream.read(4)
        prefixed = _Prefixed(head, stream)
        data: BinaryIO = io.BufferedReader(prefixed, _CHUNK)
        compression = mt.GZIP if head.startswith(GZIP_MAGIC) else mt.ZSTD if head.startswith(ZSTD_MAGIC) else None
        inflated = None
        try:
            if compression:
                inflated = _inflate(data, compression)
                data = io.BufferedReader(_BombGuard(inflated, prefixed, label), _CHUNK)
            with tarfile.open(fileobj=data, mode="r|") as tar:
                self._scan(tar)
        except (ArchiveError, StoreError):
            raise
        except EOFError as exc:
            what = f"{compression} stream" if compression else "tar archive"
            raise ArchiveError(f"{label} is corrupt or truncated ({what}): {exc}") from None
        except (tarfile.TarError, UnicodeError) as exc:
            raise ArchiveError(f"{label} is not a tar archive (or is truncated): {exc}") from None
        except OSError as exc:
            if compression:
                raise ArchiveError(f"{label} is corrupt ({compression}): {exc}") from None
            raise ArchiveError(f"cannot read {label}: {exc.strerror or exc}") from None
        except Exception as exc:  # codec errors come in many types
            if compression:
                raise ArchiveError(f"{label} is corrupt ({compression}): {exc}") from None
            raise
        finally:
            if inflated is not None:
                inflated.close()
        return self

    def _scan(self, tar: tarfile.TarFile) -> None:
        count = small_total = 0
        for info in tar:
            count += 1
            if count > MAX_MEMBERS:
                raise ArchiveError(f"{self.source} has more than {MAX_MEMBERS} members")
            name = _clean(info.name)
            if name is None or info.isdir():
                continue
            if info.issym() or info.islnk():
                target = info.linkname
                if info.issym():
                    base = name.rpartition("/")[0]
                    target = f"{base}/{target}" if base and not target.startswith("/") else target
                self._links[name] = target
                continue
            if not info.isreg():
                continue  # devices, fifos and the like mean nothing in an image archive
            content = tar.extractfile(info)
            blob = _BLOB_MEMBER.fullmatch(name)
            if blob is None and info.size <= MAX_SMALL_MEMBER and small_total + info.size <= MAX_SMALL_TOTAL:
                self._small[name] = content.read()
                small_total += info.size
                continue
            expected = "sha256:" + blob.group(1) if blob else None
            existed = expected is not None and self._store.has_blob(expected)
            digest, size = self._store.put_blob(content, expected, info.size)
            if not existed:
                self.ingested.append(digest)
            self._blobs[name] = (digest, size)
            self._small.pop(name, None)

    def _resolve(self, name: str) -> str | None:
        """The member a name finally refers to (following links inside the archive)."""
        clean = _clean(name)
        for _ in range(MAX_LINK_HOPS):
            if clean is None:
                return None
            if clean in self._blobs or clean in self._small:
                return clean
            target = self._links.get(clean)
            if target is None:
                return None
            if target.startswith("/"):
                raise ArchiveError(f"archive member {name!r} links to the absolute path {target!r}")
            clean = _clean(_normalise(target))
        raise ArchiveError(f"archive member {name!r}: too many levels of links")

    def _member(self, name: str) -> str:
        member = self._resolve(name)
        if member is None:
            raise ArchiveError(f"{self.source} has no member {name!r}")
        return member

    def has(self, name: str) -> bool:
        return self._resolve(name) is not None

    def size(self, name: str) -> int:
        member = self._member(name)
        return self._blobs[member][1] if member in self._blobs else len(self._small[member])

    def open(self, name: str) -> BinaryIO:
        member = self._member(name)
        if member in self._blobs:
            return self._store.open_blob(self._blobs[member][0])
        return io.BufferedReader(io.BytesIO(self._small[member]))  # peek() like a file

    def read_json(self, name: str) -> Any:
        if self.size(name) > MAX_JSON:
            raise ArchiveError(f"{name} in {self.source} is larger than {MAX_JSON} bytes")
        with self.open(name) as fh:
            data = fh.read()
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"{name} in {self.source} is not valid JSON: {exc}") from None


class DirLayout:
    """An unpacked layout (``skopeo copy ... oci:DIR``) with the same read interface as ``TarArchive``.

    Every name is resolved with symlinks followed *and* checked to stay under the directory.
    """

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.root = Path(os.path.realpath(path))
        self.source = label or str(path)

    def _path(self, name: str) -> Path | None:
        clean = _clean(name)
        if clean is None:
            return None
        real = os.path.realpath(self.root / clean)
        if os.path.commonpath([real, str(self.root)]) != str(self.root):
            raise ArchiveError(f"{self.source}: {name!r} links outside the directory")
        return Path(real) if os.path.isfile(real) else None

    def has(self, name: str) -> bool:
        return self._path(name) is not None

    def size(self, name: str) -> int:
        path = self._path(name)
        if path is None:
            raise ArchiveError(f"{self.source} has no file {name!r}")
        return path.stat().st_size

    def open(self, name: str) -> BinaryIO:
        path = self._path(name)
        if path is None:
            raise ArchiveError(f"{self.source} has no file {name!r}")
        return open(path, "rb")

    read_json = TarArchive.read_json

    def close(self) -> None:
        pass

    def __enter__(self) -> "DirLayout":
        return self

    def __exit__(self, *exc) -> None:
        pass


def _normalise(path: str) -> str:
    """Collapse ``a/b/../c`` lexically; leading ``..`` stays so ``_clean`` refuses it."""
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and out and out[-1] != "..":
            out.pop()
        else:
            out.append(part)
    return "/".join(out)


class ArchiveWriter:
    """Writes a reproducible tar to ``out``: every entry root-owned with a fixed mtime."""

    def __init__(self, out: BinaryIO, mtime: int = 0) -> None:
        self.out = out
        self.mtime = mtime
        self._dirs: set[str] = set()

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                self.out.write(encode_header(TarEntry(d + "/", DIRTYPE, 0o755, mtime=self.mtime)))

    def add_bytes(self, name: str, data: bytes) -> None:
        self._parents(name)
        self.out.write(encode_header(TarEntry(name, REGTYPE, 0o644, size=len(data), mtime=self.mtime)))
        self.out.write(data)
        self.out.write(padding(len(data)))

    def add_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        """Copy exactly ``size`` bytes of ``stream`` as member ``name``."""
        self._parents(name)
        self.out.write(encode_header(TarEntry(name, REGTYPE, 0o644, size=size, mtime=self.mtime)))
        left = size
        while left:
            data = stream.read(min(_CHUNK, left))
            if not data:
                raise ArchiveError(f"{name}: content ended {left} bytes early")
            self.out.write(data)
            left -= len(data)
        self.out.write(padding(size))

    def close(self) -> None:
        self.out.write(END_OF_ARCHIVE)
        self.out.flush()
