"""The cgroup v2 device filter: a real eBPF program attached to a real cgroup.

This host has hybrid cgroups; the filter is attached to a fresh cgroup in
the unified (v2) hierarchy and a child process in it tries real devices.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.runtime import cgroups
from builder.runtime.config import DeviceRule
from builder.runtime.devicefilter import program
from builder.runtime.devicefilter import attach


def _unified_root() -> Path:
    for h in cgroups.hierarchies():
        if h.unified:
            return Path(h.mount_point)
    pytest.fail("no cgroup v2 hierarchy mounted")


def _try_devices(cgroup: Path, attempts: list[tuple[str, str]]) -> list[str]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        results = []
        for path, mode in attempts:
            try:
                open(path, mode + "b").close()
                results.append("ok")
            except OSError as e:
                results.append(e.strerror)
        os.write(w, "|".join(results).encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return out.split("|")


@pytest.fixture
def cgroup(tmp_path) -> Path:
    path = _unified_root() / f"pybuild-test-{os.getpid()}-{tmp_path.name}"
    path.mkdir()
    yield path
    path.rmdir()


def test_rules_are_enforced(cgroup) -> None:
    attach(str(cgroup), [DeviceRule(False, "a"), DeviceRule(True, "c", 1, 3, "rwm"), DeviceRule(True, "c", 1, 5, "r")])
    got = _try_devices(cgroup, [("/dev/null", "w"), ("/dev/zero", "r"), ("/dev/zero", "w"), ("/dev/full", "r")])
    assert got == ["ok", "ok", "Operation not permitted", "Operation not permitted"]


def test_later_rules_win(cgroup) -> None:
    attach(str(cgroup), [DeviceRule(True, "a"), DeviceRule(False, "c", 1, None, "w")])   # deny writes to any 1:*
    got = _try_devices(cgroup, [("/dev/null", "r"), ("/dev/null", "w"), ("/dev/tty", "r")])
    assert got[:2] == ["ok", "Operation not permitted"]
    assert got[2] != "Operation not permitted"      # 5:0 is still allowed (it may have no controlling tty)


def test_an_unconditional_rule_ends_the_program() -> None:
    # Anything after a rule that matches everything would be unreachable, which the verifier rejects.
    insns = program([DeviceRule(False, "a"), DeviceRule(True, "c", 1, 3, "rwm")])
    assert insns[-1].code == 0x95 and insns[-2].imm == 0    # last block: deny-all, exit
