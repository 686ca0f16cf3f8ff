"""The container lifecycle of the runtime-spec: create, start, run, kill, delete, exec.

These functions are what ``pybuild-runc``'s subcommands call; they talk to
``launcher`` for processes and ``state`` for what outlives a command.
"""
from __future__ import annotations

import json
import os
import signal
import time

from . import cgroups, config, launcher
from .bundle import read_config
from .errors import ConfigError, RuntimeFailure
from .record import dataclass, field
from .state import FIFO, ContainerState, StateStore, process_start_time


def load_bundle(bundle: str) -> tuple[dict, config.Spec]:
    doc = read_config(bundle)
    return doc, config.parse(doc)


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def _owner() -> str:
    import pwd
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _write_pid_file(path: str | None, pid: int) -> None:
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.replace(tmp, path)


@dataclass
class CreateOptions:
    pid_file: str | None = None
    wait_for_start: bool = True
    stdio: launcher.Stdio = field(default_factory=launcher.Stdio)
    tty_slave: int | None = None
    new_keyring: bool = True
    cgroups: cgroups.CgroupSet | None = None   # made in advance by the caller (cgroups.make)


def create(store: StateStore, container_id: str, bundle: str, opts: CreateOptions,
           loaded: tuple[dict, config.Spec] | None = None) -> ContainerState:
    """Set up the container; its init waits for ``start`` (or starts at once).

    ``loaded``: the bundle's (document, spec) when the caller has read it already.
    """
    bundle = os.path.abspath(bundle)
    launched = None
    try:
        doc, spec = loaded or load_bundle(bundle)
        state_dir = store.reserve(container_id)
    except BaseException:
        drop_cgroups(opts.cgroups)
        raise
    try:
        if opts.wait_for_start:
            os.mkfifo(os.path.join(state_dir, FIFO), 0o622)
            os.chmod(os.path.join(state_dir, FIFO), 0o622)
        req = launcher.LaunchRequest(
            container_id=container_id, spec=spec, bundle=bundle,
            state_dir=state_dir, wait_for_start=opts.wait_for_start,
            stdio=opts.stdio, tty_slave=opts.tty_slave, new_keyring=opts.new_keyring, cgroups=opts.cgroups,
        )
        launched = launcher.launch(req)
        root = spec.root_path if os.path.isabs(spec.root_path) else os.path.join(bundle, spec.root_path)
        state = ContainerState(
            id=container_id, pid=launched.pid, bundle=bundle, rootfs=root, created=_now(), owner=_owner(),
            start_time=process_start_time(launched.pid) or 0, annotations=spec.annotations,
            cgroups=launched.cgroups.paths, namespaces=[ns.type for ns in spec.namespaces],
            rootless=os.geteuid() != 0, process=doc.get("process", {}), status_dir=state_dir,
        )
        store.save(state)
        _write_pid_file(opts.pid_file, launched.pid)
        return state
    except BaseException:
        if launched is None:
            drop_cgroups(opts.cgroups)     # (launch removes them itself when it fails)
        store.remove(container_id)
        raise


def drop_cgroups(made: cgroups.CgroupSet | None) -> None:
    """Remove cgroup directories made in advance for a container that will not be created."""
    if made is not None:
        cgroups.destroy(made)


def start(store: StateStore, container_id: str) -> None:
    state = store.load(container_id)
    status = state.status()
    if status != "created":
        raise RuntimeFailure(f"container {container_id!r} is {status}, not created: cannot start")
    fifo_path = os.path.join(state.status_dir, FIFO)
    import select
    fd = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(fd, 1)
                except BlockingIOError:
                    data = None
                if data:
                    break
            if not state.alive():
                raise RuntimeFailure(f"container {container_id!r} init exited before start")
    finally:
        os.close(fd)
    os.unlink(fifo_path)


def state_of(store: StateStore, container_id: str) -> dict:
    return store.load(container_id).oci_state()


