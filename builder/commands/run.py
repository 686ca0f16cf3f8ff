"""``pybuild run``, ``ps``, ``stop`` and ``rm``: run an image from the store as a container.

The image's layer snapshots (unpacked once by the store) are the lower
layers of an overlay (``builder.snapshot``) with a fresh upper directory; the
image config becomes a config.json (``builder.runtime.imagespec``) in a
bundle next to it, and a runc-compatible runtime runs it — pybuild-runc in
this process by default, or ``--runtime runc|crun|PATH``. Each container
keeps ``STATE/containers/<id>/{container.json,config.json,rootfs,snap,volumes,output.log}``
(the directory is the container's OCI bundle).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from builder.commands._common import add_root_argument, state_root
from builder.errors import PybuildError, UsageError
from builder.runtime.record import asdict, dataclass


class ContainerError(PybuildError):
    """A container could not be run, found, stopped or removed."""


def register(sub) -> None:
    p = sub.add_parser("run", help="run a command in a new container from an image in the store")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background and print the container ID")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    p.add_argument("--env-file", action="append", default=[], help="read K=V lines from a file")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]", help="bind a host path")
    p.add_argument("--tmpfs", action="append", default=[], metavar="DST[:OPTS]", help="mount a tmpfs")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="USER[:GROUP] or UID[:GID]")
    p.add_argument("--entrypoint", help="replace the image's ENTRYPOINT (drops its CMD)")
    p.add_argument("--hostname", help="the container's hostname")
    p.add_argument("--network", default="host", choices=("host", "none"))
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("--name", help="a name for the container")
    p.add_argument("--runtime", default="pybuild-runc", help="pybuild-runc (default, in process), runc, crun or a PATH")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    add_root_argument(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("ps", help="list containers started by pybuild run")
    p.add_argument("-a", "--all", action="store_true", help="also stopped containers")
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    add_root_argument(p)
    p.set_defaults(func=_ps)

    p = sub.add_parser("stop", help="stop running containers (StopSignal, then SIGKILL)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.add_argument("-t", "--time", type=float, default=10.0, help="seconds to wait before SIGKILL")
    add_root_argument(p)
    p.set_defaults(func=_stop)

    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    add_root_argument(p)
    p.set_defaults(func=_rm)


@dataclass
class ContainerRecord:
    id: str
    name: str
    image: str
    image_id: str
    command: list[str]
    runtime: str
    runtime_root: str
    snapshot_id: str
    snapshot_kind: str
    created: float
    stop_signal: str = "SIGTERM"
    detached: bool = False
    exit_code: int | None = None


def _containers_dir(args) -> Path:
    return state_root(args) / "containers"


def _runtime_argv(name: str) -> list[str]:
    if name in ("runc", "crun"):
        import shutil
        path = shutil.which(name)
        if path is None:
            raise ContainerError(f"--runtime {name}: not installed")
        return [path]
    if name != "pybuild-runc":
        if not (os.path.isfile(name) and os.access(name, os.X_OK)):
            raise ContainerError(f"--runtime {name}: not an executable file")
        return [os.path.abspath(name)]
    return []


def _read_env_files(paths: list[str]) -> list[str]:
    out = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise UsageError(f"--env-file {path}: {e.strerror}") from None
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def _parse_volumes(specs: list[str]):
    from builder.runtime.imagespec import BindMount
    binds = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise UsageError(f"-v {spec}: use SRC:DST[:ro|rw]")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise UsageError(f"-v {spec}: mode must be ro or rw")
        binds.append(BindMount(parts[0], parts[1], mode == "ro"))
    return binds


def _save(directory: Path, record: ContainerRecord) -> None:
    tmp = directory / "container.json.tmp"
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, directory / "container.json")


def _load(directory: Path) -> ContainerRecord:
    return ContainerRecord(**json.loads((directory / "container.json").read_text()))


def _prepare_image(root: Path, text: str):
    """The image ``text`` names, ready to run, and a lease on its layer snapshots.

    From the run cache when the store still agrees with it (no store modules imported at all),
    else through the store — which unpacks missing layer snapshots — and then recorded there.
    """
    from builder.runtime import runcache

    prepared = runcache.lookup(root, text)
    if prepared is not None:
        lease = runcache.SnapshotLease(prepared)
        if lease.valid:
            return prepared, lease
    prepared = _image_from_store(root, text)
    lease = runcache.SnapshotLease(prepared)
    if not lease.valid:
        raise ContainerError(f"the layers of {text} were removed while it was being prepared (a prune?); run again")
    return prepared, lease


def _image_from_store(root: Path, text: str):
    from builder.runtime import runcache
    from builder.store import ContentStore
    from builder.store.names import InvalidReferenceError, normalize_name
    from builder.store.snapshots import use_lock

    store = ContentStore(root)
    try:
        image = store.get_image(text)
        snapshots = store.image_snapshots(image)       # unpacks the layers not unpacked yet
        cfg = image.config.config
        try:
            name = normalize_name(text)
        except InvalidReferenceError:
            name = ""                                  # a digest or an ID prefix: not recorded
        prepared = runcache.PreparedImage(
            reference=text, name=name, digest=image.digest, image_id=image.id, diff_ids=list(image.diff_ids),
            snapshots=[str(p) for p in snapshots], use_locks=[str(use_lock(store, d)) for d in image.diff_ids],
            defaults={"entrypoint": cfg.entrypoint, "cmd": cfg.cmd, "env": cfg.env, "working_dir": cfg.working_dir,
                      "user": cfg.user, "volumes": cfg.volumes, "stop_signal": cfg.stop_signal},
        )
        if name and image.index is None and store.index.get_ref(name) == image.digest:
            runcache.remember(root, prepared)
        return prepared
    finally:
        store.close()


def _run(args: argparse.Namespace) -> int:
    if args.rm and args.detach:
        raise UsageError("--rm with -d is not supported: remove a detached container with `pybuild rm`")
    runtime_argv = _runtime_argv(args.runtime)
    cid = os.urandom(6).hex()
    early = {"cgroups": _early_cgroups(cid) if not runtime_argv else None}
    try:
        root = state_root(args)
        prepared, lease = _prepare_image(root, args.image)
        try:
            return _run_prepared(args, root, runtime_argv, prepared, cid, early)
        finally:
            lease.release()        # after the overlay is gone (or, detached, when this process ends)
    finally:
        if early.get("cgroups") is not None:      # never handed to the runtime
            from builder.runtime import cgroups
            cgroups.destroy(early["cgroups"])


def _early_cgroups(cid: str):
    """The container's cgroups, made now so that the kernel's wait before the container can join
    them (see builder.runtime.cgroupwarm) overlaps preparing the image; None if not root."""
    if os.geteuid() != 0:
        return None
    from builder.runtime import cgroups, cgroupwarm
    made = cgroups.make(cid, "", required=False, exclusive=True)
    if made is not None and made.paths:
        cgroupwarm.start()
    return made


def _run_prepared(args: argparse.Namespace, root: Path, runtime_argv: list[str], prepared, cid: str,
                  early: dict) -> int:
    import shutil

    from builder.runtime.imagespec import ImageDefaults, RunRequest, build
    from builder.snapshot import Snapshotter

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    defaults = ImageDefaults(**prepared.defaults)
    name = args.name or cid
    containers = _containers_dir(args)
    containers.mkdir(parents=True, exist_ok=True)
    if args.name and any(r.name == args.name for r in _records(containers)):
        raise ContainerError(f"a container named {args.name!r} already exists (pybuild rm {args.name})")
    directory = containers / cid
    directory.mkdir()
    snapshotter = Snapshotter(directory / "snap")
    snap = None
    try:
        # --rm: what the container writes is thrown away, so the overlay need not sync it.
        snap = snapshotter.prepare([Path(p) for p in prepared.snapshots], target=directory / "rootfs",
                                   volatile=args.rm)
        volume_dirs = {}
        for i, vol in enumerate(sorted(defaults.volumes or [])):
            host_dir = directory / "volumes" / str(i)
            inside = snap.mount_dir / vol.lstrip("/")
            if inside.is_dir() and not inside.is_symlink():
                shutil.copytree(inside, host_dir, symlinks=True)       # a new volume starts with the image's files
            else:
                host_dir.mkdir(parents=True)
            volume_dirs[vol] = str(host_dir)
        req = RunRequest(
            args=command, entrypoint=None if args.entrypoint is None else [args.entrypoint],
            env=_read_env_files(args.env_file) + list(args.env), workdir=args.workdir, user=args.user,
            hostname=args.hostname, network=args.network, read_only=args.read_only,
            binds=_parse_volumes(args.volume), tmpfs=list(args.tmpfs), volume_dirs=volume_dirs,
        )
        doc = build(str(snap.mount_dir), defaults, req)
        # The container directory is the bundle; the rootfs is inside it, as the bundle format asks.
        bundle = directory
        doc["root"]["path"] = os.path.relpath(snap.mount_dir, bundle)
        (bundle / "config.json").write_text(json.dumps(doc))     # compact: indent= would take the pure-Python encoder
        runtime_root = root / "runtime" / (args.runtime if not runtime_argv else Path(runtime_argv[0]).name)
        record = ContainerRecord(
            id=cid, name=name, image=args.image, image_id=prepared.image_id, command=doc["process"]["args"],
            runtime=args.runtime, runtime_root=str(runtime_root), snapshot_id=snap.id, snapshot_kind=snap.kind,
            created=time.time(), stop_signal=defaults.stop_signal or "SIGTERM", detached=args.detach,
        )
        _save(directory, record)
        if args.detach:
            _start_detached(record, runtime_argv, bundle, directory, early)
            print(cid)
            return 0
        code = _run_foreground(record, runtime_argv, bundle, doc, early)
        if not args.rm:
            record.exit_code = code
            _save(directory, record)
    except BaseException:
        if snap is not None:
            snapshotter.cleanup(snap)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    if args.rm:
        snapshotter.cleanup(snap)
        shutil.rmtree(directory, ignore_errors=True)
    else:
        _unmount(directory, record)
    return code


def _run_foreground(record: ContainerRecord, runtime_argv: list[str], bundle: Path, doc: dict, early: dict) -> int:
    if not runtime_argv:
        from builder.runtime import config, container
        from builder.runtime.state import StateStore
        return container.run(StateStore(record.runtime_root), record.id, str(bundle), loaded=(doc, config.parse(doc)),
                             cgroups_made=early.pop("cgroups"))
    import signal
    import subprocess
    proc = subprocess.Popen([*runtime_argv, "--root", record.runtime_root, "run", "--bundle", str(bundle), record.id])
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    old = {s: signal.signal(s, lambda signum, _f: proc.send_signal(signum)) for s in forwarded}
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _start_detached(record: ContainerRecord, runtime_argv: list[str], bundle: Path, directory: Path,
                    early: dict) -> None:
    log = os.open(directory / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if not runtime_argv:
            from builder.runtime import container, launcher
            from builder.runtime.state import StateStore
            store = StateStore(record.runtime_root)
            container.create(store, record.id, str(bundle), container.CreateOptions(
                stdio=launcher.Stdio(devnull, log, log), cgroups=early.pop("cgroups")))
            container.start(store, record.id)
            return
        import subprocess
        res = subprocess.run([*runtime_argv, "--root", record.runtime_root, "run", "--detach", "--bundle", str(bundle),
                              record.id], stdin=devnull, stdout=log, stderr=subprocess.PIPE, text=True)
        if res.returncode != 0:
            raise ContainerError(f"{record.runtime} run failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
    finally:
        os.close(log)
        os.close(devnull)


def _runtime_state(record: ContainerRecord) -> dict | None:
    if record.runtime == "pybuild-runc":
        from builder.runtime.errors import ContainerNotFound
        from builder.runtime.state import StateStore
        try:
            return StateStore(record.runtime_root).load(record.id).oci_state()
        except ContainerNotFound:
            return None
    import subprocess
    res = subprocess.run([*_runtime_argv(record.runtime), "--root", record.runtime_root, "state", record.id],
                         capture_output=True, text=True)
    return json.loads(res.stdout) if res.returncode == 0 else None


def _status(record: ContainerRecord) -> str:
    state = _runtime_state(record)
    if state is not None and state.get("status") in ("running", "created"):
        return state["status"]
    if record.exit_code is not None:
        return f"exited ({record.exit_code})"
    return "exited"


def _records(containers: Path) -> list[ContainerRecord]:
    out = []
    if containers.is_dir():
        for d in sorted(containers.iterdir()):
            try:
                out.append(_load(d))
            except (OSError, ValueError, TypeError):
                continue
    return out


def _find(args, ref: str) -> tuple[Path, ContainerRecord]:
    containers = _containers_dir(args)
    hits = [r for r in _records(containers) if r.name == ref or r.id == ref]
    if not hits:
        hits = [r for r in _records(containers) if r.id.startswith(ref)]
    if len(hits) != 1:
        raise ContainerError(f"no such container: {ref}" if not hits else f"container prefix {ref!r} is ambiguous")
    return containers / hits[0].id, hits[0]


def _ps(args: argparse.Namespace) -> int:
    rows = []
    for r in _records(_containers_dir(args)):
        status = _status(r)
        if not args.all and not status.startswith(("running", "created")):
            continue
        rows.append((r.id, r.image, " ".join(r.command)[:40], status, r.name))
    if args.quiet:
        for row in rows:
            print(row[0])
        return 0
    table = [("CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES"), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("   ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _kill(record: ContainerRecord, sig: str) -> None:
    if record.runtime == "pybuild-runc":
        from builder.runtime import container
        from builder.runtime.state import StateStore
        container.kill(StateStore(record.runtime_root), record.id, container.parse_signal(sig))
        return
    import subprocess
    subprocess.run([*_runtime_argv(record.runtime), "--root", record.runtime_root, "kill", record.id, sig],
                   capture_output=True)


def _delete_runtime_state(record: ContainerRecord) -> None:
    if record.runtime == "pybuild-runc":
        from builder.runtime import container
        from builder.runtime.errors import ContainerNotFound
        from builder.runtime.state import StateStore
        try:
            container.delete(StateStore(record.runtime_root), record.id, force=True)
        except ContainerNotFound:
            pass
        return
    import subprocess
    subprocess.run([*_runtime_argv(record.runtime), "--root", record.runtime_root, "delete", "--force", record.id],
                   capture_output=True)


def _unmount(directory: Path, record: ContainerRecord) -> None:
    from builder.snapshot import overlay
    merged = directory / "rootfs"
    if record.snapshot_kind == "overlay" and overlay.is_mounted(str(merged)):
        overlay.unmount(str(merged))


def _stop_one(directory: Path, record: ContainerRecord, timeout: float) -> None:
    if _status(record) in ("running", "created"):
        try:
            _kill(record, record.stop_signal)
        except PybuildError:
            pass
        deadline = time.monotonic() + timeout
        while _status(record) in ("running", "created") and time.monotonic() < deadline:
            time.sleep(0.05)
        if _status(record) in ("running", "created"):
            _kill(record, "SIGKILL")
    _delete_runtime_state(record)
    _unmount(directory, record)


def _stop(args: argparse.Namespace) -> int:
    for ref in args.containers:
        directory, record = _find(args, ref)
        _stop_one(directory, record, args.time)
        print(ref)
    return 0


def _rm(args: argparse.Namespace) -> int:
    import shutil
    for ref in args.containers:
        directory, record = _find(args, ref)
        if _status(record) in ("running", "created") and not args.force:
            raise ContainerError(f"container {ref} is running: stop it first or use rm --force")
        _stop_one(directory, record, 0)
        shutil.rmtree(directory, ignore_errors=True)
        print(ref)
    return 0


__all__ = ["register", "ContainerError", "ContainerRecord"]
