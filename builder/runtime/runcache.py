"""What ``pybuild run`` needs of an image, remembered per image name so later runs skip the store.

Opening the content store and reading an image through it (the store's and
the image model's modules, the SQLite index, the manifest and config blobs
re-verified against their digests) is most of what ``pybuild run`` did before
the container started. None of it changes while the name points at the same
image: the manifest and config are content-addressed and the layer snapshots
are immutable. So the first run of a name records a ``PreparedImage`` (the
digest the name resolved to, the image's run defaults, its layer snapshot
directories and their use-lock files) in ``ROOT/run-cache/``, and later runs
use it — if it names only the store's own snapshot and lock files — after two
checks against the store itself:

* the name still resolves to that digest — one read-only query of the
  store's index (its ``refs`` table, see ``builder.store.index``);
* every snapshot directory still exists — checked after its use lock is
  held, so ``prune`` cannot remove it while the container runs.

Anything else — a missing or unreadable record, a retagged name, a pruned
snapshot, an index that cannot be opened — is a miss, and ``pybuild run``
goes through the store as before (and records the image again). Only images
named by a tag and resolved to a single manifest are recorded: digests, ID
prefixes and multi-platform indexes always go through the store.
"""
from __future__ import annotations

import json
import os

from .record import dataclass, field

_VERSION = 1


@dataclass
class PreparedImage:
    reference: str                 # as the user wrote it
    name: str                      # the stored name it resolves through (docker.io/library/busybox:latest)
    digest: str                    # what that name pointed at
    image_id: str                  # the config digest
    diff_ids: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)    # layer snapshot directories, bottom first
    use_locks: list[str] = field(default_factory=list)    # the store's per-snapshot use-lock files
    defaults: dict = field(default_factory=dict)          # ImageDefaults fields


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _path(root: str, reference: str) -> str:
    # The reference itself, escaped, names the file (hashlib would cost ~2 ms to import);
    # lookup() compares the recorded reference, so a shortened name can only miss.
    key = "".join(c if c in _SAFE else f"%{ord(c):02x}" for c in reference)
    if len(key) > 200:
        import zlib
        key = f"{key[:180]}~{zlib.crc32(reference.encode()):08x}"
    return os.path.join(root, "run-cache", key + ".json")


def _index_digest(root: str, name: str) -> str | None:
    """What ``name`` points at in the store's index now (None: no such name, or no answer)."""
    import sqlite3
    path = os.path.join(root, "index.db")
    if not os.path.exists(path):
        return None
    uri = "file:" + path.replace("%", "%25").replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=5)
        try:
            row = db.execute("SELECT digest FROM refs WHERE name = ?", (name,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def lookup(root: str | os.PathLike, reference: str) -> PreparedImage | None:
    """The recorded image for ``reference`` if the store still agrees with it (snapshots not checked yet)."""
    root = os.fspath(root)
    try:
        with open(_path(root, reference)) as f:
            doc = json.load(f)
        if doc.pop("version", None) != _VERSION:
            return None
        prepared = PreparedImage(**doc)
    except (OSError, ValueError, TypeError):
        return None
    if prepared.reference != reference or not _plausible(root, prepared):
        return None
    if _index_digest(root, prepared.name) != prepared.digest:
        return None
    return prepared


_DEFAULTS = {"entrypoint", "cmd", "env", "working_dir", "user", "volumes", "stop_signal"}


def _plausible(root: str, prepared: PreparedImage) -> bool:
    """The record names the store's own snapshot and lock files (a record that names any other
    directory would make it a container's lowerdir) and run defaults ``ImageDefaults`` has."""
    snapshots, locks = os.path.join(root, "snapshots", "sha256", ""), os.path.join(root, "locks", "")
    return (len(prepared.snapshots) == len(prepared.use_locks) == len(prepared.diff_ids) > 0
            and all(_under(p, snapshots) for p in prepared.snapshots)
            and all(_under(p, locks) for p in prepared.use_locks)
            and isinstance(prepared.defaults, dict) and set(prepared.defaults) <= _DEFAULTS)


def _under(path: object, directory: str) -> bool:
    """A direct child of ``directory``, with nothing overlay's mount options would read as a separator."""
    if not isinstance(path, str) or not path.startswith(directory):
        return False
    name = path[len(directory):]
    return name not in ("", ".", "..") and "/" not in name and not any(c in path for c in ":,\\\n")


def remember(root: str | os.PathLike, prepared: PreparedImage) -> None:
    """Record ``prepared`` (best effort: a cache that cannot be written is only slower)."""
    from .record import asdict
    path = _path(os.fspath(root), prepared.reference)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"version": _VERSION, **asdict(prepared)}, f)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


class SnapshotLease:
    """Shared locks on the snapshots' use-lock files (what ``ContentStore.lease_snapshots`` takes),
    so ``prune`` leaves them alone; ``valid`` says whether every snapshot was still there once held."""

    def __init__(self, prepared: PreparedImage) -> None:
        import fcntl
        self.fds: list[int] = []
        try:
            for path in prepared.use_locks:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self.fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            self.release()
            self.valid = False
            return
        self.valid = all(os.path.isdir(p) for p in prepared.snapshots)
        if not self.valid:
            self.release()

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)          # closing releases the flock
        self.fds = []
