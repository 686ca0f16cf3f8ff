"""Apply a layer blob onto a directory: decompress, extract, honour whiteouts, stay inside.

Containment rules (a layer is untrusted input):

* member names that are absolute or contain ``..`` are refused, as are
  hard links whose target is;
* parent directories are resolved *inside* the target, the way a chroot
  would: a symlinked parent is followed, but an absolute or ``..``-heavy link
  target is interpreted relative to the target root, never the host's. So
  ``lib -> /usr/lib`` works as it does in an image, and ``evil -> /etc``
  followed by ``evil/passwd`` writes ``TARGET/etc/passwd``;
* the final component is never followed: whatever is there is removed and
  the new entry created with ``O_EXCL|O_NOFOLLOW``;
* sparse members, unknown entry types and overlay xattrs are refused or
  dropped; device nodes are created only when permitted.

Whiteouts (``.wh.NAME``) delete from lower layers; an opaque marker
(``.wh..wh..opq``) empties a directory of lower content. Entries of the layer
being applied are never removed by its own whiteouts, wherever they appear.
"""
from __future__ import annotations

import errno
import os
import queue
import shutil
import stat
import threading
from dataclasses import dataclass
from typing import BinaryIO

from builder.image.compress import open_layer_stream
from builder.image.errors import LayerError
from builder.image.layer_writer import OPAQUE_MARKER, OVERLAY_XATTR_PREFIXES, WHITEOUT_PREFIX
from builder.image import tarreader as tr
from builder.image.tarreader import MemberContent, TarMember, read_members

MAX_NAME_BYTES = 4096
MAX_DEPTH = 256          # deeper trees break path-based syscalls and recursive removal
MAX_SYMLINK_HOPS = 40    # as the kernel's MAXSYMLINKS
_SMALL_FILE = 1 << 20    # files up to this size are finished on the helper thread
_PENDING_FILES = 32      # bounds the helper's queue: memory and open descriptors


@dataclass
class ApplyStats:
    """What an apply did (for progress output and tests)."""

    entries: int = 0
    bytes: int = 0
    whiteouts: int = 0
    skipped_devices: int = 0
    skipped_xattrs: int = 0


def apply_layer(blob: BinaryIO, target: str | os.PathLike, media_type: str | None = None, *,
                same_owner: bool | None = None, devices: bool | None = None) -> ApplyStats:
    """Extract the layer ``blob`` (of ``media_type``; sniffed when None) onto ``target``.

    ``same_owner`` (default: when running as root) restores uid/gid;
    ``devices`` (default: when running as root) creates device nodes, which are
    otherwise skipped and counted. Raises ``LayerError`` on unsafe or corrupt input;
    what was extracted before the error stays (apply to a scratch dir to be atomic).
    """
    root = os.path.realpath(os.fspath(target))
    if not os.path.isdir(root):
        raise LayerError(f"cannot apply layer: {os.fspath(target)!r} is not a directory")
    is_root = os.geteuid() == 0
    applier = _Applier(root, is_root if same_owner is None else same_owner,
                       is_root if devices is None else devices)
    try:
        stream = open_layer_stream(blob, media_type)
        try:
            applier.run(_CheckedReader(stream))
        finally:
            if stream is not blob:
                stream.close()
    except OSError as exc:
        raise LayerError(f"cannot apply layer: {exc}") from None
    except (OverflowError, ValueError) as exc:  # e.g. an mtime beyond what the filesystem holds
        raise LayerError(f"cannot apply layer: {exc}") from None
    return applier.stats


