"""Container escape (issue #8): inside ``pybuild run`` and inside RUN steps the host stays out of reach.

Four real containers from the busybox fixture image — ``pybuild run`` with the
default (host) network and with ``--network none``, a RUN step of ``pybuild
build`` and a ``RUN --network=none`` step — each run one probe script (the
``PROBE`` below) that tries what a process escaping its container would try
and prints what it saw. Each case is then judged here from that output, per
container, as its own test. A fifth and sixth container run the same probe
from a ``runc spec`` bundle under pybuild-runc and under runc itself, for the
cases the spec decides (capabilities, no_new_privs).

The host side is real too: a marker file with a secret token in this test's
temporary directory, a marker process with a unique argument, the host's
namespaces, mount points and root block device.

Cases (per container):

* ``host-files``: the marker is not found by ``find /``, nor readable by its host path, through
  ``/proc/*/root``, or by climbing ``..`` from ``/``; its token appears nowhere in the output.
* ``proc1-root``: ``/proc/1/root`` is the container's root, not the host's.
* ``mountpoints``: every mount point in ``/proc/self/mountinfo`` is a container path
  (``/``, ``/proc``, ``/dev``, ``/sys`` and below, and the resolv.conf/hosts binds).
* ``processes``: pid 1 is the probe; every visible process is the probe's; the marker process is
  not visible.
* ``namespaces``: pid, mount, ipc and uts namespaces (and network for ``none``) are not the host's.
* ``masked``: each of ``runc spec``'s maskedPaths is empty or unreadable (``/proc/kcore`` reads nothing).
* ``readonly``: each of ``runc spec``'s readonlyPaths is a read-only mount; writing
  ``/proc/sys/kernel/hostname`` and ``/proc/sysrq-trigger`` fails.
* ``sys``: every mount of kernel state under ``/sys`` (sysfs, cgroupfs, ...) is read-only (the tmpfs runc
  puts at /sys/fs/cgroup is the container's own); nothing writes to a cgroup (moving itself to the
  hierarchy root, or making a cgroup); ``/sys`` and ``/sys/firmware`` cannot be written.
* ``capabilities``: CapEff, CapPrm and CapBnd are Docker's (and BuildKit's) default set, no more;
  nothing inheritable or ambient.
* ``mount``: mount (tmpfs, bind, remount rw), umount, pivot_root, unshare -m and nsenter all fail.
* ``devices``: a block device node of the host's disk can be made (CAP_MKNOD) but not opened; where
  the devices controller is v1 the container's cgroup allows only runc's default devices.
* ``network`` (``none`` containers only): /proc/net/dev lists only ``lo``.
* ``no-new-privs``: NoNewPrivs is what the container's spec says.

And for the ``runc spec`` bundle: CapInh/CapPrm/CapEff/CapBnd/CapAmb and NoNewPrivs under
pybuild-runc equal runc's, with NoNewPrivs 1 as the spec says.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hardening.conftest import run_pybuild
from tests.store.conftest import busybox_archive  # noqa: F401  (session fixture)

# Docker's default capabilities (moby oci/caps/defaults.go; BuildKit uses the same list), by number.
DOCKER_DEFAULT_CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
                       "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
                       "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
                       "CAP_SETFCAP": 31}
NEVER_CAPS = {"CAP_DAC_READ_SEARCH": 2, "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_ADMIN": 12, "CAP_SYS_MODULE": 16,
              "CAP_SYS_RAWIO": 17, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22,
              "CAP_SYS_TIME": 25, "CAP_BPF": 39}

PROBE = r"""
sec() { echo "@@$1"; }
try() { if sh -c "$1" >/dev/null 2>&1; then echo "ALLOWED $1"; else echo "DENIED $1"; fi; }
sec status; cat /proc/self/status
sec mountinfo; cat /proc/self/mountinfo
sec pids; for p in /proc/[0-9]*; do echo "${p#/proc/} $(tr '\0\n' '  ' < $p/cmdline 2>/dev/null)"; done
sec ns; for n in pid mnt ipc uts net cgroup; do echo "$n $(readlink /proc/self/ns/$n)"; done
sec find; find / \( -path /proc -o -path /sys \) -prune -o -name '@MARKER_NAME@' -print 2>/dev/null
sec direct
for p in '@MARKER_PATH@' /proc/[0-9]*/root'@MARKER_PATH@' /proc/self/root'@MARKER_PATH@' /proc/self/cwd'@MARKER_PATH@'; do
    cat "$p" 2>/dev/null && echo "READ $p"
