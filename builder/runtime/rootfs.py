"""Preparing the container's filesystem, inside its new mount namespace.

Order (as runc's libcontainer does it): make the whole tree a slave so nothing
propagates back to the host, bind the rootfs on itself, make the configured
mounts (destinations resolved inside the rootfs), create device nodes and the
/dev symlinks, pivot_root into the rootfs and detach the old root — after
which nothing of the host's mount table is reachable. Masked and read-only
paths and the read-only root come after the pivot (``finish``).
"""
from __future__ import annotations

import errno
import os
import stat

from . import linux
from .config import Device, Mount, Spec
from .errors import RuntimeFailure
from .mountinfo import read as read_mountinfo
from .paths import secure_join
from .record import dataclass

_FLAGS = {
    # option: (set, clear)
    "ro": (linux.MS_RDONLY, 0), "rw": (0, linux.MS_RDONLY),
    "nosuid": (linux.MS_NOSUID, 0), "suid": (0, linux.MS_NOSUID),
    "nodev": (linux.MS_NODEV, 0), "dev": (0, linux.MS_NODEV),
    "noexec": (linux.MS_NOEXEC, 0), "exec": (0, linux.MS_NOEXEC),
    "sync": (linux.MS_SYNCHRONOUS, 0), "async": (0, linux.MS_SYNCHRONOUS),
    "dirsync": (linux.MS_DIRSYNC, 0),
    "remount": (linux.MS_REMOUNT, 0),
    "mand": (linux.MS_MANDLOCK, 0), "nomand": (0, linux.MS_MANDLOCK),
    "noatime": (linux.MS_NOATIME, 0), "atime": (0, linux.MS_NOATIME),
    "nodiratime": (linux.MS_NODIRATIME, 0), "diratime": (0, linux.MS_NODIRATIME),
    "relatime": (linux.MS_RELATIME, 0), "norelatime": (0, linux.MS_RELATIME),
    "strictatime": (linux.MS_STRICTATIME, 0), "nostrictatime": (0, linux.MS_STRICTATIME),
    "nosymfollow": (linux.MS_NOSYMFOLLOW, 0), "symfollow": (0, linux.MS_NOSYMFOLLOW),
    "bind": (linux.MS_BIND, 0), "rbind": (linux.MS_BIND | linux.MS_REC, 0),
}
PROPAGATION = {
    "private": linux.MS_PRIVATE, "rprivate": linux.MS_PRIVATE | linux.MS_REC,
    "shared": linux.MS_SHARED, "rshared": linux.MS_SHARED | linux.MS_REC,
    "slave": linux.MS_SLAVE, "rslave": linux.MS_SLAVE | linux.MS_REC,
    "unbindable": linux.MS_UNBINDABLE, "runbindable": linux.MS_UNBINDABLE | linux.MS_REC,
}
# Options that are runtime-level, not kernel data.
_IGNORED = {"defaults", "tmpcopyup", "notmpcopyup"}

# statvfs f_flag bits that a user namespace cannot clear on a bind remount.
_LOCKED = ((os.ST_RDONLY, linux.MS_RDONLY), (os.ST_NOSUID, linux.MS_NOSUID), (os.ST_NODEV, linux.MS_NODEV),
           (os.ST_NOEXEC, linux.MS_NOEXEC), (os.ST_NOATIME, linux.MS_NOATIME),
           (os.ST_NODIRATIME, linux.MS_NODIRATIME), (os.ST_RELATIME, linux.MS_RELATIME))

DEFAULT_DEVICES = (
    Device("/dev/null", "c", 1, 3), Device("/dev/zero", "c", 1, 5), Device("/dev/full", "c", 1, 7),
    Device("/dev/random", "c", 1, 8), Device("/dev/urandom", "c", 1, 9), Device("/dev/tty", "c", 5, 0),
)
_DEV_SYMLINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                 ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"))


@dataclass
class MountOptions:
    flags: int = 0
    propagation: list[int] | None = None
    data: str = ""


def parse_options(options: list[str]) -> MountOptions:
    flags, data, propagation = 0, [], []
    for opt in options:
        if opt in _FLAGS:
            set_, clear = _FLAGS[opt]
            flags = (flags | set_) & ~clear
        elif opt in PROPAGATION:
            propagation.append(PROPAGATION[opt])
        elif opt in _IGNORED:
            continue
        else:
            data.append(opt)
    return MountOptions(flags, propagation, ",".join(data))


