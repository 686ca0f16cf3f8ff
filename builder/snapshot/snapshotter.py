"""The snapshotter: a writable root filesystem over read-only parents, and its diff.

Layout under the snapshotter's root: ``<id>/{merged,upper,work}``. With
overlayfs the parents are the lowerdirs (no copying at all); where overlay
cannot be mounted (no privilege, an unsupported backing filesystem, too many
layers for one page of mount options) the parents are copied into
``merged`` and the diff is computed on commit.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from builder.errors import PybuildError
from builder.runtime.record import dataclass, field

from . import overlay

TYPE_CHECKING = False
if TYPE_CHECKING:     # typing and the copy fallback are imported only where used: `pybuild run` start-up time
    from typing import Literal

    from . import copytree

    Mode = Literal["auto", "overlay", "copy"]


class SnapshotError(PybuildError):
    """A snapshot could not be prepared, committed or removed."""


@dataclass
class Diff:
    """A step's changes: ``upper`` in overlay form, plus deletions not shown there (copy mode)."""

    upper: Path
    deleted: list[str] = field(default_factory=list)
    overlay: bool = True       # whiteouts in ``upper`` are overlay-form (0/0 devices, opaque xattrs)


@dataclass
class Snapshot:
    id: str
    mount_dir: Path
    upper_dir: Path
    kind: Literal["overlay", "copy"]
    parents: list[Path]
    _record: copytree.Record | None = None
    committed: bool = False


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].split()[19].decode()


def _write_owner(base: Path) -> None:
    # pid plus start time: a reused pid is not mistaken for the owner.
    (base / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")


def _owner_alive(owner: Path) -> bool:
    try:
        pid, start = owner.read_text().split()
        return _start_time(int(pid)) == start
    except (OSError, ValueError):
        return False


class Snapshotter:
    def __init__(self, root: Path | str, mode: Mode = "auto") -> None:
        self.root = Path(root)
        self.mode = mode

    def prepare(self, parents: list[Path], target: Path | None = None, volatile: bool = False) -> Snapshot:
        """A writable snapshot over ``parents`` (bottom first, as an image's layers are listed).

        ``target``: where the root filesystem appears (an empty or missing
        directory, e.g. a bundle's ``rootfs``); by default inside the snapshot.
        ``volatile``: the changes will be thrown away, never committed: the overlay
        skips syncs (see ``overlay.mount``).
        """
        for p in parents:
            if not Path(p).is_dir():
                raise SnapshotError(f"snapshot parent {p} is not a directory")
        sid = os.urandom(8).hex()
        base = self.root / sid
        merged, upper, work = Path(target) if target else base / "merged", base / "upper", base / "work"
        if target is not None and merged.exists() and any(merged.iterdir()):
            raise SnapshotError(f"snapshot target {merged} is not empty")
        try:
            for d in (upper, work):
                d.mkdir(parents=True)
            merged.mkdir(parents=True, exist_ok=True)
            os.chmod(upper, 0o755)
        except OSError as e:
            raise SnapshotError(f"cannot create snapshot under {self.root}: {e.strerror}") from None
        _write_owner(base)
        snap = Snapshot(sid, merged, upper, "overlay", [Path(p) for p in parents])
        if self.mode in ("auto", "overlay"):
            try:
                self._mount_overlay(snap, work, volatile)
                return snap
            except OSError as e:
                if self.mode == "overlay":
                    shutil.rmtree(base, ignore_errors=True)
                    if target is not None:
                        shutil.rmtree(merged, ignore_errors=True)
                    raise SnapshotError(f"overlay mount failed: {e.strerror or e}") from None
        from . import copytree
        snap.kind = "copy"
        shutil.rmtree(work, ignore_errors=True)
        try:
            for parent in snap.parents:
                copytree.apply(str(parent), str(merged))
        except OSError as e:
            shutil.rmtree(base, ignore_errors=True)
            if target is not None:
                shutil.rmtree(merged, ignore_errors=True)
            raise SnapshotError(f"copying snapshot parents: {e}") from None
        snap._record = copytree.record(str(merged))
        return snap

    def recover(self) -> int:
        """Unmount and remove snapshots whose owning process is gone (a killed build); return how many.

        Snapshots of live processes are left alone. Only snapshots mounted
        at their default place (inside the snapshot directory) are found.
        """
        removed = 0
        if not self.root.is_dir():
            return 0
        for base in self.root.iterdir():
            owner = base / "owner"
            if not base.is_dir() or not owner.exists() or _owner_alive(owner):
                continue
            merged = base / "merged"
            if overlay.is_mounted(str(merged)):
                try:
                    overlay.unmount(str(merged))
                except OSError as e:
                    raise SnapshotError(f"cannot unmount stale snapshot {merged}: {e.strerror}") from None
            shutil.rmtree(base, ignore_errors=True)
            removed += 1
        return removed

    def _mount_overlay(self, snap: Snapshot, work: Path, volatile: bool = False) -> None:
        lowers = [str(p) for p in reversed(snap.parents)]
        if not lowers:
            empty = work.parent / "empty"
            empty.mkdir()
            lowers = [str(empty)]
        overlay.mount(lowers, str(snap.upper_dir), str(work), str(snap.mount_dir), userxattr=os.geteuid() != 0,
                      volatile=volatile)

    def commit(self, snap: Snapshot) -> Diff:
        """Stop using the snapshot and return its changes."""
        if snap.kind == "overlay":
            overlay.unmount(str(snap.mount_dir))
            snap.committed = True
            return Diff(snap.upper_dir, [], True)
        from . import copytree
        deleted = copytree.diff(str(snap.mount_dir), snap._record or {}, str(snap.upper_dir))
        snap.committed = True
        return Diff(snap.upper_dir, deleted, True)

    def cleanup(self, snap: Snapshot) -> None:
        """Unmount (if still mounted) and remove every directory of the snapshot."""
        base = self.root / snap.id
        if snap.kind == "overlay":
            try:
                overlay.unmount(str(snap.mount_dir), lazy=True)    # nothing is kept from it any more
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise SnapshotError(f"cannot unmount {snap.mount_dir}: {e.strerror}") from None
        if snap.kind == "overlay" and overlay.is_mounted(str(snap.mount_dir)):
            raise SnapshotError(f"{snap.mount_dir} is still mounted; not removing it")
        if not str(snap.mount_dir).startswith(str(base) + os.sep):
            shutil.rmtree(snap.mount_dir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