done
ls -d '@MARKER_DIR@' 2>/dev/null && echo "SEEN @MARKER_DIR@"
sec dotdot; cd / && cd ../../../../.. && echo "$(pwd) $(ls -a | tr '\n' ' ')"; echo "/ $(ls -a / | tr '\n' ' ')"
sec proc1root; readlink /proc/1/root; echo "$(ls -a /proc/1/root/ | tr '\n' ' ')"
sec masked
for p in @MASKED@; do
    if [ -d "$p" ]; then echo "$p dir $(ls -A "$p" 2>/dev/null | wc -l)";
    elif [ -e "$p" ]; then echo "$p file $(head -c 65536 "$p" 2>/dev/null | wc -c)";
    else echo "$p absent"; fi
done
sec readonly; for p in @READONLY@; do [ -e "$p" ] && echo "$p"; done
sec writes
try 'echo escaped > /proc/sys/kernel/hostname'
[ -e /proc/sysrq-trigger ] && try 'echo h > /proc/sysrq-trigger'
try 'touch /sys/firmware/probe'
try 'touch /sys/probe'
for f in /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/cgroup.procs; do [ -e "$f" ] && try "echo \$\$ > $f"; done
try 'mkdir /sys/fs/cgroup/pids/probe-@TOKEN@ && rmdir /sys/fs/cgroup/pids/probe-@TOKEN@'
sec mountops
mkdir -p /tmp/probe-mnt/old
try 'mount -t tmpfs none /tmp/probe-mnt'
try 'mount --bind / /tmp/probe-mnt'
try 'mount -o remount,rw /proc/sys'
try 'mount -o remount,rw /sys'
try 'umount /proc/kcore'
try 'umount -l /proc/sys'
try 'pivot_root /tmp/probe-mnt /tmp/probe-mnt/old'
try 'unshare -m true'
try 'nsenter -t 1 -m true'
sec devices
cat /sys/fs/cgroup/devices/devices.list 2>/dev/null
rm -f /tmp/probe-blk
if mknod /tmp/probe-blk b @ROOT_MAJOR@ @ROOT_MINOR@ 2>/dev/null; then
    if head -c 512 /tmp/probe-blk >/dev/null 2>&1; then echo "OPENED"; else echo "NOT-OPENED"; fi
else echo "NO-MKNOD"; fi
rm -f /tmp/probe-blk
sec netdev; cat /proc/net/dev
sec end
"""


@dataclass
class Host:
    marker: Path
    token: str
    process_tag: str
    namespaces: dict[str, str]
    masked: list[str]
    readonly: list[str]
    runc_spec: dict
    root_dev: tuple[int, int]


@dataclass
class Seen:
    """One container's probe output, split into sections."""

    context: str
    sections: dict[str, str]
    spec_nnp: bool        # what the container's spec says about no_new_privileges
    network_none: bool

    def lines(self, name: str) -> list[str]:
        return self.sections.get(name, "").splitlines()

    def status(self) -> dict[str, str]:
        return dict(line.split(":\t", 1) for line in self.lines("status") if ":\t" in line)


def _sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    assert "end" in out, f"the probe did not finish:\n{text[-2000:]}"
    return {k: "\n".join(v) for k, v in out.items()}


def _root_device() -> tuple[int, int]:
    dev = os.stat("/").st_dev
    for line in Path("/proc/partitions").read_text().splitlines()[2:]:
        major, minor, _, name = line.split()
        if not name.startswith(("loop", "ram", "zram")):
            return int(major), int(minor)       # a real disk of the host
    return os.major(dev), os.minor(dev)


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Host:
    base = tmp_path_factory.mktemp("escape-host")
    token = uuid.uuid4().hex
    marker = base / f"host-marker-{token[:8]}"
    marker.write_text(f"secret {token}\n")
    spec_dir = base / "runcspec"
    spec_dir.mkdir()
    subprocess.run(["runc", "spec"], cwd=spec_dir, check=True)
    spec = json.loads((spec_dir / "config.json").read_text())
    ns = {n: os.readlink(f"/proc/self/ns/{n}") for n in ("pid", "mnt", "ipc", "uts", "net", "cgroup")}
    return Host(marker, token, f"escape-marker-{token[:12]}", ns, spec["linux"]["maskedPaths"],
                spec["linux"]["readonlyPaths"], spec, _root_device())


