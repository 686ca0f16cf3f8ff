"""Content digests of regular files: streamed, in parallel, through the metadata cache.

A file is opened without following symlinks and without blocking (a FIFO
swapped in after the walk must not hang the build), checked to still be a
regular file, hashed in bounded memory, and stat'ed again afterwards: if it
changed while being read it is read again, so a digest always describes one
consistent version of the file.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from builder.context.errors import ContextError
from builder.context.metacache import MetadataCache, StatKey

SMALL_FILE = 1 << 20  # read in one call below this size
BATCH_BYTES = 8 << 20  # work handed to one thread at a time
BATCH_FILES = 256
_RETRIES = 3
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class HashStats:
    """What hashing cost: files read, bytes read, files answered by the cache."""

    files_hashed: int = 0
    bytes_read: int = 0
    cache_hits: int = 0


@dataclass(frozen=True)
class FileToHash:
    """A regular file found by a walk: its absolute path, its lstat, its name for messages."""

    path: str
    st: os.stat_result
    display: str


@dataclass(frozen=True)
class HashedFile:
    """A file's ``sha256:`` digest and the stat of the version that was read."""

    digest: str
    st: os.stat_result


def _read_error(display: str, exc: OSError) -> ContextError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ELOOP:
        reason = "it was replaced by a symlink while being read"
    err = ContextError(f"cannot read {display!r} from the build context: {reason}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        err.hint = "make it readable, or exclude it in .dockerignore"
    return err


def hash_file(path: str, display: str) -> HashedFile:
    """sha256 of one regular file, consistent against concurrent changes."""
    for _ in range(_RETRIES):
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            raise _read_error(display, exc) from None
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise ContextError(f"{display!r} in the build context stopped being a regular file while being read")
            if before.st_size < SMALL_FILE:
                chunks = []
                while True:  # read to EOF, in case it grew since fstat
                    chunk = os.read(fd, SMALL_FILE)
                    if not chunk:
                        break
                    chunks.append(chunk)
                digest = hashlib.sha256(b"".join(chunks)).hexdigest()
            else:
                with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
            after = os.fstat(fd)
        except OSError as exc:
            raise _read_error(display, exc) from None
        finally:
            os.close(fd)
        if StatKey.of(before) == StatKey.of(after):
            return HashedFile("sha256:" + digest, after)
    raise ContextError(f"{display!r} in the build context kept changing while being hashed")


class FileHasher:
    """Digests for many files, reusing the metadata cache and an in-memory memo."""

    def __init__(self, cache: MetadataCache | None = None, *, workers: int | None = None) -> None:
        self.cache = cache
        self.workers = workers or min(8, (os.cpu_count() or 1) * 2)
        self.stats = HashStats()
        self._known: dict[str, tuple[StatKey, str]] = {}
        self._primed: set[str] = set()
        self._lock = threading.Lock()

    def prime(self, root: Path | str) -> None:
        """Load what the cache knows about files under ``root`` (once per root)."""
        key = str(root)
        if self.cache is None or key in self._primed:
            return
        self._primed.add(key)
        self._known.update(self.cache.load_tree(key))

    def digests(self, files: list[FileToHash]) -> list[HashedFile]:
        """One ``HashedFile`` per input, in order."""
        results: list[HashedFile | None] = [None] * len(files)
        misses: list[int] = []
        for i, f in enumerate(files):
            known = self._known.get(f.path)
            if known is not None and known[0] == StatKey.of(f.st):
                results[i] = HashedFile(known[1], f.st)
            else:
                misses.append(i)
        self.stats.cache_hits += len(files) - len(misses)
        if misses:
            self._hash_misses(files, misses, results)
        return results  # type: ignore[return-value]

    def _hash_misses(self, files: list[FileToHash], misses: list[int], results: list) -> None:
        batches: list[list[int]] = []
        batch: list[int] = []
        size = 0
        for i in misses:
            batch.append(i)
            size += files[i].st.st_size
            if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
                batches.append(batch)
                batch, size = [], 0
        if batch:
            batches.append(batch)

        def run(indices: list[int]) -> None:
            for i in indices:
                results[i] = hash_file(files[i].path, files[i].display)

        if len(batches) == 1 or self.workers == 1:
            for b in batches:
                run(b)
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(batches))) as pool:
                for future in [pool.submit(run, b) for b in batches]:
                    future.result()

        now = time.time_ns()
        for i in misses:
            done: HashedFile = results[i]
            key = StatKey.of(done.st)
            self._known[files[i].path] = (key, done.digest)
            self.stats.files_hashed += 1
            self.stats.bytes_read += done.st.st_size
            if self.cache is not None:
                self.cache.record(files[i].path, key, done.digest, now)

    def flush(self) -> None:
        if self.cache is not None:
            self.cache.flush()
