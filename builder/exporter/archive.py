"""Tar archives of images, read as hostile input and written byte-for-byte reproducibly.

Reading: a compressed archive (gzip, zstd) is first inflated into scratch
space so members can be opened in any order. Member names must be clean
relative paths (no absolute names, no ``..``); symlinks between members
(old ``docker save`` output links duplicate layers) are followed only
within the archive; member count and JSON sizes are bounded. Content is
never extracted to the filesystem: blobs stream straight into the store,
which verifies them.

Writing: plain USTAR/PAX entries with fixed owner, mode and mtime, in the
order the caller gives, via ``builder.image.tarformat``.
"""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from builder.exporter.errors import ArchiveError
from builder.image.compress import GZIP_MAGIC, ZSTD_MAGIC, decompressor
from builder.image import mediatypes as mt
from builder.image.tarformat import DIRTYPE, END_OF_ARCHIVE, REGTYPE, TarEntry, encode_header, padding

MAX_MEMBERS = 100_000  # image archives hold a few files per layer
MAX_JSON = 8 << 20
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


class TarArchive:
    """Random access to the regular-file members of an image archive."""

    def __init__(self, path: Path, scratch: Path, label: str | None = None) -> None:
        self.source = label or str(path)  # what messages call it
        self._scratch_file: Path | None = None
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise ArchiveError(f"cannot read {self.source}: {exc.strerror or exc}") from None
        head = fh.read(4)
        fh.seek(0)
        if head.startswith(GZIP_MAGIC) or head.startswith(ZSTD_MAGIC):
            fh = self._inflate(fh, mt.GZIP if head.startswith(GZIP_MAGIC) else mt.ZSTD, scratch)
        self._file = fh
        try:
            self._tar = tarfile.open(fileobj=fh, mode="r:")
            self._members, self._links = self._scan()
        except (tarfile.TarError, EOFError, UnicodeError, ValueError) as exc:
            self.close()
            raise ArchiveError(f"{self.source} is not a tar archive (or is truncated): {exc}") from None
        except BaseException:
            self.close()
            raise

    def _inflate(self, fh: BinaryIO, compression: str, scratch: Path) -> BinaryIO:
        self._scratch_file = scratch / "archive.tar"
        limit = max(MIN_INFLATE_LIMIT, MAX_INFLATE_RATIO * os.fstat(fh.fileno()).st_size)
        try:
            with fh, decompressor(fh, compression) as stream, open(self._scratch_file, "wb") as out:
                written = 0
                while chunk := stream.read(_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise ArchiveError(f"{self.source} inflates to more than {limit} bytes; "
                                           "refusing a likely decompression bomb")
                    out.write(chunk)
        except BaseException as exc:
            self._scratch_file.unlink(missing_ok=True)
            if isinstance(exc, ArchiveError) or not isinstance(exc, Exception):
                raise
            if isinstance(exc, OSError):
                raise ArchiveError(f"cannot decompress {self.source}: {exc}") from None
            raise ArchiveError(f"{self.source} is corrupt ({compression}): {exc}") from None  # codec errors vary
        return open(self._scratch_file, "rb")

    def _scan(self) -> tuple[dict[str, tarfile.TarInfo], dict[str, str]]:
        members: dict[str, tarfile.TarInfo] = {}
        links: dict[str, str] = {}
        count = 0
        for info in self._tar:
            count += 1
            if count > MAX_MEMBERS:
                raise ArchiveError(f"{self.source} has more than {MAX_MEMBERS} members")
            name = _clean(info.name)
            if name is None or info.isdir():
                continue
            if info.isreg():
                members[name] = info
            elif info.issym() or info.islnk():
                target = info.linkname
                if info.issym():
                    base = name.rpartition("/")[0]
                    target = f"{base}/{target}" if base and not target.startswith("/") else target
                links[name] = target
            # devices, fifos and the like mean nothing in an image archive: ignored
        return members, links

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        clean = _clean(name)
        for _ in range(MAX_LINK_HOPS):
            if clean is None:
                return None
            if clean in self._members:
                return self._members[clean]
            target = self._links.get(clean)
            if target is None:
                return None
            if target.startswith("/"):
                raise ArchiveError(f"archive member {name!r} links to the absolute path {target!r}")
            clean = _clean(_normalise(target))
        raise ArchiveError(f"archive member {name!r}: too many levels of links")

    def has(self, name: str) -> bool:
        return self._resolve(name) is not None

    def size(self, name: str) -> int:
        info = self._resolve(name)
        if info is None:
            raise ArchiveError(f"{self.source} has no member {name!r}")
        return info.size

    def open(self, name: str) -> BinaryIO:
        info = self._resolve(name)
        if info is None:
            raise ArchiveError(f"{self.source} has no member {name!r}")
        stream = self._tar.extractfile(info)
        assert stream is not None
        return stream

    def read_json(self, name: str) -> Any:
        if self.size(name) > MAX_JSON:
            raise ArchiveError(f"{name} in {self.source} is larger than {MAX_JSON} bytes")
        with self.open(name) as fh:
            data = fh.read()
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"{name} in {self.source} is not valid JSON: {exc}") from None

    def close(self) -> None:
        tar = getattr(self, "_tar", None)
        if tar is not None:
            tar.close()
        self._file.close() if hasattr(self, "_file") else None
        if self._scratch_file is not None:
            try:
                self._scratch_file.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "TarArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
