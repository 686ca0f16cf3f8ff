"""Running a build step's process in its rootfs: the RUN executor.

``Executor.run`` turns (rootfs, process, mounts, network) into an in-memory
OCI runtime spec (``build_spec``, a pure function), validates it with the
same parser pybuild-runc uses and starts it with the same launcher; output
is streamed to callbacks as it comes. ``write_bundle`` writes the same spec
as a bundle any runc-compatible runtime can run.

Mounts a step may ask for (``RunMount``): bind (read-only unless told),
tmpfs, cache (a prepared host directory bound read-write) and secret (the
content is written to a private file on a tmpfs, /dev/shm, and bound
read-only: it never lands in the rootfs). Mount points the executor had to
create in the rootfs are removed afterwards so they do not leak into the
step's diff.

The calling process becomes a child subreaper (the container's init is a
grandchild and must be reaped here).
"""
from __future__ import annotations

import json
import os
import re
import resource
import selectors
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from . import capabilities, config, launcher, linux
from .errors import RuntimeFailure
from .imagespec import isolate
from .paths import secure_join
from .users import resolve

Network = Literal["host", "none"]
Sink = Callable[[bytes], None]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOSTNAME = "pybuild"


@dataclass
class ProcessSpec:
    """What to run: argv already built (shell form wrapped by the caller), ENV, USER, WORKDIR."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: str = ""          # Dockerfile USER: name, uid, name:group or uid:gid; "" is root


@dataclass
class RunMount:
    """One ``RUN --mount``, already prepared by the caller."""

    target: str
    type: Literal["bind", "tmpfs", "cache", "secret"]
    source: Path | None = None          # bind/cache: host path
    readonly: bool = True               # bind only (cache is always read-write)
    data: bytes | None = None           # secret content
    mode: int = 0o400                   # secret file mode
    uid: int = 0
    gid: int = 0
    size: int | None = None             # tmpfs size in bytes


def _env_with_path(env: list[str]) -> list[str]:
    if any(e.startswith("PATH=") for e in env):
        return list(env)
    return [f"PATH={DEFAULT_PATH}", *env]


def build_spec(rootfs: Path, process: ProcessSpec, mounts: list[RunMount], network: Network,
               rootless: bool | None = None, secret_files: dict[str, str] | None = None) -> dict:
    """The OCI runtime spec (as a JSON document) for one build step."""
    if network not in ("host", "none"):
        raise RuntimeFailure(f"network {network!r}: use host or none")
    if not process.args:
        raise RuntimeFailure("RUN needs a command")
    rootless = os.geteuid() != 0 if rootless is None else rootless
    user = resolve(rootfs, process.user)
    caps = list(capabilities.DEFAULT_SET)
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)   # as high as we may go
    env = _env_with_path(process.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home}")
    doc = config.default_spec(rootless=rootless, uid=os.geteuid(), gid=os.getegid())
    doc["process"] = {
        "terminal": False,
        "user": {"uid": user.uid, "gid": user.gid, **({"additionalGids": list(user.additional_gids)} if user.additional_gids else {})},
        "args": list(process.args),
        "env": env,
        "cwd": process.cwd or "/",
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": False,
    }
    doc["root"] = {"path": str(rootfs), "readonly": False}
    doc["hostname"] = HOSTNAME
    isolate(doc, network, rootless)
    mounts_doc = doc["mounts"]
    secret_files = secret_files or {}
    for m in mounts:
        if not m.target.startswith("/"):
            raise RuntimeFailure(f"mount target {m.target!r} must be absolute")
        if m.type in ("bind", "cache"):
            if m.source is None or not os.path.exists(m.source):
                raise RuntimeFailure(f"{m.type} mount {m.target}: source {m.source} does not exist")
            ro = m.readonly and m.type == "bind"
            mounts_doc.append({"destination": m.target, "type": "bind", "source": str(m.source),
                               "options": ["rbind", "ro" if ro else "rw"]})
        elif m.type == "tmpfs":
            opts = ["nosuid", "nodev", "mode=1777"] + ([f"size={m.size}"] if m.size else [])
            mounts_doc.append({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": opts})
        elif m.type == "secret":
            source = secret_files.get(m.target)
            if source is None:
                raise RuntimeFailure(f"secret mount {m.target}: no prepared secret file")
            mounts_doc.append({"destination": m.target, "type": "bind", "source": source,
                               "options": ["bind", "ro", "nosuid", "nodev", "noexec"]})
        else:
            raise RuntimeFailure(f"mount type {m.type!r} is not supported for RUN")
    doc["mounts"] = mounts_doc
    return doc


class _SecretDir:
    """Secrets as files on a tmpfs (/dev/shm), private to this process, removed after the step."""

    def __init__(self) -> None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        if base is None:
            raise RuntimeFailure("secret mounts need /dev/shm (a tmpfs) so secrets never touch the disk")
        self.dir = tempfile.mkdtemp(prefix="pybuild-secrets-", dir=base)
        os.chmod(self.dir, 0o711)

    def add(self, m: RunMount) -> str:
        path = os.path.join(self.dir, os.urandom(16).hex())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, m.data or b"")
        finally:
            os.close(fd)
        os.chown(path, m.uid, m.gid) if os.geteuid() == 0 else None
        os.chmod(path, m.mode)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _missing_mountpoints(rootfs: Path, targets: list[str]) -> list[str]:
    """Paths (inside rootfs) that mounts will have to create: every missing level, outermost first."""
    created: list[str] = []
    for target in targets:
        parts = [p for p in target.split("/") if p]
        for i in range(1, len(parts) + 1):
            path = secure_join(str(rootfs), "/" + "/".join(parts[:i]))
            if not os.path.lexists(path) and path not in created:
                created.append(path)
    return created


def _remove_created(paths: list[str]) -> None:
    """Remove the mount points we created, deepest first, but never what the step put there."""
    for path in reversed(paths):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)                    # only if the step left it empty
            elif st.st_size == 0 and os.path.isfile(path):
                os.unlink(path)                   # the empty file a file mount was bound onto
        except OSError:
            continue


class Executor:
    """Runs build steps; one instance may serve many steps (also from threads)."""

    def __init__(self, rootless: bool | None = None) -> None:
        self.rootless = os.geteuid() != 0 if rootless is None else rootless
        self._live: set[int] = set()  # init pids of running steps, for kill_all
        self._cancelled = False
        self._swept = False

    def kill_all(self, sig: int = 9) -> None:
        """Kill every step this executor is running (an interrupted build), and refuse new ones."""
        self._cancelled = True
        for pid in list(self._live):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def run(self, rootfs: Path, spec: ProcessSpec, mounts: list[RunMount] | None = None, network: Network = "host",
            stdout: Sink | None = None, stderr: Sink | None = None) -> int:
        """Run ``spec`` in ``rootfs``; stream output to the sinks; return the exit code."""
        rootfs = Path(rootfs).resolve()
        mounts = list(mounts or [])
        secrets = _SecretDir() if any(m.type == "secret" for m in mounts) else None
        try:
            secret_files = {m.target: secrets.add(m) for m in mounts if m.type == "secret"} if secrets else {}
            doc = build_spec(rootfs, spec, mounts, network, self.rootless, secret_files)
            parsed = config.parse(doc)
            # Like BuildKit, a missing working directory is created (and belongs to the step's diff).
            os.makedirs(secure_join(str(rootfs), spec.cwd or "/"), mode=0o755, exist_ok=True)
            created = _missing_mountpoints(rootfs, [m["destination"] for m in doc["mounts"]])
            try:
                return self._launch(parsed, rootfs, network, stdout, stderr)
            finally:
                _remove_created(created)
        finally:
            if secrets is not None:
                secrets.remove()

    def _launch(self, spec: config.Spec, rootfs: Path, network: Network, stdout: Sink | None, stderr: Sink | None) -> int:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        linux.set_child_subreaper()
        req = launcher.LaunchRequest(
            container_id=f"pybuild-run-{os.getpid()}-{os.urandom(6).hex()}", spec=spec, bundle=str(rootfs.parent),
            stdio=launcher.Stdio(devnull, out_w, err_w), loopback_up=(network == "none"),
            die_with_parent=True,   # a killed build must not leave its RUN processes behind
        )
        try:
            if self._cancelled:
                raise RuntimeFailure("the build was interrupted")
            launched = launcher.launch(req)
            self._live.add(launched.pid)
            if not self._swept:
                self._swept = True
                remove_dead_builds_cgroups(launched.cgroups.dirs())
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (out_w, err_w, devnull):
                os.close(fd)
        try:
            _pump({out_r: stdout, err_r: stderr})
            return launcher.wait_exit(launched.pid)
        finally:
            self._live.discard(launched.pid)
            from . import cgroups
            cgroups.destroy(launched.cgroups)

    def write_bundle(self, bundle: Path, rootfs: Path, spec: ProcessSpec, mounts: list[RunMount] | None = None,
                     network: Network = "host") -> Path:
        """Write the step as an OCI bundle (config.json) for any runc-compatible runtime."""
        if any(m.type == "secret" for m in mounts or []):
            raise RuntimeFailure("a bundle cannot carry secrets; run the step with Executor.run")
        doc = build_spec(Path(rootfs).resolve(), spec, list(mounts or []), network, self.rootless)
        config.parse(doc)
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(doc, indent=2))
        return bundle / "config.json"


_CGROUP_NAME = re.compile(r"pybuild-run-(\d+)-[0-9a-f]{12}")


def remove_dead_builds_cgroups(ours: list[str]) -> int:
    """Remove the cgroups of RUN steps whose build was killed (nobody was left to remove them):
    the ``pybuild-run-PID-*`` directories beside ``ours`` whose PID is gone. Their processes died
    with the build (see ``LaunchRequest.die_with_parent``), so they are empty; one that is not
    stays (rmdir refuses). Returns how many went."""
    from builder.store.tmpdirs import pid_alive

    removed = 0
    for parent in {os.path.dirname(d) for d in ours}:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            match = _CGROUP_NAME.fullmatch(name)
            if match is None or pid_alive(int(match.group(1))):
                continue
            try:
                os.rmdir(os.path.join(parent, name))
                removed += 1
            except OSError:
                pass
    return removed


    return True


def _pump(streams: dict[int, Sink | None]) -> None:
    """Read every pipe until EOF, handing chunks to their sink as they arrive."""
    sel = selectors.DefaultSelector()
    for fd, sink in streams.items():
        sel.register(fd, selectors.EVENT_READ, sink)
    try:
        while sel.get_map():
            for key, _ in sel.select():
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    os.close(key.fd)
                elif key.data is not None:
                    key.data(data)
    finally:
        for key in list(sel.get_map().values()):
            os.close(key.fd)
        sel.close()
