"""Unpacked layer snapshots: each layer applied once onto an empty directory and kept for reuse.

``ROOT/snapshots/sha256/<diffID hex>/`` holds one layer's own files, with its
whiteouts in overlayfs form (a 0/0 character device for a deleted name, the
``trusted.overlay.opaque=y`` xattr on an opaque directory, or ``user.overlay.opaque``
when not root), so a stack of snapshots can be given to overlayfs as ``lowerdir``s directly. Snapshots
are read-only by convention: never write into one.

The layer is unpacked into scratch space, its uncompressed bytes are checked
against the diffID, and only then is the directory renamed into place; one
process unpacks while others wait for it.
"""
from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

from builder.image.compress import open_layer_stream
from builder.image.digest import parse_digest
from builder.image.layer import OPAQUE_MARKER, WHITEOUT_PREFIX, apply_layer, clean_name
from builder.image import mediatypes as mt
from builder.image.oci import Descriptor
from builder.store.errors import BlobNotFoundError, DigestMismatchError, StoreError
from builder.store.locks import file_lock
from builder.store.tmpdirs import remove_tree

if TYPE_CHECKING:
    from builder.store.store import ContentStore

_CHUNK = 1 << 20


def snapshot_dir(store: "ContentStore", diff_id: str) -> Path:
    return store.root / "snapshots" / "sha256" / parse_digest(diff_id).split(":", 1)[1]


def unpack_lock(store: "ContentStore", diff_id: str) -> Path:
    return store.root / "locks" / f"snapshot-{diff_id[7:]}.unpack.lock"


def use_lock(store: "ContentStore", diff_id: str) -> Path:
    return store.root / "locks" / f"snapshot-{diff_id[7:]}.use.lock"


def layer_snapshot(store: "ContentStore", layer: str | Descriptor) -> Path:
    """The snapshot directory of ``layer`` (a diffID or a manifest layer descriptor), unpacking it if needed."""
    diff_id, blob_digest, media_type = _identify(store, layer)
    path = snapshot_dir(store, diff_id)
    if path.is_dir():
        store.index.touch_snapshot(diff_id)
        return path
    with file_lock(unpack_lock(store, diff_id), exclusive=True), store.lease():
        if path.is_dir():  # another process finished it while we waited
            return path
        scratch = Path(tempfile.mkdtemp(prefix=f"snap-{diff_id[7:19]}-", dir=store.scratch.path))
        try:
            with store.open_blob(blob_digest) as blob:
                _unpack(blob, media_type, scratch, diff_id)
            size = tree_size(scratch)
            os.chmod(scratch, 0o755)  # mkdtemp makes it 0700; a snapshot root is a filesystem root
            os.rename(scratch, path)
        except BaseException:
            remove_tree(scratch)
            raise
        store.index.record_snapshot(diff_id, size)
    return path


def adopt_snapshot(store: "ContentStore", diff_id: str, directory: Path) -> Path:
    """Move ``directory`` (the tree a layer was just written from, whiteouts in overlay form) in as
    the snapshot of ``diff_id``, saving an unpack; when one exists already, ``directory`` is removed."""
    path = snapshot_dir(store, diff_id)
    with file_lock(unpack_lock(store, diff_id), exclusive=True):
        if path.is_dir():
            remove_tree(Path(directory))
            return path
        size = tree_size(Path(directory))
        os.rename(directory, path)
        store.index.record_snapshot(diff_id, size)
    return path


@contextmanager
def lease_snapshots(store: "ContentStore", diff_ids: list[str]) -> Iterator[None]:
    """Shared locks that keep ``prune`` from removing these snapshots while they are in use."""
    with ExitStack() as stack:
        for diff_id in diff_ids:
            stack.enter_context(file_lock(use_lock(store, parse_digest(diff_id)), exclusive=False))
        yield


def _identify(store: "ContentStore", layer: str | Descriptor) -> tuple[str, str, str]:
    """(diffID, blob digest, media type) for a diffID or a layer descriptor."""
    if isinstance(layer, Descriptor):
        diff_id = store.index.diff_id_of(layer.digest)
        if diff_id is None:
            raise BlobNotFoundError(f"layer {layer.digest} is not part of any image in the store")
        return diff_id, layer.digest, layer.media_type
    diff_id = parse_digest(layer)
    for digest, media_type in store.index.layer_blobs_for(diff_id):
        if store.has_content(digest):  # on disk, or lazy (fetched when opened)
            return diff_id, digest, media_type
    raise BlobNotFoundError(f"no layer with diffID {diff_id} is in the store")


class _HashingReader:
    """Reads through to ``source`` while hashing, so the diffID is checked in the same pass."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(_CHUNK):
            pass
        return "sha256:" + self.hash.hexdigest()


def _unpack(blob: BinaryIO, media_type: str, target: Path, diff_id: str) -> None:
    stream = open_layer_stream(blob, media_type)
    try:
        reader = _HashingReader(stream)
        stats = apply_layer(reader, target, mt.OCI_LAYER_TAR)
        got = reader.drain()
    finally:
        if stream is not blob:
            stream.close()
    if got != diff_id:
        raise DigestMismatchError(f"layer {diff_id[:19]} unpacks to {got[:19]}: the blob is corrupt")
    if stats.whiteouts:  # most layers have none: no second pass for them
        blob.seek(0)
        _mark_whiteouts(blob, media_type, target)


def _mark_whiteouts(blob: BinaryIO, media_type: str, target: Path) -> None:
    """Second pass over the tar headers: turn OCI whiteouts into overlayfs ones."""
    stream = open_layer_stream(blob, media_type)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = clean_name(member.name)
                parent, _, base = name.rpartition("/")
                if not base.startswith(WHITEOUT_PREFIX):
                    continue
                parent_dir = _inside(target, parent)
                if base == OPAQUE_MARKER:
                    _set_opaque(parent_dir)
                else:
                    _mknod_whiteout(parent_dir / base[len(WHITEOUT_PREFIX):])
    finally:
        if stream is not blob:
            stream.close()


def _inside(root: Path, rel: str) -> Path:
    """``root/rel`` as a real directory, created if missing; a symlink on the way is refused
    (following it could leave the snapshot)."""
    path = root
    for part in filter(None, rel.split("/")):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"layer has a whiteout under {rel!r}, which is not a directory in that layer")
    return path


def _set_opaque(path: Path) -> None:
    """Mark an opaque directory: ``trusted.overlay.opaque`` as root; without root (where trusted.*
    is refused) ``user.overlay.opaque``, which overlayfs reads when mounted with ``userxattr``."""
    try:
        os.setxattr(path, "trusted.overlay.opaque", b"y", follow_symlinks=False)
    except PermissionError:
        try:
            os.setxattr(path, "user.overlay.opaque", b"y", follow_symlinks=False)
        except OSError as exc:
            raise StoreError(f"cannot mark an opaque directory in a snapshot: {exc.strerror}") from None


def _mknod_whiteout(path: Path) -> None:
    if os.path.lexists(path):
        return  # the layer re-creates the name itself
    try:
        # Linux lets unprivileged users make exactly this device (the overlayfs whiteout).
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    except OSError as exc:
        raise StoreError(f"cannot record a whiteout in a snapshot (a 0/0 character device): {exc.strerror}") from None


def tree_size(root: Path) -> int:
    """Bytes of everything under ``root`` (files, links and directory entries), as ``df`` reports it."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total
