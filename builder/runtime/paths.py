"""Resolving a container path inside a root directory without escaping it.

Symlinks are followed as the container would see them: an absolute link
target, or a ``..`` past the top, stays inside the root. This is what keeps a
hostile rootfs (``/etc -> /host/etc``) from steering a mount onto the host.
"""
from __future__ import annotations

import errno
import os

_MAX_LINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    """The host path of ``unsafe`` inside ``root``, symlinks resolved within root."""
    parts = [p for p in unsafe.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                resolved.append(part)
                continue
            raise
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", unsafe)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *resolved) if resolved else root
