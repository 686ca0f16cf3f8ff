"""pybuild-runc as an unprivileged user: a user namespace maps container root to the caller.

The test makes a real unprivileged account (useradd) and runs pybuild-runc
as it with the system Python, beside runc on the same rootless bundle.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import builder
from conftest import make_busybox_rootfs, need

USER = "pybuild-rootless"
REPO = Path(builder.__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.fail("the rootless tests create a user and need root to do so")
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", USER], check=True)
        return pwd.getpwnam(USER)


@pytest.fixture
def workdir(user) -> Path:
    d = Path(tempfile.mkdtemp(prefix="pybuild-rootless-"))
    os.chmod(d, 0o755)
    make_busybox_rootfs(d / "rootfs")
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(d)], check=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_user(user, *argv: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cwd)}
    return subprocess.run(["runuser", "-u", user.pw_name, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def pybuild_runc(user, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail(f"{SYSTEM_PYTHON} is needed to run pybuild-runc as another user")
    return as_user(user, SYSTEM_PYTHON, "-m", "builder.runtime.cli", "--root", str(workdir / "state"), *args, cwd=workdir)


def _rootless_bundle(user, workdir: Path, args: list[str]) -> Path:
    res = pybuild_runc(user, workdir, "spec", "--rootless", "--bundle", str(workdir))
    assert res.returncode == 0, res.stderr
    cfg = workdir / "config.json"
    doc = json.loads(cfg.read_text())
    assert doc["linux"]["uidMappings"] == [{"containerID": 0, "hostID": user.pw_uid, "size": 1}]
    doc["process"]["terminal"] = False
    doc["process"]["args"] = args
    cfg.write_text(json.dumps(doc))
    os.chown(cfg, user.pw_uid, user.pw_gid)
    return workdir


def test_rootless_run_matches_runc(user, workdir) -> None:
    script = ("id; cat /proc/self/uid_map /proc/self/gid_map; grep -E '^Cap(Eff|Bnd)' /proc/self/status; hostname; "
              "touch /probe 2>/dev/null || echo read-only; ls -ln /bin/busybox | cut -c1-10,16-27")
    bundle = _rootless_bundle(user, workdir, ["sh", "-c", script])
    got = pybuild_runc(user, workdir, "run", "--bundle", str(bundle), "rl")
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[0].startswith("uid=0(root) gid=0(root)")
    assert got.stdout.split()[3:6] == ["0", str(user.pw_uid), "1"]      # uid_map: 0 -> the caller
    assert "read-only" in got.stdout
    expected = as_user(user, need("runc"), "--root", str(workdir / "runc-state"), "run", "--bundle", str(bundle), "rl",
                       cwd=workdir)
    assert (got.returncode, got.stdout) == (expected.returncode, expected.stdout)


def test_rootless_lifecycle(user, workdir) -> None:
    bundle = _rootless_bundle(user, workdir, ["sleep", "60"])
    err_file = workdir / "run.err"
    with open(err_file, "w") as err:   # the detached container keeps its stderr: a file, not a pipe
        out = subprocess.run(["runuser", "-u", user.pw_name, "--", "env", f"PYTHONPATH={REPO}", SYSTEM_PYTHON, "-m",
                              "builder.runtime.cli", "--root", str(workdir / "state"), "run", "-d", "--bundle", str(bundle),
                              "bg"], cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=30)
    assert out.returncode == 0, err_file.read_text()
    try:
        state = json.loads(pybuild_runc(user, workdir, "state", "bg").stdout)
        assert state["status"] == "running" and state["owner"] == USER
        host_uid = os.stat(f"/proc/{state['pid']}").st_uid
        assert host_uid == user.pw_uid            # root inside is the unprivileged user outside
        inside = pybuild_runc(user, workdir, "exec", "bg", "sh", "-c", "id -u; cat /proc/1/cmdline")
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.replace("\0", " ").split() == ["0", "sleep", "60"]
    finally:
        res = pybuild_runc(user, workdir, "delete", "--force", "bg")
        assert res.returncode == 0, res.stderr


def test_rootless_cannot_map_other_users(user, workdir) -> None:
    bundle = _rootless_bundle(user, workdir, ["true"])
    doc = json.loads((bundle / "config.json").read_text())
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 1}]
    (bundle / "config.json").write_text(json.dumps(doc))
    res = pybuild_runc(user, workdir, "run", "--bundle", str(bundle), "steal-root")
    assert res.returncode != 0
    assert "id maps" in res.stderr and "Traceback" not in res.stderr


def test_rootless_executor_runs_a_step(user, workdir) -> None:
    script = f"""
import sys
from pathlib import Path
from builder.runtime.executor import Executor, ProcessSpec, RunMount
out = []
code = Executor().run(Path({str(workdir / 'rootfs')!r}),
                      ProcessSpec(["sh", "-c", "id -u; cat /proc/self/uid_map; echo made > /made; cat /run/s"], cwd="/w"),
                      [RunMount("/run/s", "secret", data=b"pw")], "none", stdout=out.append)
sys.stdout.write(f"{{code}}\\n" + b"".join(out).decode())
"""
    res = as_user(user, SYSTEM_PYTHON, "-c", script, cwd=workdir)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")
    assert lines[0] == "0" and lines[1] == "0"                       # exit code; uid 0 inside
    assert lines[2].split() == ["0", str(user.pw_uid), "1"]
    assert lines[3] == "pw"
    made = workdir / "rootfs" / "made"
    assert made.read_text() == "made\n" and made.stat().st_uid == user.pw_uid
    assert not (workdir / "rootfs" / "run").exists()