def _probe_script(host: Host) -> str:
    values = {"MARKER_NAME": host.marker.name, "MARKER_PATH": str(host.marker), "MARKER_DIR": str(host.marker.parent),
              "MASKED": " ".join(host.masked), "READONLY": " ".join(host.readonly), "TOKEN": host.token[:8], "ROOT_MAJOR": str(host.root_dev[0]),
              "ROOT_MINOR": str(host.root_dev[1])}
    script = PROBE
    for key, value in values.items():
        script = script.replace(f"@{key}@", value)
    return script


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, busybox_archive) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("escape-store") / "root"
    run_pybuild("load", "-i", busybox_archive, root=root, check=True)
    return root


@pytest.fixture(scope="module")
def seen(host, store_root, tmp_path_factory) -> dict[str, Seen]:
    """Run the probe in every container once; the cases below judge the output."""
    base = tmp_path_factory.mktemp("escape")
    root = store_root
    script = _probe_script(host)
    marker_proc = subprocess.Popen(["sh", "-c", "sleep 600", host.process_tag], stdin=subprocess.DEVNULL)
    out: dict[str, Seen] = {}
    try:
        for context, network in (("pybuild run", "host"), ("pybuild run --network none", "none")):
            res = run_pybuild("run", "--name", f"probe-{network}", "--network", network, "busybox", "sh", "-c",
                              script, root=root)
            assert res.returncode == 0, res.stderr
            record = next(json.loads(p.read_text()) for p in (root / "containers").glob("*/container.json")
                          if json.loads(p.read_text())["name"] == f"probe-{network}")
            config = json.loads((root / "containers" / record["id"] / "config.json").read_text())
            out[context] = Seen(context, _sections(res.stdout), config["process"]["noNewPrivileges"],
                                network == "none")
            run_pybuild("rm", f"probe-{network}", root=root, check=True)
        ctx = base / "ctx"
        ctx.mkdir()
        (ctx / "probe.sh").write_text(script)
        (ctx / "Dockerfile").write_text("FROM busybox\nCOPY probe.sh /probe.sh\n"
                                        "RUN sh /probe.sh > /seen-host.txt 2>&1\n"
                                        "RUN --network=none sh /probe.sh > /seen-none.txt 2>&1\n")
        res = run_pybuild("build", "--progress", "plain", "-o", f"type=local,dest={base / 'out'}", str(ctx),
                          root=root)
        assert res.returncode == 0, res.stderr
        from builder.runtime.executor import ProcessSpec, build_spec
        nnp = build_spec(base / "out", ProcessSpec(["true"]), [], "none", rootless=False)["process"]["noNewPrivileges"]
        out["RUN"] = Seen("RUN", _sections((base / "out" / "seen-host.txt").read_text()), nnp, False)
        out["RUN --network=none"] = Seen("RUN --network=none", _sections((base / "out" / "seen-none.txt").read_text()),
                                         nnp, True)
    finally:
        marker_proc.kill()
        marker_proc.wait()
    return out


CONTEXTS = ["pybuild run", "pybuild run --network none", "RUN", "RUN --network=none"]


# ---------------------------------------------------------------------------------------------- cases

def case_host_files(s: Seen, host: Host) -> list[str]:
    problems = [f"find: {line}" for line in s.lines("find") if line.strip()]
    problems += [line for line in s.lines("direct") if line.startswith(("READ", "SEEN"))]
    problems += [f"token in section {name}" for name, text in s.sections.items() if host.token in text]
    dotdot = s.lines("dotdot")
    if len(dotdot) != 2 or not dotdot[0].startswith("/ ") or dotdot[0][2:] != dotdot[1][2:]:
        problems.append(f"climbing .. from / leads elsewhere: {dotdot}")
    return problems


def case_proc1_root(s: Seen, host: Host) -> list[str]:
    lines = s.lines("proc1root")
    own_root = s.lines("dotdot")[1][2:] if len(s.lines("dotdot")) == 2 else None
    if lines[:1] != ["/"] or len(lines) != 2 or lines[1] != own_root:
        return [f"/proc/1/root is not the container's root: {lines}"]
    if set(lines[1].split()) - {".", ".."} == set(os.listdir("/")):
        return ["/proc/1/root lists what the host's / holds"]
    return []


