#!/usr/bin/env python3
"""Layer creation and extraction throughput, against the machine's own tools in the same run.

Datasets: (a) 20,000 small files of 1–4 KiB random bytes, (b) 4 × 64 MiB
incompressible files. For each: pybuild's layer writer (tar, tar+gzip,
tar+zstd) beside `tar -c | cat`, `tar -c | gzip -1`, `tar -c | gzip -6`
(single-threaded zlib-class level 6), `tar -c | pigz` (all cores),
`tar -c | zstd -T0`, `sha256sum` and plain reading of the files; then
applying the layers beside `tar -x`. Finally the peak RSS of writing and
applying a 1 GiB layer, each in a fresh subprocess.

Creation figures are the best of --repeat runs. Extraction is measured fairly:
the same blob, onto the same filesystem (each of --extract-dir, e.g. a tmpfs
and a disk, in one run), with the blob in the page cache and the target
emptied and synced before every run; `tar -x` decompresses the way tar users
do (`-z`/`--zstd`, i.e. gzip/zstd in a second process, and `pigz -dc |` /
`zstd -dc |`), and the goal compares against the fastest of those. pybuild
applies in a child interpreter that times only `apply_layer` (as in a running
build); tar's time includes its own start (about a millisecond). Runs of all
tools alternate, and each figure is the median of --apply-repeat runs.
`--baseline DIR` adds rows for another checkout's `builder` package (e.g. the
commit before a change: `git archive HEAD builder | tar -x -C /tmp/before`),
measured in the same alternation. MB/s counts the bytes of file content
(10^6 bytes per MB).

    python3 bench/bench_layers.py [--dir DIR] [--repeat 3] [--apply-repeat 7] [--rss-gib 1] [--skip-rss]
        [--extract-dir /dev/shm --extract-dir /var/tmp] [--baseline /tmp/before] [--only-apply]
        [--datasets small-files,big-files]
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SMALL_FILES = 20_000
BIG_FILES = 4
BIG_SIZE = 64 << 20


@dataclass
class Row:
    dataset: str
    what: str
    seconds: float
    content_bytes: int
    output_bytes: int | None = None
    runs: list[float] = field(default_factory=list)

    @property
    def mbps(self) -> float:
        return self.content_bytes / self.seconds / 1e6


def make_small(root: Path) -> None:
    rng = random.Random(42)
    for i in range(SMALL_FILES):
        d = root / f"d{i % 100:02d}" / f"s{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(rng.randbytes(rng.randint(1024, 4096)))


def make_big(root: Path, count: int = BIG_FILES, size: int = BIG_SIZE) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        with open(root / f"blob{i}", "wb") as f:
            for _ in range(size // (8 << 20)):
                f.write(os.urandom(8 << 20))


def content_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def warm(root: Path) -> None:
    subprocess.run(f"tar -cf - -C {root} . | cat > /dev/null", shell=True, check=True)


def best_of(repeat: int, fn, before=None) -> float:
    times = []
    for _ in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def shell(cmd: str):
    return lambda: subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)


def write_layer_to(src: Path, out: str, compression: str) -> int:
    from builder.image.layer import write_layer

    with open(out, "wb") as f:
        return write_layer(src, f, compression=compression).size


def write_layer_zlib6(src: Path, out: str) -> None:
    """The same tar writer feeding Python's zlib at level 6 on one thread: the naive baseline."""
    import gzip

    from builder.image.layer import write_layer

    with open(out, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as z:
        write_layer(src, z, compression="none")


def measure_dataset(name: str, src: Path, work: Path, repeat: int, only_apply: bool) -> tuple[list[Row], dict[str, str]]:
    """Creation figures (unless ``only_apply``) and the layer blobs to extract, by compression."""
    from builder.image import mediatypes as mt

    size = content_bytes(src)
    warm(src)
    rows: list[Row] = []
    tar = f"tar -cf - -C {src} ."
    peers = {
        "read files (cat)": f"find {src} -type f -print0 | xargs -0 cat > /dev/null",
        "sha256sum": f"find {src} -type f -print0 | xargs -0 sha256sum > /dev/null",
        "tar -c | cat": f"{tar} | cat > /dev/null",
        "tar -c | gzip -1": f"{tar} | gzip -1 > {work}/peer.gz",
        "tar -c | gzip -6 (1 core)": f"{tar} | gzip -6 > {work}/peer.gz",
        "tar -c | pigz (-6, all cores)": f"{tar} | pigz > {work}/peer.gz",
        "tar -c | pigz -1": f"{tar} | pigz -1 > {work}/peer.gz",
        "tar -c | zstd -3 -T0": f"{tar} | zstd -q -3 -T0 > {work}/peer.zst",
    }
    if not only_apply:
        for label, cmd in peers.items():
            out = Path(str(cmd).rsplit("> ", 1)[-1])
            seconds = best_of(repeat, shell(cmd))
            rows.append(Row(name, label, seconds, size, out.stat().st_size if out.name.startswith("peer") else None))

        out = str(work / "layer.zlib6")
        seconds = best_of(repeat, lambda: write_layer_zlib6(src, out))
        rows.append(Row(name, "pybuild tar + zlib -6 (1 thread)", seconds, size, os.path.getsize(out)))

    blobs = {}
    for compression in (mt.UNCOMPRESSED, mt.GZIP, mt.ZSTD):
        out = str(work / f"layer.{compression}")
        seconds = best_of(1 if only_apply else repeat, lambda: write_layer_to(src, out, compression))
        blobs[compression] = out
        if not only_apply:
            rows.append(Row(name, f"pybuild layer ({compression})", seconds, size, os.path.getsize(out)))
    return rows, blobs


# Times one apply_layer in a fresh interpreter importing ``builder`` from argv[1]; prints seconds.
_APPLY_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from builder.image.layer import apply_layer
with open(sys.argv[2], 'rb') as f:
    start = time.perf_counter()
    apply_layer(f, sys.argv[3], sys.argv[4])
    print(time.perf_counter() - start)
"""
REPO = str(Path(__file__).resolve().parent.parent)


def extract_commands(blob: str, dest: Path, compression: str) -> dict[str, str]:
    """The `tar -x` variants users run for a blob of ``compression``."""
    if compression == "none":
        return {"tar -x": f"tar -xf {blob} -C {dest}"}
    if compression == "gzip":
        return {"tar -xz (gzip -d)": f"tar -xzf {blob} -C {dest}",
                "pigz -dc | tar -x": f"pigz -dc {blob} | tar -xf - -C {dest}"}
    return {"tar --zstd (zstd -d)": f"tar --zstd -xf {blob} -C {dest}",
            "zstd -dc | tar -x": f"zstd -qdc {blob} | tar -xf - -C {dest}"}


def measure_extraction(name: str, size: int, blobs: dict[str, str], extract_dir: Path, repeat: int,
                       impls: dict[str, str]) -> list[Row]:
    """Every tool on every blob onto ``extract_dir``, alternating, ``repeat`` rounds; medians."""
    from builder.image import mediatypes as mt

    dest = extract_dir / "bench-extract"
    fs = filesystem_of(extract_dir)

    def fresh(blob: str) -> None:
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir()
        subprocess.run(["sync"], check=True)
        subprocess.run(f"cat {blob} > /dev/null", shell=True, check=True)  # the blob in the page cache

    def timed_shell(cmd: str) -> float:
        start = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    def timed_apply(root: str, blob: str, media_type: str) -> float:
        done = subprocess.run([sys.executable, "-c", _APPLY_CHILD, root, blob, str(dest), media_type],
                              capture_output=True, text=True, check=True)
        return float(done.stdout.split()[-1])

    runs: dict[str, list[float]] = {}
    for _ in range(repeat):
        for compression, blob in blobs.items():
            media_type = mt.layer_media_type(compression)
            jobs = {f"{label} ({compression})": (lambda c=cmd: timed_shell(c))
                    for label, cmd in extract_commands(blob, dest, compression).items()}
            for impl, root in impls.items():
                jobs[f"{impl} apply ({compression})"] = lambda r=root, b=blob, m=media_type: timed_apply(r, b, m)
            for label, job in jobs.items():
                fresh(blob)
                runs.setdefault(label, []).append(job())
    shutil.rmtree(dest, ignore_errors=True)
    return [Row(f"{name}@{fs}", label, statistics.median(times), size, runs=times) for label, times in runs.items()]


def filesystem_of(path: Path) -> str:
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def child_peak_rss(code: str) -> tuple[float, float]:
    """Run ``code`` in a fresh interpreter; its (seconds, peak RSS in MiB).

    The child reports its own VmHWM: ru_maxrss of a child would include this
    process's RSS, which Linux carries across fork+exec.
    """
    probe = ("\nfor line in open('/proc/self/status'):\n"
             "    if line.startswith('VmHWM:'): print(int(line.split()[1]))")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr.strip()}")
    return seconds, int(done.stdout.split()[-1]) / 1024


def measure_rss(work: Path, gib: int) -> list[tuple[str, float, float]]:
    src = work / "rss-src"
    make_big(src, count=gib * 16, size=64 << 20)
    blob = work / "rss-layer.tar.gz"
    dest = work / "rss-extract"
    dest.mkdir()
    out = []
    write = (f"from builder.image.layer import write_layer\n"
             f"with open({str(blob)!r}, 'wb') as f: write_layer({str(src)!r}, f)")
    out.append((f"write {gib} GiB layer (gzip)", *child_peak_rss(write)))
    shutil.rmtree(src)
    apply = (f"from builder.image.layer import apply_layer\n"
             f"with open({str(blob)!r}, 'rb') as f: apply_layer(f, {str(dest)!r}, "
             f"'application/vnd.oci.image.layer.v1.tar+gzip')")
    out.append((f"apply {gib} GiB layer (gzip)", *child_peak_rss(apply)))
    shutil.rmtree(dest)
    blob.unlink()
    return out


def print_rows(rows: list[Row]) -> None:
    print(f"{'dataset':<22} {'what':<32} {'seconds':>8} {'MB/s':>8} {'output MB':>10}  runs")
    for r in rows:
        out = f"{r.output_bytes / 1e6:10.1f}" if r.output_bytes is not None else f"{'':>10}"
        spread = " ".join(f"{t:.3f}" for t in r.runs)
        print(f"{r.dataset:<22} {r.what:<32} {r.seconds:8.3f} {r.mbps:8.1f} {out}  {spread}")


def goals(rows: list[Row]) -> None:
    by = {(r.dataset, r.what): r.seconds for r in rows}
    print("\ngoals (ratio of times; lower is faster for pybuild):")
    for dataset in sorted({r.dataset for r in rows}):
        if (dataset, "pybuild layer (gzip)") not in by:
            continue
        g = by[(dataset, "pybuild layer (gzip)")]
        pigz = by[(dataset, "tar -c | pigz (-6, all cores)")]
        pigz1 = by[(dataset, "tar -c | pigz -1")]
        gz6 = by[(dataset, "tar -c | gzip -6 (1 core)")]
        zlib6 = by[(dataset, "pybuild tar + zlib -6 (1 thread)")]
        print(f"  {dataset}: layer(gzip) / tar|pigz      = {g / pigz:5.2f}  (goal <= 1.5) "
              f"{'MET' if g / pigz <= 1.5 else 'NOT MET'}; vs pigz -1: {g / pigz1:5.2f}")
        print(f"  {dataset}: tar|gzip -6 / layer(gzip)   = {gz6 / g:5.2f}x faster (goal >= 3) "
              f"{'MET' if gz6 / g >= 3 else 'NOT MET'}")
        print(f"  {dataset}: tar+zlib -6 / layer(gzip)   = {zlib6 / g:5.2f}x faster (goal >= 3) "
              f"{'MET' if zlib6 / g >= 3 else 'NOT MET'}")


def apply_goals(rows: list[Row], impls: list[str]) -> None:
    """Each pybuild apply against the fastest `tar -x` variant of the same blob, same filesystem."""
    print("\napply goals (median time / fastest tar -x variant's median; goal <= 1.5; "
          "in brackets the same with each tool's fastest run, less sensitive to a busy machine):")
    for dataset in sorted({r.dataset for r in rows if "@" in r.dataset}):
        for c in ("none", "gzip", "zstd"):
            peers = [r for r in rows if r.dataset == dataset and r.what.endswith(f"({c})")
                     and " apply " not in r.what]
            if not peers:
                continue
            best = min(peers, key=lambda r: r.seconds)
            fastest = min(min(r.runs) for r in peers)
            for impl in impls:
                mine = next(r for r in rows if r.dataset == dataset and r.what == f"{impl} apply ({c})")
                ratio = mine.seconds / best.seconds
                verdict = ("MET" if ratio <= 1.5 else "NOT MET") if impl == "pybuild" else ""
                print(f"  {dataset:<22} {impl:>8} apply({c:<4}) {mine.mbps:7.1f} MB/s / {best.what:<28}"
                      f" {best.mbps:7.1f} MB/s = {ratio:5.2f} [{min(mine.runs) / fastest:5.2f}] {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="work directory (default: a temporary dir under /var/tmp)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each creation figure (best kept)")
    parser.add_argument("--apply-repeat", type=int, default=7, help="runs of each extraction figure (median kept)")
    parser.add_argument("--rss-gib", type=int, default=1)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--only-apply", action="store_true", help="skip the creation figures")
    parser.add_argument("--extract-dir", action="append", default=[],
                        help="where layers are extracted (repeatable; default: the work dir), "
                             "e.g. /dev/shm and a disk directory")
    parser.add_argument("--datasets", default="small-files,big-files", help="which datasets (comma-separated)")
    parser.add_argument("--baseline", help="another checkout's root (holding builder/) to measure beside this one")
    args = parser.parse_args()
    for tool in ("tar", "gzip", "pigz", "zstd", "sha256sum"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed; run .ci/install")
    impls = {"pybuild": REPO}
    if args.baseline:
        if not (Path(args.baseline) / "builder" / "image" / "layer_apply.py").exists():
            raise SystemExit(f"--baseline {args.baseline}: no builder/image/layer_apply.py there")
        impls["baseline"] = str(Path(args.baseline).resolve())

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-layers-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    extract_dirs = [Path(d) for d in args.extract_dir] or [base]
    try:
        print(f"cpus: {len(os.sched_getaffinity(0))}, python {sys.version.split()[0]}, work dir {base}, "
              f"extracting in {', '.join(f'{d} ({filesystem_of(d)})' for d in extract_dirs)}, "
              f"load average {os.getloadavg()[0]:.2f}")
        datasets = {"small-files": (base / "small", make_small), "big-files": (base / "big", make_big)}
        chosen = args.datasets.split(",")
        if not set(chosen) <= set(datasets):
            raise SystemExit(f"--datasets: choose among {', '.join(datasets)}")
        rows = []
        for name in chosen:
            src, make = datasets[name]
            make(src)
            work = base / f"work-{name}"
            work.mkdir()
            created, blobs = measure_dataset(name, src, work, args.repeat, args.only_apply)
            rows += created
            for extract_dir in extract_dirs:
                rows += measure_extraction(name, content_bytes(src), blobs, extract_dir, args.apply_repeat, impls)
            shutil.rmtree(work)
        print()
        print_rows(rows)
        goals(rows)
        apply_goals(rows, list(impls))
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        if not args.skip_rss:
            print("\npeak RSS (fresh subprocess each, its VmHWM):")
            work = base / "rss"
            work.mkdir()
            for label, seconds, mib in measure_rss(work, args.rss_gib):
                print(f"  {label:<28} {seconds:7.2f} s  {mib:7.1f} MiB  (goal < 200 MiB) "
                      f"{'MET' if mib < 200 else 'NOT MET'}")
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nmax RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
