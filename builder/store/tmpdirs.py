"""Per-process scratch directories under ``ROOT/tmp`` that a killed process cannot leak for good.

Each process owns ``tmp/<name>/`` while it holds an exclusive ``flock`` on
``tmp/<name>.lock``. Opening the store removes every scratch directory whose
lock nobody holds (its owner died), and never touches a live process's files.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import tempfile
import threading
from pathlib import Path

from builder.store.locks import try_lock

_LOCK_SUFFIX = ".lock"


class ScratchDir:
    """This process's scratch directory; created on first use, removed on ``close``."""

    def __init__(self, tmp_root: Path) -> None:
        self.tmp_root = tmp_root
        self._path: Path | None = None
        self._fd: int | None = None
        self._pid = 0
        self._lock = threading.Lock()  # pulls ingest from several threads

    @property
    def path(self) -> Path:
        with self._lock:
            if self._path is None or self._pid != os.getpid():  # a fork must not share its parent's dir
                self._create()
            assert self._path is not None
            return self._path

    def _create(self) -> None:
        while True:
            fd, lock_name = tempfile.mkstemp(prefix=f"p{os.getpid()}-", suffix=_LOCK_SUFFIX, dir=self.tmp_root)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A cleaner may have taken and deleted the lock file between mkstemp and flock.
            try:
                if os.stat(lock_name).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        path = Path(lock_name[: -len(_LOCK_SUFFIX)])
        path.mkdir(mode=0o700)
        self._fd, self._path, self._pid = fd, path, os.getpid()

    def close(self) -> None:
        if self._path is not None and self._pid == os.getpid():
            shutil.rmtree(self._path, ignore_errors=True)
            try:
                os.unlink(str(self._path) + _LOCK_SUFFIX)
            except FileNotFoundError:
                pass
            if self._fd is not None:
                os.close(self._fd)
        self._path = self._fd = None


def clean_stale_scratch(tmp_root: Path) -> int:
    """Remove scratch directories of dead processes; returns how many entries were removed."""
    removed = 0
    try:
        entries = list(os.scandir(tmp_root))
    except FileNotFoundError:
        return 0
    locks = {e.name for e in entries if e.name.endswith(_LOCK_SUFFIX)}
    for name in sorted(locks):
        lock_path = tmp_root / name
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            if not try_lock(fd, exclusive=True):
                continue  # its owner is alive
            # A killed build can leave overlay mounts (RUN snapshots) in its scratch: detach them
            # first, or removing the tree would write whiteouts through them.
            unmount_below(tmp_root / name[: -len(_LOCK_SUFFIX)])
            remove_tree(tmp_root / name[: -len(_LOCK_SUFFIX)])
            os.unlink(lock_path)
            removed += 1
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
    # Anything else without a lock file is an orphan (its lock was removed above, or never made).
    for entry in entries:
        if entry.name.endswith(_LOCK_SUFFIX) or entry.name + _LOCK_SUFFIX in locks:
            continue
        remove_tree(Path(entry.path))
        removed += 1
    return removed


def _mount_points() -> list[str]:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    # Field 5 is the mount point, with spaces and the like octal-escaped.
    return [line.split()[4].encode().decode("unicode_escape") for line in lines if len(line.split()) > 4]


def unmount_below(path: Path) -> int:
    """Lazily unmount everything mounted at or under ``path`` (deepest first); returns the count."""
    import ctypes

    root = os.path.realpath(path)
    targets = [m for m in _mount_points() if m == root or m.startswith(root + "/")]
    if not targets:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    done = 0
    for target in sorted(targets, key=len, reverse=True):
        if libc.umount2(target.encode("utf-8", "surrogateescape"), 2) == 0:  # MNT_DETACH
            done += 1
    return done


TRASH_PREFIX = ".trash-"


def remove_tree(path: Path) -> None:
    """Remove a file or a whole tree, read-only directories included.

    A directory is first renamed aside (``.trash-NAME-PID-N`` beside it), so its name disappears
    at once: a process killed half-way through leaves a trash entry, never a half-emptied
    snapshot or scratch directory under its real name (``remove_trash`` finishes the job).
    """
    if path.is_dir() and not path.is_symlink() and not path.name.startswith(TRASH_PREFIX):
        aside = path.with_name(f"{TRASH_PREFIX}{path.name}-{os.getpid()}-{next(_trash_count)}")
        try:
            os.rename(path, aside)
            path = aside
        except OSError:
            pass   # e.g. a mount point: remove it where it is
    if path.is_dir() and not path.is_symlink():
        # Snapshots unpack read-only directories; make them writable so rmtree can empty them.
        def onerror(func, p, exc):
            try:
                os.chmod(os.path.dirname(p), 0o700)
                func(p)
            except OSError:
                pass
        shutil.rmtree(path, onerror=onerror)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


_trash_count = itertools.count()


def remove_trash(directory: Path) -> int:
    """Finish removals that dead processes left half done in ``directory``; returns how many."""
    removed = 0
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TRASH_PREFIX)]
    except FileNotFoundError:
        return 0
    for name in names:
        pid = name.rsplit("-", 2)[-2] if name.count("-") >= 3 else ""
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue   # its owner is still removing it
        remove_tree(directory / name)
        removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