def _mountpoints(s: Seen, with_fstype: bool = False) -> list[tuple[str, ...]]:
    out = []
    for line in s.lines("mountinfo"):
        left, _, right = line.partition(" - ")
        fields = left.split()
        out.append((fields[4], fields[5], right.split()[0]) if with_fstype else (fields[4], fields[5]))
    return out


def case_mountpoints(s: Seen, host: Host) -> list[str]:
    allowed_files = {"/etc/resolv.conf", "/etc/hosts", "/etc/hostname"}
    bad = [p for p, _ in _mountpoints(s)
           if not (p == "/" or p in allowed_files or p.split("/")[1] in ("proc", "dev", "sys"))]
    return [f"host mount point visible: {p}" for p in bad]


def case_processes(s: Seen, host: Host) -> list[str]:
    pids = [line.split(" ", 1) + [""] for line in s.lines("pids") if line.strip()]
    problems = []
    if not pids or pids[0][0] != "1" or "sh" not in pids[0][1]:
        problems.append(f"pid 1 is not the container's shell: {pids[:1]}")
    strangers = [p for p in pids if not p[1].startswith(("sh ", "/bin/sh ", "tr ")) and p[1].strip()]
    problems += [f"host process visible: {p[0]} {p[1]}" for p in strangers]
    problems += [f"marker process visible: {p}" for p in pids if host.process_tag in p[1]]
    if len(pids) > 10:
        problems.append(f"{len(pids)} processes visible")
    return problems


def case_namespaces(s: Seen, host: Host) -> list[str]:
    inside = dict(line.split(" ", 1) for line in s.lines("ns"))
    kinds = ["pid", "mnt", "ipc", "uts"] + (["net"] if s.network_none else [])
    return [f"{k} namespace is the host's ({inside.get(k)})" for k in kinds if inside.get(k) == host.namespaces[k]]


def case_masked(s: Seen, host: Host) -> list[str]:
    problems = []
    for line in s.lines("masked"):
        path, kind, *rest = line.split()
        if kind in ("dir", "file") and rest != ["0"]:
            problems.append(f"{path}: {kind} shows {rest[0]} {'entries' if kind == 'dir' else 'bytes'}")
    if len(s.lines("masked")) != len(host.masked):
        problems.append("not every masked path was probed")
    return problems


def case_readonly(s: Seen, host: Host) -> list[str]:
    mounts = dict(_mountpoints(s))
    problems = [f"{p} is not a read-only mount ({mounts.get(p)})" for p in host.readonly
                if p in mounts and "ro" not in mounts[p].split(",")]
    existing = s.lines("readonly")          # what this kernel has of them
    problems += [f"{p} exists but is not mounted read-only" for p in existing if p not in mounts]
    if "/proc/sys" not in existing:
        problems.append("/proc/sys was not probed")
    writes = s.lines("writes")
    for probe in ("/proc/sys/kernel/hostname", "/proc/sysrq-trigger"):
        problems += [line for line in writes if line.startswith("ALLOWED") and probe in line]
    return problems


def case_sys(s: Seen, host: Host) -> list[str]:
    # Kernel state (sysfs, cgroupfs, debugfs, ...) must be read-only; a tmpfs (the one runc puts at
    # /sys/fs/cgroup to hold the v1 hierarchies) is the container's own.
    problems = [f"{p} ({fstype}) is writable ({opts})" for p, opts, fstype in _mountpoints(s, with_fstype=True)
                if p.split("/")[1] == "sys" and fstype != "tmpfs" and "ro" not in opts.split(",")]
    problems += [line for line in s.lines("writes") if line.startswith("ALLOWED") and "/sys" in line]
    return problems


def _mask(value: str) -> int:
    return int(value, 16)


def case_capabilities(s: Seen, host: Host) -> list[str]:
    st = s.status()
    want = sum(1 << n for n in DOCKER_DEFAULT_CAPS.values())
    problems = [f"{k} {st.get(k)} != {want:016x}" for k in ("CapEff", "CapPrm", "CapBnd") if _mask(st[k]) != want]
    problems += [f"{k} {st.get(k)} is not empty" for k in ("CapInh", "CapAmb") if _mask(st[k]) != 0]
    held = _mask(st["CapEff"]) | _mask(st["CapBnd"])
    problems += [f"{name} held" for name, n in NEVER_CAPS.items() if held & (1 << n)]
    return problems


