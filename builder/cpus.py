"""How many cores are idle right now: whether a second process would help or only compete."""
from __future__ import annotations

import os


def spare_cpus() -> int:
    """Usable cores not running anything at this moment besides the calling thread.

    A helper process costs extra work in all, which pays only on a core that would otherwise
    idle; on a busy machine it slows everything down. The count of runnable tasks now (not
    the load average, which a helper would raise for the next minute) decides.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            running = int(f.read().split()[3].split("/")[0])  # "0.50 0.40 0.30 2/345 678"
    except (OSError, ValueError, IndexError):
        return cpus - 1
    return cpus - max(running, 1)  # the calling thread is one of the running ones
