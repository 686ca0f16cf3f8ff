"""Keeping the kernel's cgroup-attach lock warm while a container is being set up.

Moving a process into a cgroup (a write to ``cgroup.procs``) takes one global
lock for writing, ``cgroup_threadgroup_rwsem``. Unless cgroupfs is mounted
with ``favordynmods``, its first writer waits for an RCU grace period
(5-30 ms on the development host: the largest single cost of starting a
container), and the lock stays cheap to take for about one more grace period
after its last writer. runc pays the same wait but hides it behind its own
re-exec; we start it at once instead: a thread re-writes this process's pid
into the cgroup it is already in — a no-op move, checked to be one before the
first write — every few milliseconds, from the start of ``run``/``create``
until the container's init has joined its cgroups, which then costs
microseconds.

Imports nothing beyond ``os``, ``time`` and ``_thread``: it starts before the
rest of the runtime is imported.
"""
from __future__ import annotations

import _thread
import os
import time

_INTERVAL = 0.004      # well inside one grace period
_MAX_SECONDS = 2.0     # a stuck start-up does not keep it going for ever
_state = {"generation": 0, "running": False}


def _own_procs_file() -> str | None:
    """``cgroup.procs`` of the cgroup this process is in, in one mounted hierarchy (None if unsure)."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    with open("/proc/self/mountinfo") as f:
        mounts = f.read().splitlines()
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        root, mount_point = fields[3], fields[4]
        if "\\" in mount_point:
            continue          # escaped characters: not worth decoding here
        if rest[0] == "cgroup2":
            path = own.get("")
        else:
            path = next((own[c] for c in rest[2].split(",") if c in own and c), None)
        if path is None or not (root == "/" or path == root or path.startswith(root + "/")):
            continue
        rel = path if root == "/" else path[len(root):]
        return mount_point + rel.rstrip("/") + "/cgroup.procs"
    return None


def _warm(generation: int) -> None:
    try:
        procs = _own_procs_file()
        if procs is None:
            return
        pid = str(os.getpid())
        with open(procs) as f:
            if pid not in f.read().split():
                return        # not where /proc/self/cgroup says: writing would move us
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + _MAX_SECONDS
    while _state["running"] and _state["generation"] == generation and time.monotonic() < deadline:
        try:
            fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, pid.encode())
            finally:
                os.close(fd)
        except OSError:
            return
        time.sleep(_INTERVAL)


def start() -> None:
    """Begin keeping the attach lock warm, from a thread (root only; nothing happens when in doubt)."""
    if os.geteuid() != 0 or _state["running"]:
        return
    _state["generation"] += 1
    _state["running"] = True
    _thread.start_new_thread(_warm, (_state["generation"],))


def stop() -> None:
    """The container has joined its cgroups: let the thread end."""
    _state["running"] = False
