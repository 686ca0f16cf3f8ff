"""Capability names and applying a process's capability sets.

The order of work follows the kernel's rules: the bounding set can only be
dropped while CAP_SETPCAP is held, so it goes first; effective/permitted/
inheritable go after the uid switch (kept across it with PR_SET_KEEPCAPS);
ambient capabilities last, since raising one needs it permitted and inheritable.
"""
from __future__ import annotations

from . import linux

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
_NUMBER = {name: i for i, name in enumerate(NAMES)}

# runc's default set (the one `runc spec` writes and Docker uses).
DEFAULT_SET = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def number(name: str) -> int:
    """The capability number for a name; ValueError if unknown."""
    key = name.upper()
    if not key.startswith("CAP_"):
        key = "CAP_" + key
    if key not in _NUMBER:
        raise ValueError(f"unknown capability {name!r}")
    return _NUMBER[key]


def mask(names: list[str]) -> int:
    """A bit mask of the named capabilities that this kernel knows."""
    top = last_cap()
    bits = 0
    for name in names:
        n = number(name)
        if n <= top:
            bits |= 1 << n
    return bits


def drop_bounding(keep: int) -> None:
    """Drop every capability not in ``keep`` from the bounding set."""
    for cap in range(last_cap() + 1):
        if not keep & (1 << cap):
            linux.prctl(linux.PR_CAPBSET_DROP, cap)


def apply(effective: int, permitted: int, inheritable: int, ambient: int) -> None:
    linux.capset(effective, permitted, inheritable)
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(last_cap() + 1):
        if ambient & (1 << cap) and permitted & inheritable & (1 << cap):
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, cap)
