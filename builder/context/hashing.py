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
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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
    for _ in range(_RETRIES):
        try:
            fd = os.open(path, _OPEN_FLAGS)
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


class _ForkedHasher:
    """A forked child hashing a list of small files: ``(digest, stat fields or None when
    unchanged since the walk)`` per file, marshalled back through a pipe."""

    def __init__(self, pid: int, fd: int, count: int) -> None:
        self.pid, self.fd, self.count = pid, fd, count
        self._expect: list = []

    @classmethod
    def start(cls, work: list[tuple[str, str, os.stat_result]]) -> "_ForkedHasher | None":
        import threading

        if threading.active_count() != 1:
            return None
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            return None
        if pid == 0:
            status = 1
            try:
                os.close(read_fd)
                _die_with_parent()
                out = []
                for path, display, expect in work:
                    try:
                        digest, st = hash_file(path, display, expect)
                    except ContextError:
                        out.append(None)  # the parent tries again and reports it
                        continue
                    out.append((digest, None if st is expect else tuple(st[:9]) if isinstance(st, tuple)
                                else (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                                      st.st_ctime_ns, st.st_ino, st.st_dev, st.st_rdev)))
                with os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(marshal.dumps(out))
                status = 0
            finally:
                os._exit(status)
        os.close(write_fd)
        forked = cls(pid, read_fd, len(work))
        forked._expect = [w[2] for w in work]
        return forked

    def results(self) -> list:
        """``(digest, stat)`` per file, in order; None for one the child did not hash."""
        from builder.context.source import Stat

        chunks = []
        try:
            with os.fdopen(self.fd, "rb") as pipe:
                while chunk := pipe.read(1 << 20):
                    chunks.append(chunk)
            out = marshal.loads(b"".join(chunks)) if chunks else None
        except (OSError, ValueError, EOFError, TypeError):
            out = None
        finally:
            self._reap()
        if not isinstance(out, list) or len(out) != self.count:
            return [None] * self.count
        return [None if r is None else (r[0], self._expect[n] if r[1] is None else Stat(*r[1]))
                for n, r in enumerate(out)]

    def stop(self) -> None:
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        self._reap()

    def _reap(self) -> None:
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _die_with_parent() -> None:
    """A forked helper must not outlive the process it works for."""
    import signal

    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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
        # Hash half of many small files in a forked process: for a single-threaded process
        # with a core to spare (the warm-up helper), where threads would queue on the GIL.
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
        known = self._memo()
        results: list = [None] * len(files)
        misses: list[int] = []
        for i, (rel, st) in enumerate(files):
            entry = known.get(rel)
            if (entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns
                    and entry[2] == st.st_ctime_ns and entry[3] == st.st_ino and entry[4] == st.st_dev):
                results[i] = (entry[5], st)
            else:
                misses.append(i)
        self.stats.cache_hits += len(files) - len(misses)
        if misses and self.warmup is not None:
            misses = self._after_warmup(files, misses, results)
        if misses:
            self._hash(files, misses, results)
        return results

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
        left = []
        for i in misses:
            rel, st = files[i]
            entry = known.get(rel)
            if (entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns
                    and entry[2] == st.st_ctime_ns and entry[3] == st.st_ino and entry[4] == st.st_dev):
                results[i] = (entry[5], st)
            else:
                left.append(i)
        self.stats.cache_hits += len(misses) - len(left)
        return left

    def _hash(self, files: list[tuple[str, os.stat_result]], misses: list[int], results: list) -> None:
        prefix = self.root + "/" if self.root != "/" else "/"
        big = [i for i in misses if files[i][1].st_size >= PARALLEL_FROM]
        small = [i for i in misses if files[i][1].st_size < PARALLEL_FROM]
        pool = None
        forked = None
        forked_part: list[int] = []
        if self.split_small and len(small) >= SPLIT_FROM:
            # Before any thread starts: forking is only safe from a single-threaded process.
            forked_part, small = small[len(small) // 2:], small[: len(small) // 2]
            forked = _ForkedHasher.start([(prefix + files[i][0], files[i][0], files[i][1]) for i in forked_part])
            if forked is None:
                small += forked_part
                forked_part = []
        try:
            if len(big) > 1 and self.workers > 1:
                pool = ThreadPoolExecutor(max_workers=min(self.workers, len(big)))
                futures = [(i, pool.submit(hash_file, prefix + files[i][0], files[i][0], files[i][1])) for i in big]
            else:
                futures = []
                small = big + small
            for i in small:
                results[i] = hash_file(prefix + files[i][0], files[i][0], files[i][1])
            if forked is not None:
                # The other half, from the other process; what it could not do is done here.
                for i, done in zip(forked_part, forked.results()):
                    results[i] = done if done is not None else hash_file(prefix + files[i][0], files[i][0],
                                                                           files[i][1])
                forked = None
            for i, future in futures:
                results[i] = future.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if forked is not None:
                forked.stop()

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
