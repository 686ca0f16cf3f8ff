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


def _cgroup_dirs(name: str) -> list[Path]:
    """Every directory called ``name`` in this host's cgroup hierarchies (searched two levels deep)."""
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for candidate in (hierarchy / name, *hierarchy.glob(f"*/{name}"), *hierarchy.glob(f"*/*/{name}")):
            if candidate.is_dir():
                found.append(candidate)
    return found


def test_a_refused_config_leaves_no_cgroups(pybuild_runc, make_bundle) -> None:
    """The cgroups are made before config.json is validated: a refused config removes them again."""
    bundle = make_bundle(["true"], lambda doc: doc["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW"}))
    res = pybuild_runc("run", "-b", str(bundle), "refusedcfg")
    assert res.returncode != 0 and "seccomp is not supported" in res.stderr
    assert _cgroup_dirs("refusedcfg") == []


def test_a_taken_id_leaves_the_running_container_alone(pybuild_runc, make_bundle) -> None:
    bundle = make_bundle(["sleep", "30"])
    assert pybuild_runc.detached("run", "-d", "-b", str(bundle), "takenid").returncode == 0
    try:
        dirs = _cgroup_dirs("takenid")
        assert dirs
        res = pybuild_runc("run", "-b", str(make_bundle(["true"])), "takenid")
        assert res.returncode != 0 and "already exists" in res.stderr
        assert _cgroup_dirs("takenid") == dirs
        assert any((d / "cgroup.procs").read_text().split() for d in dirs)     # still in there, running
    finally:
        pybuild_runc("delete", "--force", "takenid")
    assert _cgroup_dirs("takenid") == []
