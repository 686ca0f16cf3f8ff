"""Starting a container: the host side and the in-container set-up.

Three processes, as in runc: this one (P) forks a stage-1 child (C) which
enters or creates the user namespace (P writes its id maps), joins namespaces
given by path and unshares the rest. A new pid namespace only applies to
children, so C forks the container's init (G, pid 1 inside) and exits; P is
a child subreaper when it must wait for G. G prepares the rootfs, pivots,
becomes the configured process, reports READY over a pipe and — for
``create`` — blocks opening ``exec.fifo`` until ``start`` opens the other end.
Errors anywhere in C or G come back over the same pipe as one line.
"""
from __future__ import annotations

import errno
import gc
import os
import signal

from . import cgroupwarm, cgroups, linux, rootfs
from .config import Spec
from .errors import RuntimeFailure
from .process import become, exec_process, find_executable
from .record import dataclass, field
from .state import FIFO

NS_FLAGS = {
    "user": linux.CLONE_NEWUSER, "mount": linux.CLONE_NEWNS, "pid": linux.CLONE_NEWPID,
    "network": linux.CLONE_NEWNET, "ipc": linux.CLONE_NEWIPC, "uts": linux.CLONE_NEWUTS,
    "cgroup": linux.CLONE_NEWCGROUP,
}
NS_PROC_NAME = {"user": "user", "mount": "mnt", "pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "cgroup": "cgroup"}
# Join order: user first (it grants the rights for the rest), mount last.
_JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "mount")


