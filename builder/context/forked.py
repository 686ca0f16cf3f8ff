"""Forked helper processes for hashing: the build's way past the GIL on a second core.

``fork_worker(work)`` forks a child that runs ``work(write_fd)`` and exits; the caller reads
what it writes. The child ignores Ctrl-C (the build decides and stops it), dies with the
process that forked it (a SIGKILLed build leaves nothing hashing), and never returns into
the caller's code, whatever happens in ``work``.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable

PR_SET_PDEATHSIG = 1


def fork_worker(work: Callable[[int], None], *, pipe_bytes: int | None = None) -> tuple[int, int] | None:
    """``(pid, read_fd)`` of a child running ``work(write_fd)``; None where forking is not safe
    (other threads: the child could inherit a lock one of them held) or not possible."""
    if threading.active_count() != 1 or not hasattr(os, "fork"):
        return None
    read_fd, write_fd = os.pipe()
    if pipe_bytes:
        _widen_pipe(write_fd, pipe_bytes)
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
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent()
            work(write_fd)
            status = 0
        except BaseException:
            pass  # the caller sees a short or missing answer and does the work itself
        finally:
            os._exit(status)
    os.close(write_fd)
    return pid, read_fd


def stop(pid: int) -> None:
    """Kill (if still running) and reap a child from ``fork_worker``."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _widen_pipe(fd: int, size: int) -> None:
    """A pipe that takes megabytes in a few writes, not one per 64 KiB each waiting for the
    reader to be scheduled."""
    import fcntl

    for want in (size, 1 << 20):
        try:
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), want)
            return
        except OSError:
            continue  # above the limit for this user: try the default maximum; else keep 64 KiB


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)
