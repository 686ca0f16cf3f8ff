"""Turning the set-up process into the container's process, then exec.

``become`` applies a runtime-spec ``process``: rlimits, OOM score, bounding
set, groups and ids (capabilities kept across the switch with KEEPCAPS), the
capability sets, no_new_privs, umask, working directory. ``find_executable``
resolves argv[0] against the container's PATH *before* we report ready, so
a missing binary is an error of ``create``, as with runc.
"""
from __future__ import annotations

import os
import resource

from . import capabilities, linux
from .config import Process
from .errors import RuntimeFailure


def set_rlimits(process: Process) -> None:
    for rl in process.rlimits:
        try:
            resource.setrlimit(getattr(resource, rl.type), (rl.soft, rl.hard))
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"{rl.type} soft={rl.soft} hard={rl.hard}: {e}") from None


def become(process: Process, can_setgroups: bool = True) -> None:
    set_rlimits(process)
    if process.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(process.oom_score_adj))
    caps = process.capabilities
    if caps is not None:
        capabilities.drop_bounding(caps.bounding)
    linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    user = process.user
    try:
        if can_setgroups:
            os.setgroups(user.additional_gids)
        elif user.additional_gids:
            raise RuntimeFailure("process.user.additionalGids cannot be set without setgroups (rootless)")
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except PermissionError as e:
        raise RuntimeFailure(f"cannot switch to uid {user.uid} gid {user.gid}: {e.strerror} (is it mapped?)") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot switch to uid {user.uid} gid {user.gid}: {e.strerror}") from None
    linux.prctl(linux.PR_SET_KEEPCAPS, 0)
    if caps is not None:
        capabilities.apply(caps.effective, caps.permitted, caps.inheritable, caps.ambient)
    else:
        capabilities.apply(0, 0, 0, 0)
    if process.no_new_privileges:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    if process.user.umask is not None:
        os.umask(process.user.umask)
    else:
        os.umask(0o022)
    try:
        os.chdir(process.cwd)
    except OSError as e:
        raise RuntimeFailure(f"process.cwd {process.cwd}: {e.strerror}") from None


def env_path(env: list[str]) -> str:
    for item in env:
        if item.startswith("PATH="):
            return item[5:]
    return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_executable(name: str, env: list[str]) -> str:
    if "/" in name:
        if not os.path.exists(name):
            raise RuntimeFailure(f"exec: {name!r}: no such file or directory")
        return name
    for directory in env_path(env).split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeFailure(f"exec: {name!r}: executable file not found in $PATH")


def env_dict(env: list[str]) -> dict[str, str]:
    out = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The user's home from the container's /etc/passwd; "/" as runc falls back to."""
    try:
        with open(passwd, errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def exec_process(path: str, process: Process) -> None:
    env = env_dict(process.env)
    if "HOME" not in env:
        env["HOME"] = home_of(process.user.uid)
    try:
        os.execve(path, process.args, env)
    except OSError as e:
        raise RuntimeFailure(f"exec {process.args[0]!r}: {e.strerror}") from None