@dataclass
class Stdio:
    """File descriptors to become the container's 0, 1 and 2 (None: inherit)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


@dataclass
class LaunchRequest:
    container_id: str
    spec: Spec
    bundle: str
    state_dir: str | None = None       # where exec.fifo lives; None: start at once
    wait_for_start: bool = False
    stdio: Stdio = field(default_factory=Stdio)
    tty_slave: int | None = None       # pty slave for process.terminal
    loopback_up: bool = False          # bring lo up in a new network namespace (build RUN steps)
    cgroups_required: bool = False
    new_keyring: bool = True           # a fresh session keyring, as runc does unless --no-new-keyring
    cgroups: cgroups.CgroupSet | None = None   # directories made in advance (cgroups.make); limits still to apply
    die_with_parent: bool = False      # build steps: SIGKILL the container when this process dies (even by -9)
    parent_pidfd: int | None = None    # set by launch(): P's pidfd, for die_with_parent
    stage1_pidfd: int | None = None    # set by C before it forks G: C's pidfd, for die_with_parent


@dataclass
class Launched:
    pid: int
    cgroups: cgroups.CgroupSet
    stage1_pid: int


class _Channel:
    """Line messages between P and its children over two pipes."""

    def __init__(self) -> None:
        self.c2p_r, self.c2p_w = os.pipe()
        self.p2c_r, self.p2c_w = os.pipe()
        self._buf = b""

    def child_side(self) -> None:
        os.close(self.c2p_r)
        os.close(self.p2c_w)

    def parent_side(self) -> None:
        os.close(self.c2p_w)
        os.close(self.p2c_r)

    def send_up(self, line: str) -> None:
        os.write(self.c2p_w, (line.replace("\n", " ") + "\n").encode())

    def recv_up(self) -> str | None:
        while b"\n" not in self._buf:
            chunk = os.read(self.c2p_r, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def send_down(self, byte: bytes = b"1") -> None:
        try:
            os.write(self.p2c_w, byte)
        except BrokenPipeError:
            pass   # the child is gone; its ERROR line (or EOF) is what recv_up reports next

    def recv_down(self) -> None:
        if os.read(self.p2c_r, 1) != b"1":
            os._exit(1)

    def close_parent(self) -> None:
        for fd in (self.c2p_r, self.p2c_w):
            try:
                os.close(fd)
            except OSError:
                pass


def _write_id_maps(pid: int, spec: Spec) -> None:
    rootless = os.geteuid() != 0
    uid_lines = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in spec.uid_mappings)
    gid_lines = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in spec.gid_mappings)
    try:
        if rootless:
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("deny")
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(uid_lines)
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(gid_lines)
    except OSError as e:
        hint = " (rootless: map only your own uid and gid, size 1)" if rootless else ""
        raise RuntimeFailure(f"writing the user namespace id maps: {e.strerror}{hint}") from None


def _ns_fds(spec: Spec) -> list[tuple[str, int]]:
    """Open the namespaces to join, before we change anything."""
    fds = []
    for kind in _JOIN_ORDER:
        ns = spec.namespace(kind)
        if ns is not None and ns.path:
            try:
                fds.append((kind, os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as e:
                raise RuntimeFailure(f"namespace {kind} path {ns.path}: {e.strerror}") from None
    return fds


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _container_init(req: LaunchRequest, chan: _Channel, state_dir_fd: int | None, in_userns: bool, can_setgroups: bool,
                    cgroup_view: dict[str, str]) -> None:
    """G: everything inside the namespaces up to exec. Never returns."""
    spec = req.spec
    try:
        if req.tty_slave is not None:
            import fcntl
            import struct
            import termios
            os.setsid()
            fcntl.ioctl(req.tty_slave, termios.TIOCSCTTY, 0)
            if spec.process.console_size:
                rows, cols = spec.process.console_size
                fcntl.ioctl(req.tty_slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            for target in (0, 1, 2):
                os.dup2(req.tty_slave, target)
        else:
            for fd, target in ((req.stdio.stdin, 0), (req.stdio.stdout, 1), (req.stdio.stderr, 2)):
                if fd is not None and fd != target:
                    os.dup2(fd, target)
        if req.loopback_up and spec.namespace("network") and not spec.namespace("network").path:
            _loopback_up()
        plan = rootfs.RootfsPlan(
            rootfs=spec.root_path if os.path.isabs(spec.root_path) else os.path.join(req.bundle, spec.root_path),
            bundle=req.bundle,
            in_userns=in_userns,
            cgroup_paths=cgroup_view,
            console=os.ttyname(req.tty_slave) if req.tty_slave is not None else None,
        )
        rootfs.prepare(spec, plan)
        rootfs.write_sysctl(spec.sysctl)
        rootfs.finish(spec, in_userns)
        if spec.hostname:
            linux.sethostname(spec.hostname)
        if req.new_keyring:
            try:
                linux.join_session_keyring(f"_ses.{req.container_id}")
            except OSError as e:
                if e.errno not in (errno.ENOSYS, errno.EPERM):   # no keyrings here: nothing to hide
                    raise
        if not _places_stage1(spec):
            chan.recv_down()      # P has put us (G) in the cgroups meanwhile
        become(spec.process, can_setgroups)
        if req.die_with_parent:
            _die_with_parent(req)   # after become(): a credential change clears the death signal
        path = find_executable(spec.process.args[0], spec.process.env)
        chan.send_up("READY")
        if req.wait_for_start and state_dir_fd is not None:
            fifo = os.open(FIFO, os.O_WRONLY | os.O_CLOEXEC, dir_fd=state_dir_fd)
            os.write(fifo, b"0")
            os.close(fifo)
        exec_process(path, spec.process)
    except BaseException as e:  # noqa: BLE001 - a child must report and exit, never unwind
        _report(chan, e)
    os._exit(127)


def _die_with_parent(req: LaunchRequest) -> None:
    """G: be SIGKILLed when P dies, so a killed build leaves no container running.

    The death signal follows the parent, so G first waits until C has exited (G is then P's,
    as P is a child subreaper); a P that died before the signal was armed is caught by its pidfd.
    Killing G (pid 1 of its namespace) kills every process in the container.
    """
    import select

    if req.stage1_pidfd is not None:
        select.select([req.stage1_pidfd], [], [])   # readable once C has exited
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if req.parent_pidfd is not None and select.select([req.parent_pidfd], [], [], 0)[0]:
        os._exit(137)   # P is already gone


def _report(chan: _Channel, e: BaseException) -> None:
    msg = str(e) if isinstance(e, RuntimeFailure) else f"{type(e).__name__}: {e}"
    try:
        chan.send_up("ERROR " + msg)
    except OSError:
        pass


def _cgroup_view() -> dict[str, str]:
    """Hierarchy mount point -> this process's cgroup path in it (for the cgroup mount)."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            own[ctrls] = path
    out = {}
    for h in cgroups.hierarchies():
        key = "" if h.unified else ",".join(h.controllers)
        if key in own:
            out[h.mount_point] = own[key]
    return out


def _stage1(req: LaunchRequest, chan: _Channel, state_dir_fd: int | None, cgroup_view: dict[str, str]) -> None:
    """C: namespaces, then fork G if a pid namespace applies. Never returns."""
    spec = req.spec
    try:
        # C and G live until exec: a collection here would only touch (and so copy) the parent's pages.
        gc.disable()
        chan.child_side()
        if _places_stage1(spec):
            chan.recv_down()      # a new cgroup namespace is rooted where we are: be in place first
        ns_fds = _ns_fds(spec)
        userns = spec.namespace("user")
        in_userns = userns is not None
        can_setgroups = True
        for kind, fd in ns_fds:
            if kind == "user":
                linux.setns(fd, linux.CLONE_NEWUSER)
        if userns is not None and not userns.path:
            linux.unshare(linux.CLONE_NEWUSER)
            chan.send_up("USERNS")
            chan.recv_down()
        # Not dumpable from here until exec: a container process must not reach this (host)
        # interpreter through /proc/PID/exe or /proc/PID/fd (runc's CVE-2019-5736 class).
        # Not earlier: P must still be able to write our id maps.
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        if in_userns:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            can_setgroups = _setgroups_allowed()     # "deny" when an unprivileged user wrote the maps
        for kind, fd in ns_fds:
            if kind != "user":
                linux.setns(fd, NS_FLAGS[kind])
        flags = 0
        for ns in spec.namespaces:
            if not ns.path and ns.type != "user":
                flags |= NS_FLAGS[ns.type]
        if flags:
            linux.unshare(flags)
        if spec.namespace("pid") is not None:
            if req.die_with_parent:
                req.stage1_pidfd = os.pidfd_open(os.getpid())   # G waits on it to know C is gone
            child = os.fork()
            if child:
                chan.send_up(f"PID {child}")
                os._exit(0)
        else:
            chan.send_up(f"PID {os.getpid()}")
        _container_init(req, chan, state_dir_fd, in_userns, can_setgroups, cgroup_view)
    except BaseException as e:  # noqa: BLE001
        _report(chan, e)
    os._exit(127)


