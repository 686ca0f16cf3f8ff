"""Write a filesystem diff as an OCI layer: one streaming pass yields blob, diffID and digest.

Input is a directory: a whole root filesystem, or an overlayfs upper directory
(``overlay=True``), where a 0/0 character device is a deleted file and an
``overlay.opaque`` xattr marks a directory whose lower contents are hidden.
These become OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``). Extra deletions
can be given as paths.

The tar is reproducible: entries sorted by name depth-first (parents before
children), no atime/ctime, no user/group names, whole-second mtimes
(optionally clamped to ``SOURCE_DATE_EPOCH``), overlay xattrs dropped.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

from builder.image.overlayfs import is_opaque, is_whiteout
from builder.image import mediatypes as mt
from builder.image.compress import compressor
from builder.image.digest import DigestWriter
from builder.image.errors import LayerError
from builder.image.oci import Descriptor
from builder.image.tarformat import (
    BLKTYPE, CHRTYPE, DIRTYPE, END_OF_ARCHIVE, FIFOTYPE, LNKTYPE, REGTYPE, SYMTYPE, TarEntry,
    encode_header, padding,
)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

_UNSUPPORTED_OVERLAY_FEATURES = (".metacopy", ".redirect")
_FLUSH_AT = 1 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LayerBlob:
    """What writing a layer produced: the blob's digest and size, and the tar's diffID."""

    media_type: str
    digest: str          # sha256 of the (compressed) blob
    size: int            # bytes of the blob
    diff_id: str         # sha256 of the uncompressed tar
    uncompressed_size: int

    def descriptor(self, **kwargs) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size, **kwargs)


def source_date_epoch_from_env(environ: dict[str, str] | None = None) -> int | None:
    """``SOURCE_DATE_EPOCH`` as an int, None when unset; a bad value is an error, not ignored."""
    value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        epoch = int(value)
    except ValueError:
        raise LayerError(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds") from None
    if epoch < 0:
        raise LayerError(f"SOURCE_DATE_EPOCH={value!r} must not be negative")
    return epoch


@dataclass
class LayerWriter:
    """Turns a directory into a layer blob.

    ``compression`` is ``gzip`` (default, what docker expects), ``zstd`` or
    ``none``; ``level``/``threads`` tune the compressor; ``source_date_epoch``
    clamps every mtime to at most that time; ``docker_media_types`` picks the
    schema2 layer media type instead of the OCI one.
    """

    compression: str = mt.GZIP
    level: int | None = None
    threads: int | None = None
    source_date_epoch: int | None = None
    docker_media_types: bool = False

    def write(self, source: str | os.PathLike, out: BinaryIO, *, overlay: bool = False,
              deleted: Iterable[str] = ()) -> LayerBlob:
        """Write the layer for ``source`` to ``out`` (left open) and describe it."""
        media_type = mt.layer_media_type(self.compression, docker=self.docker_media_types)
        root = os.fspath(source)
        if not os.path.isdir(root):
            raise LayerError(f"cannot create a layer from {root!r}: not a directory")
        blob = DigestWriter(out)
        if self.compression == mt.UNCOMPRESSED:
            packed, tar = blob, blob  # one hash: the blob is the tar
        else:
            packed = compressor(blob, self.compression, self.level, self.threads)
            tar = DigestWriter(packed)
        try:
            _TreeArchiver(root, tar, overlay, _deletions_by_dir(deleted), self.source_date_epoch).run()
            tar.write(END_OF_ARCHIVE)
            if packed is not blob:
                packed.close()
        except OSError as exc:
            raise LayerError(f"cannot create a layer from {root!r}: {exc}") from None
        finally:
            if packed is not blob and not packed.closed:
                try:
                    packed.close()
                except Exception:  # already failing; the first error is the one to report
                    pass
        return LayerBlob(media_type, blob.digest, blob.size, tar.digest, tar.size)


def write_layer(source: str | os.PathLike, out: BinaryIO, *, compression: str = mt.GZIP,
                overlay: bool = False, deleted: Iterable[str] = (), **options) -> LayerBlob:
    """Shorthand for ``LayerWriter(compression, **options).write(source, out, ...)``."""
    return LayerWriter(compression=compression, **options).write(source, out, overlay=overlay, deleted=deleted)


def _deletions_by_dir(deleted: Iterable[str]) -> dict[str, set[str]]:
    """Deleted paths grouped by parent directory ("" is the root)."""
    out: dict[str, set[str]] = {}
    for path in deleted:
        parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise LayerError(f"cannot record deletion of {path!r}: not a path inside the image")
        out.setdefault("/".join(parts[:-1]), set()).add(parts[-1])
    return out


class _TreeArchiver:
    """One pass over a tree, writing tar entries into ``sink`` with buffering."""

    def __init__(self, root: str, sink: DigestWriter, overlay: bool,
                 deletions: dict[str, set[str]], epoch: int | None) -> None:
        self.root = root
        self.sink = sink
        self.overlay = overlay
        self.deletions = deletions
        self.epoch = epoch
        self.links: dict[tuple[int, int], str] = {}
        self.buf = bytearray()

    # -- output

    def _put(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if self.buf:
            self.sink.write(bytes(self.buf))
            self.buf.clear()

    def _mtime(self, st: os.stat_result) -> int:
        mtime = int(st.st_mtime)
        return min(mtime, self.epoch) if self.epoch is not None else mtime

    # -- walk

    def run(self) -> None:
        stack: list[Iterator[tuple[str, str]]] = [self._children("", self.root)]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            rel, path = item
            is_dir = self._entry(rel, path)
            if is_dir:
                stack.append(self._children(rel, path))
        for parent in sorted(self.deletions):  # deletions under directories not in the tree
            for name in sorted(self.deletions[parent]):
                self._whiteout(_join(parent, WHITEOUT_PREFIX + name), 0o644, 0, 0, self.epoch or 0)
        self._flush()

    def _children(self, rel: str, path: str) -> Iterator[tuple[str, str]]:
        """Sorted (relative name, absolute path) of a directory, whiteouts merged in."""
        with os.scandir(path) as it:
            names = sorted(e.name for e in it)
        if self.overlay and rel and is_opaque(path):
            st = os.lstat(path)
            self._whiteout(rel + "/" + OPAQUE_MARKER, st.st_mode & 0o7777, st.st_uid, st.st_gid, self._mtime(st))
        gone = self.deletions.pop(rel, None)
        if gone:
            # A deleted name still present was re-created (or is an overlay whiteout
            # already): its own entry covers it.
            present = set(names)
            gone = {WHITEOUT_PREFIX + n for n in gone if n not in present} - present
            names = sorted(present | gone)
        for name in names:
            child_rel = _join(rel, name)
            if gone and name in gone and not os.path.lexists(os.path.join(path, name)):
                self._whiteout(child_rel, 0o644, 0, 0, self.epoch or 0)
                continue
            yield child_rel, os.path.join(path, name)

    def _entry(self, rel: str, path: str) -> bool:
        """Write one entry; True when it is a directory to descend into."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise LayerError(f"{rel!r} disappeared while the layer was being written") from None
        mode = st.st_mode
        if self.overlay and is_whiteout(st):
            parent, _, name = rel.rpartition("/")
            self._whiteout(_join(parent, WHITEOUT_PREFIX + name), mode & 0o7777, st.st_uid, st.st_gid, self._mtime(st))
            return False
        if stat.S_ISSOCK(mode):
            return False  # sockets cannot be archived; docker skips them too
        entry = TarEntry(rel, mode=mode & 0o7777, uid=st.st_uid, gid=st.st_gid, mtime=self._mtime(st),
                         xattrs=_xattrs(path))
        if stat.S_ISDIR(mode):
            entry.name = rel + "/"
            entry.type = DIRTYPE
            self._put(encode_header(entry))
            return True
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is not None:
                entry.type, entry.linkname, entry.xattrs = LNKTYPE, first, {}
                self._put(encode_header(entry))
                return False
            self.links[key] = rel
        if stat.S_ISREG(mode):
            self._regular(entry, path, st.st_size)
        elif stat.S_ISLNK(mode):
            entry.type, entry.linkname = SYMTYPE, os.readlink(path)
            self._put(encode_header(entry))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            entry.type = CHRTYPE if stat.S_ISCHR(mode) else BLKTYPE
            entry.devmajor, entry.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self._put(encode_header(entry))
        elif stat.S_ISFIFO(mode):
            entry.type = FIFOTYPE
            self._put(encode_header(entry))
        return False

    def _regular(self, entry: TarEntry, path: str, size: int) -> None:
        entry.type, entry.size = REGTYPE, size
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if size <= _FLUSH_AT:  # small: one buffered piece
                data = os.read(fd, size)
                self._check_size(entry.name, len(data), size)
                self._put(encode_header(entry) + data + padding(size))
                return
            self._put(encode_header(entry))
            self._flush()
            left = size
            while left:  # large: stream it in chunks, never whole
                data = os.read(fd, min(_CHUNK, left))
                if not data:
                    break
                self.sink.write(data)
                left -= len(data)
            self._check_size(entry.name, size - left, size)
            self._put(padding(size))
        finally:
            os.close(fd)

    @staticmethod
    def _check_size(name: str, got: int, want: int) -> None:
        # A file changing under us would corrupt the tar stream; fail loudly instead.
        if got != want:
            raise LayerError(f"{name!r} changed size while the layer was being written ({want} → {got} bytes)")

    def _whiteout(self, rel: str, mode: int, uid: int, gid: int, mtime: int) -> None:
        self._put(encode_header(TarEntry(rel, REGTYPE, mode, uid, gid, 0, mtime)))


def _join(parent: str, name: str) -> str:
    return parent + "/" + name if parent else name


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return {}
        raise
    out = {}
    for name in sorted(names):
        if name.startswith(OVERLAY_XATTR_PREFIXES):
            if name.endswith(_UNSUPPORTED_OVERLAY_FEATURES):
                # The upper dir alone no longer describes the change: file data or a
                # renamed directory's contents live in the lower layers.
                raise LayerError(
                    f"{path!r} carries {name}: the overlay was mounted with metacopy or redirect_dir on; "
                    "remount with metacopy=off,redirect_dir=off to diff it as a layer")
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
    return out
