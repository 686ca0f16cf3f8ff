"""Benchmark: build-context hashing, cold, warm (metadata cache) and after one edit.

Two contexts are made in a temporary directory:

* ``small``: 20,000 files of 1-4 KiB in 200 directories;
* ``large``: 4 files of 64 MiB.

For each, three kinds of build run in fresh processes (so peak RSS is per
phase), each repeated and reported as the median: cold (empty metadata
cache: every file read), warm (the cache answers, no file read) and after
editing one file. Beside them, in the same run: a cold
hash followed by ``copy_selection`` into a staging directory; ``buildah build``
of ``FROM scratch`` / ``COPY . /`` over the same context, cold and as a cached
rebuild (when buildah is installed and we are root); ``sha256sum`` over the same files (via ``find | xargs``) and the cost of
just walking the tree (``find | wc -l``). File data is in the page cache
for every row (the files were just written): the figures compare CPU
work, not disk speed.

    python3 bench/bench_context.py [--files 20000] [--big-mib 64] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASE = r"""
import json, resource, sys, time
from builder.context import BuildContext, copy_selection
from builder.context.rmtree import remove_tree
root, cache, staging = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
with BuildContext.from_directory(root, cache_dir=cache) as ctx:
    sel = ctx.select(["."])
    stats = ctx.stats
if staging:
    copy_selection(sel, staging, chown=(0, 0))
elapsed = time.perf_counter() - t0
if staging:
    remove_tree(staging)
