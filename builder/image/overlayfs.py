"""How overlayfs marks deletions in an upper (or snapshot) directory.

A deleted name is a 0/0 character device; a directory whose lower contents are hidden carries
the ``trusted.overlay.opaque`` xattr (``user.overlay.opaque`` for unprivileged overlays).
The layer writer, the copy snapshotter and the solver's file lookups all read these marks.
"""
from __future__ import annotations

import os
import stat

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


def is_whiteout(st: os.stat_result) -> bool:
    """Whether an lstat result is an overlay whiteout (a 0/0 character device)."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str | os.PathLike) -> bool:
    """Whether a directory is marked opaque (its lower layers are hidden)."""
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False
