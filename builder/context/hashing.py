"""Content digests of regular files: streamed, in parallel, through the metadata cache.

A file is opened without following symlinks and without blocking (a FIFO
swapped in after the walk must not hang the build), checked to still be a
regular file, hashed in bounded memory, and stat'ed again afterwards: if it
changed while being read it is read again, so a digest always describes one
consistent version of the file.

Small files are hashed on the calling thread (for them the cost is Python's,
and threads would only queue on the GIL); large ones go to a thread pool,
where hashlib releases the GIL and the cores hash in parallel.
"""
from __future__ import annotations

import errno
import hashlib
import marshal
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from builder.context.errors import ContextError
from builder.context.metacache import MetadataCache, stat_key

SMALL_FILE = 1 << 20  # read in one call below this size
PARALLEL_FROM = 64 << 10  # files at least this big go to the thread pool
SPLIT_FROM = 2000  # with split_small, this many small files are worth a second process
_RETRIES = 3
# O_NOATIME: hashing a context is not a use of its files, and on a fresh checkout the
# access-time update is a journal write per file. Only a file's owner (or root) may ask
# for it: the first refusal (EPERM) drops it for the rest of the process.
_NOATIME = getattr(os, "O_NOATIME", 0)
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | _NOATIME


@dataclass
class HashStats:
    """What hashing cost: files read, bytes read, files answered by the cache."""

    files_hashed: int = 0
    bytes_read: int = 0
    cache_hits: int = 0


