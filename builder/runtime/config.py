"""The OCI runtime-spec ``config.json``: parse, validate, and write defaults.

Parsing turns the JSON into dataclasses and refuses — with one clear line —
anything this runtime would otherwise ignore silently: an unknown namespace
type, a mount type it cannot make, terminal on a non-tty, a resource it does
not enforce. ``default_spec`` is what ``pybuild-runc spec`` writes, the same
document ``runc spec`` writes.
"""
from __future__ import annotations

from . import capabilities
from .errors import ConfigError
from .record import dataclass, field

# Decoded JSON is typed as ``object`` here: importing ``typing`` for ``Any`` costs
# ~2 ms of every pybuild-runc start.

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup")
MOUNT_TYPES = ("proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "bind", "rbind", "none", "overlay")
RLIMITS = (
    "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
    "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
)


@dataclass
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    umask: int | None = None


@dataclass
class Capabilities:
    bounding: int = 0
    effective: int = 0
    permitted: int = 0
    inheritable: int = 0
    ambient: int = 0


@dataclass
class Rlimit:
    type: str
    soft: int
    hard: int


@dataclass
class Process:
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: User = field(default_factory=User)
    terminal: bool = False
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] = field(default_factory=list)
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    console_size: tuple[int, int] | None = None     # (height, width) for the pty


@dataclass
class Mount:
    destination: str
    type: str
    source: str = ""
    options: list[str] = field(default_factory=list)


@dataclass
class Namespace:
    type: str
    path: str = ""


@dataclass
class IDMapping:
    container_id: int
    host_id: int
    size: int


@dataclass
class Device:
    path: str
    type: str
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass
class DeviceRule:
    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"


@dataclass
class Resources:
    memory_limit: int | None = None
    memory_swap: int | None = None
    pids_limit: int | None = None
    devices: list[DeviceRule] = field(default_factory=list)


