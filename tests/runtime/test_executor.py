"""The RUN executor: a build step's process in its rootfs, output streamed to callbacks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from builder.runtime.errors import RuntimeFailure
from builder.runtime.executor import Executor, ProcessSpec, RunMount
from builder.snapshot import Snapshotter
from conftest import PYBUILD_RUNC, need


@pytest.fixture
def rootfs(tmp_path, busybox_rootfs) -> Path:
    """A private, writable copy of the busybox rootfs (steps write into their rootfs)."""
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    return root


def run(rootfs: Path, script: str, mounts=None, network="host", user="", cwd="/", env=None) -> tuple[int, str, str]:
    out, err = [], []
    code = Executor().run(rootfs, ProcessSpec(["/bin/sh", "-c", script], env=env or [], cwd=cwd, user=user),
                          mounts or [], network, stdout=out.append, stderr=err.append)
    return code, b"".join(out).decode(), b"".join(err).decode()


def test_exit_code_and_streams(rootfs) -> None:
    code, out, err = run(rootfs, "echo to-out; echo to-err >&2; exit 3")
    assert (code, out, err) == (3, "to-out\n", "to-err\n")


def test_output_streams_while_running(rootfs) -> None:
    arrivals = []
    Executor().run(rootfs, ProcessSpec(["/bin/sh", "-c", "echo one; sleep 0.5; echo two"]), [], "host",
                   stdout=lambda b: arrivals.append((time.monotonic(), b)))
    assert b"".join(b for _, b in arrivals) == b"one\ntwo\n"
    assert len(arrivals) == 2 and arrivals[1][0] - arrivals[0][0] > 0.3


def test_env_user_and_workdir(rootfs) -> None:
    code, out, _ = run(rootfs, "id; pwd; echo $GREETING; echo $HOME; echo $PATH", user="app", cwd="/work/dir",
                       env=["GREETING=hello"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("uid=1000(app) gid=1000(app)")
    assert lines[1:4] == ["/work/dir", "hello", "/home/app"]
    assert lines[4] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert (rootfs / "work" / "dir").is_dir()         # WORKDIR is created, as BuildKit does


def test_unknown_user_is_a_clear_error(rootfs) -> None:
    with pytest.raises(RuntimeFailure, match="user 'ghost' not found"):
        run(rootfs, "true", user="ghost")


def test_network_none_has_only_loopback_up(rootfs) -> None:
    code, out, _ = run(rootfs, "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/flags",
                       network="none")
    assert code == 0
    names, flags = out.split()[:-1], out.split()[-1]
    assert names == ["lo"]
    assert int(flags, 16) & 0x1                      # IFF_UP


def test_network_host_sees_host_interfaces(rootfs) -> None:
    host = sorted(line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:])
    code, out, _ = run(rootfs, "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort")
    assert code == 0 and out.split() == host


def test_mounts_bind_cache_tmpfs(tmp_path, rootfs) -> None:
    src = tmp_path / "ctx"
    src.mkdir()
    (src / "input").write_text("context file\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    mounts = [RunMount("/src", "bind", source=src), RunMount("/rw", "bind", source=src, readonly=False),
              RunMount("/root/.cache", "cache", source=cache), RunMount("/scratch", "tmpfs", size=1 << 20)]
    code, out, _ = run(rootfs, "cat /src/input; touch /src/x 2>/dev/null || echo ro; echo hit >> /root/.cache/log; "
                               "echo rw > /rw/written; grep ' /scratch ' /proc/self/mountinfo", mounts)
    assert code == 0
    assert out.splitlines()[:2] == ["context file", "ro"]
    assert "tmpfs" in out.splitlines()[2] and "size=1024k" in out.splitlines()[2]
    assert (cache / "log").read_text() == "hit\n"
    assert (src / "written").read_text() == "rw\n"
    # mount points the executor had to create are gone: they must not end up in the step's diff
    assert not (rootfs / "src").exists() and not (rootfs / "scratch").exists() and not (rootfs / "rw").exists()
    assert not (rootfs / "root" / ".cache").exists()


def test_secret_never_touches_the_rootfs(tmp_path, rootfs) -> None:
    before = set(os.listdir("/dev/shm"))
    secret = RunMount("/run/secrets/token", "secret", data=b"s3cr3t", mode=0o400, uid=1000, gid=1000)
    code, out, _ = run(rootfs, "cat /run/secrets/token; echo; stat -c '%a %u' /run/secrets/token; "
                               "echo x > /run/secrets/token 2>/dev/null || echo read-only", [secret], user="app")
    assert code == 0
    assert out.splitlines() == ["s3cr3t", "400 1000", "read-only"]
    assert not (rootfs / "run").exists()
    assert set(os.listdir("/dev/shm")) == before
    leaked = subprocess.run(["grep", "-rl", "s3cr3t", str(rootfs)], capture_output=True, text=True)
    assert leaked.stdout == ""


def test_run_step_on_a_snapshot(tmp_path, busybox_rootfs) -> None:
    snaps = Snapshotter(tmp_path / "snaps")
    from runtime_support import mounts_under
    snap = snaps.prepare([busybox_rootfs])
    assert mounts_under(tmp_path) == [str(snap.mount_dir)]
    try:
        code, _, _ = run(snap.mount_dir, "echo built > /artifact; rm /etc/secret")
        assert code == 0
        diff = snaps.commit(snap)
        assert (diff.upper / "artifact").read_text() == "built\n"
        wh = os.lstat(diff.upper / "etc" / "secret")
        assert os.major(wh.st_rdev) == 0 and (wh.st_mode & 0o170000) == 0o020000   # overlay whiteout
        assert (busybox_rootfs / "etc" / "secret").exists()
    finally:
        snaps.cleanup(snap)
    assert mounts_under(tmp_path, busybox_rootfs) == []


def _crun(bundle: Path, cid: str, state: Path) -> subprocess.CompletedProcess:
    # crun refuses this host's hybrid cgroups unless the v2 mount is out of its way.
    need("crun")
    return subprocess.run(["unshare", "-m", "sh", "-c", 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', "sh",
                           "crun", "--root", str(state), "run", "--bundle", str(bundle), cid],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_step_bundle_runs_unchanged_under_runc_and_crun(tmp_path, rootfs) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("ctx\n")
    script = ("id; hostname; pwd; echo $A; cat /src/f; grep -E '^Cap(Eff|Bnd)' /proc/self/status; "
              "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; touch /src/x 2>/dev/null || echo ro")
    bundle = tmp_path / "bundle"
    Executor().write_bundle(bundle, rootfs, ProcessSpec(["/bin/sh", "-c", script], env=["A=1"], cwd="/home/app",
                                                        user="app"),
                            [RunMount("/src", "bind", source=ctx)], network="none")
    doc = json.loads((bundle / "config.json").read_text())
    assert doc["root"]["path"] == str(rootfs)
    outputs = {}
    for name, argv in (("runc", [need("runc"), "--root", str(tmp_path / "runc")]),
                       ("pybuild-runc", [*PYBUILD_RUNC, "--root", str(tmp_path / "pybuild")])):
        res = subprocess.run([*argv, "run", "--bundle", str(bundle), "step"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, (name, res.stderr)
        outputs[name] = res.stdout
    crun = _crun(bundle, "step", tmp_path / "crun")
    assert crun.returncode == 0, crun.stderr
    outputs["crun"] = crun.stdout
    assert outputs["pybuild-runc"] == outputs["runc"] == outputs["crun"]
    assert outputs["runc"].splitlines()[:4] == ["uid=1000(app) gid=1000(app)", "pybuild", "/home/app", "1"]


def test_files_the_step_writes_beside_mount_points_are_kept(tmp_path, rootfs) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.rmtree(rootfs / "etc")
    # /etc did not exist: the resolv.conf/hosts mounts create it, and so does the step.
    code, _, err = run(rootfs, "echo mine > /etc/made-by-step; mkdir -p /var/cache/apt/archives/partial", [
        RunMount("/var/cache/apt", "cache", source=cache)])
    assert code == 0, err
    assert (rootfs / "etc" / "made-by-step").read_text() == "mine\n"
    assert not (rootfs / "etc" / "hosts").exists() and not (rootfs / "etc" / "resolv.conf").exists()
    assert not (rootfs / "var").exists()          # only ever a mount point: removed
    assert (cache / "archives" / "partial").is_dir()
