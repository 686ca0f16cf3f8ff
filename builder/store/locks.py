"""Advisory file locks (``flock``) shared by every process using one store.

flock locks die with their process, so a killed pybuild never leaves the
store locked. Shared locks are taken by work that adds content (ingest,
builds, running containers); garbage collection takes the exclusive lock.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from builder.store.errors import StoreBusyError


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def try_lock(fd: int, exclusive: bool) -> bool:
    """Take the lock without waiting; False when another process holds it."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise


@contextmanager
def file_lock(path: Path, *, exclusive: bool, timeout: float | None = None,
              what: str = "the store") -> Iterator[None]:
    """Hold a shared or exclusive lock on ``path`` for the ``with`` block.

    ``timeout`` None waits for ever; otherwise ``StoreBusyError`` after that many seconds.
    """
    fd = _open_lock(path)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        else:
            deadline = time.monotonic() + timeout
            delay = 0.005
            while not try_lock(fd, exclusive):
                if time.monotonic() >= deadline:
                    raise StoreBusyError(f"timed out after {timeout:g}s waiting for a lock on {what}")
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def optional_lock(path: Path, *, exclusive: bool) -> Iterator[bool]:
    """Try the lock once; yields whether it was taken (and holds it if so)."""
    fd = _open_lock(path)
    try:
        yield try_lock(fd, exclusive)
    finally:
        os.close(fd)
