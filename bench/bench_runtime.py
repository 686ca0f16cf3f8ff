#!/usr/bin/env python3
"""Benchmark: `run` of /bin/true in a busybox bundle, pybuild-runc beside runc and crun.

Every runtime runs the same bundle (made by `runc spec`), end to end (create,
start, wait, delete), N times in alternation; the script prints the median and
p90 latency of each and pybuild-runc's ratio to runc. crun refuses this
host's hybrid cgroup layout unless /sys/fs/cgroup/unified is unmounted in a
private mount namespace, so it runs under `unshare -m`; that wrapper is timed
on its own and shown too. The RUN executor is also timed in this process (what a build pays per
step, no interpreter start-up). Python's own start-up on this host (`python -c
pass`, and with -S to skip site-packages' .pth files) is printed for scale.

`pybuild run busybox true` is measured as a user meets it after the first run
of an image: its run cache (builder.runtime.runcache) holds what the store said
about the name, re-checked against the store's index each time. The same run
with that record deleted first (so it goes through the content store, as the
first run of a name or a retagged name does) is shown too.

The runtime's modules are byte-compiled first (as pip does on install; this
environment sets PYTHONDONTWRITEBYTECODE, which stops only writing .pyc).

Usage: sudo python3 bench/bench_runtime.py [-n 40] [--bin VENV/bin]
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.runtime.runtime_support import store_image  # noqa: E402  (the tests' one-layer image helper)


def make_rootfs(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "true"):
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (root / d).mkdir()


def make_bundle(workdir: Path) -> Path:
    bundle = workdir / "bundle"
    bundle.mkdir()
    make_rootfs(bundle / "rootfs")
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    doc = json.loads((bundle / "config.json").read_text())
    doc["process"]["terminal"] = False
    doc["process"]["args"] = ["/bin/true"]
    (bundle / "config.json").write_text(json.dumps(doc))
    return bundle


SCRIPTS = Path(sysconfig.get_path("scripts"))   # --bin replaces it
PYTHON = sys.executable


def console_script(name: str) -> list[str]:
    # The console script itself, not a version-manager shim in front of it.
    script = SCRIPTS / name
    return [str(script)] if script.exists() else [PYTHON, "-m", "builder.cli"]


def pybuild_runc_script() -> list[str]:
    script = SCRIPTS / "pybuild-runc"
    if script.exists():
        return [str(script)]
    return [PYTHON, "-m", "builder.runtime.cli"]


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode().strip()}")
    return elapsed


def _package_dirs() -> list[str]:
    out = subprocess.run([PYTHON, "-c", "import builder, os; print(os.path.dirname(builder.__file__))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return [out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40, help="runs per runtime")
    ap.add_argument("--gap", type=float, default=0.1,
                    help="seconds to wait (untimed) before each run, so that no run inherits the kernel's "
                         "after-effects of the one before (see below)")
    ap.add_argument("--bin", type=Path, default=None,
                    help="time the pybuild, pybuild-runc and python of another installation (e.g. a venv's bin/, "
                         "where pybuild is installed without -e and no other .pth files run at start-up)")
    opts = ap.parse_args()
    global SCRIPTS, PYTHON
    if opts.bin is not None:
        SCRIPTS, PYTHON = opts.bin.resolve(), str(opts.bin.resolve() / "python")
    if os.geteuid() != 0:
        raise SystemExit("run as root (runc and crun are measured rootful)")
    compileall.compile_dir(str(REPO / "builder"), quiet=1)
    if opts.bin is not None:     # that installation's own copy of the package
        subprocess.run([PYTHON, "-m", "compileall", "-q", "-d", "", *_package_dirs()], check=True,
                       stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    try:
        bundle = make_bundle(work)
        store_root = work / "store"
        store_image(store_root, bundle / "rootfs", "busybox:latest", cmd=["sh"])
        state = {name: work / f"state-{name}" for name in ("runc", "crun", "pybuild")}
        crun_wrap = "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$@\""
        commands = {
            "runc run": lambda i: ["runc", "--root", str(state["runc"]), "run", "-b", str(bundle), f"r{i}"],
            "crun run (in unshare -m)": lambda i: ["unshare", "-m", "sh", "-c", crun_wrap, "sh", "crun", "--root",
                                                   str(state["crun"]), "run", "-b", str(bundle), f"c{i}"],
            "unshare -m wrapper alone": lambda i: ["unshare", "-m", "sh", "-c", crun_wrap, "sh", "true"],
            "pybuild-runc run": lambda i: [*pybuild_runc_script(), "--root", str(state["pybuild"]), "run", "-b",
                                           str(bundle), f"p{i}"],
            "pybuild run --rm busybox true": lambda i: [*console_script("pybuild"), "--root", str(store_root), "run",
                                                        "--rm", "busybox", "true"],
            "  same, run cache removed": lambda i: [*console_script("pybuild"), "--root", str(store_root), "run",
                                                    "--rm", "busybox", "true"],
            "python -c pass": lambda i: [PYTHON, "-c", "pass"],
            "python -S -c pass": lambda i: [PYTHON, "-S", "-c", "pass"],
        }
        # Run (untimed) before a command's every run.
        before = {"  same, run cache removed": lambda: shutil.rmtree(store_root / "run-cache", ignore_errors=True)}
        if shutil.which("crun") is None:
            del commands["crun run (in unshare -m)"]
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for name, make in commands.items():      # warm-up
            before.get(name, lambda: None)()
            timed(make("warm"))
        for i in range(opts.n):
            for name, make in commands.items():
                before.get(name, lambda: None)()
                # A run that follows another closely inherits its after-effects: the cgroup-attach lock
                # still cheap to take (for about one RCU grace period after the last cgroup move, see
                # builder/runtime/cgroupwarm.py), the previous container's namespaces still being torn
                # down. That favours whoever comes next; a pause gives every runtime the same start.
                time.sleep(opts.gap)
                samples[name].append(timed(make(i)))
        # What a build pays per RUN step: the executor called in process (no interpreter start-up).
        from builder.runtime.executor import Executor, ProcessSpec
        executor = Executor()
        samples["Executor.run (in process)"] = []
        for _ in range(opts.n):
            t0 = time.perf_counter()
            code = executor.run(bundle / "rootfs", ProcessSpec(["/bin/true"]), [], "none")
            samples["Executor.run (in process)"].append(time.perf_counter() - t0)
            if code != 0:
                raise SystemExit(f"Executor.run exited {code}")
        med = {name: statistics.median(s) * 1000 for name, s in samples.items()}
        print(f"run of /bin/true in a busybox bundle, {opts.n} runs each, {os.cpu_count()} cpus")
        print(f"{'command':28} {'median ms':>10} {'p90 ms':>8}")
        for name, s in samples.items():
            p90 = sorted(s)[int(len(s) * 0.9) - 1] * 1000
            print(f"{name:28} {med[name]:10.1f} {p90:8.1f}")
        runc = med["runc run"]
        print(f"pybuild-runc / runc: {med['pybuild-runc run'] / runc:.2f}x  (goal <= 2.0x)")
        if "crun run (in unshare -m)" in med:
            crun = med["crun run (in unshare -m)"] - med["unshare -m wrapper alone"]
            print(f"crun (wrapper subtracted): {crun:.1f} ms; pybuild-runc / crun: {med['pybuild-runc run'] / crun:.2f}x")
        print(f"pybuild run / runc run: {med['pybuild run --rm busybox true'] / runc:.2f}x  (goal <= 3.0x); "
              f"through the store (run cache removed): {med['  same, run cache removed'] / runc:.2f}x")
        print(f"Executor.run / runc run: {med['Executor.run (in process)'] / runc:.2f}x")
        own = med["pybuild-runc run"] - med["python -c pass"]
        print(f"pybuild-runc beyond interpreter start-up: {own:.1f} ms "
              f"(interpreter with site: {med['python -c pass']:.1f} ms, without: {med['python -S -c pass']:.1f} ms)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
