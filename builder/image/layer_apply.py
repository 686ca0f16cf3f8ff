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
* no path, named or reached through symlinks, goes deeper than ``MAX_DEPTH``
  directories below the target (deeper trees break path syscalls and removal);
* sparse members, unknown entry types and overlay xattrs are refused or
  dropped; device nodes are created only when permitted;
* run as an unprivileged user, ownership is not restored, device nodes are
  skipped and set-user/group-ID bits are dropped from files (an unprivileged
  copy of a set-ID program would hand its owner's rights to whoever runs it),
  with one warning line per layer;
* a layer may write at most ``ExtractLimits.max_bytes`` of file content and
  hold ``max_entries`` entries (decompression bombs); content is streamed, so
  memory stays bounded whatever the sizes.

Whiteouts (``.wh.NAME``) delete from lower layers; an opaque marker
(``.wh..wh..opq``) empties a directory of lower content. Entries of the layer
being applied are never removed by its own whiteouts, wherever they appear.

Speed: extraction of small-file trees is bound by per-entry work, so a regular
file below an already-resolved directory takes a short path (create, one
write, mtime, close); decompression and reading run on a helper thread. In a
big layer, small files in directories this apply created are handed to a helper
process (``extract_helper``) that creates them on another core while this one
parses, when a core is free (a decompressing thread takes one); it waits for the
helper before anything that could depend on those files ($PYBUILD_EXTRACT_HELPER:
``auto``, ``off``, or ``always`` for tests).
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from builder import cpus
from builder.image.compress import ReadAhead, open_layer_stream, read_ahead
from builder.image.errors import LayerError
from builder.image.extract_helper import CHMOD, CHOWN, FileCreator
from builder.image.layer_writer import OPAQUE_MARKER, OVERLAY_XATTR_PREFIXES, WHITEOUT_PREFIX
from builder.image import tarreader as tr
from builder.image.tarreader import TarMember, TarReader

MAX_NAME_BYTES = 4096
MAX_DEPTH = 256          # deeper trees break path-based syscalls and recursive removal
MAX_SYMLINK_HOPS = 40    # as the kernel's MAXSYMLINKS
_SETID = stat.S_ISUID | stat.S_ISGID
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

MAX_BYTES_ENV = "PYBUILD_MAX_EXTRACT_BYTES"
MAX_ENTRIES_ENV = "PYBUILD_MAX_EXTRACT_ENTRIES"
DEFAULT_MAX_BYTES = 64 << 30
DEFAULT_MAX_ENTRIES = 4_000_000
HELPER_ENV = "PYBUILD_EXTRACT_HELPER"
HELPER_AFTER = 256   # small files seen before the helper process is worth starting
# New entries of these types neither depend on nor disturb files queued to the helper.
_INDEPENDENT_TYPES = (tr.DIRECTORY, tr.REGULAR, tr.SYMLINK)


@dataclass(frozen=True)
class ExtractLimits:
    """Caps on what one layer (or ADDed archive) may extract: a bomb fails with a clear error."""

    max_bytes: int = DEFAULT_MAX_BYTES      # file content, summed over the archive
    max_entries: int = DEFAULT_MAX_ENTRIES  # members of any type

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ExtractLimits:
        """Defaults, overridden by $PYBUILD_MAX_EXTRACT_BYTES (e.g. 512M, 100G) and _ENTRIES."""
        env = os.environ if environ is None else environ
        return cls(_size_setting(env, MAX_BYTES_ENV, DEFAULT_MAX_BYTES),
                   _size_setting(env, MAX_ENTRIES_ENV, DEFAULT_MAX_ENTRIES))


def _size_setting(env, name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:].upper(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit():
        raise LayerError(f"${name}={text!r} is not a number (optionally with K, M, G or T)")
    return int(digits) * scale


@dataclass
class ApplyStats:
    """What an apply did (for progress output and tests)."""

    entries: int = 0
    bytes: int = 0
    whiteouts: int = 0
    skipped_devices: int = 0
    skipped_xattrs: int = 0
    dropped_setid: int = 0
    skipped_names: list[str] = field(default_factory=list)  # first few devices / set-ID files, for warnings


def apply_layer(blob: BinaryIO, target: str | os.PathLike, media_type: str | None = None, *,
                same_owner: bool | None = None, devices: bool | None = None,
                limits: ExtractLimits | None = None,
                warn: Callable[[str], None] | None = None) -> ApplyStats:
    """Extract the layer ``blob`` (of ``media_type``; sniffed when None) onto ``target``.

    ``same_owner`` (default: when running as root) restores uid/gid;
    ``devices`` (default: when running as root) creates device nodes, which are
    otherwise skipped and counted. Not as root, set-ID bits are dropped too; what
    was skipped is reported through ``warn`` (default: one line on stderr).
    ``limits`` defaults to ``ExtractLimits.from_env()``. Raises ``LayerError`` on
    unsafe or corrupt input, or when a limit is reached; what was extracted
    before the error stays (apply to a scratch dir to be atomic).
    """
    root = os.path.realpath(os.fspath(target))
    if not os.path.isdir(root):
        raise LayerError(f"cannot apply layer: {os.fspath(target)!r} is not a directory")
    is_root = os.geteuid() == 0
    applier = _Applier(root, is_root if same_owner is None else same_owner,
                       is_root if devices is None else devices, keep_setid=is_root,
                       limits=limits or ExtractLimits.from_env())
    stream = None
    try:
        stream = open_layer_stream(blob, media_type)
        # Compressed streams inflate on their own thread. Other streams that do work per
        # read (the store's hashes the tar) are read on one too; plain files need not be.
        direct = isinstance(stream, (ReadAhead, io.BufferedReader, io.FileIO, io.BytesIO))
        source = stream if direct else read_ahead(stream)
        try:
            applier.run(_CheckedReader(source), threaded=isinstance(source, ReadAhead))
        finally:
            if source is not stream:
                source.close()
    except OSError as exc:
        raise LayerError(f"cannot apply layer: {_one_line(exc)}") from None
    except (OverflowError, ValueError) as exc:  # e.g. an mtime beyond what the filesystem holds
        raise LayerError(f"cannot apply layer: {exc}") from None
    finally:
        if stream is not None and stream is not blob:
            stream.close()
    stats = applier.stats
    if stats.skipped_devices or stats.dropped_setid:
        (warn or _stderr_warning)(_skipped_message(stats))
    return stats


def _skipped_message(stats: ApplyStats) -> str:
    parts = []
    if stats.skipped_devices:
        parts.append(f"skipped {stats.skipped_devices} device node(s)")
    if stats.dropped_setid:
        parts.append(f"dropped set-user/group-ID bits of {stats.dropped_setid} file(s)")
    names = ", ".join(repr(n) for n in stats.skipped_names)
    more = ", ..." if stats.skipped_devices + stats.dropped_setid > len(stats.skipped_names) else ""
    return f"layer: {' and '.join(parts)} (not running as root): {names}{more}"


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _one_line(exc: OSError) -> str:
    """An OSError as one line of bounded length (paths may be long or hold newlines)."""
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        name = os.fsdecode(exc.filename)
        text += f": {name[:200]!r}" + ("..." if len(name) > 200 else "")
    return text


class _CheckedReader:
    """Turns any failure of the decompressing stream into a one-line ``LayerError``."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def read(self, n: int) -> bytes:
        try:
            return self._stream.read(n)
        except LayerError:
            raise
        except Exception as exc:  # codecs raise their own types (IsalError, ZstdError, EOFError, ...)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LayerError(f"layer data is corrupt: {first}") from None


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
        raise LayerError(f"refusing layer entry {_shown(name)}: name longer than {MAX_NAME_BYTES} bytes")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"refusing layer entry {name!r}: '..' would leave the image root")
    if len(parts) > MAX_DEPTH:
        raise LayerError(f"refusing layer entry {_shown(name)}: deeper than {MAX_DEPTH} levels")
    return "/".join(parts)


class _Applier:
    def __init__(self, root: str, same_owner: bool, devices: bool, keep_setid: bool,
                 limits: ExtractLimits) -> None:
        self.root = root
        self.same_owner = same_owner
        self.devices = devices
        self.keep_setid = keep_setid
        self.limits = limits
        self.stats = ApplyStats()
        self.dirs: dict[str, str] = {"": root}   # relative dir → real path, resolved in scope
        # A member name's literal parent part → (clean relative dir, real path, whether that
        # path is the root plus the relative dir, i.e. reached through no symlink): the short path.
        self.parents: dict[str, tuple[str, str, bool]] = {"": ("", root, True)}
        # Directories this apply made that hold only entries named without symlinks (so
        # ``created`` tells what is in them): files there may go to the helper process.
        self.fresh: set[str] = set()
        self.helper: FileCreator | None = None
        self.helper_mode = _helper_mode()
        self.depth: dict[str, int] = {root: 0}   # real path → levels below the root
        self.created: set[str] = set()           # entries of this layer (whiteouts spare them)
        self.dir_meta: list[tuple[str, int, int]] = []  # (path, mode, mtime), set at the end
        self.opaque: list[str] = []
        # To skip chown/chmod calls that would change nothing (most files of most layers).
        self.ids = (os.geteuid(), os.getegid())
        self.umask = _current_umask()
        self.setgid_dirs: set[str] = set()

    def run(self, stream: BinaryIO, threaded: bool = False) -> None:
        """Extract ``stream``; ``threaded``: it is produced on a thread (which takes a core)."""
        if self.helper_mode == "auto" and cpus.spare_cpus() - threaded < 1:
            self.helper_mode = "off"  # no core to spare: the helper would only add work
        reader = TarReader(stream)
        self.entries = self.bytes = 0
        try:
            try:
                self._extract(reader)
            finally:
                self.stats.entries, self.stats.bytes = self.entries, self.bytes
            if self.helper is not None:
                self.helper.close()  # every file made (or its failure raised) before what follows
        finally:
            if self.helper is not None:
                self.helper.stop()
                self.helper = None
        for rel in self.opaque:
            self._apply_opaque(rel)
        # Directory modes and mtimes last: a read-only directory must still take its
        # children, and creating them changed the mtime.
        for path, mode, mtime in reversed(self.dir_meta):
            try:
                st = os.lstat(path)
            except FileNotFoundError:  # removed by a later entry or whiteout
                continue
            if stat.S_ISDIR(st.st_mode):
                os.chmod(path, mode)
                os.utime(path, (mtime, mtime), follow_symlinks=False)

    def _extract(self, reader: TarReader) -> None:
        """Every member in order; regular files under known directories take the short path.

        The short path does what ``_member``/``_regular`` would, minus the lookups it
        can skip: the parent is found by the name's literal parent part in
        ``self.parents``, filled by the careful path and by directory entries. A new
        name in a fresh directory may instead be queued to the helper process.
        """
        max_entries, max_bytes = self.limits.max_entries, self.limits.max_bytes
        parents, created_add, member = self.parents, self.created.add, self._member
        same_owner, setgid_dirs = self.same_owner, self.setgid_dirs
        my_uid, my_gid = self.ids
        # Mode bits the kernel would not set from open()'s mode: the umask, and set-ID/sticky.
        chmod_bits = 0o7000 | self.umask
        drop_setid = 0 if self.keep_setid else _SETID
        open_, write, utime, close, fchown, fchmod = os.open, os.write, os.utime, os.close, os.fchown, os.fchmod
        create = _CREATE
        TarMember = tr.TarMember
        entries, total = self.entries, self.bytes
        created, fresh = self.created, self.fresh
        want_helper = self.helper_mode != "off"
        helper_after = 0 if self.helper_mode == "always" else HELPER_AFTER
        offer, eligible = None, 0
        try:
            for m in reader.entries():
                entries += 1
                if entries > max_entries:
                    name = m.name if m.__class__ is TarMember else m[0]
                    raise LayerError(f"refusing layer entry {_shown(name)}: more than {max_entries} entries "
                                     f"(the limit; set ${MAX_ENTRIES_ENV} to raise it)")
                if m.__class__ is TarMember:
                    self.entries, self.bytes = entries, total
                    member(m, reader)
                    total = self.bytes
                    continue
                name, mode, uid, gid, size, mtime, data = m
                raw_parent, _, base = name.rpartition("/")
                known = parents.get(raw_parent)
                if (known is None or not base
                        or base[0] == "." and (base in (".", "..") or base.startswith(WHITEOUT_PREFIX))):
                    self.entries, self.bytes = entries, total
                    member(tr.plain_member(m), reader)
                    total = self.bytes
                    continue
                # The short path: a small regular file below a directory already resolved.
                total += size
                if total > max_bytes:
                    self._too_big(name)
                rel_parent, parent, literal = known
                rel = name if rel_parent == raw_parent else (f"{rel_parent}/{base}" if rel_parent else base)
                mode &= 0o7777
                if mode & drop_setid:
                    mode = self._drop_setid(name, mode)
                path = f"{parent}/{base}"
                chown = same_owner and (uid != my_uid or gid != my_gid or parent in setgid_dirs)
                if literal and rel not in created:  # nothing there, nor queued to the helper
                    if parent in fresh:
                        if offer is not None:
                            if offer(path, data, mode, CHOWN * chown | CHMOD * bool(mode & chmod_bits),
                                     uid, gid, mtime):
                                created_add(rel)
                                continue
                        elif want_helper:
                            eligible += 1
                            if eligible > helper_after:
                                want_helper = False
                                offer = self._start_helper()
                else:
                    self._settle()  # the name may be a queued file's
                    if not literal:
                        fresh.discard(parent)
                created_add(rel)
                try:
                    fd = open_(path, create, mode & 0o777)
                except FileExistsError:  # replacing a lower layer's entry (of any type)
                    self._remove(path)
                    fd = open_(path, create, mode & 0o777)
                try:
                    if data:
                        done = write(fd, data)
                        if done < len(data):
                            _write_all(fd, memoryview(data)[done:])
                    if chown:
                        fchown(fd, uid, gid)
                    if mode & chmod_bits:  # after chown, which clears set-ID bits
                        fchmod(fd, mode)
                    utime(fd, (mtime, mtime))
                finally:
                    close(fd)
        finally:
            self.entries, self.bytes = entries, total

    def _start_helper(self) -> Callable[..., bool] | None:
        self.helper = FileCreator.start(wait=self.helper_mode == "always")
        return None if self.helper is None else self.helper.offer

    def _settle(self) -> None:
        """Wait for the files queued to the helper: what comes next may depend on them."""
        if self.helper is not None and self.helper.busy:
            self.helper.sync()

    def _literal(self, rel: str) -> str:
        """The real path of ``rel`` if no symlink is on the way."""
        return f"{self.root}/{rel}" if rel else self.root

    def _too_big(self, name: str) -> None:
        raise LayerError(f"refusing layer entry {_shown(name)}: the layer's files exceed "
                         f"{_human(self.limits.max_bytes)} (the limit; set ${MAX_BYTES_ENV} to raise it)")

    def _drop_setid(self, name: str, mode: int) -> int:
        self.stats.dropped_setid += 1
        self._note_skipped(name)
        return mode & ~_SETID

    def _note_skipped(self, name: str) -> None:
        if len(self.stats.skipped_names) < 5:
            self.stats.skipped_names.append(name)

    # -- resolving paths inside the root

    def _dir(self, rel: str, create: bool, entry: str | None = None) -> str | None:
        """The real path of directory ``rel`` with symlinks resolved inside the root.

        ``entry`` is the member being extracted, for error messages.
        """
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
            if len(real) >= MAX_DEPTH:
                raise LayerError(f"refusing layer entry {_shown(entry or rel)}: it resolves deeper than "
                                 f"{MAX_DEPTH} levels")
            path = os.path.join(self.root, *real, comp)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    return None
                if self.helper is not None and self.helper.busy:
                    self._settle()  # a queued file may be about to appear there: look again
                    pending.append(comp)
                    continue
                os.mkdir(path, 0o755)
                # ``created`` does not list it: its directory no longer holds only what it lists.
                self.fresh.discard(os.path.join(self.root, *real))
                self.fresh.add(path)
                real.append(comp)
                continue
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise LayerError(f"refusing layer entry {_shown(entry or rel)}: too many levels of symbolic links")
                link = os.readlink(path)
                if link.startswith("/"):
                    real = []
                pending.extend(reversed(link.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                if not create:
                    return None
                raise LayerError(f"cannot extract {_shown(entry or rel)}: "
                                 f"{'/'.join(real + [comp])!r} is not a directory")
            real.append(comp)
        resolved = os.path.join(self.root, *real)
        self.dirs[rel] = resolved
        self.depth[resolved] = len(real)
        if os.stat(resolved).st_mode & stat.S_ISGID:  # new files would take the directory's group
            self.setgid_dirs.add(resolved)
        return resolved

    def _forget_dirs(self) -> None:
        """A directory or symlink was removed or replaced: resolved parents may be stale."""
        # Emptied in place: the short path in _extract holds these objects.
        self.dirs.clear()
        self.dirs[""] = self.root
        self.parents.clear()
        self.parents[""] = ("", self.root, True)
        self.depth.clear()
        self.depth[self.root] = 0
        self.setgid_dirs.clear()
        self.fresh.clear()

    def _remove(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if self.helper is not None and self.helper.busy:
            self._settle()  # a directory may hold queued files: they come first, then go
            st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
            self._forget_dirs()
        else:
            os.unlink(path)
            if stat.S_ISLNK(st.st_mode):
                self._forget_dirs()

    # -- entries

    def _member(self, m: TarMember, reader: TarReader) -> None:
        rel = clean_name(m.name)
        if not rel:
            return  # the root itself: the target's own metadata is not the layer's to change
        parent_rel, _, base = rel.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self._settle()
            self._whiteout(parent_rel, base)
            return
        parent = self._dir(parent_rel, create=True, entry=m.name)
        path = f"{parent}/{base}"
        literal = parent == self._literal(parent_rel)
        if not literal:
            self.fresh.discard(parent)  # it gets an entry ``created`` does not name as in it
        if not (literal and m.type in _INDEPENDENT_TYPES and rel not in self.created):
            self._settle()
        self.created.add(rel)
        raw_parent, _, raw_base = m.name.rpartition("/")
        if raw_base == base:  # the name's parent part cleans to parent_rel
            self.parents[raw_parent] = (parent_rel, parent, literal)
        if m.type == tr.DIRECTORY:
            self._directory(rel, parent, path, m)
        elif m.type == tr.REGULAR:
            self._regular(path, parent, m, reader)
        elif m.type == tr.SYMLINK:
            self._remove(path)
            os.symlink(m.linkname, path)
            self._owner(path, m)
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
        elif m.type == tr.HARDLINK:
            self._hardlink(path, m)
        else:
            self._special(path, m)

    def _directory(self, rel: str, parent: str, path: str, m: TarMember) -> None:
        depth = self.depth.get(parent, MAX_DEPTH) + 1
        if depth > MAX_DEPTH:
            raise LayerError(f"refusing layer entry {_shown(m.name)}: it resolves deeper than {MAX_DEPTH} levels")
        try:
            os.mkdir(path, 0o700)
            setgid = parent in self.setgid_dirs  # a new directory inherits set-group-ID
            self.fresh.add(path)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                self._remove(path)
                os.mkdir(path, 0o700)
                setgid = parent in self.setgid_dirs
                self.fresh.add(path)
            else:
                setgid = bool(st.st_mode & stat.S_ISGID)
        self._owner(path, m)
        self._xattrs(path, m)
        self.dir_meta.append((path, m.mode & 0o7777, int(m.mtime)))
        # A real directory now: entries below it resolve without looking again.
        self.dirs[rel] = path
        self.parents[rel] = (rel, path, path == self._literal(rel))
        self.depth[path] = depth
        if setgid:
            self.setgid_dirs.add(path)

    def _regular(self, path: str, parent: str, m: TarMember, reader: TarReader) -> None:
        if self.bytes + m.size > self.limits.max_bytes:
            self._too_big(m.name)
        self.bytes += m.size
        mode = m.mode & 0o7777
        if mode & _SETID and not self.keep_setid:
            mode = self._drop_setid(m.name, mode)
        try:
            fd = os.open(path, _CREATE, mode & 0o777)
        except FileExistsError:  # replacing a lower layer's entry (of any type)
            self._remove(path)
            fd = os.open(path, _CREATE, mode & 0o777)
        try:
            if m.data is not None:
                _write_all(fd, memoryview(m.data))
            else:
                reader.copy_content(lambda view: _write_all(fd, view))
            if self.same_owner and ((m.uid, m.gid) != self.ids or parent in self.setgid_dirs):
                os.fchown(fd, m.uid, m.gid)
            if mode & (0o7000 | self.umask):  # after chown, which clears set-ID bits
                os.fchmod(fd, mode)
            self._fd_xattrs(fd, m)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _hardlink(self, path: str, m: TarMember) -> None:
        try:
            target_rel = clean_name(m.linkname)
        except LayerError:
            raise LayerError(f"refusing hard link {m.name!r} -> {m.linkname!r}: target outside the image") from None
        t_parent_rel, _, t_base = target_rel.rpartition("/")
        t_parent = self._dir(t_parent_rel, create=False, entry=m.name) if t_base else None
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
        mode = m.mode & 0o7777
        if mode & _SETID and not self.keep_setid:
            mode = self._drop_setid(m.name, mode)
        if m.type == tr.FIFO:
            os.mkfifo(path, mode)
        else:
            if not self.devices:
                self._skip_device(m)
                return
            kind = stat.S_IFCHR if m.type == tr.CHARDEV else stat.S_IFBLK
            try:
                os.mknod(path, kind | mode, os.makedev(m.devmajor, m.devminor))
            except PermissionError:  # e.g. inside a user namespace
                self._skip_device(m)
                return
        self._owner(path, m)
        os.chmod(path, mode)
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def _skip_device(self, m: TarMember) -> None:
        self.stats.skipped_devices += 1
        self._note_skipped(m.name)

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

    def _fd_xattrs(self, fd: int, m: TarMember) -> None:
        for name, value in m.xattrs.items():
            if name.startswith(OVERLAY_XATTR_PREFIXES):
                continue
            try:
                os.setxattr(fd, name, value)
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


def _shown(name: str) -> str:
    """A member name for an error message: quoted (newlines escaped), long ones cut."""
    return repr(name[:60]) + ("..." if len(name) > 60 else "")


def _human(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _helper_mode() -> str:
    text = os.environ.get(HELPER_ENV, "").strip().lower() or "auto"
    if text not in ("auto", "off", "always"):
        raise LayerError(f"${HELPER_ENV}={text!r}: choose auto, off or always")
    return text


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
