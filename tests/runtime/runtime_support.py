"""Helpers shared by the runtime tests (not fixtures)."""
from __future__ import annotations


def mount_table(mountinfo: str) -> list[tuple[str, ...]]:
    """mountinfo without what differs between two runs (mount ids, anonymous device numbers)."""
    rows = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        rows.append((f[3], f[4], f[5], *r))
    return rows