def parse_signal(value: str) -> int:
    text = value.strip().upper()
    if text.isdigit():
        num = int(text)
        if 0 < num < 65:
            return num
        raise RuntimeFailure(f"invalid signal {value!r}")
    if not text.startswith("SIG"):
        text = "SIG" + text
    sig = getattr(signal.Signals, text, None) if text in signal.Signals.__members__ else None
    if sig is None:
        raise RuntimeFailure(f"invalid signal {value!r}")
    return int(sig)


def kill(store: StateStore, container_id: str, sig: int, all_processes: bool = False) -> None:
    state = store.load(container_id)
    if not state.alive():
        raise RuntimeFailure(f"container {container_id!r} is not running")
    targets = [state.pid]
    if all_processes:
        targets = cgroups.pids(cgroups.CgroupSet(state.cgroups)) or targets
    for pid in targets:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(state: ContainerState, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while state.alive():
        if time.monotonic() > deadline:
            return False
        try:
            os.waitpid(state.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.002)
    return True


def delete(store: StateStore, container_id: str, force: bool = False) -> None:
    state = store.load(container_id)
    status = state.status()
    if status == "running" and not force:
        raise RuntimeFailure(f"container {container_id!r} is running: stop it first or use --force")
    if status in ("running", "created"):
        try:
            os.kill(state.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not _wait_gone(state, 5.0):
            raise RuntimeFailure(f"container {container_id!r}: init did not die after SIGKILL")
    cgroups.destroy(cgroups.CgroupSet(state.cgroups))
    store.remove(container_id)


def list_states(store: StateStore) -> list[ContainerState]:
    out = []
    for cid in store.ids():
        try:
            out.append(store.load(cid))
        except RuntimeFailure:
            continue
    return out


def container_pids(state: ContainerState) -> list[int]:
    """The container's processes: its cgroup, else everything in its pid namespace."""
    found = cgroups.pids(cgroups.CgroupSet(state.cgroups))
    if found:
        return found
    if not state.alive():
        return []
    try:
        target = os.readlink(f"/proc/{state.pid}/ns/pid")
    except OSError:
        return [state.pid]
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == target:
                    pids.append(int(name))
            except OSError:
                continue
    return sorted(pids)


class _SignalForwarder:
    """While waiting for the container, pass our signals on to it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.old: dict[int, object] = {}

    def __enter__(self) -> "_SignalForwarder":
        for sig in launcher.FORWARDED_SIGNALS:
            self.old[sig] = signal.signal(sig, self._forward)
        return self

    def _forward(self, signum: int, _frame: object) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def run(store: StateStore, container_id: str, bundle: str, detach: bool = False, pid_file: str | None = None,
        console_socket: str | None = None, keep: bool = False, new_keyring: bool = True,
        loaded: tuple[dict, config.Spec] | None = None, cgroups_made: cgroups.CgroupSet | None = None) -> int:
    """``create`` + ``start``; in the foreground, wait and return the exit code, then delete (unless ``keep``).

    ``loaded``: the bundle's (document, spec) when the caller has it already (it wrote config.json);
    ``cgroups_made``: the container's cgroup directories, made in advance (``cgroups.make``).
    """
    bundle = os.path.abspath(bundle)
    try:
        loaded = loaded or load_bundle(bundle)
        spec = loaded[1]
        tty_master = tty_slave = None
        if spec.process.terminal:
            if detach and not console_socket:
                raise ConfigError("process.terminal needs --console-socket when detached")
            if not detach and console_socket:
                raise ConfigError("--console-socket is only for detached containers")
            tty_master, tty_slave = os.openpty()
    except BaseException:
        drop_cgroups(cgroups_made)
        raise
    if detach:
        state = create(store, container_id, bundle, CreateOptions(pid_file=pid_file, wait_for_start=True, tty_slave=tty_slave,
                                                                       new_keyring=new_keyring, cgroups=cgroups_made), loaded)
        if tty_master is not None:
            send_console(console_socket, tty_master)
            os.close(tty_master)
            os.close(tty_slave)
        start(store, container_id)
        return 0
    launcher.linux.set_child_subreaper()
    state = create(store, container_id, bundle, CreateOptions(pid_file=pid_file, wait_for_start=False, tty_slave=tty_slave,
                                                                       new_keyring=new_keyring, cgroups=cgroups_made), loaded)
    try:
        with _SignalForwarder(state.pid):
            if tty_master is not None:
                os.close(tty_slave)
                from .terminal import relay
                code = relay(tty_master, state.pid)
            else:
                code = launcher.wait_exit(state.pid)
    finally:
        if not keep:
            cgroups.destroy(cgroups.CgroupSet(state.cgroups))
            store.remove(container_id)
    return code


def send_console(socket_path: str | None, master: int) -> None:
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(socket_path)
        except OSError as e:
            raise RuntimeFailure(f"--console-socket {socket_path}: {e.strerror}") from None
        socket.send_fds(s, [b"/dev/ptmx"], [master])


@dataclass
class ExecOptions:
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    additional_gids: list[int] = field(default_factory=list)
    tty: bool = False
    detach: bool = False
    pid_file: str | None = None
    process_json: str | None = None
    no_new_privs: bool | None = None
    cap_add: list[str] = field(default_factory=list)


def _exec_process(state: ContainerState, opts: ExecOptions) -> config.Process:
    if opts.process_json:
        try:
            with open(opts.process_json) as f:
                raw = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--process {opts.process_json}: {e}") from None
        return config._process(raw)
    raw = dict(state.process)
    raw["terminal"] = opts.tty
    if not opts.args:
        raise RuntimeFailure("exec needs a command")
    raw["args"] = opts.args
    env = list(raw.get("env") or [])
    for item in opts.env:
        key = item.partition("=")[0]
        env = [e for e in env if e.partition("=")[0] != key] + [item]
    raw["env"] = env
    if opts.cwd:
        raw["cwd"] = opts.cwd
    user = dict(raw.get("user") or {})
    if opts.uid is not None:
        user["uid"] = opts.uid
    if opts.gid is not None:
        user["gid"] = opts.gid
    if opts.additional_gids:
        user["additionalGids"] = opts.additional_gids
    raw["user"] = user
    if opts.no_new_privs is not None:
        raw["noNewPrivileges"] = opts.no_new_privs
    if opts.cap_add:
        caps = {k: list(v) for k, v in (raw.get("capabilities") or {}).items()}
        for key in ("bounding", "effective", "permitted"):
            caps[key] = sorted(set(caps.get(key, [])) | set(opts.cap_add))
        raw["capabilities"] = caps
    return config._process(raw)


def exec_in(store: StateStore, container_id: str, opts: ExecOptions) -> int:
    """Run another process in a running container: join its namespaces and cgroups."""
    state = store.load(container_id)
    if state.status() != "running":
        raise RuntimeFailure(f"container {container_id!r} is {state.status()}: exec needs it running")
    process = _exec_process(state, opts)
    if process.terminal and opts.detach:
        raise ConfigError("exec --tty with --detach needs a console socket, which is not supported")
    from .execute import join_and_exec
    tty_master = tty_slave = None
    if process.terminal:
        tty_master, tty_slave = os.openpty()
    if not opts.detach:
        launcher.linux.set_child_subreaper()
    pid = join_and_exec(state, process, tty_slave)
    _write_pid_file(opts.pid_file, pid)
    if opts.detach:
        return 0
    with _SignalForwarder(pid):
        if tty_master is not None:
            os.close(tty_slave)
            from .terminal import relay
            return relay(tty_master, pid)
        return launcher.wait_exit(pid)


__all__ = [
    "CreateOptions", "ExecOptions", "create", "start", "run", "kill", "delete", "state_of",
    "list_states", "container_pids", "exec_in", "parse_signal", "load_bundle", "drop_cgroups",
]
