"""Writing a ``Selection`` into a directory, copying exactly what was digested.

The solver computes a COPY's cache key from ``Selection.digest`` and, on a
miss, copies the entries into a staging directory with ``copy_selection``.
Each file is re-hashed while it is copied and compared with the digest in
the selection: if the file changed between the two (an editor saving during
the build), the copy fails instead of producing a layer that does not match
its cache key.

The target is written defensively: sources are opened without following
symlinks, and nothing is ever written through a symlink that an earlier
entry created in the target (two sources may put ``x -> /etc`` and then
``x/passwd`` at the same destination; the link is replaced by a directory,
never followed).
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from builder.context.errors import ContextError
from builder.context.rmtree import remove_tree
from builder.context.source import BLOCK, CHAR, DIR, FIFO, FILE, SYMLINK, Entry, Selection

_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class CopyStats:
    """What a copy wrote."""

    entries: int = 0
    files: int = 0
    bytes: int = 0


class _Target:
    """A directory written to, with the directories known to be real (never symlinks)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.real_dirs: set[str] = {""}
        # Directories this copy created (so they started empty) and paths it wrote:
        # a new name in a fresh directory needs no lstat to make room for it.
        self.fresh_dirs: set[str] = set()
        self.written: set[str] = set()

    def path(self, rel: str) -> str:
        return self.root if not rel else f"{self.root}/{rel}"

    def ensure_dir(self, rel: str, mode: int = 0o755) -> None:
        """Make ``rel`` (and its parents) real directories, replacing anything else there."""
        missing: list[str] = []
        while rel not in self.real_dirs:
            missing.append(rel)
            rel = rel.rsplit("/", 1)[0] if "/" in rel else ""
        for rel in reversed(missing):  # top down
            path = self.path(rel)
            try:
                st = os.lstat(path)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(path)  # a file or symlink in the way: replaced, never followed
                    os.mkdir(path, mode)
            except FileNotFoundError:
                os.mkdir(path, mode)
                self.fresh_dirs.add(rel)
            self.real_dirs.add(rel)

    def clear(self, rel: str) -> str:
        """Make room for a non-directory at ``rel``; returns its path."""
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        self.ensure_dir(parent)
        path = self.path(rel)
        fresh = parent in self.fresh_dirs and rel not in self.written and rel not in self.real_dirs
        self.written.add(rel)
        if fresh:
            return path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return path
        if stat.S_ISDIR(st.st_mode):
            remove_tree(path)
            self.real_dirs = {d for d in self.real_dirs if d != rel and not d.startswith(rel + "/")}
            self.fresh_dirs = {d for d in self.fresh_dirs if d != rel and not d.startswith(rel + "/")}
        else:
            os.unlink(path)
        return path


def _check_name(rel: str) -> None:
    """Entry paths come from directory listings, but a Selection is plain data: check it."""
    if rel == "":
        return
    if rel.startswith("/") or any(part in ("", ".", "..") for part in rel.split("/")):
        raise ContextError(f"refusing to copy to the unsafe path {rel!r}")


def _copy_file(src: str, dst: str, entry: Entry, verify: bool, owner: tuple[int, int] | None, mode: int) -> int:
    """Copy one file, hashing as it goes; owner, mode and times are set on the open file."""
    try:
        fd = os.open(src, _OPEN_FLAGS)
    except OSError as exc:
        raise ContextError(f"cannot read {entry.source!r} from the build context: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ContextError(f"{entry.source!r} changed during the build (no longer a regular file); build again")
        h = hashlib.sha256()
        size = 0
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := os.read(fd, _CHUNK):
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
                size += len(chunk)
            if owner is not None:
                os.fchown(out, *owner)
            os.fchmod(out, mode)  # after chown, which clears setuid bits
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
    finally:
        os.close(fd)
    if verify and "sha256:" + h.hexdigest() != entry.content:
        os.unlink(dst)
        raise ContextError(f"{entry.source!r} changed during the build; build again")
    return size


def copy_selection(
    selection: Selection,
    target: Path | str,
    *,
    chown: tuple[int, int] | None = None,
    chmod: int | None = None,
    verify: bool = True,
) -> CopyStats:
    """Write every entry of ``selection`` under ``target`` (created if missing).

    ``chown``: owner for everything written (COPY --chown; Docker uses 0:0
    for context files when it is not given, so pass ``(0, 0)`` for those),
    or None to keep each entry's owner. ``chmod``: permission bits for files
    and directories (COPY --chmod), or None to keep each entry's. Modes of
    directories are applied last, so a read-only directory still receives
    its contents. Times are the source's (layers clamp them if asked).
    """
    try:
        return _copy_all(selection, _Target(Path(target)), chown, chmod, verify)
    except OSError as exc:
        where = exc.filename or target
        raise ContextError(f"cannot write {where}: {exc.strerror or exc}") from None


def _copy_all(selection: Selection, out: "_Target", chown: tuple[int, int] | None, chmod: int | None,
              verify: bool) -> CopyStats:
    os.makedirs(out.root, exist_ok=True)
    stats = CopyStats()
    dirs: list[tuple[str, int, str]] = []  # (path, mode, source): modes and times go last
    am_root = os.geteuid() == 0
    root = str(selection.root)
    for entry in selection.entries:
        _check_name(entry.path)
        uid, gid = chown if chown is not None else (entry.uid, entry.gid)
        mode = chmod if chmod is not None and entry.type in (FILE, DIR) else entry.mode
        src = root if entry.source == "." else f"{root}/{entry.source}"
        if entry.type == DIR:
            out.ensure_dir(entry.path)
            path = out.path(entry.path)
            dirs.append((path, mode, src))
        else:
            path = out.clear(entry.path)
            if entry.type == FILE:
                owner = (uid, gid) if am_root or chown is not None else None
                stats.bytes += _copy_file(src, path, entry, verify, owner, mode)
                stats.files += 1
                stats.entries += 1
                continue
            if entry.type == SYMLINK:
                os.symlink(entry.linkname, path)
            elif entry.type == FIFO:
                os.mkfifo(path, 0o600)
            elif entry.type in (CHAR, BLOCK):
                kind = stat.S_IFCHR if entry.type == CHAR else stat.S_IFBLK
                os.mknod(path, kind | 0o600, entry.rdev)
        if am_root or chown is not None:
            try:
                os.chown(path, uid, gid, follow_symlinks=False)
            except PermissionError:
                if am_root:
                    raise
        if entry.type != DIR:
            if entry.type != SYMLINK:
                os.chmod(path, mode)  # after chown, which clears setuid bits
            _copy_times(src, path)
        stats.entries += 1
    for path, mode, src in reversed(dirs):
        os.chmod(path, mode)
        _copy_times(src, path)
    return stats


def _copy_times(src: str, dst: str) -> None:
    try:
        st = os.lstat(src)
    except OSError:
        return
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
