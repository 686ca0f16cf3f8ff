#!/usr/bin/env python3
"""What ``--cache-to ...,compression=zstd`` costs, and what it saves.

A build copies a real file tree (the Python standard library, ~54 MB of sources and shared
objects) into one layer, stored gzip as every build layer is. Then, each on the same warm store:
  cached           the build again, no --cache-to (the baseline);
  as stored        --cache-to type=local (gzip layers, copied as they are);
  zstd, first      --cache-to type=local,compression=zstd (every layer recompressed);
  zstd, again      the same to a new directory (the zstd blobs are in the store: reused).
and the bytes of layers each cache holds. Every row is a whole ``pybuild build`` process; the
export cost is a row minus ``cached``. The first-zstd row needs a store without the variants, so
each repeat starts from a fresh store.

Usage: python3 bench/bench_cache_zstd.py [--tree /usr/lib/python3.11] [--repeat 5] [--level N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cache import pybuild, timed  # noqa: E402  (the same launcher and timing as the cache bench)


def layer_bytes(cache_dir: Path) -> tuple[int, set[str]]:
    index = json.loads((cache_dir / "index.json").read_text())
    blobs = cache_dir / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    return sum(d["size"] for d in manifest["layers"]), {d["mediaType"].rsplit("+", 1)[-1] for d in manifest["layers"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", default="/usr/lib/python3.11")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--level", type=int, default=None, help="compression-level for zstd")
    args = ap.parse_args()
    zstd = "compression=zstd" + (f",compression-level={args.level}" if args.level else "")
    rows: dict[str, list[float]] = {"cached": [], "as stored": [], "zstd, first": [], "zstd, again": []}
    sizes: dict[str, tuple[int, set[str]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-zstd-") as tmp:
        work = Path(tmp)
        ctx = work / "ctx"
        shutil.copytree(args.tree, ctx / "tree", symlinks=True)
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY tree/ /tree/\n")
        for i in range(args.repeat):
            root = work / f"root{i}"
            base = [pybuild(), "build", "--progress", "quiet", "--root", str(root), str(ctx)]
            timed(base)  # the layer, gzip, in a fresh store
            rows["cached"].append(timed(base))
            for name, attrs in (("as stored", ""), ("zstd, first", "," + zstd), ("zstd, again", "," + zstd)):
                dest = work / f"cache{i}-{len(sizes)}-{name.replace(' ', '').replace(',', '')}"
                rows[name].append(timed(base + ["--cache-to", f"type=local,dest={dest},mode=max{attrs}"]))
                sizes[name] = layer_bytes(dest)
            shutil.rmtree(root)
    load = os.getloadavg()
    print(f"tree {args.tree}; {args.repeat} repeats; load average {load[0]:.2f} {load[1]:.2f}; "
          f"{len(os.sched_getaffinity(0))} CPUs; zstd option: {zstd}")
    print(f"{'':14} {'median s':>9} {'min s':>7} {'export s':>9} {'layers MB':>10}")
    base_median = statistics.median(rows["cached"])
    for name, times in rows.items():
        median = statistics.median(times)
        size = f"{sizes[name][0] / 1e6:10.1f} {'/'.join(sorted(sizes[name][1]))}" if name in sizes else ""
        extra = f"{median - base_median:9.2f}" if name != "cached" else f"{'':9}"
        print(f"{name:14} {median:9.2f} {min(times):7.2f} {extra} {size}")


if __name__ == "__main__":
    main()