def _places_stage1(spec: Spec) -> bool:
    """Whether C joins the cgroups before unsharing (needed for a new cgroup namespace).

    Otherwise P writes G's pid while G prepares its mounts, which overlaps
    the cost of the cgroup writes with the set-up; G waits before exec.
    """
    ns = spec.namespace("cgroup")
    return ns is not None and not ns.path


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "allow"
    except OSError:
        return True


def launch(req: LaunchRequest) -> Launched:
    """Create the container's process; return once it is READY (or raise)."""
    spec = req.spec
    extra_devices = [f"{d.type} {d.major}:{d.minor} rwm" for d in spec.devices]
    rootless = os.geteuid() != 0
    cg = cgroups.CgroupSet()
    wants_cgroups = not rootless or (spec.resources is not None and (spec.resources.memory_limit is not None or spec.resources.pids_limit is not None))
    if req.cgroups is not None:
        cg = req.cgroups
        cgroups.limit(cg, spec.resources, extra_devices)
    elif wants_cgroups:
        resources = spec.resources
        if rootless and resources is not None:
            resources.devices = []   # device rules are meaningless without mknod
        cg = cgroups.create(req.container_id, spec.cgroups_path, resources, extra_devices,
                            required=req.cgroups_required or rootless)
        if cg.paths and not _places_stage1(spec):
            cgroupwarm.start()    # the kernel's wait before G can join now overlaps C's and G's set-up
    cgroup_view = dict(cg.paths) if cg.paths else _cgroup_view()
    state_dir_fd = None
    if req.state_dir is not None:
        state_dir_fd = os.open(req.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    chan = _Channel()
    if req.die_with_parent:
        req.parent_pidfd = os.pidfd_open(os.getpid())   # close-on-exec, inherited by C and G
    stage1 = 0
    has_stage1_child = spec.namespace("pid") is not None
    pid = 0
    try:
        stage1 = os.fork()
        if stage1 == 0:
            _stage1(req, chan, state_dir_fd, cgroup_view)
        chan.parent_side()
        early = _places_stage1(spec)
        if early:
            _join_cgroups(cg, stage1)
            chan.send_down()
        while True:
            line = chan.recv_up()
            if line is None:
                raise RuntimeFailure("container init exited without reporting (see its stderr)")
            kind, _, rest = line.partition(" ")
            if kind == "USERNS":
                try:
                    _write_id_maps(stage1, spec)
                except RuntimeFailure:
                    chan.send_down(b"0")
                    raise
                chan.send_down()
            elif kind == "PID":
                pid = int(rest)
                if not early:
                    _join_cgroups(cg, pid)
                    chan.send_down()
            elif kind == "ERROR":
                raise RuntimeFailure(rest)
            elif kind == "READY":
                break
        return Launched(pid=pid, cgroups=cg, stage1_pid=stage1)
    except BaseException:
        if stage1 > 0 and not has_stage1_child:
            _reap(stage1)        # it reported an error and is exiting
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        cgroups.destroy(cg)
        raise
    finally:
        cgroupwarm.stop()
        chan.close_parent()
        if state_dir_fd is not None:
            os.close(state_dir_fd)
        if req.parent_pidfd is not None:
            os.close(req.parent_pidfd)
            req.parent_pidfd = None
        if has_stage1_child:
            _reap(stage1)        # C exits as soon as it has forked G


def _join_cgroups(cg: cgroups.CgroupSet, pid: int) -> None:
    try:
        cgroups.add_process(cg, pid)
    except OSError as e:
        raise RuntimeFailure(f"joining cgroup: {e.strerror}") from None
    finally:
        cgroupwarm.stop()


def _reap(pid: int) -> None:
    if pid <= 0:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def wait_exit(pid: int) -> int:
    """Wait for our child (or reparented grandchild) ``pid``; shell-style exit code."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)


FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)
