"""cgroupwarm: the no-op cgroup writes never move this process, stop when told, and containers still join."""
from __future__ import annotations

import os
import time
from pathlib import Path

from builder.runtime import cgroupwarm


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_target_is_our_own_cgroup() -> None:
    procs = cgroupwarm._own_procs_file()
    assert procs is not None and procs.endswith("/cgroup.procs")
    assert str(os.getpid()) in Path(procs).read_text().split()


def test_warming_leaves_us_where_we_were_and_stops() -> None:
    before, threads = Path("/proc/self/cgroup").read_text(), _threads()
    cgroupwarm.start()
    cgroupwarm.start()             # a second start while running adds no thread
    time.sleep(0.05)
    assert _threads() == threads + 1
    cgroupwarm.stop()
    deadline = time.monotonic() + 2
    while _threads() > threads and time.monotonic() < deadline:
        time.sleep(0.005)
    assert _threads() == threads
    assert Path("/proc/self/cgroup").read_text() == before


def test_container_joins_every_hierarchy(pybuild_runc, make_bundle) -> None:
    bundle = make_bundle(["cat", "/proc/self/cgroup"])
    res = pybuild_runc("run", "-b", str(bundle), "warmjoin")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split()
    assert lines and all(line.rstrip("/").endswith("/warmjoin") for line in lines), lines
