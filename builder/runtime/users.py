"""Resolving a Dockerfile/OCI ``USER`` string through a rootfs's /etc/passwd and /etc/group.

``name``, ``uid``, ``name:group``, ``uid:gid`` (and mixes) become numeric
uid, gid and supplementary gids, as the OCI image-spec conversion rules say:
a name must exist in the image; a bare uid not in passwd gets gid 0; with no
group given, the user's primary group and its other memberships apply.
The files are read through ``secure_join`` so a hostile image cannot point
them at the host's.
"""
from __future__ import annotations

import os

from .errors import RuntimeFailure
from .paths import secure_join
from .record import dataclass, field


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = field(default_factory=tuple)
    home: str = "/"


def _read(rootfs: str, path: str) -> list[list[str]]:
    try:
        with open(secure_join(rootfs, path), errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []


def resolve(rootfs: str | os.PathLike, user: str) -> ResolvedUser:
    rootfs = os.fspath(rootfs)
    user = (user or "").strip()
    if not user:
        user = "0"
    name, _, group = user.partition(":")
    passwd = [p for p in _read(rootfs, "/etc/passwd") if len(p) >= 4]
    groups = [g for g in _read(rootfs, "/etc/group") if len(g) >= 3]
    entry = None
    if name.isdigit():
        uid = int(name)
        entry = next((p for p in passwd if p[2] == name), None)
    else:
        entry = next((p for p in passwd if p[0] == name), None)
        if entry is None:
            raise RuntimeFailure(f"user {name!r} not found in the image's /etc/passwd")
        uid = int(entry[2])
    home = entry[5] if entry is not None and len(entry) > 5 and entry[5] else "/"
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((g for g in groups if g[0] == group), None)
            if g is None:
                raise RuntimeFailure(f"group {group!r} not found in the image's /etc/group")
            gid = int(g[2])
        return ResolvedUser(uid, gid, (), home)
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    extra = ()
    if entry is not None:
        extra = tuple(sorted({int(g[2]) for g in groups if g[2].isdigit() and entry[0] in g[3].split(",") if len(g) > 3}
                             - {gid}))
    return ResolvedUser(uid, gid, extra, home)