class _CheckedReader:
    """Turns any failure of the decompressing stream into a one-line ``LayerError``."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def read(self, n: int) -> bytes:
        try:
            return self._stream.read(n)
        except Exception as exc:  # codecs raise their own types (IsalError, ZstdError, EOFError, ...)
            raise LayerError(f"layer data is corrupt: {exc or type(exc).__name__}") from None


def clean_name(name: str) -> str:
    """A member name as a relative path without ``.``/empty parts; refuses escapes."""
    if (name and name[0] != "/" and "\0" not in name and "//" not in name and "." not in name[:1]
            and "/." not in name and len(name) <= MAX_NAME_BYTES // 4 and name.count("/") < MAX_DEPTH):
        return name.rstrip("/")  # fast path: already clean (short enough for any encoding)
    if "\0" in name:
        raise LayerError(f"refusing layer entry {name!r}: NUL in name")
    if name.strip("/") in ("", "."):
        return ""  # "/", "./": the root itself
    if name.startswith("/"):
        raise LayerError(f"refusing layer entry {name!r}: absolute path")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise LayerError(f"refusing layer entry {name[:60]!r}...: name longer than {MAX_NAME_BYTES} bytes")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"refusing layer entry {name!r}: '..' would leave the image root")
    if len(parts) > MAX_DEPTH:
        raise LayerError(f"refusing layer entry {name[:60]!r}...: deeper than {MAX_DEPTH} levels")
    return "/".join(parts)


class _Applier:
    def __init__(self, root: str, same_owner: bool, devices: bool) -> None:
        self.root = root
        self.same_owner = same_owner
        self.devices = devices
        self.stats = ApplyStats()
        self.dirs: dict[str, str] = {"": root}   # relative parent → real path, resolved in scope
        self.created: set[str] = set()           # entries of this layer (whiteouts spare them)
        self.dir_meta: list[tuple[str, int, int]] = []  # (path, mode, mtime), set at the end
        self.opaque: list[str] = []
        # To skip chown/chmod calls that would change nothing (most files of most layers).
        self.ids = (os.geteuid(), os.getegid())
        self.umask = _current_umask()
        self.setgid_dirs: set[str] = set()

    def run(self, stream: BinaryIO) -> None:
        self.finisher = _FileFinisher()
        try:
            for member, content in read_members(stream):
                self.stats.entries += 1
                self._member(member, content)
        finally:
            self.stats.skipped_xattrs += self.finisher.close()
        for rel in self.opaque:
            self._apply_opaque(rel)
        # Directory modes and mtimes last: a read-only directory must still take its
        # children, and creating them changed the mtime.
        for path, mode, mtime in reversed(self.dir_meta):
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, mode)
                os.utime(path, (mtime, mtime), follow_symlinks=False)

    # -- resolving paths inside the root

    def _dir(self, rel: str, create: bool) -> str | None:
        """The real path of directory ``rel`` with symlinks resolved inside the root."""
        cached = self.dirs.get(rel)
        if cached is not None:
            return cached
        real: list[str] = []
        pending = list(reversed(rel.split("/"))) if rel else []
        hops = 0
        while pending:
            comp = pending.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if real:
                    real.pop()  # never above the root, as in a chroot
                continue
            path = os.path.join(self.root, *real, comp)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(path, 0o755)
                real.append(comp)
                continue
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise LayerError(f"refusing layer entry under {rel!r}: too many levels of symbolic links")
                link = os.readlink(path)
                if link.startswith("/"):
                    real = []
                pending.extend(reversed(link.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                if not create:
                    return None
                raise LayerError(f"cannot extract under {rel!r}: {'/'.join(real + [comp])!r} is not a directory")
            real.append(comp)
        resolved = os.path.join(self.root, *real)
        self.dirs[rel] = resolved
        if os.stat(resolved).st_mode & stat.S_ISGID:  # new files would take the directory's group
            self.setgid_dirs.add(resolved)
        return resolved

    def _forget_dirs(self) -> None:
        """A directory or symlink was removed or replaced: resolved parents may be stale."""
        self.dirs = {"": self.root}
        self.setgid_dirs = set()

    def _remove(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
            self._forget_dirs()
        else:
            os.unlink(path)
            if stat.S_ISLNK(st.st_mode):
                self._forget_dirs()

    # -- entries

    def _member(self, m: TarMember, content: MemberContent) -> None:
        rel = clean_name(m.name)
        if not rel:
            return  # the root itself: the target's own metadata is not the layer's to change
        parent_rel, _, base = rel.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent_rel, base)
            return
        parent = self._dir(parent_rel, create=True)
        path = f"{parent}/{base}"
        self.created.add(rel)
        if m.type == tr.DIRECTORY:
            self._directory(path, m)
        elif m.type == tr.REGULAR:
            self._regular(path, parent, m, content)
        elif m.type == tr.SYMLINK:
            self._remove(path)
            os.symlink(m.linkname, path)
            self._owner(path, m)
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
        elif m.type == tr.HARDLINK:
            self._hardlink(path, m)
        else:
            self._special(path, m)

    def _directory(self, path: str, m: TarMember) -> None:
        try:
            st = os.lstat(path)
            keep = stat.S_ISDIR(st.st_mode)
        except FileNotFoundError:
            keep = False
        if not keep:
            self._remove(path)
            os.mkdir(path, 0o700)
        self._owner(path, m)
        self._xattrs(path, m)
        self.dir_meta.append((path, m.mode & 0o7777, int(m.mtime)))

    def _regular(self, path: str, parent: str, m: TarMember, content: MemberContent) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        mode = m.mode & 0o7777
        try:
            fd = os.open(path, flags, mode & 0o777)
        except FileExistsError:  # replacing a lower layer's entry (of any type)
            self._remove(path)
            fd = os.open(path, flags, mode & 0o777)
        chown = (m.uid, m.gid) if self.same_owner and ((m.uid, m.gid) != self.ids or parent in self.setgid_dirs) else None
        chmod = mode if mode & 0o7000 or mode & self.umask else None
        self.stats.bytes += m.size
        if m.size <= _SMALL_FILE:
            # The name exists now, so later entries see it; data and metadata go through
            # the descriptor on the helper thread, overlapping with parsing.
            try:
                data = content.read_all()
            except BaseException:
                os.close(fd)
                raise
            self.finisher.submit(_FileJob(fd, data, chown, chmod, m.xattrs, m.mtime))
            return
        try:
            content.copy_to(lambda view: _write_all(fd, view))
            self.stats.skipped_xattrs += _finish_file(fd, chown, chmod, m.xattrs, m.mtime)
        finally:
            os.close(fd)

    def _hardlink(self, path: str, m: TarMember) -> None:
        try:
            target_rel = clean_name(m.linkname)
        except LayerError:
            raise LayerError(f"refusing hard link {m.name!r} -> {m.linkname!r}: target outside the image") from None
        t_parent_rel, _, t_base = target_rel.rpartition("/")
        t_parent = self._dir(t_parent_rel, create=False) if t_base else None
        source = os.path.join(t_parent, t_base) if t_parent else None
        if source is None or not os.path.lexists(source):
            raise LayerError(f"hard link {m.name!r} -> {m.linkname!r}: target does not exist in the image")
        if os.path.isdir(source) and not os.path.islink(source):
            raise LayerError(f"refusing hard link {m.name!r} -> {m.linkname!r}: target is a directory")
        if os.path.abspath(source) == os.path.abspath(path):
            return
        self._remove(path)
        os.link(source, path, follow_symlinks=False)

    def _special(self, path: str, m: TarMember) -> None:
        self._remove(path)
        if m.type == tr.FIFO:
            os.mkfifo(path, m.mode & 0o7777)
        else:
            if not self.devices:
                self.stats.skipped_devices += 1
                return
            kind = stat.S_IFCHR if m.type == tr.CHARDEV else stat.S_IFBLK
            try:
                os.mknod(path, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
            except PermissionError:  # e.g. inside a user namespace
                self.stats.skipped_devices += 1
                return
        self._owner(path, m)
        os.chmod(path, m.mode & 0o7777)
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def _owner(self, path: str, m: TarMember) -> None:
        if self.same_owner:
            os.lchown(path, m.uid, m.gid)

    def _xattrs(self, path: str, m: TarMember) -> None:
        for name, value in m.xattrs.items():
            if name.startswith(OVERLAY_XATTR_PREFIXES):
                continue  # would let a layer steer overlayfs when used as a lower dir
            try:
                os.setxattr(path, name, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                    raise
                self.stats.skipped_xattrs += 1

    # -- whiteouts

    def _whiteout(self, parent_rel: str, base: str) -> None:
        self.stats.whiteouts += 1
        if base == OPAQUE_MARKER:
            self.created.add(parent_rel)
            self.opaque.append(parent_rel)  # applied at the end: entries may follow the marker
            return
        name = base[len(WHITEOUT_PREFIX):]
        if not name or name in (".", ".."):
            raise LayerError(f"refusing malformed whiteout {parent_rel + '/' + base!r}")
        rel = f"{parent_rel}/{name}" if parent_rel else name
        if rel in self.created:
            return  # whiteouts hide lower layers only
        parent = self._dir(parent_rel, create=False)
        if parent is not None:
            self._remove(os.path.join(parent, name))

    def _apply_opaque(self, rel: str) -> None:
        """Remove lower-layer content under ``rel``, keeping what this layer created."""
        top = self._dir(rel, create=False)
        if top is None:
            return
        stack = [(rel, top)]
        while stack:
            d_rel, d_path = stack.pop()
            with os.scandir(d_path) as it:
                children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            for name, is_dir in children:
                c_rel = f"{d_rel}/{name}" if d_rel else name
                c_path = os.path.join(d_path, name)
                if c_rel not in self.created:
                    self._remove(c_path)
                elif is_dir:
                    stack.append((c_rel, c_path))


@dataclass
class _FileJob:
    fd: int
    data: bytes
    chown: tuple[int, int] | None
    chmod: int | None
    xattrs: dict[str, bytes]
    mtime: int


def _finish_file(fd: int, chown: tuple[int, int] | None, chmod: int | None,
                 xattrs: dict[str, bytes], mtime: int) -> int:
    """Owner, mode (after chown, which clears set-id bits), xattrs, mtime; returns xattrs skipped."""
    if chown is not None:
        os.fchown(fd, *chown)
    if chmod is not None:
        os.fchmod(fd, chmod)
    skipped = 0
    for name, value in xattrs.items():
        if name.startswith(OVERLAY_XATTR_PREFIXES):
            continue
        try:
            os.setxattr(fd, name, value)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                raise
            skipped += 1
    os.utime(fd, (mtime, mtime))
    return skipped


class _FileFinisher:
    """Writes small files' content and metadata through their descriptors on one helper thread.

    Only descriptor operations happen there; every change to names stays on the
    calling thread, in archive order, so the helper cannot reorder anything visible.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[_FileJob | None] = queue.Queue(_PENDING_FILES)
        self._error: BaseException | None = None
        self._skipped = 0
        self._thread = threading.Thread(target=self._work, name="layer-apply-files", daemon=True)
        self._thread.start()

    def submit(self, job: _FileJob) -> None:
        if self._error is not None:
            os.close(job.fd)
            raise self._error
        self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if self._error is None:
                    _write_all(job.fd, memoryview(job.data))
                    self._skipped += _finish_file(job.fd, job.chown, job.chmod, job.xattrs, job.mtime)
            except BaseException as exc:  # reported on the calling thread
                self._error = self._error or exc
            finally:
                os.close(job.fd)

    def close(self) -> int:
        """Wait for every pending file; re-raise the first failure; returns xattrs skipped."""
        self._jobs.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._skipped


def _current_umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o7777  # unknown: never skip the chmod


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]
