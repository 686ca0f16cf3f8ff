"""Helpers for the image tests: describe a directory tree, build tars by hand, require tools."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest


def snapshot(root: str | os.PathLike, *, mtimes: bool = True, owners: bool = True) -> dict[str, tuple]:
    """Everything a layer should carry about each path under ``root``, comparable with ``==``.

    Hard links show up as a shared group name (the first path of the inode).
    """
    root = os.fspath(root)
    out: dict[str, tuple] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            extra: object = None
            if stat.S_ISREG(kind):
                extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(kind):
                extra = os.readlink(path)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs = {} if stat.S_ISLNK(kind) else {
                n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(os.listxattr(path, follow_symlinks=False))
            }
            link_group = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 and not stat.S_ISDIR(kind) else None
            out[rel] = (
                kind, stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid) if owners else None,
                int(st.st_mtime) if mtimes and not stat.S_ISLNK(kind) else None,
                extra, xattrs, link_group,
            )
    return out


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar archive (in memory) built with the standard library, for hostile inputs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", mode: int = 0o644,
          **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, 1_700_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def require_tool(name: str) -> str:
    """The path of a peer tool the suite expects to be installed (.ci/install puts it there)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run .ci/install")
    return path


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, device nodes, overlayfs)")
