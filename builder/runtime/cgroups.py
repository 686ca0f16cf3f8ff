"""Putting a container into cgroups and enforcing its limits (v1, v2 or hybrid).

The container gets a directory in every mounted hierarchy (as runc does), so
that the cgroup mount inside shows its own cgroup. An empty or relative
``cgroupsPath`` is placed under this process's own cgroup; an absolute one
under the hierarchy root. Limits: memory (limit, swap), pids, and device rules
(the v1 devices controller, or on a pure v2 host an eBPF filter, see
``devicefilter``).
"""
from __future__ import annotations

import errno
import os
import signal
import time

from .errors import ConfigError, RuntimeFailure
from .mountinfo import read as read_mountinfo
from .record import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:     # config is imported where rules are built: `make` runs before the rest of the runtime loads
    from .config import DeviceRule, Resources

# runc's default device allow-list, added after the config's own rules.
_ALLOWED_DEVICES = (
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
)


@dataclass
class Hierarchy:
    mount_point: str
    root: str            # the mount's root inside the hierarchy
    controllers: tuple[str, ...]
    unified: bool


@dataclass
class CgroupSet:
    """The container's directories: hierarchy mount point -> cgroup path within it."""

    paths: dict[str, str] = field(default_factory=dict)
    fresh: bool = True                   # every directory was made by ``make`` (none existed)
    fresh_paths: list[str] = field(default_factory=list)   # the hierarchies where it made one

    def dirs(self) -> list[str]:
        return [mp + path for mp, path in self.paths.items()]


def hierarchies() -> list[Hierarchy]:
    out = []
    for e in read_mountinfo():
        if e.fstype == "cgroup2":
            ctrl_file = os.path.join(e.mount_point, "cgroup.controllers")
            try:
                with open(ctrl_file) as f:
                    ctrls = tuple(f.read().split())
            except OSError:
                ctrls = ()
            out.append(Hierarchy(e.mount_point, e.root, ctrls, True))
        elif e.fstype == "cgroup":
            opts = e.super_options.split(",")
            ctrls = tuple(o for o in opts if o not in ("rw", "ro") and "=" not in o or o.startswith("name="))
            out.append(Hierarchy(e.mount_point, e.root, ctrls, False))
    return out


def _own_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller (and '' for the unified one)."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                own[c] = path
    return own


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _parse_rule(text: str) -> DeviceRule:
    """'c 1:3 rwm' (v1 devices.allow syntax) as an allowing DeviceRule."""
    from .config import DeviceRule
    kind, numbers, access = text.split()
    major, minor = numbers.split(":")
    return DeviceRule(True, kind, None if major == "*" else int(major), None if minor == "*" else int(minor), access)


def _device_rule(rule: DeviceRule) -> str:
    major = "*" if rule.major is None or rule.major < 0 else str(rule.major)
    minor = "*" if rule.minor is None or rule.minor < 0 else str(rule.minor)
    if rule.type == "a":
        return "a"
    return f"{rule.type} {major}:{minor} {rule.access}"


def create(container_id: str, cgroups_path: str, resources: Resources | None, extra_devices: list[str],
           required: bool) -> CgroupSet:
    """Make the container's cgroup directories and apply limits (``make`` then ``limit``).

    ``required``: fail when a directory cannot be made (limits asked for);
    otherwise a hierarchy we may not write (rootless) is skipped.
    """
    result = make(container_id, cgroups_path, required)
    limit(result, resources, extra_devices)
    return result


def make(container_id: str, cgroups_path: str, required: bool, exclusive: bool = False) -> CgroupSet | None:
    """The container's cgroup directories, one per mounted hierarchy, without limits yet.

    The runtime makes them first thing (``pybuild-runc run``, ``pybuild run``): making a cgroup
    waits on the kernel's cgroup lock, which ``cgroupwarm`` keeps busy once it starts.
    ``exclusive``: only if none of them exists yet (else None, nothing left made), so that
    removing them on a failure can never touch another container's cgroups.
    """
    if exclusive:
        made = make(container_id, cgroups_path, required)
        if made is not None and made.fresh:
            return made
        if made is not None:
            for mount_point in made.fresh_paths:
                try:
                    os.rmdir(mount_point + made.paths[mount_point])
                except OSError:
                    pass
        return None
    own = _own_paths()
    result = CgroupSet()
    tree = hierarchies()
    for h in tree:
        key = "" if h.unified else next((c for c in h.controllers), "")
        base = own.get(key, "/") if key or h.unified else "/"
        if cgroups_path.startswith("/"):
            inner = cgroups_path
        else:
            inner = os.path.join(base, cgroups_path or container_id)
        inner = os.path.normpath("/" + inner.lstrip("/"))
        rel = inner[len(h.root):] if h.root != "/" and inner.startswith(h.root) else inner
        directory = h.mount_point + rel
        try:
            os.makedirs(os.path.dirname(directory), exist_ok=True)
            os.mkdir(directory)
            result.fresh_paths.append(h.mount_point)
        except FileExistsError:
            result.fresh = False
        except OSError as e:
            if required and e.errno not in (errno.EROFS,):
                raise RuntimeFailure(f"cgroup {directory}: {e.strerror}") from None
            continue
        if "cpuset" in h.controllers:
            _inherit_cpuset(directory)
        result.paths[h.mount_point] = rel
    return result


