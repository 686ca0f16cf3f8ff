"""Removing a directory tree without recursion.

``shutil.rmtree`` recurses once per directory level, so a hostile tree a few
thousand levels deep (a crafted tar context) makes it raise RecursionError;
this walks with an explicit stack and never follows symlinks.
"""
from __future__ import annotations

import os
import stat


def remove_tree(path: str | os.PathLike[str], *, ignore_errors: bool = False) -> None:
    """Delete ``path`` and everything under it; symlinks are removed, never followed."""
    top = os.fspath(path)
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(top)
        return
    # (directory, listed yet?) — a directory is removed after its contents.
    stack: list[tuple[str, bool]] = [(top, False)]
    while stack:
        current, listed = stack.pop()
        try:
            if listed:
                os.rmdir(current)
                continue
            stack.append((current, True))
            with os.scandir(current) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, False))
                    else:
                        os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError:
            if not ignore_errors:
                raise