def _read_error(display: str, exc: OSError) -> ContextError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ELOOP:
        reason = "it was replaced by a symlink while being read"
    err = ContextError(f"cannot read {display!r} from the build context: {reason}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        err.hint = "make it readable, or exclude it in .dockerignore"
    return err


def hash_file(path: str, display: str, expect: os.stat_result | None = None) -> tuple[str, os.stat_result]:
    """``("sha256:<hex>", stat)`` of one regular file, consistent against concurrent changes.

    ``expect`` is the file's lstat from the walk that found it: the file opened must be that
    one (same inode). ``O_NOFOLLOW`` guards only the last component; a directory on the way
    swapped for a symlink to somewhere outside the context would lead elsewhere, and the
    inode check catches that.
    """
    if expect is not None and expect.st_size < SMALL_FILE:
        # The common case, in four system calls: read what the walk saw, then one fstat
        # proves the file read is the one the walk saw, unchanged (same inode, size, mtime
        # and ctime: no write since the walk). O_NONBLOCK keeps a FIFO swapped in from
        # blocking the read; anything unusual takes the careful path below.
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                data = os.read(fd, expect.st_size + 1)
                after = os.fstat(fd)
            except OSError:
                after = None
            finally:
                os.close(fd)
            if (after is not None and len(data) == expect.st_size and stat_key(after) == stat_key(expect)
                    and stat.S_ISREG(after.st_mode)):
                return "sha256:" + hashlib.sha256(data).hexdigest(), expect
    for _ in range(_RETRIES):
        try:
            fd = _open(path)
        except OSError as exc:
            raise _read_error(display, exc) from None
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise ContextError(f"{display!r} in the build context stopped being a regular file while being read")
            if expect is not None and (before.st_ino, before.st_dev) != (expect.st_ino, expect.st_dev):
                raise ContextError(f"{display!r} in the build context was replaced while being read; build again")
            if before.st_size < SMALL_FILE:
                data = os.read(fd, before.st_size + 1)
                if len(data) > before.st_size:  # it grew: take the rest too
                    rest = [data]
                    while chunk := os.read(fd, SMALL_FILE):
                        rest.append(chunk)
                    data = b"".join(rest)
                digest = hashlib.sha256(data).hexdigest()
            else:
                with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
            after = os.fstat(fd)
        except OSError as exc:
            raise _read_error(display, exc) from None
        finally:
            os.close(fd)
        if stat_key(before) == stat_key(after):
            # The walk's stat when nothing differs: one stat object per file, not two.
            same = expect is not None and stat_key(expect) == stat_key(after)
            return "sha256:" + digest, expect if same else after
    raise ContextError(f"{display!r} in the build context kept changing while being hashed")


def _open(path: str) -> int:
    global _OPEN_FLAGS
    try:
        return os.open(path, _OPEN_FLAGS)
    except PermissionError as exc:
        if exc.errno != errno.EPERM or not _OPEN_FLAGS & _NOATIME:
            raise
        _OPEN_FLAGS &= ~_NOATIME  # not this file's owner: read without it from now on
        return os.open(path, _OPEN_FLAGS)


class _SharedHashing:
    """Many small files hashed by this process and, where a core is idle, a forked child.

    The files are cut into chunks; this process claims chunks from the front, the child
    from the back, each marking a byte in a shared anonymous mapping before starting one,
    so whichever is faster (the other core may be busy) does more and they meet wherever
    that is. If both ever take the same chunk it is just hashed twice. The child sends back
    ``{chunk: [(digest, stat fields or None when unchanged since the walk), ...]}``.

    The child is forked only once a core idles (``spare_cpus``): looked at every few chunks
    with ``fork_later`` (this process has no other threads, so forking stays safe), else
    once, at the start. A second process competing for busy cores (say with the build
    importing its modules) would only slow both down.
    """

    CHUNK = 64
    LOOK_EVERY = 4  # chunks between looks for an idle core
    IDLE_LOOKS = 2  # looks in a row that must find one

    def __init__(self, work: list[tuple[str, str, "os.stat_result"]], *, fork_later: bool = True) -> None:
        import mmap

        self.work = work
        self.chunks = (len(work) + self.CHUNK - 1) // self.CHUNK
        self.claims = mmap.mmap(-1, self.chunks)  # MAP_SHARED: the child's marks are seen here
        self.pid = 0
        self.fd = -1
        self.fork_later = fork_later
        self._idle_looks = 0
        if not fork_later:
            self._start_if_idle()

    def _start_if_idle(self) -> None:
        from builder.cpus import spare_cpus

        self._idle_looks = self._idle_looks + 1 if spare_cpus() >= 1 else 0
        # Looks as it goes want two in a row: one often lands in a short gap of a busy
        # process (a reply awaited); the one look before a thread pool starts is all there is.
        if self._idle_looks >= (self.IDLE_LOOKS if self.fork_later else 1):
            self.start()

    def start(self) -> None:
        """Fork the child (one try; none where it cannot be done safely: this process hashes all)."""
        from builder.context.forked import fork_worker

        self.fork_later = False
        started = fork_worker(self._child)
        if started is not None:
            self.pid, self.fd = started

    def _child(self, write_fd: int) -> None:
        from builder.context.source import slim

        done: dict[int, list] = {}
        for c in range(self.chunks - 1, -1, -1):
            if self.claims[c]:
                break
            self.claims[c] = 2
            out = done[c] = []
            for path, display, expect in self.work[c * self.CHUNK:(c + 1) * self.CHUNK]:
                try:
                    digest, st = hash_file(path, display, expect)
                except ContextError:
                    out.append(None)  # the parent tries again and reports it
                    continue
                out.append((digest, None if st is expect else tuple(slim(st))))  # Stat fields
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(marshal.dumps(done))

    def run(self) -> list:
        """Hash from the front until meeting the child (if one started), then take its chunks;
        ``(digest, stat)`` per file, in order. Files the child could not do are done here
        (errors raise here)."""
        from builder.context.source import Stat

        results: list = [None] * len(self.work)
        mine = set()
        look = self.LOOK_EVERY
        try:
            for c in range(self.chunks):
                if self.claims[c]:
                    break
                if self.fork_later and c % look == 0 and self.chunks - c > 2 * look:
                    self._start_if_idle()
                self.claims[c] = 1
                mine.add(c)
                base = c * self.CHUNK
                for n, (path, display, expect) in enumerate(self.work[base:base + self.CHUNK]):
                    results[base + n] = hash_file(path, display, expect)
            theirs = self._collect() if self.pid else {}
        finally:
            self.stop()
        for c in range(self.chunks):
            if c in mine:
                continue
            base = c * self.CHUNK
            got = theirs.get(c)
            for n, (path, display, expect) in enumerate(self.work[base:base + self.CHUNK]):
                r = got[n] if isinstance(got, list) and n < len(got) else None
                if r is None:
                    results[base + n] = hash_file(path, display, expect)
                else:
                    results[base + n] = (r[0], expect if r[1] is None else Stat(*r[1]))
        return results

    def _collect(self) -> dict:
        chunks = []
        try:
            with os.fdopen(self.fd, "rb") as pipe:
                self.fd = -1
                while chunk := pipe.read(1 << 20):
                    chunks.append(chunk)
            out = marshal.loads(b"".join(chunks)) if chunks else {}
        except (OSError, ValueError, EOFError, TypeError):
            out = {}
        return out if isinstance(out, dict) else {}

    def stop(self) -> None:
        from builder.context.forked import stop

        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid:
            stop(self.pid)
            self.pid = 0


class FileHasher:
    """Digests for the files of one tree, reusing the metadata cache and an in-memory memo."""

    def __init__(self, root: Path | str, cache: MetadataCache | None = None, *, workers: int | None = None) -> None:
        self.root = str(root).rstrip("/") or "/"
        self.cache = cache
        self.workers = workers or min(8, (os.cpu_count() or 1) * 2)
        self.stats = HashStats()
        self._known: dict[str, tuple] | None = None
        # A ContextWarmup (see warmup.py) whose digests are tried before reading any file.
        self.warmup = None
        # Share many small files with a forked process: for a single-threaded process with a
        # core to spare (the warm-up helper), where threads would queue on the GIL.
        self.split_small = False

    def preload(self, known: dict[str, tuple]) -> None:
        """Start from these ``relpath -> (*stat key, digest)`` entries instead of the cache's."""
        self._known = dict(known)

    def known(self) -> dict[str, tuple]:
        """Every digest this hasher knows: loaded, preloaded or read."""
        return self._memo()

    def _memo(self) -> dict[str, tuple]:
        if self._known is None:
            self._known = self.cache.load_relative(self.root) if self.cache is not None else {}
        return self._known

    def digests(self, files: list[tuple[str, os.stat_result]]) -> list[tuple[str, os.stat_result]]:
        """``(digest, stat)`` for each ``(relpath, lstat)``, in order."""
        results: list = [None] * len(files)
        misses = self._known_ones(files, range(len(files)), results)
        if misses and self.warmup is not None:
            misses = self._after_warmup(files, misses, results)
        if misses:
            self._hash(files, misses, results)
        return results

    def _known_ones(self, files: list[tuple[str, os.stat_result]], indices, results: list) -> list[int]:
        """Fill ``results`` where the memo has a digest whose stat fields all still match; the
        indices left to read."""
        known = self._memo()
        misses: list[int] = []
        for i in indices:
            rel, st = files[i]
            entry = known.get(rel)
            if (entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns
                    and entry[2] == st.st_ctime_ns and entry[3] == st.st_ino and entry[4] == st.st_dev):
                results[i] = (entry[5], st)
            else:
                misses.append(i)
        self.stats.cache_hits += len(indices) - len(misses)
        return misses

    def _after_warmup(self, files: list[tuple[str, os.stat_result]], misses: list[int], results: list) -> list[int]:
        """Before reading files, take the digests the warm-up helper made for this build (where
        every stat field still matches, the metadata cache's rule); the misses left."""
        warmup, self.warmup = self.warmup, None  # one helper, one look
        theirs = warmup.digests(timeout=30)
        if not theirs:
            return misses
        known = self._memo()
        for rel, entry in theirs.items():
            known.setdefault(rel, entry)  # what this build read itself wins
        return self._known_ones(files, misses, results)

    def _hash(self, files: list[tuple[str, os.stat_result]], misses: list[int], results: list) -> None:
        prefix = self.root + "/" if self.root != "/" else "/"
        big = [i for i in misses if files[i][1].st_size >= PARALLEL_FROM]
        small = [i for i in misses if files[i][1].st_size < PARALLEL_FROM]
        pool = None
        shared = None
        threaded = len(big) > 1 and self.workers > 1
        if self.split_small and len(small) >= SPLIT_FROM:
            # Forking is only safe from a single-threaded process: with a pool for the big
            # files the child is forked (or not) now, before the pool's threads start.
            shared = _SharedHashing([(prefix + files[i][0], files[i][0], files[i][1]) for i in small],
                                    fork_later=not threaded)
        try:
            if threaded:
                pool = ThreadPoolExecutor(max_workers=min(self.workers, len(big)))
                futures = [(i, pool.submit(hash_file, prefix + files[i][0], files[i][0], files[i][1])) for i in big]
            else:
                futures = []
                small = big + small
            if shared is not None:
                for i, done in zip(small, shared.run()):
                    results[i] = done
            else:
                for i in small:
                    results[i] = hash_file(prefix + files[i][0], files[i][0], files[i][1])
            for i, future in futures:
                results[i] = future.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if shared is not None:
                shared.stop()

        now = time.time_ns()
        known = self._memo()
        for i in misses:
            digest, st = results[i]
            rel = files[i][0]
            key = stat_key(st)
            known[rel] = (*key, digest)
            self.stats.files_hashed += 1
            self.stats.bytes_read += st.st_size
            if self.cache is not None:
                self.cache.record(self.root, rel, key, digest, now)

    def flush(self, complete_walk: set[str] | None = None) -> None:
        """Write new digests; with ``complete_walk`` (every file path under the root),
        also forget files that no longer exist."""
        if self.cache is None:
            return
        if (complete_walk is not None and not self.cache.has_pending(self.root) and self._known is not None
                and self._known.keys() <= complete_walk):
            # Nothing new and nothing known is gone: rereading and rewriting the stored record
            # would only cost time and a second copy of it in memory.
            complete_walk = None
        self.cache.flush(prune={self.root: complete_walk} if complete_walk is not None else None)
