"""Start-up recovery: what a killed process can leave half done between files and index rows.

Opening a store runs ``recover`` after the scratch clean-up (``tmpdirs.clean_stale_scratch``).
Blobs need nothing (published by one rename, unreferenced ones are ``prune``'s business); the
SQLite index rolls back unfinished transactions itself. What is left is the one place where a
directory and a row change separately — snapshots:

* a process killed between renaming a finished snapshot into place and recording it leaves a
  directory without a row: it is complete (only finished trees are renamed in), so it is recorded;
* one killed while removing a snapshot leaves a row without a directory (the row goes) and a
  ``.trash-*`` entry beside the snapshots (removed, see ``tmpdirs.remove_tree``).

Snapshots whose unpack lock is held are being changed by a live process and are left alone.
When nothing is wrong this costs one directory listing and one query.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from builder.store.locks import optional_lock
from builder.store.tmpdirs import remove_trash

if TYPE_CHECKING:
    from builder.store.store import ContentStore


def recover(store: "ContentStore") -> int:
    """Make snapshot directories and their rows agree again; returns how many were fixed."""
    base = store.root / "snapshots" / "sha256"
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return 0
    on_disk = {n for n in names if len(n) == 64}
    recorded = {row[0][7:] for row in store.index.query("SELECT diff_id FROM snapshots")}
    fixed = remove_trash(base) if len(on_disk) != len(names) else 0
    if on_disk == recorded:
        return fixed
    from builder.store.snapshots import snapshot_dir, tree_size, unpack_lock

    for hex_id in sorted(on_disk ^ recorded):
        diff_id = "sha256:" + hex_id
        with optional_lock(unpack_lock(store, diff_id), exclusive=True) as idle:
            if not idle:
                continue
            path = snapshot_dir(store, diff_id)
            is_recorded = bool(store.index.query("SELECT 1 FROM snapshots WHERE diff_id = ?", (diff_id,)))
            if path.is_dir() and not is_recorded:
                store.index.record_snapshot(diff_id, tree_size(path))
                fixed += 1
            elif is_recorded and not path.is_dir():
                store.index.delete_snapshot(diff_id)
                fixed += 1
    return fixed
