"""A build context sent as a tar stream, extracted so that nothing lands outside it.

``pybuild build - < context.tar`` (plain, gzip, bzip2 or xz, as Docker
accepts). Every entry is checked before anything is written:

* names are cleaned; an absolute name is taken relative to the context and a
  name that climbs out with ``..`` is refused (Docker refuses such archives);
* no entry is written through a symlink: each parent directory is checked
  with ``lstat`` and must be a real directory created by this extraction;
  an existing entry at the target is removed first, so a symlink planted by
  an earlier entry is replaced, not written through;
* hard links must point at a regular file extracted earlier;
* symlinks are stored as they are: whatever they point at, they are never
  followed while extracting, and COPY resolves them inside the context;
* device nodes are refused (a context has no use for them);
* an optional byte limit stops absurd archives.
"""
from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from builder.context.errors import ContextError, UnsafeArchive
from builder.context.gopath import go_clean
from builder.context.rmtree import remove_tree

_CHUNK = 1 << 20


def _safe_name(name: str) -> str:
    cleaned = go_clean("/" + name) if not name.startswith("/") else go_clean(name)
    # go_clean("/" + name) already clamps ".." at the root; detect climbing explicitly.
    depth = 0
    for part in name.split("/"):
        if part in ("", "."):
            continue
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise UnsafeArchive(f"build context archive entry {name!r} points outside the context")
    return cleaned.lstrip("/")


def _check_parents(root: str, rel: str) -> None:
    """Create the parents of ``rel`` as real directories, refusing symlinks on the way."""
    parts = rel.split("/")[:-1]
    current = root
    for part in parts:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeArchive(
                f"build context archive entry {rel!r} would be written through "
                f"{os.path.relpath(current, root)!r}, which is not a directory")


def _clear(target: str) -> None:
    """Remove what an earlier entry left at ``target`` (never following it)."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        remove_tree(target)
    else:
        os.unlink(target)


def extract_context(stream: BinaryIO, *, tmp_dir: Path | str | None = None,
                    max_bytes: int | None = None) -> Path:
    """Extract a tar stream into a new temporary directory and return it."""
    root = tempfile.mkdtemp(prefix="pybuild-context-", dir=tmp_dir)
    try:
        _extract(stream, root, max_bytes)
    except BaseException:
        remove_tree(root, ignore_errors=True)
        raise
    return Path(root)


def _extract(stream: BinaryIO, root: str, max_bytes: int | None) -> None:
    written = 0
    dir_modes: list[tuple[str, int, int, int]] = []
    try:
        archive = tarfile.open(fileobj=stream, mode="r|*")
    except tarfile.TarError as exc:
        raise ContextError(f"the build context on standard input is not a tar archive: {exc}") from None
    try:
        for member in archive:
            rel = _safe_name(member.name)
            if rel in ("", "."):
                if member.isdir():
                    dir_modes.append((root, member.mode & 0o7777, member.uid, member.gid))
                continue
            _check_parents(root, rel)
            target = os.path.join(root, rel)
            if member.isdir():
                try:
                    st = os.lstat(target)
                    if not stat.S_ISDIR(st.st_mode):
                        _clear(target)
                        os.mkdir(target, 0o755)
                except FileNotFoundError:
                    os.mkdir(target, 0o755)
                dir_modes.append((target, member.mode & 0o7777, member.uid, member.gid))
                continue
            _clear(target)
            if member.isreg():
                if max_bytes is not None and written + member.size > max_bytes:
                    raise ContextError(
                        f"the build context archive is larger than the limit of {max_bytes} bytes")
                source = archive.extractfile(member)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := source.read(_CHUNK):  # type: ignore[union-attr]
                        out.write(chunk)
                written += member.size
            elif member.issym():
                os.symlink(member.linkname, target)
            elif member.islnk():
                link_rel = _safe_name(member.linkname)
                link_abs = os.path.join(root, link_rel)
                try:
                    lst = os.lstat(link_abs)
                except FileNotFoundError:
                    raise UnsafeArchive(
                        f"build context archive entry {rel!r} is a hard link to {member.linkname!r},"
                        " which is not in the archive before it") from None
                if not stat.S_ISREG(lst.st_mode):
                    raise UnsafeArchive(
                        f"build context archive entry {rel!r} is a hard link to {member.linkname!r},"
                        " which is not a regular file")
                os.link(link_abs, target, follow_symlinks=False)
                continue
            elif member.isfifo():
                os.mkfifo(target, 0o600)
            else:
                raise UnsafeArchive(
                    f"build context archive entry {rel!r} is a device node; contexts cannot hold devices")
            _apply_metadata(target, member.mode & 0o7777, member.uid, member.gid, member.mtime,
                            symlink=member.issym())
        # Directory modes last, so a read-only directory does not stop its own extraction.
        for path, mode, uid, gid in reversed(dir_modes):
            _apply_metadata(path, mode, uid, gid, None, symlink=False)
    except tarfile.TarError as exc:
        raise ContextError(f"the build context archive is damaged: {exc}") from None
    except OSError as exc:
        raise ContextError(f"cannot extract the build context archive: {exc.strerror or exc}") from None
    finally:
        archive.close()


def _apply_metadata(path: str, mode: int, uid: int, gid: int, mtime: float | None, *, symlink: bool) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, gid, follow_symlinks=False)
    if not symlink:
        os.chmod(path, mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
