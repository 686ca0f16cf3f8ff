#!/usr/bin/env python3
"""The cold CI job: an empty store and a fresh checkout, with the build cache in a registry.

Issue #7's figure is for "the 20,000-file case", the 20,000-file context of issue #5's fully
cached rebuild (bench_build.py's context without its big files): the default here.
``--big-mib 256`` adds bench_build.py's 4 incompressible files (the "20,000 files + 256 MiB"
context of #5's cold build), which a cold job must read and hash in full as well.
  uncached  the same CI job without a cache: empty store, fresh checkout, the whole build
            runs, then --push (the layers are new to the registry). The goal's comparator:
            it does what the cold CI job does, minus the cache. Also reported, as
            uncached_local: the same build without the push;
  warm      the same machine builds again (local cache, warm context metadata);
  cold CI   a new empty store and a fresh copy of the context (new inodes and mtimes: nothing
            known about it), --cache-from the registry cache, then --push to the registry
            (the layers are there already).
Goal: cold CI within 1.5x of warm, and at least 5x faster than uncached (the CI job
without a cache). Also reported: the bytes the cold job downloaded (response bodies the
registry's access log shows it sent during the job) and its number of requests. Runs
alternate, each figure is the median of --repeat; the machine should be otherwise idle (the
cold job uses both cores, so load elsewhere slows it more than the warm one). The uncached
builds write and sync tens of megabytes, so their times follow the disk's mood (here 1.8 s
to 3.5 s from run to run).

A real docker-registry runs on a loopback port; the base image is pushed there, so even FROM
is resolved over the network on the cold machine, as on a real CI runner.

Usage: python3 bench/bench_cache.py [--files 20000] [--big-mib 0] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import re
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "registry"))

from bench_build import make_big_context  # noqa: E402
from servers import RegistryServer  # noqa: E402


def pybuild() -> str:
    if os.environ.get("PYBUILD_EXE"):  # benchmark another checkout's launcher
        return os.environ["PYBUILD_EXE"]
    exe = Path(sys.executable).with_name("pybuild")  # not a pyenv shim
    return str(exe) if exe.exists() else "pybuild"



def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.decode()[-3000:]}")
    return time.perf_counter() - t


def served_bytes(log: Path, start: int) -> tuple[int, int]:
    """(response body bytes, requests) the registry logged after offset ``start`` of its access
    log (combined log format: ... "GET /v2/... HTTP/1.1" 200 2189904 ...)."""
    total = requests = 0
    with open(log, "rb") as fh:
        fh.seek(start)
        for line in fh.read().decode(errors="replace").splitlines():
            m = re.search(r'"(GET|HEAD|PUT|POST|PATCH) [^"]*" (\d{3}) (\d+|-)', line)
            if m:
                requests += 1
                if m.group(1) == "GET" and m.group(3) != "-":
                    total += int(m.group(3))
    return total, requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--big-mib", type=int, default=0, help="MiB of big files beside the small ones (256: #5's)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-cache-", dir="/var/tmp"))
    registry = RegistryServer(work / "registry", access_log=True).start()
    try:
        busybox = work / "busybox.tar"
        subprocess.run([sys.executable, str(REPO / "fixtures" / "busybox" / "make_busybox.py"), "-o", str(busybox)],
                       check=True, stdout=subprocess.DEVNULL)
        seed = work / "seed-root"
        timed([pybuild(), "--root", str(seed), "load", "-i", str(busybox)])
        base = f"{registry.host}/base/busybox:1"
        timed([pybuild(), "--root", str(seed), "tag", "busybox:latest", base])
        timed([pybuild(), "--root", str(seed), "push", base])

        source = work / "ctx-src"
        make_big_context(source, args.files, args.big_mib)
        (source / "Dockerfile").write_text(
            f"FROM {base}\nCOPY . /ctx\nRUN find /ctx -type f | wc -l > /count\nCMD [\"cat\", \"/count\"]\n")
        cache = f"{registry.host}/cache/bench:main"
        image = f"{registry.host}/app/bench"

        uncached, uncached_local, warm, cold, downloaded = [], [], [], [], []
        for i in range(args.repeat):
            # Without a cache: a local build from nothing (uncached_local), and the CI job that
            # builds from nothing and pushes (uncached), each on an empty store and a fresh copy.
            root_u = work / f"u{i}"
            ctx_u = work / f"ctx-u{i}"
            shutil.copytree(source, ctx_u)
            subprocess.run(["sync"], check=True)
            uncached_local.append(timed([pybuild(), "--root", str(root_u), "build", "--progress", "quiet",
                                         "-t", f"{image}:u{i}", ctx_u.as_posix()]))
            shutil.rmtree(root_u, ignore_errors=True)
            shutil.rmtree(ctx_u, ignore_errors=True)
            # A machine builds from nothing and pushes (the uncached figure), then exports the cache.
            root_a = work / f"a{i}"
            ctx_a = work / f"ctx-a{i}"
            shutil.copytree(source, ctx_a)
            subprocess.run(["sync"], check=True)
            uncached.append(timed([pybuild(), "--root", str(root_a), "build", "--progress", "quiet",
                                   "-t", f"{registry.host}/app/uncached{i}:a", "--push", ctx_a.as_posix()]))
            timed([pybuild(), "--root", str(root_a), "build", "--progress", "quiet", "-t", f"{image}:a{i}",
                   "--push", "--cache-to", f"type=registry,ref={cache},mode=max", ctx_a.as_posix()])
            warm.append(timed([pybuild(), "--root", str(root_a), "build", "--progress", "quiet",
                               "-t", f"{image}:a{i}", ctx_a.as_posix()]))
            # The CI runner: empty store, fresh checkout, cache from the registry, push.
            root_b = work / f"b{i}"
            ctx_b = work / f"ctx-b{i}"
            shutil.copytree(source, ctx_b)
            subprocess.run(["sync"], check=True)
            before = registry.log_path.stat().st_size
            cold.append(timed([pybuild(), "--root", str(root_b), "build", "--progress", "quiet",
                               "-t", f"{image}:b{i}", "--push", "--cache-from", cache, ctx_b.as_posix()]))
            time.sleep(0.2)  # the registry writes its log line after the response
            downloaded.append(served_bytes(registry.log_path, before))
            for path in (root_a, root_b, ctx_a, ctx_b):
                shutil.rmtree(path, ignore_errors=True)

        m_unc, m_local, m_warm, m_cold = (statistics.median(x) for x in (uncached, uncached_local, warm, cold))
        result = {
            "files": args.files, "big_mib": args.big_mib, "repeat": args.repeat,
            "uncached_s": round(m_unc, 3), "uncached_local_s": round(m_local, 3),
            "warm_rebuild_s": round(m_warm, 3), "cold_ci_s": round(m_cold, 3),
            "cold_over_warm": round(m_cold / m_warm, 2), "uncached_over_cold": round(m_unc / m_cold, 1),
            "uncached_local_over_cold": round(m_local / m_cold, 1),
            # What the registry sent the cold job (response bodies of its GETs), and its requests.
            "cold_downloaded_bytes": int(statistics.median(d for d, _ in downloaded)),
            "cold_requests": int(statistics.median(n for _, n in downloaded)),
            "runs_s": {"uncached": [round(x, 3) for x in uncached],
                       "uncached_local": [round(x, 3) for x in uncached_local], "warm": [round(x, 3) for x in warm],
                       "cold_ci": [round(x, 3) for x in cold]},
            "goals": {"cold_within_1.5x_warm": m_cold <= 1.5 * m_warm, "5x_faster_than_uncached": m_unc >= 5 * m_cold},
        }
        print(json.dumps(result, indent=2))
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
