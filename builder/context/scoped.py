"""Resolving a path inside a root as if the root were ``/``.

Symlinks met on the way are followed, but an absolute target restarts at
the root and ``..`` stops at the root, so no path, however crafted, leaves
it (BuildKit resolves COPY sources inside the context the same way). Each
step is an ``lstat``; nothing is opened.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable

from builder.context.errors import ContextError

MAX_SYMLINKS = 40  # Linux's limit (ELOOP)


class NotInRoot(Exception):
    """The path does not exist inside the root (or is hidden there).

    ``link`` is the last symlink followed on the way, as ``(path, target)``, if any: the
    usual reason a path that exists on the host is not found is a link pointing out.
    """

    def __init__(self, path: str, link: tuple[str, str] | None = None) -> None:
        super().__init__(path)
        self.path = path
        self.link = link


@dataclass(frozen=True)
class Resolved:
    """Where a path led: its real components below the root and their lstat."""

    parts: tuple[str, ...]
    st: os.stat_result

    @property
    def rel(self) -> str:
        return "/".join(self.parts) or "."


def resolve(
    root: str,
    parts: list[str],
    *,
    follow_last: bool = True,
    hidden: Callable[[str], bool] = lambda rel: False,
) -> Resolved:
    """Follow ``parts`` from ``root``; raises ``NotInRoot`` if nothing is there.

    ``hidden(rel)`` says whether a symlink met on the way is invisible (it
    is ignored by ``.dockerignore``), in which case it cannot be followed.
    """
    pending = list(reversed(parts))
    resolved: list[str] = []
    hops = 0
    link: tuple[str, str] | None = None
    st = os.lstat(root)
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if resolved:
                resolved.pop()
                st = os.lstat(os.path.join(root, *resolved)) if resolved else os.lstat(root)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise NotInRoot("/".join(resolved + [name]), link)
        candidate = resolved + [name]
        try:
            cst = os.lstat(os.path.join(root, *candidate))
        except (FileNotFoundError, NotADirectoryError):
            raise NotInRoot("/".join(candidate), link) from None
        except OSError as exc:
            raise ContextError(f"cannot read {'/'.join(candidate)!r} in the build context: {exc.strerror}") from None
        if stat.S_ISLNK(cst.st_mode) and (pending or follow_last):
            rel = "/".join(candidate)
            if hidden(rel):
                raise NotInRoot(rel, link)
            hops += 1
            if hops > MAX_SYMLINKS:
                raise ContextError(f"too many levels of symbolic links resolving {rel!r} in the build context")
            target = os.readlink(os.path.join(root, *candidate))
            link = (rel, target)
            if target.startswith("/"):
                resolved = []
                st = os.lstat(root)
            pending.extend(reversed(target.split("/")))
            continue
        resolved = candidate
        st = cst
    return Resolved(tuple(resolved), st)