def _locked_flags(path: str) -> int:
    st = os.statvfs(path)
    return sum(ms for st_bit, ms in _LOCKED if st.f_flag & st_bit)


def _remount_bind(path: str, flags: int, in_userns: bool) -> None:
    # In a user namespace the flags the mount already has are locked: keep them.
    extra = _locked_flags(path) & ~linux.MS_RDONLY if in_userns else 0
    linux.mount(None, path, None, linux.MS_REMOUNT | linux.MS_BIND | flags | extra)


def _make_mountpoint(target: str, source_is_dir: bool) -> None:
    if os.path.lexists(target):
        return
    if source_is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


@dataclass
class RootfsPlan:
    """What the container-side set-up needs to know beyond the spec."""

    rootfs: str
    bundle: str
    in_userns: bool
    cgroup_paths: dict[str, str]   # hierarchy mount point on the host -> container's cgroup path in it
    console: str | None = None     # pty slave path to bind on /dev/console


def _mount_cgroup(m: Mount, target: str, opts: MountOptions, plan: RootfsPlan) -> None:
    base = opts.flags & ~(linux.MS_RDONLY | linux.MS_BIND | linux.MS_REC)
    entries = [e for e in read_mountinfo() if e.fstype in ("cgroup", "cgroup2")]
    if any(e.mount_point == "/sys/fs/cgroup" and e.fstype == "cgroup2" for e in entries):
        # Unified host: bind the container's own cgroup directory.
        source = "/sys/fs/cgroup" + plan.cgroup_paths.get("/sys/fs/cgroup", "/")
        linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
        _remount_bind(target, base | (opts.flags & linux.MS_RDONLY), plan.in_userns)
        return
    # v1 or hybrid, as runc does: a tmpfs with one bind per v1 hierarchy.
    linux.mount("tmpfs", target, "tmpfs", base, "mode=755")
    for e in entries:
        if e.fstype != "cgroup":
            continue
        name = os.path.basename(e.mount_point)
        inner = plan.cgroup_paths.get(e.mount_point)
        if inner is None:
            continue
        rel = inner[len(e.root):] if e.root != "/" and inner.startswith(e.root) else inner
        source = e.mount_point + rel
        if not os.path.isdir(source):
            continue
        dest = os.path.join(target, name)
        os.makedirs(dest, exist_ok=True)
        linux.mount(source, dest, None, linux.MS_BIND | linux.MS_REC)
        _remount_bind(dest, base | (opts.flags & linux.MS_RDONLY), plan.in_userns)


def _mount_one(m: Mount, plan: RootfsPlan) -> None:
    target = secure_join(plan.rootfs, m.destination)
    opts = parse_options(m.options)
    is_bind = bool(opts.flags & linux.MS_BIND) or m.type in ("bind", "rbind")
    if is_bind:
        source = m.source if os.path.isabs(m.source) else os.path.join(plan.bundle, m.source)
        if not os.path.exists(source):
            raise RuntimeFailure(f"mount {m.destination}: source {source} does not exist")
        _make_mountpoint(target, os.path.isdir(source))
        bind_flags = linux.MS_BIND | (opts.flags & linux.MS_REC)
        if m.type == "rbind":
            bind_flags |= linux.MS_REC
        linux.mount(source, target, None, bind_flags)
        rest = opts.flags & ~(linux.MS_BIND | linux.MS_REC | linux.MS_REMOUNT)
        if rest:
            _remount_bind(target, rest, plan.in_userns)
    elif m.type == "cgroup":
        _make_mountpoint(target, True)
        _mount_cgroup(m, target, opts, plan)
    else:
        _make_mountpoint(target, True)
        source = m.source or m.type
        flags = opts.flags
        try:
            linux.mount(source, target, m.type, flags, opts.data or None)
        except OSError as e:
            if m.type == "mqueue" and e.errno in (errno.EPERM, errno.EACCES) and plan.in_userns:
                # Without the ipc namespace's owner: bind the host's (runc does the same).
                linux.mount("/dev/mqueue", target, None, linux.MS_BIND | linux.MS_REC)
            elif m.type == "sysfs" and e.errno == errno.EPERM and plan.in_userns:
                linux.mount("/sys", target, None, linux.MS_BIND | linux.MS_REC)
                _remount_bind(target, flags & ~linux.MS_REMOUNT, True)
            else:
                raise
    for prop in opts.propagation or []:
        linux.mount(None, target, None, prop)


