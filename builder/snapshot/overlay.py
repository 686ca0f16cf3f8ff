"""Mounting and unmounting an overlayfs (the kernel does the copy-on-write)."""
from __future__ import annotations

import errno
import os

from builder.runtime import linux

# The mount data must fit in one page.
_MAX_DATA = 4000


def mount(lowers: list[str], upper: str, work: str, target: str, userxattr: bool = False,
          volatile: bool = False) -> None:
    """Mount ``lowers`` (top first) with ``upper`` on ``target``; OSError if the kernel refuses.

    ``volatile`` (for an upper directory that is thrown away, Linux 5.10+; ignored where the
    kernel does not know it): no syncs through the overlay — and above all none of the whole
    upper filesystem when it is unmounted, which otherwise costs from one to tens of
    milliseconds depending on what else is dirty on that filesystem.
    """
    data = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    if userxattr:
        data += ",userxattr"
    if len(data) + len(",volatile") > _MAX_DATA:
        raise OSError(errno.E2BIG, "overlay mount options longer than a page", target)
    if volatile:
        try:
            linux.mount("overlay", target, "overlay", 0, data + ",volatile")
            return
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    linux.mount("overlay", target, "overlay", 0, data)


def unmount(target: str, lazy: bool = False) -> None:
    """Unmount ``target``; ``lazy`` detaches at once (a synchronous overlay unmount costs ~10 ms)."""
    try:
        linux.umount2(target, linux.MNT_DETACH if lazy else 0)
    except OSError as e:
        if e.errno == errno.EINVAL:      # not mounted
            return
        if e.errno == errno.EBUSY:
            linux.umount2(target, linux.MNT_DETACH)
            return
        raise


def is_mounted(target: str) -> bool:
    real = os.path.realpath(target)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)
