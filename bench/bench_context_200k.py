#!/usr/bin/env python3
"""A build context of 200,000 files: ``pybuild build`` of ``COPY . /``, cold and cached.

The hardening test (tests/hardening/test_hostile_contexts.py) runs this at a tenth of the
size to stay within the suite's time; this is the full size. Each row runs in a fresh
process: wall time and peak RSS (``wait4``), medians of ``--repeat`` runs. Beside pybuild,
in the same run: ``tar -cf /dev/null`` of the context (reading every file once: a floor
for any builder) and, with ``--buildah``, ``buildah bud`` of the same Dockerfile.

    python3 bench/bench_context_200k.py [--files 200000] [--repeat 3] [--buildah]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_context(ctx: Path, count: int) -> None:
    per_dir = 1000
    for d in range((count + per_dir - 1) // per_dir):
        sub = ctx / f"d{d:04}"
        sub.mkdir(parents=True)
        for f in range(min(per_dir, count - d * per_dir)):
            fd = os.open(sub / f"f{f:04}", os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"%d\n" % f)
            os.close(fd)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one process."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed:\n{err}")
    return took, usage.ru_maxrss / 1024


def median_row(runs: list[tuple[float, float]]) -> dict:
    return {"seconds": round(statistics.median(r[0] for r in runs), 2),
            "rss_mib": round(statistics.median(r[1] for r in runs))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--buildah", action="store_true", help="also time buildah bud (slow)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-ctx200k-"))
    env = dict(os.environ, SOURCE_DATE_EPOCH="0")
    try:
        ctx = base / "ctx"
        t0 = time.monotonic()
        make_context(ctx, args.files)
        rows: dict[str, dict] = {"files": args.files, "make_s": round(time.monotonic() - t0, 1)}
        pybuild = [sys.executable, "-m", "builder"]
        cold, cached = [], []
        for i in range(args.repeat):
            root = base / f"root{i}"
            cold.append(timed(pybuild + ["--root", str(root), "build", "--progress", "quiet", str(ctx)], env))
            cached.append(timed(pybuild + ["--root", str(root), "build", "--progress", "quiet", str(ctx)], env))
            shutil.rmtree(root, ignore_errors=True)
        rows["pybuild_cold"] = median_row(cold)
        rows["pybuild_cached"] = median_row(cached)
        rows["tar_read"] = median_row([timed(["tar", "-cf", "/dev/null", "-C", str(ctx), "."])
                                       for _ in range(args.repeat)])
        if args.buildah and shutil.which("buildah"):
            storage = ["--root", str(base / "buildah"), "--runroot", str(base / "buildah-run")]
            bud = ["buildah", *storage, "bud", "--layers", "-q", "-t", "ctx200k", str(ctx)]
            rows["buildah_cold"] = median_row([timed(bud)])
            rows["buildah_cached"] = median_row([timed(bud)])
            subprocess.run(["buildah", *storage, "rmi", "-a", "-f"], capture_output=True)
        rows["cold_vs_tar"] = round(rows["pybuild_cold"]["seconds"] / max(rows["tar_read"]["seconds"], 1e-3), 1)
        print(json.dumps(rows))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
