"""An image's run defaults → an OCI runtime config.json, per the image-spec conversion rules.

Pure: takes plain values (``ImageDefaults``, what ``pybuild run`` was asked)
and returns the JSON document. Rules (image-spec conversion.md and Docker):
argv is Entrypoint + Cmd, where ``--entrypoint`` replaces Entrypoint and
drops the image's Cmd, and command-line args replace Cmd; Env is the image's
then ``-e`` values (later wins, by name); WorkingDir (default "/"); User is
resolved through the image's /etc/passwd and /etc/group; StopSignal becomes
the ``org.opencontainers.image.stopSignal`` annotation; each Volume gets a
fresh directory bound in, so it is never part of the image's layers.
"""
from __future__ import annotations

import os
import resource

from . import capabilities, config
from .errors import RuntimeFailure
from .record import dataclass, field
from .users import resolve

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_SIGNAL_ANNOTATION = "org.opencontainers.image.stopSignal"


@dataclass
class ImageDefaults:
    """The image config's ``config`` object, as plain values."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None
    volumes: list[str] | None = None
    stop_signal: str | None = None
    labels: dict[str, str] | None = None


@dataclass
class BindMount:
    source: str
    destination: str
    readonly: bool = False


@dataclass
class RunRequest:
    """What the user asked ``pybuild run`` for, on top of the image."""

    args: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    network: str = "host"
    read_only: bool = False
    binds: list[BindMount] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    volume_dirs: dict[str, str] = field(default_factory=dict)   # image volume path -> host dir
    terminal: bool = False


def merge_env(base: list[str], overrides: list[str]) -> list[str]:
    """Later values win by name; order of first appearance is kept."""
    order: list[str] = []
    values: dict[str, str] = {}
    for item in [*base, *overrides]:
        key, sep, value = item.partition("=")
        if not key:
            continue
        if key not in values:
            order.append(key)
        values[key] = item if sep else f"{key}={os.environ.get(key, '')}"
    return [values[k] for k in order]


def argv(image: ImageDefaults, req: RunRequest) -> list[str]:
    if req.entrypoint is not None:
        entry = [e for e in req.entrypoint if e != ""]
        cmd = list(req.args)
    else:
        entry = list(image.entrypoint or [])
        cmd = list(req.args) if req.args else list(image.cmd or [])
    out = entry + cmd
    if not out:
        raise RuntimeFailure("no command: the image has no Entrypoint or Cmd and none was given")
    return out


def isolate(doc: dict, network: str, rootless: bool) -> None:
    """Fit ``default_spec``'s document to ``network`` ("host" or "none"), for ``pybuild run`` and RUN steps.

    As root the container keeps the default's own sysfs — read-only, and a fresh instance even
    when it shares the host's network, since a bind of the host's /sys would bring the host's
    cgroup hierarchies (and debugfs, tracefs, ...) in writable — its own read-only cgroup view,
    and runc's device rules (deny all but the standard devices; CAP_MKNOD alone must not reach
    the host's disks). Rootless, ``default_spec`` has bound the host's /sys read-only already
    (sysfs needs the network namespace's owner) and there are no cgroups to show.
    """
    linux = doc["linux"]
    namespaces = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
    if network == "none":
        namespaces.append({"type": "network"})
    linux["namespaces"] = namespaces
    if rootless:
        doc["mounts"] = [m for m in doc["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    if network == "host":
        for name in ("resolv.conf", "hosts"):
            if os.path.exists(f"/etc/{name}"):
                doc["mounts"].append({"destination": f"/etc/{name}", "type": "bind", "source": f"/etc/{name}",
                                      "options": ["rbind", "ro"]})


def build(rootfs: str, image: ImageDefaults, req: RunRequest, rootless: bool | None = None) -> dict:
    """The config.json for running ``image`` (unpacked at ``rootfs``) as ``req`` asks."""
    rootless = os.geteuid() != 0 if rootless is None else rootless
    if req.network not in ("host", "none"):
        raise RuntimeFailure(f"--network {req.network!r}: use host or none")
    user = resolve(rootfs, req.user if req.user is not None else (image.user or ""))
    env = merge_env(image.env or [], req.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if not any(e.startswith("HOSTNAME=") for e in env):
        env.append(f"HOSTNAME={req.hostname or 'pybuild'}")
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home}")
    doc = config.default_spec(rootless=rootless, uid=os.geteuid(), gid=os.getegid())
    caps = list(capabilities.DEFAULT_SET)
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)
    doc["process"] = {
        "terminal": req.terminal,
        "user": {"uid": user.uid, "gid": user.gid,
                 **({"additionalGids": list(user.additional_gids)} if user.additional_gids else {})},
        "args": argv(image, req),
        "env": env,
        "cwd": req.workdir or image.working_dir or "/",
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": False,
    }
    doc["root"] = {"path": rootfs, "readonly": req.read_only}
    doc["hostname"] = req.hostname or "pybuild"
    isolate(doc, req.network, rootless)
    mounts = doc["mounts"]
    for dest, host_dir in sorted(req.volume_dirs.items()):
        mounts.append({"destination": dest, "type": "bind", "source": host_dir, "options": ["rbind", "rw"]})
    for b in req.binds:
        if not os.path.isabs(b.destination):
            raise RuntimeFailure(f"-v {b.source}:{b.destination}: the container path must be absolute")
        if not os.path.exists(b.source):
            raise RuntimeFailure(f"-v {b.source}:{b.destination}: {b.source} does not exist")
        mounts.append({"destination": b.destination, "type": "bind", "source": os.path.abspath(b.source),
                       "options": ["rbind", "ro" if b.readonly else "rw"]})
    for dest in req.tmpfs:
        path, _, opts = dest.partition(":")
        if not os.path.isabs(path):
            raise RuntimeFailure(f"--tmpfs {dest}: the container path must be absolute")
        mounts.append({"destination": path, "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "mode=1777", *(o for o in opts.split(",") if o)]})
    doc["mounts"] = mounts
    annotations = dict(image.labels or {})
    if image.stop_signal:
        annotations[STOP_SIGNAL_ANNOTATION] = image.stop_signal
    if annotations:
        doc["annotations"] = annotations
    return doc
