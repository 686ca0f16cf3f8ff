"""The copy fallback: apply overlay-form layers onto a plain directory, and diff it afterwards.

Layer snapshots keep whiteouts as overlayfs does (a 0/0 character device for
a deleted name, ``trusted.overlay.opaque``/``user.overlay.opaque`` on a
directory that hides what is below). ``apply`` honours both. ``record`` notes
every entry's (inode, ctime) after the copy; ``diff`` then finds what a step
changed — any write, chmod, chown or rename changes ctime — and what it
deleted, without keeping a second copy of the tree.
"""
from __future__ import annotations

import os
import shutil
import stat

from builder.image.overlayfs import OPAQUE_XATTRS, is_opaque, is_whiteout


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _copy_entry(src: str, dst: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(dst)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst)
    else:
        os.mknod(dst, st.st_mode, st.st_rdev)
    try:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    except PermissionError:
        pass
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name in _xattrs(src):
        if name in OPAQUE_XATTRS:
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


def apply(layer: str, target: str) -> None:
    """Merge one overlay-form layer directory onto ``target``."""
    dir_times: list[tuple[str, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(layer):
        rel = os.path.relpath(dirpath, layer)
        out_dir = target if rel == "." else os.path.join(target, rel)
        for name in sorted(dirnames + filenames):
            src = os.path.join(dirpath, name)
            dst = os.path.join(out_dir, name)
            st = os.lstat(src)
            if is_whiteout(st):
                _remove(dst)
                continue
            if stat.S_ISDIR(st.st_mode):
                if os.path.lexists(dst) and not (os.path.isdir(dst) and not os.path.islink(dst)):
                    _remove(dst)
                if os.path.isdir(dst) and is_opaque(src):
                    shutil.rmtree(dst)
                if not os.path.lexists(dst):
                    _copy_entry(src, dst, st)
                else:
                    os.chmod(dst, stat.S_IMODE(st.st_mode))
                dir_times.append((dst, st))
                continue
            if os.path.lexists(dst):
                _remove(dst)
            _copy_entry(src, dst, st)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    for path, st in reversed(dir_times):
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


Record = dict[str, tuple[int, int]]


def record(root: str) -> Record:
    """Every path under root (relative) -> (inode, ctime_ns)."""
    out: Record = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_ino, st.st_ctime_ns)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return out


def diff(root: str, before: Record, upper: str) -> list[str]:
    """Copy what changed under ``root`` since ``before`` into ``upper``; return the deleted paths."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            seen.add(rel)
            st = os.lstat(path)
            if before.get(rel) == (st.st_ino, st.st_ctime_ns) and not stat.S_ISDIR(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode) and before.get(rel) == (st.st_ino, st.st_ctime_ns):
                continue   # unchanged directory; its children are still checked
            _ensure_parents(root, upper, rel)
            dst = os.path.join(upper, rel)
            if stat.S_ISDIR(st.st_mode):
                if not os.path.isdir(dst):
                    _copy_entry(path, dst, st)
            else:
                _copy_entry(path, dst, st)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    deleted = sorted(p for p in before if p not in seen)
    # Only the top of a deleted subtree needs a whiteout.
    tops = []
    for p in deleted:
        if not any(p.startswith(t + "/") for t in tops):
            tops.append(p)
    return tops


def _ensure_parents(root: str, upper: str, rel: str) -> None:
    parent = os.path.dirname(rel)
    if not parent:
        return
    parts = parent.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        dst = os.path.join(upper, sub)
        if not os.path.isdir(dst):
            _copy_entry(os.path.join(root, sub), dst, os.lstat(os.path.join(root, sub)))
