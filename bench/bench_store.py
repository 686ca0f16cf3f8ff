#!/usr/bin/env python3
"""Image load/save speed: ``pybuild load``/``save`` beside ``skopeo copy``, measured in the same run.

Builds an image of N big layers (random bytes, stored-gzip so sizes are what
you ask for) plus many small ones into a fresh store, saves it as an OCI
archive, then times (best of --repeat, wall clock, each a fresh process):

  load oci      pybuild load -i A.tar            vs  skopeo copy oci-archive:A.tar oci:DIR
  save oci      pybuild save -o B.tar            vs  skopeo copy oci:DIR oci-archive:B.tar
  save docker   pybuild save --format docker     vs  skopeo copy oci:DIR docker-archive:C.tar
  load docker   pybuild load -i C.tar            vs  skopeo copy docker-archive:C.tar oci:DIR2

and raw blob ingest (put_blob) throughput.

    python3 bench/bench_store.py [--big 4] [--big-mib 64] [--small 200] [--repeat 3]
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from builder.exporter import save_to_path
from builder.image import mediatypes as mt
from builder.image.digest import sha256_digest
from builder.image.oci import Descriptor, ImageConfig, Platform, RootFS
from builder.store import ContentStore

PYBUILD = [sys.executable, "-m", "builder"]


def _layer(payload: bytes, name: str) -> tuple[bytes, bytes]:
    """(gzip blob, tar) of a one-file layer holding ``payload``."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = buf.getvalue()
    return gzip.compress(tar_bytes, compresslevel=0, mtime=0), tar_bytes


def make_image(store: ContentStore, big: int, big_mib: int, small: int) -> None:
    layers, diff_ids = [], []
    for i in range(big + small):
        payload = os.urandom((big_mib << 20) if i < big else 4096)
        blob, tar = _layer(payload, f"file{i}")
        digest, size = store.put_bytes(blob)
        layers.append(Descriptor(mt.OCI_LAYER_GZIP, digest, size))
        diff_ids.append(sha256_digest(tar))
    config = ImageConfig.for_platform(Platform.host(), rootfs=RootFS(diff_ids))
    store.put_image(config, layers, name="bench:1")


def best(cmd: list[str], repeat: int, before=None) -> float:
    times = []
    for _ in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--big", type=int, default=4)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("skopeo"):
        print("skopeo is not installed: apt-get install skopeo", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        t = Path(tmp)
        src_root = t / "src-store"
        with ContentStore(src_root) as store:
            make_image(store, args.big, args.big_mib, args.small)
            save_to_path(store, ["bench:1"], str(t / "a.tar"), "oci")
        size_mib = (t / "a.tar").stat().st_size / (1 << 20)
        print(f"image: {args.big} x {args.big_mib} MiB + {args.small} small layers; "
              f"OCI archive {size_mib:.0f} MiB; best of {args.repeat}")

        def fresh(path: Path):
            return lambda: shutil.rmtree(path, ignore_errors=True)

        dst = t / "dst-store"
        skopeo_dir = t / "skopeo-oci"
        rows = []
        rows.append(("load oci",
                     best(PYBUILD + ["--root", str(dst), "load", "-i", str(t / "a.tar")], args.repeat, fresh(dst)),
                     best(["skopeo", "copy", f"oci-archive:{t / 'a.tar'}", f"oci:{skopeo_dir}:bench"],
                          args.repeat, fresh(skopeo_dir))))
        rows.append(("save oci",
                     best(PYBUILD + ["--root", str(dst), "save", "-o", str(t / "b.tar"), "bench:1"], args.repeat),
                     best(["skopeo", "copy", f"oci:{skopeo_dir}:bench", f"oci-archive:{t / 'b2.tar'}"],
                          args.repeat, lambda: (t / "b2.tar").unlink(missing_ok=True))))
        rows.append(("save docker",
                     best(PYBUILD + ["--root", str(dst), "save", "--format", "docker", "-o", str(t / "c.tar"),
                                     "bench:1"], args.repeat),
                     best(["skopeo", "copy", f"oci:{skopeo_dir}:bench", f"docker-archive:{t / 'c2.tar'}:bench:1"],
                          args.repeat, lambda: (t / "c2.tar").unlink(missing_ok=True))))
        dst2, skopeo_dir2 = t / "dst2-store", t / "skopeo-oci2"
        rows.append(("load docker",
                     best(PYBUILD + ["--root", str(dst2), "load", "-i", str(t / "c.tar")], args.repeat, fresh(dst2)),
                     best(["skopeo", "copy", f"docker-archive:{t / 'c.tar'}", f"oci:{skopeo_dir2}:bench"],
                          args.repeat, fresh(skopeo_dir2))))
        print(f"{'operation':<12} {'pybuild':>9} {'skopeo':>9} {'ratio':>7}")
        for name, ours, theirs in rows:
            print(f"{name:<12} {ours:>8.2f}s {theirs:>8.2f}s {ours / theirs:>6.2f}x")

        with ContentStore(t / "ingest") as store:
            data = os.urandom(256 << 20)
            start = time.perf_counter()
            store.put_blob(io.BytesIO(data))
            elapsed = time.perf_counter() - start
        print(f"put_blob: 256 MiB in {elapsed:.2f}s = {256 / elapsed:.0f} MiB/s (hash + write + fsync)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