def case_mount(s: Seen, host: Host) -> list[str]:
    lines = s.lines("mountops")
    problems = [line for line in lines if not line.startswith("DENIED")]
    return problems + ([] if len(lines) == 9 else [f"{len(lines)} of 9 mount probes ran"])


def case_devices(s: Seen, host: Host) -> list[str]:
    lines = s.lines("devices")
    problems = [] if "NOT-OPENED" in lines or "NO-MKNOD" in lines else ["the host's disk could be opened"]
    rules = [line for line in lines if line not in ("OPENED", "NOT-OPENED", "NO-MKNOD")]
    if Path("/sys/fs/cgroup/devices/devices.list").exists():       # v1 devices controller on this host
        if not rules:
            problems.append("the container's devices cgroup is not visible")
        elif "a *:* rwm" in rules or any(r.startswith("b ") and "m" != r.split()[-1] for r in rules):
            problems.append(f"devices cgroup allows more than runc's defaults: {rules}")
    return problems


def case_network(s: Seen, host: Host) -> list[str]:
    names = [line.split(":")[0].strip() for line in s.lines("netdev")[2:] if ":" in line]
    return [] if names == ["lo"] else [f"interfaces besides lo: {names}"]


def case_no_new_privs(s: Seen, host: Host) -> list[str]:
    got = s.status().get("NoNewPrivs")
    return [] if got == str(int(s.spec_nnp)) else [f"NoNewPrivs {got}, the spec says {s.spec_nnp}"]


CASES = {
    "host-files": case_host_files, "proc1-root": case_proc1_root, "mountpoints": case_mountpoints,
    "processes": case_processes, "namespaces": case_namespaces, "masked": case_masked, "readonly": case_readonly,
    "sys": case_sys, "capabilities": case_capabilities, "mount": case_mount, "devices": case_devices,
    "network": case_network, "no-new-privs": case_no_new_privs,
}
ITEMS = [(context, case) for context in CONTEXTS for case in CASES
         if case != "network" or "none" in context]


@pytest.mark.parametrize("context,case", ITEMS, ids=[f"{c}: {k}" for c, k in ITEMS])
def test_contained(seen, host, context, case) -> None:
    problems = CASES[case](seen[context], host)
    assert problems == [], f"{context}: {case}: " + "; ".join(problems)


# ------------------------------------------------------------------------- the runc spec bundle

@pytest.fixture(scope="module")
def spec_bundle_status(host, store_root, tmp_path_factory) -> dict[str, dict[str, str]]:
    """Cap* and NoNewPrivs of the probe run from a `runc spec` bundle by pybuild-runc and by runc."""
    from builder.store import ContentStore
    base = tmp_path_factory.mktemp("escape-spec")
    rootfs = base / "rootfs"
    rootfs.mkdir()
    with ContentStore(store_root) as store:
        store.unpack_image(store.get_image("busybox"), rootfs)
    doc = json.loads(json.dumps(host.runc_spec))
    doc["process"].update(terminal=False, args=["sh", "-c", "cat /proc/self/status"])
    doc["root"]["path"] = str(rootfs)
    bundle = base / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(doc))
    out = {}
    for name, argv in (("pybuild-runc", [sys.executable, "-m", "builder.runtime.cli"]), ("runc", ["runc"])):
        res = subprocess.run([*argv, "--root", str(base / f"state-{name}"), "run", "-b", str(bundle), "spec-probe"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        out[name] = {k: v for k, v in (line.split(":\t", 1) for line in res.stdout.splitlines() if ":\t" in line)
                     if k.startswith("Cap") or k == "NoNewPrivs"}
    return out


def test_runc_spec_bundle_privileges_match_runc(spec_bundle_status) -> None:
    assert spec_bundle_status["pybuild-runc"] == spec_bundle_status["runc"]
    assert spec_bundle_status["pybuild-runc"]["NoNewPrivs"] == "1"
    assert _mask(spec_bundle_status["pybuild-runc"]["CapBnd"]) == (1 << 5) | (1 << 10) | (1 << 29)