def _create_device(dev: Device, rootfs: str, in_userns: bool) -> None:
    target = secure_join(rootfs, dev.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if in_userns:
        # mknod is not allowed in a user namespace: bind the host's node.
        if not os.path.lexists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        linux.mount(dev.path, target, None, linux.MS_BIND)
        return
    kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[dev.type]
    if os.path.lexists(target):
        os.unlink(target)
    os.mknod(target, kind | (dev.file_mode & 0o7777), os.makedev(dev.major, dev.minor))
    os.chown(target, dev.uid, dev.gid)
    os.chmod(target, dev.file_mode & 0o7777)


def _setup_dev(spec: Spec, plan: RootfsPlan) -> None:
    dev_mount = next((m for m in spec.mounts if m.destination.rstrip("/") == "/dev"), None)
    if dev_mount is not None and (dev_mount.type in ("bind", "rbind") or "bind" in dev_mount.options or "rbind" in dev_mount.options):
        return   # the host's /dev was bound in on purpose
    old_umask = os.umask(0)
    try:
        for dev in (*DEFAULT_DEVICES, *spec.devices):
            _create_device(dev, plan.rootfs, plan.in_userns)
    finally:
        os.umask(old_umask)
    dev = secure_join(plan.rootfs, "/dev")
    for src, link in _DEV_SYMLINKS:
        target = secure_join(plan.rootfs, link)
        if not os.path.lexists(target):
            os.symlink(src, target)
    if any(m.destination == "/dev/pts" for m in spec.mounts):
        ptmx = os.path.join(dev, "ptmx")
        if os.path.lexists(ptmx):
            os.unlink(ptmx)
        os.symlink("pts/ptmx", ptmx)
    if plan.console:
        console = os.path.join(dev, "console")
        if not os.path.lexists(console):
            os.close(os.open(console, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        linux.mount(plan.console, console, None, linux.MS_BIND)


def prepare(spec: Spec, plan: RootfsPlan) -> None:
    """Make the mounts and pivot into the rootfs (we are in the new mount ns)."""
    linux.mount(None, "/", None, PROPAGATION.get(spec.rootfs_propagation, 0) or (linux.MS_SLAVE | linux.MS_REC))
    # A shared propagation would leak our mounts; keep the tree a slave until pivot.
    if spec.rootfs_propagation in ("shared", "rshared"):
        linux.mount(None, "/", None, linux.MS_SLAVE | linux.MS_REC)
    if not os.path.isdir(plan.rootfs):
        raise RuntimeFailure(f"root.path {plan.rootfs} is not a directory")
    linux.mount(plan.rootfs, plan.rootfs, None, linux.MS_BIND | linux.MS_REC)
    for m in spec.mounts:
        try:
            _mount_one(m, plan)
        except OSError as e:
            raise RuntimeFailure(f"mount {m.destination} ({m.type}): {e.strerror or e}") from None
    _setup_dev(spec, plan)
    os.chdir(plan.rootfs)
    linux.pivot_root(".", ".")
    # The old root is stacked under the new one at "/": detach it.
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    if spec.rootfs_propagation in PROPAGATION:
        linux.mount(None, "/", None, PROPAGATION[spec.rootfs_propagation])


def write_sysctl(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            raise RuntimeFailure(f"sysctl {key}={value}: {e.strerror}") from None


def finish(spec: Spec, in_userns: bool) -> None:
    """After pivot: read-only paths, masked paths, read-only root."""
    for path in spec.readonly_paths:
        if not os.path.lexists(path):
            continue
        linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
        _remount_bind(path, linux.MS_RDONLY | linux.MS_REC, in_userns)
    for path in spec.masked_paths:
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY)
        else:
            linux.mount("/dev/null", path, None, linux.MS_BIND)
    if spec.root_readonly:
        _remount_bind("/", linux.MS_RDONLY, in_userns)
