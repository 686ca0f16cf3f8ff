"""`pybuild run` from an image in the store, and `pybuild ps/stop/rm` for detached containers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime_support import store_image

PYBUILD = [sys.executable, "-c", "import sys; from builder.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, busybox_rootfs) -> Path:
    root = tmp_path_factory.mktemp("store")
    STORE_PREFIX[:] = [str(root)]
    store_image(root, busybox_rootfs, "busybox:latest", cmd=["sh"], env=["PATH=/bin", "FROM_IMAGE=yes"])
    store_image(root, busybox_rootfs, "app:1", entrypoint=["/bin/echo", "entry"], cmd=["default-arg"],
                user="app", working_dir="/home/app", env=["PATH=/bin", "A=image"], volumes=["/home/app"],
                stop_signal="SIGUSR1")
    return root


def pybuild(store_root: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*PYBUILD, "--root", str(store_root), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _mounts() -> list[str]:
    from runtime_support import mounts_under
    return mounts_under(STORE_PREFIX[0]) if STORE_PREFIX else []


STORE_PREFIX: list[str] = []


def test_run_rm_leaves_nothing(store_root) -> None:
    before = _mounts()
    res = pybuild(store_root, "run", "--rm", "busybox", "sh", "-c", "echo hi; echo $FROM_IMAGE; exit 4")
    assert (res.returncode, res.stdout) == (4, "hi\nyes\n"), res.stderr
    assert _mounts() == before == []
    assert list((store_root / "containers").iterdir()) == []


def test_image_config_conversion(store_root) -> None:
    res = pybuild(store_root, "run", "--rm", "app:1")
    assert (res.returncode, res.stdout) == (0, "entry default-arg\n"), res.stderr
    res = pybuild(store_root, "run", "--rm", "app:1", "given")
    assert res.stdout == "entry given\n"                   # args replace Cmd, keep Entrypoint
    res = pybuild(store_root, "run", "--rm", "--entrypoint", "/bin/sh", "app:1", "-c",
                  "id -un; pwd; echo $A $B; cat /proc/self/mountinfo | grep -c ' /home/app '")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:4] == ["app", "/home/app", "image", "1"]   # user, workdir, env, volume
    res = pybuild(store_root, "run", "--rm", "-e", "A=cli", "-e", "B=2", "-u", "0:0", "-w", "/tmp",
                  "--entrypoint", "", "app:1", "sh", "-c", "id -u; pwd; echo $A $B")
    assert res.stdout.split() == ["0", "/tmp", "cli", "2"]


def test_volumes_binds_tmpfs_readonly_network(tmp_path, store_root) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "in").write_text("from host\n")
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=1\n")
    script = ("cat /mnt/in; echo out > /mnt/out; cat /ro/in; touch /ro/x 2>/dev/null || echo ro-bind; "
              "touch /probe 2>/dev/null || echo ro-root; touch /scratch/ok && echo tmpfs-rw; echo $FROM_FILE; "
              "hostname; cat /proc/net/dev | tail -n +3 | wc -l")
    res = pybuild(store_root, "run", "--rm", "-v", f"{host}:/mnt", "-v", f"{host}:/ro:ro", "--tmpfs", "/scratch",
                  "--read-only", "--env-file", str(env_file), "--hostname", "web", "--network", "none",
                  "busybox", "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["from host", "from host", "ro-bind", "ro-root", "tmpfs-rw", "1", "web", "1"]
    assert (host / "out").read_text() == "out\n"


def test_detached_ps_stop_rm(store_root) -> None:
    before = _mounts()
    res = pybuild(store_root, "run", "-d", "--name", "sleeper", "busybox", "sh", "-c",
                  "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.05; done")
    assert res.returncode == 0, res.stderr
    cid = res.stdout.strip()
    try:
        ps = pybuild(store_root, "ps")
        assert "sleeper" in ps.stdout and "running" in ps.stdout
        dup = pybuild(store_root, "run", "-d", "--name", "sleeper", "busybox", "true")
        assert dup.returncode != 0 and "already exists" in dup.stderr
        refused = pybuild(store_root, "rm", "sleeper")
        assert refused.returncode != 0 and "running" in refused.stderr
        time.sleep(0.3)
        assert pybuild(store_root, "stop", "-t", "5", "sleeper").returncode == 0
        assert pybuild(store_root, "ps", "-q").stdout == ""
        assert cid in pybuild(store_root, "ps", "-a", "-q").stdout
        log = (store_root / "containers" / cid / "output.log").read_text()
        assert log == "up\nbye\n"                        # stopped with SIGTERM, the trap ran
    finally:
        assert pybuild(store_root, "rm", "-f", cid).returncode == 0
    assert not (store_root / "containers" / cid).exists()
    assert _mounts() == before == []


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_other_runtimes_run_the_same_bundle(store_root, runtime) -> None:
    if runtime == "crun":
        # crun needs the hybrid host's cgroup2 mount out of the way (see tests/runtime/test_executor.py).
        argv = ["unshare", "-m", "sh", "-c", 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', "sh",
                *PYBUILD, "--root", str(store_root)]
        res = subprocess.run([*argv, "run", "--rm", "--runtime", "crun", "app:1", "x"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
    else:
        res = pybuild(store_root, "run", "--rm", "--runtime", runtime, "app:1", "x")
    assert (res.returncode, res.stdout) == (0, "entry x\n"), res.stderr


@pytest.mark.parametrize("args, message", [
    (("run", "--rm", "nosuchimage"), "no such image"),
    (("run", "--rm", "-v", "relative", "busybox", "true"), "SRC:DST"),
    (("run", "--rm", "-v", "/nonexistent-dir:/x", "busybox", "true"), "does not exist"),
    (("run", "--rm", "-u", "ghost", "busybox", "true"), "user 'ghost' not found"),
    (("run", "--rm", "--runtime", "/nonexistent/runtime", "busybox", "true"), "not an executable"),
    (("run", "--rm", "busybox", "no-such-cmd"), "executable file not found"),
    (("stop", "ghost"), "no such container"),
    (("run", "--rm", "-d", "busybox", "true"), "--rm with -d is not supported"),
])
def test_errors_are_one_line(store_root, args, message) -> None:
    res = pybuild(store_root, *args)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not any((store_root / "containers").iterdir()) if (store_root / "containers").exists() else True


def test_bundle_passes_runtime_tools_validation(store_root, ocivalidate) -> None:
    res = pybuild(store_root, "run", "-d", "--name", "validated", "-v", f"{store_root}:/host:ro", "--tmpfs", "/t",
                  "busybox", "sleep", "30")
    assert res.returncode == 0, res.stderr
    cid = res.stdout.strip()
    try:
        check = subprocess.run([str(ocivalidate), str(store_root / "containers" / cid)], capture_output=True, text=True)
        assert (check.returncode, check.stdout) == (0, "ok\n")
    finally:
        assert pybuild(store_root, "rm", "-f", cid).returncode == 0
