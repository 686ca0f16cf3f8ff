"""The build context and COPY/ADD source selection, with Docker's rules.

``BuildContext.select(["src/*.py", "config/"])`` answers: which files a
COPY/ADD with these sources copies, where each lands relative to the
destination, and one digest over all of it (names, content, modes,
ownership; never mtimes) plus a per-file map of fingerprints so a rebuild
can say which files changed.

The rules, as BuildKit's Dockerfile frontend applies them:

* a source is joined to ``/`` and cleaned, so ``..`` and absolute paths stay
  inside the context (``/../etc/passwd`` is ``<context>/etc/passwd``);
* a source without wildcards is a literal path (``\\`` is then an ordinary
  character); one with ``*``, ``?`` or ``[`` is matched element by element
  with Go's ``filepath.Match``; a wildcard that matches nothing selects
  nothing (BuildKit allows empty wildcards), a literal that names nothing
  is an error;
* a directory source means its contents; a file source lands under its own
  name; a symlink named as a source (or matched by a wildcard) is followed,
  inside the context only; symlinks inside a copied directory are copied as
  symlinks and never followed;
* files excluded by ``.dockerignore`` do not exist; sockets are skipped
  (Docker's archiver skips them too), FIFOs and device nodes are entries
  without content.
"""
from __future__ import annotations

import hashlib
import os
import stat
import threading
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO, Iterable, Mapping, NamedTuple

from builder.context.dockerignore import IgnoreMatcher, MatchInfo, load_ignore
from builder.context.errors import ContextError, SourceNotFound
from builder.context.gopath import compile_match, contains_wildcards, go_clean, unescape
from builder.context.hashing import FileHasher, HashStats
from builder.context.metacache import MetadataCache
from builder.context.rmtree import remove_tree
from builder.context.scoped import NotInRoot, Resolved, resolve

FILE, DIR, SYMLINK, FIFO, CHAR, BLOCK = "file", "dir", "symlink", "fifo", "char", "block"
_DIGEST_VERSION = b"pybuild.context/v1"


_KINDS = {stat.S_IFREG: FILE, stat.S_IFDIR: DIR, stat.S_IFLNK: SYMLINK, stat.S_IFIFO: FIFO,
          stat.S_IFCHR: CHAR, stat.S_IFBLK: BLOCK}


_NAME = attrgetter("name")
_new_tuple = tuple.__new__


def _kind(mode: int) -> str | None:
    """The entry type of a stat mode; None for what is never copied (sockets)."""
    return _KINDS.get(stat.S_IFMT(mode))


class Entry(NamedTuple):
    """One thing a COPY creates (a tuple: tens of thousands are made per build)."""

    path: str  # where it lands, relative to the destination ("" is the destination itself)
    source: str  # its path in the root ("." for the root), the name a report uses
    type: str  # file | dir | symlink | fifo | char | block
    mode: int  # permission bits, st_mode & 0o7777
    uid: int
    gid: int
    size: int = 0
    linkname: str = ""  # a symlink's target, as stored
    rdev: int = 0  # a device node's number
    content: str = ""  # "sha256:<hex>" of a file's bytes
    fingerprint: str = ""  # everything above but the names, as one comparable string


def fingerprint(type_: str, mode: int, uid: int, gid: int, linkname: str, rdev: int, content: str) -> str:
    """What a cache key must see of an entry, as readable text; never times.

    ``file 644 0:0 sha256:…``, ``dir 755 0:0``, ``symlink 777 0:0 -> target``,
    ``char 666 0:0 dev 259``: cheap to build for tens of thousands of entries,
    and a changed-file report can show what changed about a file.
    """
    if type_ == FILE:
        return f"file {mode:o} {uid}:{gid} {content}"
    if type_ == SYMLINK:
        return f"symlink {mode:o} {uid}:{gid} -> {linkname}"
    if type_ in (CHAR, BLOCK):
        return f"{type_} {mode:o} {uid}:{gid} dev {rdev}"
    return f"{type_} {mode:o} {uid}:{gid}"


