"""``exec``: start one more process inside a running container.

A forked child joins the container's cgroups (P writes its pid), then its
namespaces through /proc/PID/ns/* (user first, mount last — joining the mount
namespace also moves our root to the container's root). For a pid namespace
it forks once more, since setns(pid) only applies to children.
"""
from __future__ import annotations

import fcntl
import os
import termios

from . import cgroups, linux
from .config import Process
from .errors import RuntimeFailure
from .launcher import NS_FLAGS, NS_PROC_NAME, _Channel, _report, _setgroups_allowed
from .process import become, exec_process, find_executable
from .state import ContainerState

_ORDER = ("user", "ipc", "uts", "network", "cgroup", "pid", "mount")


def _child(state: ContainerState, process: Process, chan: _Channel, tty_slave: int | None) -> None:
    try:
        chan.child_side()
        chan.recv_down()
        # The container must not reach this host interpreter via /proc/PID/exe or fds before exec.
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        fds = []
        for kind in _ORDER:
            if kind not in state.namespaces:
                continue
            path = f"/proc/{state.pid}/ns/{NS_PROC_NAME[kind]}"
            if os.readlink(path) == os.readlink(f"/proc/self/ns/{NS_PROC_NAME[kind]}"):
                continue
            fds.append((kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
        for kind, fd in fds:
            linux.setns(fd, NS_FLAGS[kind])
            os.close(fd)
            if kind == "user":
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
        if "pid" in state.namespaces:
            child = os.fork()
            if child:
                chan.send_up(f"PID {child}")
                os._exit(0)
        else:
            chan.send_up(f"PID {os.getpid()}")
        if tty_slave is not None:
            os.setsid()
            fcntl.ioctl(tty_slave, termios.TIOCSCTTY, 0)
            for target in (0, 1, 2):
                os.dup2(tty_slave, target)
        become(process, "user" not in state.namespaces or _setgroups_allowed())
        path = find_executable(process.args[0], process.env)
        chan.send_up("READY")
        exec_process(path, process)
    except BaseException as e:  # noqa: BLE001 - a child must report and exit
        _report(chan, e)
    os._exit(127)


def join_and_exec(state: ContainerState, process: Process, tty_slave: int | None = None) -> int:
    """Start ``process`` in the container; return its host pid once it is about to exec."""
    chan = _Channel()
    stage1 = os.fork()
    if stage1 == 0:
        _child(state, process, chan, tty_slave)
    chan.parent_side()
    pid = 0
    try:
        try:
            cgroups.add_process(cgroups.CgroupSet(state.cgroups), stage1)
        except OSError as e:
            raise RuntimeFailure(f"joining the container's cgroup: {e.strerror}") from None
        chan.send_down()
        while True:
            line = chan.recv_up()
            if line is None:
                raise RuntimeFailure("exec: the process exited before starting")
            kind, _, rest = line.partition(" ")
            if kind == "PID":
                pid = int(rest)
            elif kind == "ERROR":
                raise RuntimeFailure(rest)
            elif kind == "READY":
                return pid
    finally:
        chan.close_parent()
        if "pid" in state.namespaces or pid == 0:
            try:
                os.waitpid(stage1, 0)
            except ChildProcessError:
                pass
