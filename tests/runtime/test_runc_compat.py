"""pybuild-runc against runc: the same bundle gives the same observable results.

Each case edits a bundle made by `runc spec`, runs it under runc and then
under pybuild-runc (same bundle, same container id, so even cgroup paths
agree) and compares what the container printed and its exit status.
"""
from __future__ import annotations

import pytest

from runtime_support import mount_table

SH = ["sh", "-c"]


def _set(path: str, value):
    def edit(doc: dict) -> None:
        node = doc
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return edit


def _all(*edits):
    def edit(doc: dict) -> None:
        for e in edits:
            e(doc)
    return edit


def _add_mount(mount: dict):
    def edit(doc: dict) -> None:
        doc["mounts"].append(mount)
    return edit


CASES = {
    "identity-and-caps": (SH + ["id; hostname; grep -E '^(Cap|NoNewPrivs)' /proc/self/status"], None),
    "exit-code": (SH + ["echo out; echo err >&2; exit 7"], None),
    "args-verbatim": (["echo", "a  b", "$HOME", "'q'"], None),
    "env": (SH + ["env | sort"], _set("process.env", ["PATH=/bin", "A=1", "B=two words", "EMPTY="])),
    "cwd": (SH + ["pwd"], _set("process.cwd", "/home/app")),
    "user": (SH + ["id; grep -E '^Cap' /proc/self/status"],
             _set("process.user", {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]})),
    "umask": (SH + ["umask"], _set("process.user", {"uid": 0, "gid": 0, "umask": 0o027})),
    "hostname": (["hostname"], _set("hostname", "build-box")),
    "readonly-root": (SH + ["touch /probe 2>&1 | sed 's/.*: //'; echo $?"], None),
    "rlimits": (SH + ["ulimit -n; ulimit -Hn; ulimit -u"], _set("process.rlimits", [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768}, {"type": "RLIMIT_NPROC", "soft": 99, "hard": 99}])),
    "capabilities": (SH + ["grep -E '^Cap' /proc/self/status"], _set("process.capabilities", {
        k: ["CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_NET_RAW"] for k in ("bounding", "effective", "permitted")})),
    "no-new-privs-off": (SH + ["grep NoNewPrivs /proc/self/status"], _set("process.noNewPrivileges", False)),
    "masked-paths": (SH + ["cat /etc/secret; echo rc=$?; ls /secretdir; cat /proc/keys | wc -c"],
                     _set("linux.maskedPaths", ["/etc/secret", "/secretdir", "/proc/keys", "/nonexistent"])),
    "readonly-paths": (SH + ["echo 1 > /proc/sys/kernel/hostname 2>/dev/null; echo rc=$?; grep ' /proc/sys ' /proc/self/mountinfo | cut -d' ' -f5,6"],
                       None),
    "tmpfs-mount": (SH + ["grep ' /scratch ' /proc/self/mountinfo | cut -d' ' -f5-; touch /scratch/f && echo ok"],
                    _add_mount({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                                "options": ["nosuid", "nodev", "size=1m", "mode=1777"]})),
    "no-network": (SH + ["cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"], None),
    "sysctl": (SH + ["cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni"],
               _set("linux.sysctl", {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"})),
    "devices": (SH + ["ls -l /dev/fuse /dev/loop-control | cut -c1-10,30-; head -c 4 /dev/zero | wc -c"],
                _set("linux.devices", [
                    {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600, "uid": 0, "gid": 0},
                    {"path": "/dev/loop-control", "type": "c", "major": 10, "minor": 237, "fileMode": 0o660, "uid": 0, "gid": 6}])),
    "user-namespace": (SH + ["id; cat /proc/self/uid_map /proc/self/gid_map; grep CapEff /proc/self/status; "
                             "echo x > /dev/shm/f && stat -c '%u %g' /dev/shm/f"],
                       _all(lambda d: d["linux"]["namespaces"].append({"type": "user"}),
                            _set("linux.uidMappings", [{"containerID": 0, "hostID": 100000, "size": 65536}]),
                            _set("linux.gidMappings", [{"containerID": 0, "hostID": 100000, "size": 65536}]))),
    "cgroup-namespace": (SH + ["cat /proc/self/cgroup; grep cgroup /proc/self/mountinfo | cut -d' ' -f4,5"],
                         lambda d: d["linux"]["namespaces"].append({"type": "cgroup"})),
    # Only this container's own session keyring: others' (tests running beside us) may come and go.
    "session-keyring": (SH + ["grep -q 'keyring *_ses.compat: ' /proc/keys && echo own-session-keyring"],
                        _set("linux.maskedPaths", ["/proc/kcore"])),
    "pid-namespace": (SH + ["echo $$; tr '\\0' ' ' < /proc/1/cmdline"], None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_output_as_runc(case: str, make_bundle, public_rootfs, runc, pybuild_runc) -> None:
    args, edit = CASES[case]
    # Mapped root is not host root: it needs a rootfs whose parents it may enter.
    bundle = make_bundle(args, edit, rootfs=public_rootfs if case == "user-namespace" else None)
    expected = runc("run", "--bundle", str(bundle), "compat")
    assert expected.returncode == (7 if case == "exit-code" else 0), expected.stderr   # the case itself is sound
    got = pybuild_runc("run", "--bundle", str(bundle), "compat")
    assert (got.returncode, got.stdout) == (expected.returncode, expected.stdout), got.stderr
    if expected.returncode == 0:
        assert got.stderr == expected.stderr


def test_mount_table_matches_runc(make_bundle, runc, pybuild_runc) -> None:
    bundle = make_bundle(["cat", "/proc/self/mountinfo"])
    expected = runc("run", "--bundle", str(bundle), "mounts")
    got = pybuild_runc("run", "--bundle", str(bundle), "mounts")
    assert got.returncode == 0, got.stderr
    assert mount_table(got.stdout) == mount_table(expected.stdout)
    # Nothing of the host is in there: only the rootfs and what config.json asked for.
    points = [row[1] for row in mount_table(got.stdout)]
    assert not any(p.startswith(("/tmp", "/work", "/root", "/home")) for p in points)


def test_bind_mounts_match_runc(tmp_path, make_bundle, runc, pybuild_runc) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("from the host\n")
    edit = _all(
        _add_mount({"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "ro", "nosuid", "nodev"]}),
        _add_mount({"destination": "/rw", "type": "none", "source": str(data), "options": ["bind", "rprivate"]}),
        _add_mount({"destination": "/etc/hostfile", "type": "bind", "source": str(data / "file"), "options": ["bind", "ro"]}),
    )
    script = ("cat /data/file /etc/hostfile; touch /data/x 2>/dev/null || echo data-ro; "
              "grep -E ' /(data|rw|etc/hostfile) ' /proc/self/mountinfo | cut -d' ' -f4-6")
    bundle = make_bundle(SH + [script], edit)
    expected = runc("run", "--bundle", str(bundle), "binds")
    got = pybuild_runc("run", "--bundle", str(bundle), "binds")
    assert (got.returncode, got.stdout) == (expected.returncode, expected.stdout), got.stderr
    assert "data-ro" in got.stdout


def test_missing_executable_fails_like_runc(make_bundle, runc, pybuild_runc) -> None:
    bundle = make_bundle(["no-such-binary"])
    expected = runc("run", "--bundle", str(bundle), "missing")
    got = pybuild_runc("run", "--bundle", str(bundle), "missing")
    assert expected.returncode != 0 and got.returncode != 0
    assert "executable file not found" in got.stderr
    assert "Traceback" not in got.stderr


def test_device_rules_on_cgroup_v2_match_runc(make_bundle, runc, pybuild_runc) -> None:
    """A pure cgroup v2 host, made by mounting cgroup2 over /sys/fs/cgroup in a private mount namespace."""
    caps = ["CAP_MKNOD", "CAP_DAC_OVERRIDE"]
    # /dev/kmsg (1:11) is not in the allowed list; opening it write-only needs no other privilege.
    script = ("mknod /dev/kmsg2 c 1 11 && ( (: > /dev/kmsg2) 2>/dev/null && echo kmsg-open || echo kmsg-denied); "
              "head -c1 /dev/zero | wc -c; grep '^0::' /proc/self/cgroup")
    bundle = make_bundle(["sh", "-c", script],
                         _set("process.capabilities", {k: caps for k in ("bounding", "effective", "permitted")}))
    v2 = ["unshare", "-m", "sh", "-c", 'umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec "$@"', "sh"]
    import subprocess
    results = {}
    for rt in (runc, pybuild_runc):
        proc = subprocess.run([*v2, *rt.argv, "--root", str(rt.state_root), "run", "-b", str(bundle), "v2dev"],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        results[rt.name] = (proc.returncode, proc.stdout, proc.stderr)
    assert results["pybuild-runc"][:2] == results["runc"][:2], results
    assert results["runc"][1].splitlines() == ["kmsg-denied", "1", "0::/v2dev"]