@dataclass(frozen=True)
class SourceMatch:
    """What one COPY source resolved to."""

    pattern: str  # as written
    paths: tuple[str, ...]  # what it matched, relative to the root (symlinks followed)
    is_dir: bool = False  # a single directory (its contents are copied)
    types: tuple[str, ...] = ()  # the type of each path: how Docker picks the destination name
    wildcard: bool = False  # the source had wildcards (Docker then needs a directory destination)


@dataclass(frozen=True)
class Selection:
    """The entries a COPY/ADD creates, in copy order, with their digest.

    ``digest`` covers each entry's destination name and fingerprint (content,
    type, mode, owner, link target), never times. ``files`` maps each source
    path to its fingerprint, for naming what changed between two builds.
    """

    root: Path
    entries: tuple[Entry, ...]
    matches: tuple[SourceMatch, ...] = ()

    @cached_property
    def digest(self) -> str:
        """``sha256:`` over every entry's destination name and fingerprint, in order."""
        h = hashlib.sha256(_DIGEST_VERSION)
        # Length-prefixed, so no choice of names or link targets can make two lists collide.
        text = "".join(f"{len(e.path)}:{e.path}{len(e.fingerprint)}:{e.fingerprint}" for e in self.entries)
        h.update(text.encode("utf-8", "surrogateescape"))
        return "sha256:" + h.hexdigest()

    @cached_property
    def files(self) -> dict[str, str]:
        """Root-relative source path -> fingerprint, to name what changed between builds."""
        return {e.source: e.fingerprint for e in self.entries}

    def source_path(self, entry: Entry) -> Path:
        """Where an entry's bytes are on disk."""
        return self.root if entry.source == "." else self.root / entry.source

    def changed(self, previous: Mapping[str, str]) -> dict[str, list[str]]:
        """Paths added, removed and changed since a previous ``files`` map."""
        now = self.files
        return {
            "added": sorted(set(now) - set(previous)),
            "removed": sorted(set(previous) - set(now)),
            "changed": sorted(p for p in set(now) & set(previous) if now[p] != previous[p]),
        }

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries if e.type == FILE)

    @staticmethod
    def deferred(root: Path, matches: tuple[SourceMatch, ...], digest: str, files: dict[str, str],
                 load_entries) -> "Selection":
        """A selection whose digest and ``files`` are known and whose entries are made by
        ``load_entries()`` only if something reads them (a cached COPY never does)."""
        made = _DeferredSelection.__new__(_DeferredSelection)
        object.__setattr__(made, "root", root)
        object.__setattr__(made, "matches", matches)
        object.__setattr__(made, "_load_entries", load_entries)
        made.__dict__["digest"] = digest  # the cached_properties, already known
        made.__dict__["files"] = files
        return made


class _DeferredSelection(Selection):
    def __getattr__(self, name: str):
        # Only reached for attributes not set yet: ``entries`` until first read.
        if name != "entries":
            raise AttributeError(name)
        entries = tuple(self.__dict__["_load_entries"]())
        object.__setattr__(self, "entries", entries)
        return entries


class Stat(NamedTuple):
    """The lstat fields a selection uses. A walk keeps one per entry until the entries are
    made; ``os.stat_result`` is twice the size (times as floats too, block counts...)."""

    st_mode: int
    st_uid: int
    st_gid: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_ino: int
    st_dev: int
    st_rdev: int


_SLIM_FIELDS = attrgetter(*Stat._fields)


def slim(st: os.stat_result) -> Stat:
    # Built in C (attrgetter, tuple.__new__): the walk makes one per entry.
    return tuple.__new__(Stat, _SLIM_FIELDS(st))


# An entry before its content is hashed: (dest path, source relpath, lstat, type, linkname).
_Raw = tuple[str, str, "os.stat_result | Stat", str, str]


