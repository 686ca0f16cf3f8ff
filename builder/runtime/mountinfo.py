"""Reading /proc/self/mountinfo: the kernel's view of the mount table."""
from __future__ import annotations

from .record import dataclass


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    root: str
    mount_point: str
    options: str
    fstype: str
    source: str
    super_options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f = left.split()
        r = right.split()
        entries.append(MountEntry(
            mount_id=int(f[0]), parent_id=int(f[1]), root=_unescape(f[3]),
            mount_point=_unescape(f[4]), options=f[5],
            fstype=r[0], source=_unescape(r[1]) if len(r) > 1 else "",
            super_options=r[2] if len(r) > 2 else "",
        ))
    return entries


def read(pid: int | str = "self") -> list[MountEntry]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return parse(f.read())
