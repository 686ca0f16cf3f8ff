"""Root filesystems for build steps and containers: overlayfs, or copies where overlay can't mount.

``Snapshotter(root).prepare(parents)`` gives a writable ``Snapshot`` whose
``mount_dir`` shows the parents (layer snapshots, bottom first) with a fresh
upper layer on top; ``commit`` stops writes and returns the ``Diff`` (an
overlay-form upper directory plus, for copies, the deleted paths) that the
layer writer turns into a layer; ``cleanup`` removes everything.
"""
from .snapshotter import Diff, Snapshot, Snapshotter, SnapshotError

__all__ = ["Diff", "Snapshot", "Snapshotter", "SnapshotError"]