def limit(cg: CgroupSet, resources: Resources | None, extra_devices: list[str]) -> None:
    """Apply ``resources`` (and the device rules) to the directories ``make`` made; on failure they are removed."""
    limits_wanted = resources is not None and (resources.memory_limit is not None or resources.pids_limit is not None)
    try:
        _apply(cg, hierarchies(), resources, extra_devices)
    except OSError as e:
        destroy(cg)
        raise RuntimeFailure(f"cgroup limits: {e.strerror or e}") from None
    except BaseException:
        destroy(cg)
        raise
    if limits_wanted and not cg.paths:
        raise RuntimeFailure("linux.resources asks for limits but no cgroup could be created")


def _inherit_cpuset(directory: str) -> None:
    # A v1 cpuset starts empty and refuses tasks until cpus/mems are set.
    for name in ("cpuset.cpus", "cpuset.mems"):
        path = os.path.join(directory, name)
        with open(path) as f:
            if f.read().strip():
                continue
        parent = os.path.dirname(directory)
        if not os.path.exists(os.path.join(parent, name)):
            continue
        with open(os.path.join(parent, name)) as f:
            value = f.read().strip()
        if not value:
            _inherit_cpuset(parent)
            with open(os.path.join(parent, name)) as f:
                value = f.read().strip()
        _write(path, value)


def _dir_for(cg: CgroupSet, tree: list[Hierarchy], controller: str) -> tuple[str, bool] | None:
    for h in tree:
        if controller in h.controllers and h.mount_point in cg.paths:
            return h.mount_point + cg.paths[h.mount_point], h.unified
    return None


def _apply(cg: CgroupSet, tree: list[Hierarchy], res: Resources | None, extra_devices: list[str]) -> None:
    if res is None:
        return
    if res.memory_limit is not None or res.memory_swap is not None:
        found = _dir_for(cg, tree, "memory")
        if found is None:
            raise ConfigError("linux.resources.memory: no memory cgroup controller available")
        d, unified = found
        if unified:
            if res.memory_limit is not None:
                _write(os.path.join(d, "memory.max"), str(res.memory_limit if res.memory_limit > 0 else "max"))
            if res.memory_swap is not None and res.memory_limit is not None:
                swap = "max" if res.memory_swap < 0 else str(max(res.memory_swap - res.memory_limit, 0))
                _write(os.path.join(d, "memory.swap.max"), swap)
        else:
            if res.memory_limit is not None:
                _write(os.path.join(d, "memory.limit_in_bytes"), str(res.memory_limit))
            swap_file = os.path.join(d, "memory.memsw.limit_in_bytes")
            if res.memory_swap is not None and os.path.exists(swap_file):
                _write(swap_file, str(res.memory_swap))
    if res.pids_limit is not None:
        found = _dir_for(cg, tree, "pids")
        if found is None:
            raise ConfigError("linux.resources.pids: no pids cgroup controller available")
        d, _ = found
        _write(os.path.join(d, "pids.max"), "max" if res.pids_limit <= 0 else str(res.pids_limit))
    if res.devices:
        found = _dir_for(cg, tree, "devices")
        if found is not None:
            d, _ = found
            for rule in res.devices:
                _write(os.path.join(d, "devices.allow" if rule.allow else "devices.deny"), _device_rule(rule))
            for rule in (*_ALLOWED_DEVICES, *extra_devices):
                _write(os.path.join(d, "devices.allow"), rule)
            return
        unified = next((h for h in tree if h.unified and h.mount_point in cg.paths), None)
        if unified is None:
            raise ConfigError("linux.resources.devices: no devices cgroup controller and no cgroup v2 to attach a filter to")
        # cgroup v2: the same rules as an eBPF device filter.
        from .devicefilter import attach
        rules = list(res.devices) + [_parse_rule(r) for r in (*_ALLOWED_DEVICES, *extra_devices)]
        attach(unified.mount_point + cg.paths[unified.mount_point], rules)


def add_process(cg: CgroupSet, pid: int) -> None:
    for d in cg.dirs():
        _write(os.path.join(d, "cgroup.procs"), str(pid))


def pids(cg: CgroupSet) -> list[int]:
    for d in cg.dirs():
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            continue
    return []


def destroy(cg: CgroupSet, timeout: float = 2.0) -> None:
    """Kill what is left in the cgroups and remove the directories."""
    for pid in pids(cg):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for d in cg.dirs():
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    break
                time.sleep(0.005)