@dataclass
class Spec:
    """The parts of config.json this runtime honours."""

    oci_version: str
    process: Process
    root_path: str
    root_readonly: bool = False
    hostname: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)
    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    sysctl: dict[str, str] = field(default_factory=dict)
    resources: Resources | None = None
    cgroups_path: str = ""
    rootfs_propagation: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    def namespace(self, kind: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == kind:
                return ns
        return None


def _obj(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config.json: {where} must be an object")
    return value


def _list(value: object, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"config.json: {where} must be a list")
    return value


def _int(value: object, where: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config.json: {where} must be an integer")
    return value


def _strings(value: object, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(s, str) for s in items):
        raise ConfigError(f"config.json: {where} must be a list of strings")
    return items


def _caps(raw: dict) -> Capabilities:
    sets = {}
    for key in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        try:
            sets[key] = capabilities.mask(_strings(raw.get(key), f"process.capabilities.{key}"))
        except ValueError as e:
            raise ConfigError(f"config.json: process.capabilities.{key}: {e}") from None
    return Capabilities(**sets)


def _process(raw: dict) -> Process:
    args = _strings(raw.get("args"), "process.args")
    if not args:
        raise ConfigError("config.json: process.args must not be empty")
    if "commandLine" in raw:
        raise ConfigError("config.json: process.commandLine is for Windows; use process.args")
    user_raw = _obj(raw.get("user"), "process.user")
    if "username" in user_raw:
        raise ConfigError("config.json: process.user.username is for Windows; give uid and gid")
    umask = user_raw.get("umask")
    user = User(
        uid=_int(user_raw.get("uid"), "process.user.uid", 0),
        gid=_int(user_raw.get("gid"), "process.user.gid", 0),
        additional_gids=[_int(g, "process.user.additionalGids") for g in _list(user_raw.get("additionalGids"), "process.user.additionalGids")],
        umask=None if umask is None else _int(umask, "process.user.umask"),
    )
    caps = _caps(_obj(raw["capabilities"], "process.capabilities")) if raw.get("capabilities") is not None else None
    rlimits = []
    for i, item in enumerate(_list(raw.get("rlimits"), "process.rlimits")):
        item = _obj(item, f"process.rlimits[{i}]")
        kind = item.get("type")
        if kind not in RLIMITS:
            raise ConfigError(f"config.json: process.rlimits[{i}]: unknown type {kind!r}")
        rlimits.append(Rlimit(kind, _int(item.get("soft"), f"{kind}.soft"), _int(item.get("hard"), f"{kind}.hard")))
    for unsupported in ("apparmorProfile", "selinuxLabel", "ioPriority", "scheduler", "execCPUAffinity"):
        if raw.get(unsupported):
            raise ConfigError(f"config.json: process.{unsupported} is not supported by pybuild-runc")
    env = _strings(raw.get("env"), "process.env")
    cwd = raw.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ConfigError("config.json: process.cwd must be an absolute path")
    oom = raw.get("oomScoreAdj")
    size = None
    if raw.get("consoleSize") is not None:
        box = _obj(raw["consoleSize"], "process.consoleSize")
        size = (_int(box.get("height"), "process.consoleSize.height", 0), _int(box.get("width"), "process.consoleSize.width", 0))
    return Process(
        args=args,
        env=env,
        cwd=cwd,
        user=user,
        terminal=bool(raw.get("terminal", False)),
        capabilities=caps,
        rlimits=rlimits,
        no_new_privileges=bool(raw.get("noNewPrivileges", False)),
        oom_score_adj=None if oom is None else _int(oom, "process.oomScoreAdj"),
        console_size=size,
    )


def _mounts(raw: list) -> list[Mount]:
    mounts = []
    for i, item in enumerate(raw):
        item = _obj(item, f"mounts[{i}]")
        dest = item.get("destination")
        if not isinstance(dest, str) or not dest.startswith("/"):
            raise ConfigError(f"config.json: mounts[{i}].destination must be an absolute path")
        options = _strings(item.get("options"), f"mounts[{i}].options")
        kind = item.get("type") or ("bind" if ("bind" in options or "rbind" in options) else "")
        if kind not in MOUNT_TYPES:
            raise ConfigError(f"config.json: mounts[{i}] ({dest}): mount type {kind!r} is not supported")
        if item.get("uidMappings") or item.get("gidMappings"):
            raise ConfigError(f"config.json: mounts[{i}] ({dest}): idmapped mounts are not supported")
        mounts.append(Mount(dest, kind, str(item.get("source", "")), options))
    return mounts


def _mappings(raw: list, where: str) -> list[IDMapping]:
    out = []
    for i, item in enumerate(raw):
        item = _obj(item, f"{where}[{i}]")
        out.append(IDMapping(
            _int(item.get("containerID"), f"{where}[{i}].containerID"),
            _int(item.get("hostID"), f"{where}[{i}].hostID"),
            _int(item.get("size"), f"{where}[{i}].size"),
        ))
    return out


def _meaningful(value: object) -> bool:
    """False for settings that ask for nothing (``{"shares": 0}``, ``[]``), as generators often write."""
    if isinstance(value, dict):
        return any(_meaningful(v) for v in value.values())
    if isinstance(value, list):
        return any(_meaningful(v) for v in value)
    return bool(value)


def _resources(raw: dict) -> Resources:
    res = Resources()
    known = {"memory", "pids", "devices"}
    for key, value in raw.items():
        if key not in known and _meaningful(value):
            raise ConfigError(f"config.json: linux.resources.{key} is not supported by pybuild-runc (memory, pids and devices are)")
    memory = _obj(raw.get("memory"), "linux.resources.memory")
    for key, value in memory.items():
        if key not in ("limit", "swap") and value is not None:
            raise ConfigError(f"config.json: linux.resources.memory.{key} is not supported (limit and swap are)")
    if memory.get("limit") is not None:
        res.memory_limit = _int(memory["limit"], "linux.resources.memory.limit")
    if memory.get("swap") is not None:
        res.memory_swap = _int(memory["swap"], "linux.resources.memory.swap")
    pids = _obj(raw.get("pids"), "linux.resources.pids")
    if pids.get("limit") is not None:
        res.pids_limit = _int(pids["limit"], "linux.resources.pids.limit")
    for i, rule in enumerate(_list(raw.get("devices"), "linux.resources.devices")):
        rule = _obj(rule, f"linux.resources.devices[{i}]")
        res.devices.append(DeviceRule(
            allow=bool(rule.get("allow", False)),
            type=rule.get("type") or "a",
            major=rule.get("major"),
            minor=rule.get("minor"),
            access=rule.get("access") or "rwm",
        ))
    return res


def parse(doc: object) -> Spec:
    """Validate a decoded config.json; raise ConfigError on what is not honoured."""
    doc = _obj(doc, "the document")
    version = doc.get("ociVersion")
    if not isinstance(version, str) or not version.startswith("1."):
        raise ConfigError(f"config.json: ociVersion {version!r} is not a 1.x runtime-spec version")
    if "process" not in doc:
        raise ConfigError("config.json: process is required to run a container")
    process = _process(_obj(doc["process"], "process"))
    root = _obj(doc.get("root"), "root")
    if not isinstance(root.get("path"), str) or not root["path"]:
        raise ConfigError("config.json: root.path is required")
    for other in ("windows", "solaris", "vm", "zos"):
        if doc.get(other):
            raise ConfigError(f"config.json: {other} is not supported on Linux")
    hooks = _obj(doc.get("hooks"), "hooks")
    if any(hooks.values()):
        raise ConfigError("config.json: hooks are not supported by pybuild-runc")
    linux = _obj(doc.get("linux"), "linux")
    namespaces = []
    seen = set()
    for i, item in enumerate(_list(linux.get("namespaces"), "linux.namespaces")):
        item = _obj(item, f"linux.namespaces[{i}]")
        kind = item.get("type")
        if kind not in NAMESPACE_TYPES:
            raise ConfigError(f"config.json: linux.namespaces[{i}]: namespace type {kind!r} is not supported")
        if kind in seen:
            raise ConfigError(f"config.json: linux.namespaces: {kind} is listed twice")
        seen.add(kind)
        namespaces.append(Namespace(kind, str(item.get("path") or "")))
    for unsupported in ("seccomp", "intelRdt", "personality", "timeOffsets", "mountLabel"):
        if linux.get(unsupported):
            raise ConfigError(f"config.json: linux.{unsupported} is not supported by pybuild-runc")
    devices = []
    for i, item in enumerate(_list(linux.get("devices"), "linux.devices")):
        item = _obj(item, f"linux.devices[{i}]")
        if item.get("type") not in ("c", "b", "u", "p"):
            raise ConfigError(f"config.json: linux.devices[{i}]: type must be c, b, u or p")
        devices.append(Device(
            path=str(item.get("path", "")),
            type=item["type"],
            major=_int(item.get("major"), f"linux.devices[{i}].major", 0),
            minor=_int(item.get("minor"), f"linux.devices[{i}].minor", 0),
            file_mode=_int(item.get("fileMode"), f"linux.devices[{i}].fileMode", 0o666),
            uid=_int(item.get("uid"), f"linux.devices[{i}].uid", 0),
            gid=_int(item.get("gid"), f"linux.devices[{i}].gid", 0),
        ))
    sysctl = _obj(linux.get("sysctl"), "linux.sysctl")
    hostname = doc.get("hostname")
    if hostname is not None and not isinstance(hostname, str):
        raise ConfigError("config.json: hostname must be a string")
    spec = Spec(
        oci_version=version,
        process=process,
        root_path=root["path"],
        root_readonly=bool(root.get("readonly", False)),
        hostname=hostname or None,
        mounts=_mounts(_list(doc.get("mounts"), "mounts")),
        namespaces=namespaces,
        uid_mappings=_mappings(_list(linux.get("uidMappings"), "linux.uidMappings"), "linux.uidMappings"),
        gid_mappings=_mappings(_list(linux.get("gidMappings"), "linux.gidMappings"), "linux.gidMappings"),
        masked_paths=_strings(linux.get("maskedPaths"), "linux.maskedPaths"),
        readonly_paths=_strings(linux.get("readonlyPaths"), "linux.readonlyPaths"),
        devices=devices,
        sysctl={str(k): str(v) for k, v in sysctl.items()},
        resources=_resources(_obj(linux["resources"], "linux.resources")) if linux.get("resources") else None,
        cgroups_path=str(linux.get("cgroupsPath") or ""),
        rootfs_propagation=str(linux.get("rootfsPropagation") or ""),
        annotations={str(k): str(v) for k, v in _obj(doc.get("annotations"), "annotations").items()},
    )
    _check_consistency(spec)
    return spec


def _check_consistency(spec: Spec) -> None:
    mount_ns = spec.namespace("mount")
    if mount_ns is None:
        raise ConfigError("config.json: a mount namespace is required (add {\"type\": \"mount\"} to linux.namespaces)")
    if mount_ns.path:
        raise ConfigError("config.json: joining an existing mount namespace is not supported")
    if spec.hostname and (spec.namespace("uts") is None or spec.namespace("uts").path):
        raise ConfigError("config.json: hostname needs a new uts namespace")
    userns = spec.namespace("user")
    if (spec.uid_mappings or spec.gid_mappings) and userns is None:
        raise ConfigError("config.json: uidMappings/gidMappings need a user namespace")
    if userns is not None and not userns.path and not (spec.uid_mappings and spec.gid_mappings):
        raise ConfigError("config.json: a new user namespace needs uidMappings and gidMappings")
    if spec.rootfs_propagation not in ("", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable"):
        raise ConfigError(f"config.json: linux.rootfsPropagation {spec.rootfs_propagation!r} is not valid")
    for key in spec.sysctl:
        net_ok = key.startswith("net.") and spec.namespace("network") is not None
        ipc_ok = (key.startswith("kernel.msg") or key.startswith("kernel.sem") or key.startswith("kernel.shm")
                  or key.startswith("fs.mqueue.")) and spec.namespace("ipc") is not None
        uts_ok = key in ("kernel.hostname", "kernel.domainname") and spec.namespace("uts") is not None
        if not (net_ok or ipc_ok or uts_ok):
            raise ConfigError(f"config.json: sysctl {key} is not namespaced here; refusing to change the host's value")


_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_DEFAULT: dict[str, object] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": True,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {k: list(_DEFAULT_CAPS) for k in ("bounding", "effective", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}


def default_spec(rootless: bool = False, uid: int = 0, gid: int = 0) -> dict[str, object]:
    """The config.json ``runc spec`` writes; ``rootless`` maps container root to uid/gid."""
    import copy
    doc = copy.deepcopy(_DEFAULT)
    if rootless:
        linux = doc["linux"]
        linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"] + [{"type": "user"}]
        del linux["resources"]
        mounts = []
        for m in doc["mounts"]:
            if m["destination"] == "/sys":
                # sysfs cannot be mounted without owning the network namespace.
                m = {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
            elif m["destination"] == "/dev/pts":
                m = dict(m, options=[o for o in m["options"] if o != "gid=5"])
            elif m["destination"] == "/dev/mqueue":
                pass
            mounts.append(m)
        doc["mounts"] = mounts
    return doc
