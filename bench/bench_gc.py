"""What the automatic GC costs a build: the under-the-limit check, and a collection when over.

A synthetic store with N build-cache records (each with its own small layer blob and a recorded
snapshot directory) is measured three ways, each repeated and reported as a median:

* ``maybe_gc`` under the limit (the path every build takes): no tree walk,
* ``du -sb`` of the same store, the walk it avoids (the peer figure),
* ``maybe_gc`` over the limit, dropping about half of the records (a fresh copy each time).

    python3 bench/bench_gc.py [--records 2000] [--repeat 7]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builder.image import mediatypes as mt  # noqa: E402
from builder.store import ContentStore  # noqa: E402
from builder.store.gc import maybe_gc  # noqa: E402
from builder.store.usage import quick_size  # noqa: E402


def make_store(root: Path, records: int) -> None:
    with ContentStore(root) as store:
        for i in range(records):
            data = os.urandom(2048) + i.to_bytes(4, "big")
            digest, size = store.put_bytes(data)
            diff_id = "sha256:" + digest[7:][::-1]  # any distinct id: the snapshot is made up below
            store.record_layer(digest, diff_id, mt.OCI_LAYER_GZIP)
            snap = store.snapshot_path(diff_id)
            snap.mkdir()
            (snap / "file").write_bytes(data)
            store.index.record_snapshot(diff_id, len(data))
            layer = {"diff_id": diff_id, "digest": digest, "size": size, "media_type": mt.OCI_LAYER_GZIP}
            state = {"key": f"k{i}", "layers": [layer], "history": [{"created_by": f"RUN step {i}"}]}
            store.cache_put("sha256:%064x" % i, {"state": state, "duration_s": 0.1}, [digest])


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-gc-"))
    try:
        base = work / "base"
        make_store(base, args.records)
        with ContentStore(base) as store:
            size = quick_size(store)
        print(f"store: {args.records} records, {size / 1e6:.1f}MB")

        os.environ["PYBUILD_GC_KEEP_STORAGE"] = str(size * 2)

        def under() -> None:
            with ContentStore(base) as store:
                assert maybe_gc(store) is None

        under_s = timed(under, args.repeat)
        du_s = timed(lambda: subprocess.run(["du", "-sb", str(base)], check=True, capture_output=True),
                     args.repeat)
        print(f"maybe_gc under the limit: {under_s * 1000:.1f}ms   du -sb of the store: {du_s * 1000:.1f}ms   "
              f"ratio {under_s / du_s:.2f}")

        os.environ["PYBUILD_GC_KEEP_STORAGE"] = str(size // 2)
        over_times = []
        for i in range(args.repeat):
            copy = work / f"copy{i}"
            shutil.copytree(base, copy, symlinks=True)
            with ContentStore(copy) as store:
                t0 = time.perf_counter()
                report = maybe_gc(store)
                over_times.append(time.perf_counter() - t0)
                assert report is not None and report.size_after <= size // 2
            shutil.rmtree(copy)
        print(f"maybe_gc over the limit (drops {report.cache_entries} records): "
              f"{statistics.median(over_times) * 1000:.0f}ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