print(json.dumps({"seconds": elapsed, "entries": len(sel.entries), "hashed": stats.files_hashed,
                  "bytes": stats.bytes_read, "hits": stats.cache_hits, "digest": sel.digest,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_small(root: Path, count: int) -> int:
    rng = random.Random(42)
    total = 0
    for i in range(count):
        d = root / f"dir{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        size = rng.randint(1024, 4096)
        (d / f"file{i:05d}.txt").write_bytes(rng.randbytes(size))
        total += size
    return total


def make_large(root: Path, mib: int) -> int:
    root.mkdir(parents=True)
    for i in range(4):
        with open(root / f"blob{i}.bin", "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
    return 4 * mib << 20


def phase(root: Path, cache: Path, staging: Path | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", PHASE, str(root), str(cache), str(staging or "")],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def buildah_times(root: Path, workdir: Path, repeat: int) -> tuple[float, float] | None:
    """Median seconds of ``buildah build`` (FROM scratch, COPY . /): cold, then cached rebuild."""
    buildah = shutil.which("buildah")
    if buildah is None or os.geteuid() != 0:
        return None
    dockerfile = workdir / "Dockerfile.bench"
    dockerfile.write_text("FROM scratch\nCOPY . /\n")
    colds, warms = [], []
    for i in range(repeat):
        state = workdir / f"buildah-{i}"
        base = [buildah, "--storage-driver", "overlay", "--root", str(state / "root"),
                "--runroot", str(state / "run")]
        build = base + ["build", "-q", "--layers", "-t", "bench", "-f", str(dockerfile), str(root)]
        colds.append(timed_cmd(build))
        warms.append(timed_cmd(build))
        subprocess.run(base + ["rmi", "--all", "--force"], capture_output=True)
        from builder.context.rmtree import remove_tree
        remove_tree(state, ignore_errors=True)
    return statistics.median(colds), statistics.median(warms)


def timed_cmd(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def timed_shell(cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def report(name: str, root: Path, total_bytes: int, nfiles: int, workdir: Path, repeat: int) -> None:
    # Let the racy-file window pass, as it would between a checkout and a build.
    time.sleep(1.1)
    sha = statistics.median(timed_shell(f"find {root} -type f -print0 | xargs -0 -P1 sha256sum")
                            for _ in range(repeat))
    sha_par = statistics.median(timed_shell(f"find {root} -type f -print0 | xargs -0 -P2 -n 2000 sha256sum")
                                for _ in range(repeat))
    walk = statistics.median(timed_shell(f"find {root} | wc -l") for _ in range(repeat))
    colds = [phase(root, workdir / f"cache-{name}-{i}") for i in range(repeat)]
    cache = workdir / f"cache-{name}-0"
    warms = [phase(root, cache) for _ in range(repeat)]
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    edits = []
    for i in range(repeat):
        with open(files[i * 7 % len(files)], "r+b") as f:
            f.write(b"edited %d" % i)
        # A file edited less than a second before a build is read again by the next
        # build too (the racy-file rule); wait it out so each row reads exactly one file.
        time.sleep(1.1)
        edits.append(phase(root, cache))
    copies = [phase(root, workdir / f"cache-{name}-copy-{i}", workdir / "staging") for i in range(repeat)]
    peer = buildah_times(root, workdir, repeat)
    cold, warm, edited, copied = median_run(colds), median_run(warms), median_run(edits), median_run(copies)
    assert len({r["digest"] for r in colds + warms}) == 1 and edited["digest"] != cold["digest"]
    assert all(r["hashed"] == 0 for r in warms) and all(r["hashed"] == 1 for r in edits), (warms, edits)

    mb = total_bytes / 1e6
    print(f"\n== {name}: {nfiles} files, {mb:.0f} MB ({cold['entries']} entries); median of {repeat} ==")
    print(f"{'':28}{'seconds':>9}{'files/s':>11}{'MB/s':>9}{'peak RSS':>10}")
    for label, r in [("pybuild cold (no cache)", cold), ("pybuild warm (cache hit)", warm),
                     ("pybuild after 1 edit", edited)]:
        print(f"{label:28}{r['seconds']:9.3f}{nfiles / r['seconds']:11.0f}"
              f"{r['bytes'] / 1e6 / r['seconds']:9.0f}{r['rss_mib']:8.0f} MiB"
              f"   (read {r['hashed']} files, {r['hits']} from cache)")
    print(f"{'pybuild cold + copy_selection':28}{copied['seconds']:9.3f}{nfiles / copied['seconds']:11.0f}"
          f"{copied['bytes'] / 1e6 / copied['seconds']:9.0f}{copied['rss_mib']:8.0f} MiB   (hash, then copy verified)")
    if peer:
        print(f"{'buildah build COPY . / cold':28}{peer[0]:9.3f}{nfiles / peer[0]:11.0f}{mb / peer[0]:9.0f}"
              "   (copies and commits a layer)")
        print(f"{'buildah build, cached':28}{peer[1]:9.3f}{nfiles / peer[1]:11.0f}")
    print(f"{'sha256sum (1 process)':28}{sha:9.3f}{nfiles / sha:11.0f}{mb / sha:9.0f}")
    print(f"{'sha256sum (xargs -P2)':28}{sha_par:9.3f}{nfiles / sha_par:11.0f}{mb / sha_par:9.0f}")
    print(f"{'find | wc -l (walk only)':28}{walk:9.3f}")
    print(f"ratios: cold/sha256sum = {cold['seconds'] / sha:.2f}, cold/sha256sum -P2 = "
          f"{cold['seconds'] / sha_par:.2f}, warm/walk = {warm['seconds'] / walk:.2f}, "
          f"cold/warm = {cold['seconds'] / warm['seconds']:.1f}")
    if peer:
        print(f"        (cold + copy)/buildah cold = {copied['seconds'] / peer[0]:.2f}, "
              f"warm/buildah cached = {warm['seconds'] / peer[1]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    ap.add_argument("--keep", type=Path, help="work directory to use and keep (default: a temporary one)")
    args = ap.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="pybuild-bench-context-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, work dir {workdir}")
        small = workdir / "small"
        total = make_small(small, args.files)
        report("small", small, total, args.files, workdir, args.repeat)
        large = workdir / "large"
        total = make_large(large, args.big_mib)
        report("large", large, total, 4, workdir, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