@dataclass(eq=False)
class _Frame:
    """One directory being listed by the walk."""

    rel: str
    dest: str
    info: MatchInfo
    exclude_info: MatchInfo
    children: list[os.DirEntry]
    head: _Raw | None  # an ignored directory: emitted only if something below is
    out: list[_Raw]
    next: int = 0


@dataclass(eq=False)
class Walked:
    """A walk of some sources (``BuildContext.walk``), not yet hashed."""

    gathered: tuple[list, list[SourceMatch]]


class BuildContext:
    """A directory (or an extracted tar) that COPY/ADD sources come from."""

    def __init__(
        self,
        root: Path | str,
        ignore: IgnoreMatcher | None = None,
        *,
        cache_dir: Path | str | None = None,
        workers: int | None = None,
        owned_tempdir: Path | None = None,
    ) -> None:
        root = Path(root)
        try:
            st = os.stat(root)
        except FileNotFoundError:
            raise ContextError(f"build context {str(root)!r} does not exist") from None
        except OSError as exc:
            raise ContextError(f"cannot open build context {str(root)!r}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ContextError(f"build context {str(root)!r} is not a directory")
        self.root = Path(os.path.realpath(root))
        self._root = str(self.root)
        self.ignore = ignore or IgnoreMatcher()
        self.cache = MetadataCache(cache_dir) if cache_dir is not None else None
        self.hasher = FileHasher(self._root, self.cache, workers=workers)
        self._owned_tempdir = owned_tempdir
        # The solver runs independent steps in threads; selections share the
        # hasher's memo and the cache connection, so they take turns.
        self._lock = threading.Lock()
        self._interrupt = None  # see walk()

    # -- construction ----------------------------------------------------
    @classmethod
    def from_directory(
        cls,
        path: Path | str,
        *,
        dockerfile: Path | str | None = None,
        use_ignore_file: bool = True,
        cache_dir: Path | str | None = None,
        workers: int | None = None,
    ) -> "BuildContext":
        """A context directory with the ignore file that applies to ``dockerfile``."""
        path = Path(path)
        ignore = IgnoreMatcher()
        if use_ignore_file and path.is_dir():
            ignore = load_ignore(path, Path(dockerfile) if dockerfile is not None else None)
        return cls(path, ignore, cache_dir=cache_dir, workers=workers)

    @classmethod
    def from_tar(
        cls,
        stream: BinaryIO,
        *,
        dockerfile_name: str = "Dockerfile",
        tmp_dir: Path | str | None = None,
        max_bytes: int | None = None,
        workers: int | None = None,
    ) -> "BuildContext":
        """A context sent as a tar stream (``pybuild build - < ctx.tar``), extracted safely.

        The ignore file is read from inside the archive (``<Dockerfile>.dockerignore``
        first, then ``.dockerignore``). Call ``close()`` to remove the extraction.
        """
        from builder.context.tarcontext import extract_context

        target = extract_context(stream, tmp_dir=tmp_dir, max_bytes=max_bytes)
        try:
            ignore = load_ignore(target, target / dockerfile_name)
            return cls(target, ignore, workers=workers, owned_tempdir=target)
        except BaseException:
            remove_tree(target, ignore_errors=True)
            raise

    def close(self) -> None:
        """Save what was hashed to the metadata cache; remove an extracted tar context."""
        if self.cache is not None:
            self.cache.close()
        if self._owned_tempdir is not None:
            remove_tree(self._owned_tempdir, ignore_errors=True)
            self._owned_tempdir = None

    def __enter__(self) -> "BuildContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> HashStats:
        return self.hasher.stats

    # -- visibility --------------------------------------------------------
    def _abs(self, rel: str) -> str:
        return self._root if rel in ("", ".") else self._root + "/" + rel

    def is_ignored(self, rel: str) -> bool:
        return bool(self.ignore) and self.ignore.matches(rel)

    def _visible(self, rel: str, st: os.stat_result) -> bool:
        """Whether a path exists in the context as Docker sends it."""
        if rel in ("", ".") or not self.ignore:
            return True
        ignored, info = self.ignore.info_for(rel)
        if not ignored:
            return True
        # An ignored directory still exists if something under it is re-included.
        if not stat.S_ISDIR(st.st_mode) or self.ignore.can_skip_dir(rel, info):
            return False
        below: list[_Raw] = []
        self._walk_children(rel, "", info, None, 0, below)
        return bool(below)

    # -- selection ---------------------------------------------------------
    def select(
        self,
        patterns: Iterable[str],
        *,
        excludes: Iterable[str] = (),
        parents: bool = False,
        allow_empty_wildcard: bool = True,
        save: bool = True,
    ) -> Selection:
        """The entries a ``COPY <patterns...> <dest>`` copies (see the module docstring).

        ``excludes`` are ``COPY --exclude`` patterns (dockerignore syntax),
        matched against each entry's destination-relative path. ``parents``
        is ``COPY --parents``: entries keep their path from the root, or from
        a ``/./`` pivot in the source. ``save=False`` leaves new digests for the caller to
        ``hasher.flush``.
        """
        with self._lock:
            return self._select(list(patterns), list(excludes), parents, allow_empty_wildcard, save)

    def _select(self, patterns: list[str], excludes: list[str], parents: bool,
                allow_empty_wildcard: bool, save: bool) -> Selection:
        return self._made(self._gather(patterns, excludes, parents, allow_empty_wildcard), excludes, save)

    def _gather(self, patterns: list[str], excludes: list[str], parents: bool,
                allow_empty_wildcard: bool) -> tuple[list[_Raw], list[SourceMatch]]:
        exclude = IgnoreMatcher.from_lines([e for e in excludes if e.strip()]) if excludes else None
        raws: list[_Raw] = []
        matches: list[SourceMatch] = []
        for pattern in patterns:
            found = self._select_one(pattern, exclude, parents, allow_empty_wildcard, raws)
            matches.append(found)
        return raws, matches

    def _made(self, gathered: tuple[list[_Raw], list[SourceMatch]], excludes: list[str], save: bool) -> Selection:
        raws, matches = gathered
        selection = Selection(self.root, tuple(self._finish(raws)), tuple(matches))
        if save:
            self.hasher.flush(self.complete_walk(selection, excludes))
        return selection

    def walk(self, patterns: Iterable[str], *, interrupt=None) -> "Walked":
        """The first half of ``select`` (no excludes, no --parents): what the sources name,
        walked but not yet read. ``interrupt`` is called every thousand or so entries and may
        raise to stop the walk (the warm-up helper walks before it knows whether it should)."""
        with self._lock:
            self._interrupt = interrupt
            try:
                return Walked(self._gather(list(patterns), [], False, True))
            finally:
                self._interrupt = None

    def select_walked(self, walked: "Walked", *, save: bool = True) -> Selection:
        """The selection of a ``walk``: files hashed, exactly what ``select`` would have made
        at the time of that walk."""
        with self._lock:
            return self._made(walked.gathered, [], save)

    @staticmethod
    def complete_walk(selection: Selection, excludes: Iterable[str] = ()) -> set[str] | None:
        """Every file path of the context, if ``selection`` walked the whole tree (so the
        metadata cache can forget files that are gone); else None."""
        if any(e.strip() for e in excludes) or not any(m.paths == (".",) for m in selection.matches):
            return None
        return {e.source for e in selection.entries if e.type == FILE}

    def tree(self) -> Selection:
        """Everything in the context (what ``COPY . <dest>`` copies)."""
        return self.select(["."])

    def _select_one(self, pattern: str, exclude: IgnoreMatcher | None, parents: bool,
                    allow_empty: bool, raws: list[_Raw]) -> SourceMatch:
        pivot = ""
        raw_pattern = pattern
        if parents and "/./" in "/" + pattern:
            # COPY --parents a/./b/c: destination paths start after the "/./".
            head, _, tail = ("/" + pattern).partition("/./")
            pivot = go_clean("/" + head).lstrip("/")
            raw_pattern = head + "/" + tail
        cleaned = go_clean("/" + raw_pattern)
        display = cleaned
        parts = [p for p in cleaned.split("/") if p]
        is_wildcard = contains_wildcards(cleaned)
        if is_wildcard:
            named = self._expand_wildcards(parts, pattern)
            if not named:
                if allow_empty:
                    return SourceMatch(pattern, (), wildcard=True)
                raise SourceNotFound(display)
        else:
            named = [self._resolve_literal(parts, display)]
        used: list[str] = []
        kinds: list[str] = []
        made: set[str] = set()  # --parents directories already added
        single_dir = False
        for shown, target in named:
            rel = target.rel
            if parents:
                dest = shown if not pivot else _relative_to(shown, pivot)
            else:
                dest = ""  # set below
            kind = _kind(target.st.st_mode)
            if kind is None:
                raise ContextError(f"cannot copy {shown!r} from the build context: it is a socket")
            used.append(rel)
            kinds.append(kind)
            if kind == DIR:
                single_dir = len(named) == 1
                if parents:
                    self._add_parents(_parent(dest), _parent(shown), raws, made)
                info = self.ignore.info_for(rel)[1] if self.ignore and rel != "." else 0
                raws.extend(self._walk(rel, dest, info, exclude, 0))
            else:
                if not parents:
                    dest = shown.rsplit("/", 1)[-1]
                else:
                    self._add_parents(_parent(dest), _parent(shown), raws, made)
                if exclude is not None and exclude.matches(dest):
                    continue
                linkname = os.readlink(self._abs(rel)) if kind == SYMLINK else ""
                raws.append((dest, rel, target.st, kind, linkname))
        return SourceMatch(pattern, tuple(used), single_dir, tuple(kinds), is_wildcard)

    def _add_parents(self, dest: str, shown: str, raws: list[_Raw], made: set[str]) -> None:
        """With --parents, the directories ``dest`` (and those above it) are created too."""
        if not dest:
            return
        dest_parts = dest.split("/")
        shown_parts = shown.split("/")
        offset = len(shown_parts) - len(dest_parts)
        for depth in range(1, len(dest_parts) + 1):
            made_path = "/".join(dest_parts[:depth])
            if made_path in made:
                continue
            made.add(made_path)
            try:  # resolved inside the root: a parent may be a symlink
                found = resolve(self._root, shown_parts[: offset + depth], hidden=self._hidden_link)
            except NotInRoot:
                continue
            raws.append((made_path, found.rel, found.st, DIR, ""))

    def _hidden_link(self, rel: str) -> bool:
        return self.is_ignored(rel)

    def _resolve_literal(self, parts: list[str], display: str) -> tuple[str, Resolved]:
        try:
            target = resolve(self._root, parts, follow_last=True, hidden=self._hidden_link)
        except NotInRoot as exc:
            raise SourceNotFound(display, link=exc.link) from None
        except OSError as exc:
            raise ContextError(f"cannot read {display!r} in the build context: {exc.strerror}") from None
        if not self._visible(target.rel, target.st):
            raise SourceNotFound(display, ignored=True)
        return "/".join(parts) or ".", target

    def _expand_wildcards(self, parts: list[str], pattern: str) -> list[tuple[str, Resolved]]:
        """Matches of a wildcard source, as (path as matched, where it resolves)."""
        first = next(i for i, p in enumerate(parts) if contains_wildcards(p))
        prefix = [unescape(p) for p in parts[:first]]
        try:
            base = resolve(self._root, prefix, follow_last=True, hidden=self._hidden_link)
        except NotInRoot:
            return []
        if not stat.S_ISDIR(base.st.st_mode):
            return []
        # (path as written so far, real path below the root)
        current: list[tuple[str, str]] = [("/".join(prefix), base.rel if base.parts else "")]
        for depth, part in enumerate(parts[first:]):
            last = first + depth == len(parts) - 1
            regex = compile_match(part) if contains_wildcards(part) else None
            literal = unescape(part)
            found: list[tuple[str, str]] = []
            for shown, real in current:
                real_abs = self._abs(real)
                if regex is None:
                    names = [literal] if os.path.lexists(os.path.join(real_abs, literal)) else []
                else:
                    try:
                        names = sorted(n for n in os.listdir(real_abs) if regex.fullmatch(n))
                    except (NotADirectoryError, FileNotFoundError):
                        continue
                    except OSError as exc:
                        raise ContextError(f"cannot list {real or '.'!r} in the build context: {exc.strerror}") from None
                for name in names:
                    child_real = f"{real}/{name}" if real else name
                    child_shown = f"{shown}/{name}" if shown else name
                    if not last:
                        # After a wildcard only real directories are descended, like
                        # BuildKit's match over the (unfollowed) file tree.
                        if os.path.isdir(self._abs(child_real)) and not os.path.islink(self._abs(child_real)):
                            found.append((child_shown, child_real))
                    else:
                        found.append((child_shown, child_real))
            current = found
        out: list[tuple[str, Resolved]] = []
        for shown, real in current:
            try:
                st = os.lstat(self._abs(real))
            except OSError:
                continue
            if not self._visible(real, st):
                continue
            if stat.S_ISLNK(st.st_mode):
                # A matched symlink is followed like a named one, inside the root.
                try:
                    target = resolve(self._root, real.split("/"), follow_last=True, hidden=self._hidden_link)
                except NotInRoot as exc:
                    raise SourceNotFound("/" + shown, link=exc.link) from None
                if not self._visible(target.rel, target.st):
                    raise SourceNotFound("/" + shown, ignored=True)
            else:
                target = Resolved(tuple(real.split("/")), st)
            out.append((shown, target))
        return out

    def _walk(self, rel: str, dest: str, info: MatchInfo, exclude: IgnoreMatcher | None,
              exclude_info: MatchInfo) -> list[_Raw]:
        """The directory ``rel`` (landing at ``dest``) and everything visible under it."""
        try:
            st = os.lstat(self._abs(rel))
        except OSError as exc:
            raise ContextError(f"cannot read {rel!r} in the build context: {exc.strerror}") from None
        out: list[_Raw] = [(dest, rel, st, DIR, "")]
        self._walk_children(rel, dest, info, exclude, exclude_info, out)
        return out

    def _list_dir(self, rel: str) -> list[os.DirEntry]:
        try:
            with os.scandir(self._abs(rel)) as it:
                return sorted(it, key=_NAME)
        except OSError as exc:
            err = ContextError(f"cannot read directory {rel!r} in the build context: {exc.strerror}")
            err.hint = "make it readable, or exclude it in .dockerignore"
            raise err from None

    def _walk_children(self, rel: str, dest: str, info: MatchInfo, exclude: IgnoreMatcher | None,
                       exclude_info: MatchInfo, out: list[_Raw]) -> None:
        """Append what is visible under ``rel``, depth first, sorted by name.

        An ignored (or ``--exclude``d) directory that cannot be skipped is
        appended only if something under it is re-included, as its parent.
        An explicit stack rather than recursion: a hostile context may be
        thousands of directories deep.
        """
        ignore = self.ignore if self.ignore else None
        stack = [_Frame(rel, dest, info, exclude_info, self._list_dir(rel), None, out)]
        interrupt = self._interrupt
        steps = 0
        while stack:
            if interrupt is not None:
                steps += 1
                if steps & 1023 == 0:
                    interrupt()
            frame = stack[-1]
            if frame.next >= len(frame.children):
                stack.pop()
                if frame.head is not None and frame.out:
                    # An ignored directory with something re-included below it.
                    parent_out = stack[-1].out if stack else out
                    parent_out.append(frame.head)
                    parent_out.extend(frame.out)
                continue
            child = frame.children[frame.next]
            frame.next += 1
            name = child.name
            child_rel = name if frame.rel == "." else f"{frame.rel}/{name}"
            child_dest = f"{frame.dest}/{name}" if frame.dest else name
            ignored = excluded = False
            child_info = child_exclude_info = 0
            if ignore is not None:
                ignored, child_info = ignore.match_step(child_rel, frame.info)
            if exclude is not None:
                excluded, child_exclude_info = exclude.match_step(child_dest, frame.exclude_info)
            try:
                cst = slim(child.stat(follow_symlinks=False))
            except FileNotFoundError:
                continue  # removed while walking
            kind = _KINDS.get(cst.st_mode & 0o170000)  # _kind, inlined: once per entry
            if kind is None:
                continue  # sockets are not part of a context
            if kind == DIR:
                if ignored and ignore.can_skip_dir(child_rel, child_info):
                    continue
                if excluded and exclude.can_skip_dir(child_dest, child_exclude_info):
                    continue
                raw = (child_dest, child_rel, cst, DIR, "")
                children = self._list_dir(child_rel)
                if ignored or excluded:
                    stack.append(_Frame(child_rel, child_dest, child_info, child_exclude_info, children, raw, []))
                else:
                    frame.out.append(raw)
                    stack.append(_Frame(child_rel, child_dest, child_info, child_exclude_info, children, None,
                                        frame.out))
                continue
            if ignored or excluded:
                continue
            linkname = os.readlink(child.path) if kind == SYMLINK else ""
            frame.out.append((child_dest, child_rel, cst, kind, linkname))

    def _finish(self, raws: list[_Raw]) -> list[Entry]:
        """The entries of ``raws``, files hashed. ``raws`` is emptied on the way, so a large
        tree does not hold its walk and its entries in memory at once."""
        hashed = self.hasher.digests([(r[1], r[2]) for r in raws if r[3] == FILE])
        entries: list[Entry] = []
        append = entries.append
        n = 0
        for i, (dest, source, st, kind, linkname) in enumerate(raws):
            raws[i] = None  # type: ignore[call-overload]
            content = ""
            size = 0
            rdev = 0
            if kind == FILE:
                content, st = hashed[n]
                hashed[n] = None
                n += 1
                mode = st.st_mode & 0o7777
                uid, gid = st.st_uid, st.st_gid
                # fingerprint() and Entry() inlined (tuple.__new__ is C): the common case,
                # made tens of thousands of times.
                append(_new_tuple(Entry, (dest, source, FILE, mode, uid, gid, st.st_size, linkname, 0, content,
                                          f"file {mode:o} {uid}:{gid} {content}")))
                continue
            if kind == CHAR or kind == BLOCK:
                rdev = st.st_rdev
            mode = st.st_mode & 0o7777
            uid, gid = st.st_uid, st.st_gid
            append(Entry(dest, source, kind, mode, uid, gid, size, linkname, rdev, content,
                         fingerprint(kind, mode, uid, gid, linkname, rdev, content)))
        return entries


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _relative_to(path: str, pivot: str) -> str:
    if not pivot:
        return path
    if path == pivot:
        return ""
    return path[len(pivot) + 1:] if path.startswith(pivot + "/") else path


def tree_selection(root: Path | str, *, cache_dir: Path | str | None = None) -> Selection:
    """Every entry under any directory (e.g. another stage's result for ``COPY --from``),
    with no ignore file: the tree digest of ``root``."""
    with BuildContext(root, cache_dir=cache_dir) as ctx:
        return ctx.tree()
